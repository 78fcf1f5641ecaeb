"""The files a plan writes into its output directory (the report renderer's input).

- results.csv: one row per point of the plan (simulated now or read from the cache);
- candidates.csv: one row per candidate, with its sizing, cost and rank;
- plan.json: the plan's inputs and the recommendation with its margin (and whether the
  margin and the capacity headroom over the target are within the model's error).
Column names and keys are a contract with simulator/report/planning_report.py. Booleans
are written `true`/`false`, missing values as empty cells (CSV) or null (JSON). Each file is
written to a temporary name and moved into place, so a reader never sees half a file.
"""
from __future__ import annotations

import csv
import io
import json
import os
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .plan_file import Plan
from .sizing import Sizing
from .workload import Workload

RESULT_COLUMNS = ("candidate", "rate_req_s", "slo_met", "attainment", "ttft_p50_s", "ttft_p90_s", "ttft_p99_s",
                  "tpot_p50_s", "tpot_p90_s", "tpot_p99_s", "e2e_p90_s", "goodput_req_s", "throughput_req_s",
                  "output_tokens_per_s", "mfu", "mbu", "kv_cache_peak", "kv_cache_mean", "energy_j", "cost_usd",
                  "devices", "makespan_s", "completed", "rejected", "cached", "point_key")
CANDIDATE_COLUMNS = ("candidate", "hardware", "model", "scheduler", "tp", "pp", "knobs", "devices_per_replica",
                     "feasible", "reason", "max_rate_req_s", "replicas_needed", "devices_needed",
                     "price_per_device_hour", "cost_per_hour", "cost_per_million_output_tokens",
                     "energy_per_output_token_j", "calibration", "calibration_use", "calibration_error_p90",
                     "time_by_source",
                     "recommended", "rank")


@dataclass(frozen=True)
class Point:
    """One evaluated point: the candidate's name, the rate, the simulated metrics, whether
    they came from the cache, and the cache key."""

    candidate: str
    rate: float
    metrics: dict[str, Any]
    cached: bool
    key: str


def write_outputs(out_dir: Path, plan: Plan, workload: Workload, points: list[Point], sizings: list[Sizing],
                  margin: dict[str, Any]) -> None:
    by_name = {s.candidate.name: s.candidate for s in sizings}
    results = []
    for p in points:
        candidate = by_name[p.candidate]
        price = candidate.cost_per_replica_hour
        cost = p.metrics["makespan_s"] * price / 3600 if price is not None else None
        results.append({"candidate": p.candidate, "rate_req_s": p.rate, **p.metrics, "cost_usd": cost,
                        "devices": candidate.devices_per_replica, "cached": p.cached, "point_key": p.key})
    _write_csv(out_dir / "results.csv", RESULT_COLUMNS, results)
    _write_csv(out_dir / "candidates.csv", CANDIDATE_COLUMNS, [_candidate_row(s) for s in sizings])
    recommended = next((s.candidate.name for s in sizings if s.recommended), None)
    slo = plan.slo
    summary = {
        "plan_file": str(plan.path), "objective": plan.spec.objective, "target_rate_req_s": plan.spec.target_rate,
        "slo": {"ttft_s": slo.ttft_s, "tpot_s": slo.tpot_s, "e2e_s": slo.e2e_s, "attainment": slo.attainment},
        "workload": {"description": workload.description, "requests": len(workload.records),
                     "trace_rate_req_s": workload.trace_rate},
        "tolerance": plan.spec.tolerance,
        "points_per_round": plan.spec.points_per_round, "recommended": recommended, "margin": margin,
    }
    write_atomic(out_dir / "plan.json", json.dumps(summary, indent=2) + "\n")


def _candidate_row(s: Sizing) -> dict[str, Any]:
    c = s.candidate
    return {
        "candidate": c.name, "hardware": c.spec.hardware, "model": c.deployment.model,
        "scheduler": c.deployment.scheduler, "tp": c.deployment.tp, "pp": c.deployment.pp,
        "knobs": json.dumps(c.spec.deployment_knobs(), sort_keys=True), "devices_per_replica": c.devices_per_replica,
        "feasible": s.feasible, "reason": s.reason, "max_rate_req_s": s.max_rate, "replicas_needed": s.replicas,
        "devices_needed": s.devices, "price_per_device_hour": c.price_per_device_hour,
        "cost_per_hour": s.cost_per_hour, "cost_per_million_output_tokens": s.cost_per_million_output_tokens,
        "energy_per_output_token_j": s.energy_per_output_token_j, "calibration": c.calibration,
        "calibration_use": c.calibration_use, "calibration_error_p90": c.calibration_error_p90,
        "time_by_source": json.dumps(s.time_by_source) if s.time_by_source is not None else None,
        "recommended": s.recommended, "rank": s.rank,
    }


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def _write_csv(path: Path, columns: tuple[str, ...], rows: list[dict[str, Any]]) -> None:
    text = io.StringIO()
    writer = csv.DictWriter(text, columns, lineterminator="\n")
    writer.writeheader()
    writer.writerows({k: _cell(row[k]) for k in columns} for row in rows)
    write_atomic(path, text.getvalue())


def write_atomic(path: Path, text: str) -> None:
    """Write a text file through a temporary file in its directory and os.replace."""
    handle, temp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(handle, "w") as stream:
            stream.write(text)
        os.chmod(temp, 0o644)
        os.replace(temp, path)
    except BaseException:
        os.unlink(temp)
        raise
