"""The plan and its candidates in words, shared by the recommendation, the table and the notes.

The SLO ("TTFT ≤ 500 ms, TPOT ≤ 50 ms for ≥ 90 % of requests"), the plan's goal, what one
replica of a candidate is ("H100 (Llama-3.1-8B, TP 2, vllm)") and how the candidate was
modelled (its calibration, headlined by model_basis.py). Each is written once here so the
recommendation and the candidate table never describe the same thing in two ways.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from .formatting import integer, missing, percent, seconds, sig
from .model_basis import dominant, shares_text, time_shares
from .plan_data import PlanOutput

UNCALIBRATED = "roofline only — uncalibrated, expect larger error"


def targets_text(slo: dict[str, Any]) -> str:
    """"TTFT ≤ 500 ms, TPOT ≤ 50 ms": the per-request targets that are set."""
    targets = [f"{name} ≤ {seconds(slo.get(key))}"
               for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))
               if not missing(slo.get(key))]
    return ", ".join(targets) or "no latency target"


def _slo_text(slo: dict[str, Any]) -> str:
    """"TTFT ≤ 500 ms, TPOT ≤ 50 ms for ≥ 90 % of requests" (DistServe's attainment)."""
    attainment = slo.get("attainment")
    text = targets_text(slo)
    return text if missing(attainment) else f"{text} for ≥ {percent(attainment)} of requests"


def replica_text(row: pd.Series) -> str:
    """"H100 (Llama-3.1-8B, TP 2, vllm)": what one replica is."""
    parallel = f"TP {integer(row['tp'])}" + (f", PP {integer(row['pp'])}" if row["pp"] > 1 else "")
    return f"{row['hardware']} ({row['model']}, {parallel}, {row['scheduler']})"


def goal_text(data: PlanOutput) -> str:
    workload = (data.plan.get("workload") or {}).get("description") or "the workload"
    return f"{workload} at {sig(data.plan.get('target_rate_req_s'))} req/s within {_slo_text(data.slo)}"


def calibrated(row: pd.Series) -> bool:
    """Whether a profile gave the candidate kernels (directly, scaled or transferred)."""
    return row["calibration"].strip().lower() not in ("", "none")


def calibration_text(row: pd.Series) -> str:
    """How the candidate was modelled: headlined by where most of its kernel time came from
    (model_basis.py; "calibrated" only for a profile measured on its own device), with the
    share of time by source of its capacity run and its measured p90 kernel error."""
    profile = Path(row["calibration"]).name if calibrated(row) else None
    error = row["calibration_error_p90"]
    detail = "error not reported" if missing(error) else f"±{percent(error)} p90 kernel error"
    shares = time_shares(row.get("time_by_source"))
    if shares is None:  # no simulated point (infeasible), or a plan written before time_by_source
        if profile is None:
            return UNCALIBRATED
        transferred = str(row.get("calibration_use") or "").startswith("transferred")
        return f"transferred from {profile}, {detail}" if transferred else f"calibrated ({profile}), {detail}"
    kind = dominant(shares)
    if profile is None or kind == "roofline":
        head = UNCALIBRATED if profile is None else f"mostly roofline ({profile} covers little of it)"
    else:
        head = {"calibrated": f"calibrated ({profile})", "transferred": f"transferred from {profile}",
                "scaled": f"scaled from another dtype of {profile}"}[kind]
    return f"{head}; time: {shares_text(shares)}" + ("" if profile is None else f"; {detail}")
