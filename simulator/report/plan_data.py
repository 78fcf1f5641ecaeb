"""The planner's output directory, read into one object (`load` → `PlanOutput`).

`simulate plan` writes plan.json, candidates.csv, results.csv and, when the recommended
configuration was re-run with its timeline, recommended/iterations.csv and
recommended/summary.json (simulator/planning/outputs.py). Every part of the report works from
the `PlanOutput` read here, so how those files are parsed (text columns kept verbatim, flags as
booleans, the rest numeric) and in which order the candidates come (by rank, then the closest
to meeting the SLO) is decided in one place.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd


def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _read_csv(path: Path, text: tuple[str, ...], flags: tuple[str, ...]) -> pd.DataFrame:
    """A CSV with `text` columns kept verbatim (a candidate called "NA" stays "NA"), `flags`
    as booleans and every other column numeric (empty → NaN)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in frame.columns:
        if column in flags:
            frame[column] = frame[column].map(_flag).astype(bool)
        elif column not in text:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


@dataclass
class PlanOutput:
    """Everything the planner wrote, as read from its output directory."""

    plan: dict[str, Any]
    candidates: pd.DataFrame  # sorted: rank, then best simulated attainment, then name
    results: pd.DataFrame
    iterations: pd.DataFrame | None  # recommended/iterations.csv, when it was written
    summary: dict[str, Any]  # recommended/summary.json, {} when absent

    @property
    def slo(self) -> dict[str, Any]:
        return self.plan.get("slo") or {}

    def row(self, name: str | None) -> pd.Series | None:
        """The candidates.csv row of `name` (None for no such candidate)."""
        match = self.candidates[self.candidates["candidate"] == name]
        return None if match.empty else match.iloc[0]


def _ranked(candidates: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Candidates by rank; unranked ones after, the closest to meeting the SLO first."""
    best = results.groupby("candidate")["attainment"].max()
    ranked = candidates.assign(_shortfall=-candidates["candidate"].map(best).fillna(-1.0))
    ranked = ranked.sort_values(["rank", "_shortfall", "candidate"], na_position="last", kind="stable")
    return ranked.drop(columns="_shortfall").reset_index(drop=True)


def load(out_dir: Path) -> PlanOutput:
    """Read the planner's files; the recommended run's timeline and summary are optional."""
    results = _read_csv(out_dir / "results.csv", ("candidate", "point_key"), ("slo_met", "cached"))
    candidates = _read_csv(out_dir / "candidates.csv",
                           ("candidate", "hardware", "model", "scheduler", "knobs", "reason", "calibration",
                            "calibration_use", "time_by_source"),
                           ("feasible", "recommended"))
    iterations_path = out_dir / "recommended" / "iterations.csv"
    summary_path = out_dir / "recommended" / "summary.json"
    return PlanOutput(
        plan=json.loads((out_dir / "plan.json").read_text()),
        candidates=_ranked(candidates, results),
        results=results,
        iterations=_read_csv(iterations_path, ("stage", "role"), ()) if iterations_path.exists() else None,
        summary=json.loads(summary_path.read_text()) if summary_path.exists() else {},
    )
