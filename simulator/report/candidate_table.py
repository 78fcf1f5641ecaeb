"""The table of every candidate, feasible or not, in rank order.

One row per candidate: what a replica is, its scheduler knobs, devices needed (replicas ×
devices per replica), capacity, cost, energy, how it was modelled and, for an infeasible one,
why. The recommended row is marked, and infeasible rows are greyed in the HTML.
"""
from __future__ import annotations

import json

import pandas as pd

from .blocks import Table
from .describe import calibration_text, replica_text
from .formatting import integer, missing, money, sig
from .plan_data import PlanOutput

TABLE_HEADER = ("Rank", "Candidate", "Replica", "Knobs", "Feasible", "Devices", "Max rate/replica (req/s)",
                "$/hour", "$/M output tokens", "J/output token", "Calibration", "Reason")


def _knobs(text: str) -> str:
    """Scheduler knobs as "key=value, …" from their JSON (verbatim when it is not JSON)."""
    try:
        knobs = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return text
    if not isinstance(knobs, dict):
        return text
    return ", ".join(f"{key}={value}" for key, value in sorted(knobs.items())) or "—"


def _devices(row: pd.Series) -> str:
    """"6 (3 × 2)": devices needed, as replicas × devices per replica."""
    if missing(row["devices_needed"]):
        return "—"
    return (f"{integer(row['devices_needed'])} ({integer(row['replicas_needed'])} × "
            f"{integer(row['devices_per_replica'])})")


def candidate_table(data: PlanOutput) -> Table:
    """Every candidate, feasible or not, in rank order."""
    rows, classes = [], []
    for _, row in data.candidates.iterrows():
        recommended = row["candidate"] == data.plan.get("recommended")
        rows.append((
            integer(row["rank"]), row["candidate"] + (" (recommended)" if recommended else ""), replica_text(row),
            _knobs(row["knobs"]), "yes" if row["feasible"] else "no", _devices(row), sig(row["max_rate_req_s"]),
            money(row["cost_per_hour"]), money(row["cost_per_million_output_tokens"]),
            sig(row["energy_per_output_token_j"]), calibration_text(row), row["reason"] or "—",
        ))
        classes.append("recommended" if recommended else "" if row["feasible"] else "infeasible")
    return Table(TABLE_HEADER, tuple(rows), tuple(classes))
