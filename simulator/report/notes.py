"""The notes on method at the end of the report: how the numbers were obtained.

The ranking objective, how the capacity search brackets each candidate's max rate, what
meeting the SLO means (attainment, goodput), and where every simulated number can be found
(results.csv, candidates.csv), so a reader can check the report against its inputs.
"""
from __future__ import annotations

from typing import Any

from .blocks import Bullets, Link
from .describe import targets_text
from .formatting import integer, percent, sig
from .plan_data import PlanOutput

OBJECTIVES = {
    "min_cost": "lowest cost per hour that meets the SLO at the target rate",
    "max_goodput_per_dollar": "most SLO-meeting requests per dollar",
    "min_devices": "fewest devices that meet the SLO at the target rate",
}


def notes(data: PlanOutput) -> Bullets:
    plan = data.plan
    objective: Any = plan.get("objective")  # plan.json's
    workload = plan.get("workload") or {}
    cached = int(data.results["cached"].sum())
    return Bullets((
        (f"Ranking objective: {objective} — {OBJECTIVES.get(objective, 'as set in the plan')}.",),
        ("Capacity search: each candidate was simulated at a series of request rates and its capacity bracketed "
         "between the highest rate that met the SLO and the lowest that did not, the bracket narrowed to the "
         f"plan's relative tolerance ({percent(plan.get('tolerance'))}). A max rate is the highest passing rate "
         "found: a lower bound on the capacity, the lowest failing rate being at most that much higher.",),
        (f"The SLO: a request meets it when it completes with {targets_text(data.slo)}; a rate passes when "
         f"the share of requests meeting it (the attainment) is at least {percent(data.slo.get('attainment'))}. "
         "Goodput counts only those requests.",),
        ("Every number here is simulated, not measured: all ", str(len(data.results)), " points are in ",
         Link("results.csv", "results.csv"), f" ({cached} reused from cache), the candidates in ",
         Link("candidates.csv", "candidates.csv"), ". Workload: ", str(workload.get("description") or "—"), ", ",
         integer(workload.get("requests")), " requests, trace rate ", sig(workload.get("trace_rate_req_s")),
         f" req/s; plan: {plan.get('plan_file') or '—'}."),
    ))
