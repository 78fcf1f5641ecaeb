"""The report's opening: what to deploy and what it costs, its margin, and how far to trust it.

For a reader with one minute. When a candidate is recommended: a headline with its replicas,
cost per hour and per million output tokens, then the margin over the runner-up set against
the model's measured kernel error, and a caution for each way the pick is within that error.
When none meets the SLO: that, and the closest candidate with its best simulated attainment.
"""
from __future__ import annotations

from typing import Any

import pandas as pd

from .blocks import Block, Paragraph
from .describe import calibrated, calibration_text, goal_text, replica_text
from .formatting import count, integer, missing, money, percent, sig
from .plan_data import PlanOutput

_METRICS = {  # plan.json margin metric → (label, formatter)
    "cost_per_hour": ("cost per hour", lambda v: f"{money(v)}/hour"),
    "cost_per_million_output_tokens": ("cost per million output tokens", money),
    "devices_needed": ("devices", integer),
    "goodput_requests_per_dollar": ("SLO-meeting requests per dollar", sig),
}


def _margin_text(data: PlanOutput) -> str:
    margin: Any = data.plan.get("margin") or {}  # plan.json's: values None or NaN where unset
    if margin.get("runner_up") is None:
        return "No other candidate meets the SLO, so there is no runner-up to compare with."
    label, fmt = _METRICS.get(margin.get("metric"), (str(margin.get("metric")).replace("_", " "), sig))
    value = margin.get("value")
    relative = margin.get("relative")
    amount = fmt(abs(value)) if not missing(value) else "—"
    share = f" ({percent(abs(relative))})" if not missing(relative) else ""
    return f"Runner-up: “{margin.get('runner_up')}”, {amount}{share} behind on {label}."


def _trust_text(data: PlanOutput, row: pd.Series) -> str:
    """How far to trust the pick: its calibration, and whether the margin exceeds model error."""
    basis = f"Performance model of the recommended configuration: {calibration_text(row)}."
    if row["reason"]:
        basis += f" Planner's note on it: {row['reason']}."
    margin: Any = data.plan.get("margin") or {}  # plan.json's: values None or NaN where unset
    relative = margin.get("relative")
    runner = data.row(margin.get("runner_up"))
    if missing(relative) or runner is None:
        return basis
    pair = (row, runner)
    unknown = [r["candidate"] for r in pair if not calibrated(r) or missing(r["calibration_error_p90"])]
    if unknown:
        names = " and ".join(f"“{name}”" for name in unknown)
        return (f"{basis} The margin also carries the model error of {names}, which is not quantified "
                "(no calibration error in candidates.csv).")
    error = max(float(r["calibration_error_p90"]) for r in pair)
    if abs(relative) <= error:
        return (f"{basis} The {percent(abs(relative))} margin is within the p90 kernel error ({percent(error)}): "
                "treat the two as a tie and check both.")
    return f"{basis} The {percent(abs(relative))} margin exceeds the p90 kernel error ({percent(error)})."


def _cautions(data: PlanOutput, row: pd.Series) -> list[Block]:
    """A flag for each way the recommendation is within the model's measured error
    (plan.json's margin: `margin_within_uncertainty`, `headroom_within_uncertainty`)."""
    margin = data.plan.get("margin") or {}
    flags = []
    if margin.get("margin_within_uncertainty"):
        flags.append(f"the {percent(abs(margin['relative']))} margin over “{margin.get('runner_up')}” is smaller "
                     f"than the model's p90 kernel error ({percent(margin.get('uncertainty'))}): the simulation "
                     "does not settle which of the two is better")
    headroom, error = margin.get("headroom_over_target"), row["calibration_error_p90"]
    if margin.get("headroom_within_uncertainty") and not missing(headroom) and not missing(error):
        flags.append(f"its capacity exceeds the target rate by {percent(headroom)}, less than its p90 kernel error "
                     f"({percent(error)}): a service that much slower would miss the target; consider one more "
                     "replica")
    return [Paragraph((f"Caution: {flag}.",)) for flag in flags]


def _best_point(results: pd.DataFrame, name: str) -> pd.Series | None:
    """A candidate's simulated point with the highest attainment (the highest rate among ties)."""
    points = results[results["candidate"] == name].sort_values(["attainment", "rate_req_s"], kind="stable")
    return None if points.empty else points.iloc[-1]


def _no_recommendation(data: PlanOutput) -> list[Block]:
    blocks: list[Block] = [Paragraph((f"No candidate meets the SLO: none of the {len(data.candidates)} candidates "
                                      f"serves {goal_text(data)}.",), lead=True)]
    if data.candidates.empty:
        return blocks
    closest = data.candidates.iloc[0]
    text = f"Closest: “{closest['candidate']}”, {replica_text(closest)}"
    if closest["reason"]:
        text += f": {closest['reason']}"
    best = _best_point(data.results, closest["candidate"])
    if best is not None:
        text += (f". Its best simulated attainment is {percent(best['attainment'])} "
                 f"at {sig(best['rate_req_s'])} req/s")
    return blocks + [Paragraph((text + ".",))]


def recommendation(data: PlanOutput) -> list[Block]:
    """The answer first: what to deploy and what it costs, its margin, and how far to trust it."""
    row = data.row(data.plan.get("recommended"))
    if row is None:
        return _no_recommendation(data)
    headline = (f"Serve {goal_text(data)} with {integer(row['replicas_needed'])} × {replica_text(row)}: "
                f"{money(row['cost_per_hour'])}/hour, {money(row['cost_per_million_output_tokens'])} per million "
                f"output tokens, {count(row['devices_needed'], 'device')} (candidate “{row['candidate']}”).")
    return [Paragraph((headline,), lead=True),
            Paragraph((_margin_text(data), " ", _trust_text(data, row))), *_cautions(data, row)]
