"""From one replica's capacity to the service a candidate needs, and the ranking.

A candidate that sustains `max_rate` req/s per replica within the SLO needs
ceil(target_rate / max_rate) replicas; its devices and hourly cost follow from the
replica's devices and their price. Cost per million output tokens is that hourly cost over
the output tokens the service produces in an hour at the target rate (the workload's mean
output length times the target rate). Energy per output token is the simulated energy of
one replica at its capacity over the tokens it produced, idle power included.

Objectives (lower is better except goodput per dollar):
- min_cost: cost per hour of the whole service;
- min_devices: devices of the whole service;
- max_goodput_per_dollar: goodput per dollar of one replica. Goodput is DistServe's (Zhong
  et al., OSDI 2024): the highest request rate served within the SLO attainment goal,
  i.e. the replica's capacity; per dollar, max_rate x 3600 / the replica's hourly cost.
  It rates the hardware itself, without the rounding up to whole replicas. (A point's
  own goodput_req_s, SLO-meeting completions over its makespan, is lower on a short
  trace, whose makespan includes draining the last requests.)
Ties go to the lower cost per hour, then the higher capacity, then the plan's order. The
margin is how much better the recommended candidate is than the runner-up, in the
objective's metric and relative to the runner-up's value; it also says whether that margin,
and the recommended service's capacity headroom over the target rate, are within the
model's measured error (the candidates' p90 kernel error: a pick or a capacity that close
is not settled by the simulation).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, cast

from ..metrics.slo import SloSpec
from .candidates import Candidate
from .search import CapacitySearch

# objective -> (metric, +1 when lower is better / -1 when higher is)
OBJECTIVE_METRICS = {"min_cost": ("cost_per_hour", 1), "min_devices": ("devices_needed", 1),
                     "max_goodput_per_dollar": ("goodput_requests_per_dollar", -1)}


@dataclass
class Sizing:
    """One candidate's outcome: its capacity per replica and what serving the target takes."""

    candidate: Candidate
    reason: str = ""
    max_rate: float | None = None
    replicas: int | None = None
    devices: int | None = None
    cost_per_hour: float | None = None
    cost_per_million_output_tokens: float | None = None
    energy_per_output_token_j: float | None = None
    goodput_requests_per_dollar: float | None = None
    time_by_source: dict[str, float] | None = None  # share of the capacity point's time, by source
    headroom: float | None = None  # replicas x capacity over the target rate, minus 1
    rank: int | None = None
    recommended: bool = False

    @property
    def feasible(self) -> bool:
        return self.max_rate is not None

    def metric(self, name: str) -> float | None:
        return {"cost_per_hour": self.cost_per_hour, "devices_needed": self.devices,
                "goodput_requests_per_dollar": self.goodput_requests_per_dollar}[name]


def size(candidate: Candidate, search: CapacitySearch | None, points: dict[float, dict[str, Any]],
         target_rate: float, mean_output_tokens: float, slo: SloSpec) -> Sizing:
    """Size a candidate from its finished search and its points' metrics by rate."""
    if search is None:  # no deployment could be prepared
        return Sizing(candidate, reason=candidate.reason)
    if search.max_rate is None:
        return Sizing(candidate, reason=_miss_reason(search.low, points[search.low], slo))
    max_rate, best = search.max_rate, points[search.max_rate]
    replica_cost, devices = candidate.cost_per_replica_hour, candidate.devices_per_replica
    assert devices is not None  # searched candidates are feasible
    replicas = math.ceil(target_rate / max_rate - 1e-9)
    # unpriced hardware (a wafer's spec states no price) is sized but has no cost to rank by
    cost_per_hour = replicas * replica_cost if replica_cost is not None else None
    tokens_per_hour = target_rate * mean_output_tokens * 3600
    produced = best["output_tokens_per_s"] * best["makespan_s"]
    reasons = [f"capacity is at least {max_rate:g} req/s (rates.max); raise rates.max to measure it"
               if search.capped else "", _burst_warning(max_rate, best),
               "" if replica_cost is not None else "no price in its spec, so no cost: set its price_per_hour to "
                                                   "rank it by cost"]
    reason = "; ".join(r for r in reasons if r)
    energy = best["energy_j"] / produced if produced and best["energy_j"] is not None else None
    return Sizing(candidate, reason, max_rate, replicas, replicas * devices, cost_per_hour,
                  cost_per_hour / tokens_per_hour * 1e6 if cost_per_hour is not None else None, energy,
                  max_rate * 3600 / replica_cost if replica_cost else None, best.get("time_by_source"),
                  replicas * max_rate / target_rate - 1.0)


# A run that completes requests at under this fraction of the offered rate spent longer
# draining its last requests than receiving load: it measured a burst, not a sustained rate.
SUSTAINED_FRACTION = 0.5


def _burst_warning(rate: float, point: dict[str, Any]) -> str:
    """Why a capacity found on a workload too short for the rate is optimistic, or ""."""
    served = point["throughput_req_s"]
    if served >= SUSTAINED_FRACTION * rate:
        return ""
    return (f"at {rate:g} req/s its {point['completed']} requests finish {point['makespan_s']:.3g} s after the first "
            f"arrives, {served:.3g} req/s served of {rate:g} offered: a burst more than a sustained load, so this "
            "capacity is optimistic; give the workload more requests")


def _miss_reason(rate: float, point: dict[str, Any], slo: SloSpec) -> str:
    """Why a candidate misses the SLO even at the lowest rate searched."""
    observed = [f"{name}_p90 {point[f'{name}_p90_s']:.4g} s vs {target:g} s"
                for name, target in (("ttft", slo.ttft_s), ("tpot", slo.tpot_s), ("e2e", slo.e2e_s))
                if target is not None]
    attained = "n/a" if point["attainment"] is None else f"{point['attainment']:.1%}"
    return (f"misses SLO even at {rate:g} req/s: attainment {attained} < {slo.attainment:.0%} required "
            f"({', '.join(observed)})")


def rank(sizings: list[Sizing], objective: str) -> dict[str, Any]:
    """Rank the feasible candidates (setting rank and recommended) and return the margin:
    {"runner_up", "metric", "value", "relative"}, value and relative None without a runner-up."""
    metric, sign = OBJECTIVE_METRICS[objective]
    ranked = sorted((s for s in sizings if s.feasible and s.metric(metric) is not None),  # stable: plan order
                    key=lambda s: (sign * cast(float, s.metric(metric)),
                                   math.inf if s.cost_per_hour is None else s.cost_per_hour, -cast(float, s.max_rate)))
    for position, sizing in enumerate(ranked, start=1):
        sizing.rank = position
    margin: dict[str, Any] = {"runner_up": None, "metric": metric, "value": None, "relative": None}
    if ranked:
        ranked[0].recommended = True
        margin.update(_uncertainty(ranked[0], ranked[1] if len(ranked) > 1 else None))
    if len(ranked) > 1:
        best, runner_up = ranked[0].metric(metric), ranked[1].metric(metric)
        assert best is not None and runner_up is not None  # ranked ones have the metric
        value = abs(runner_up - best)
        margin.update(runner_up=ranked[1].candidate.name, value=value,
                      relative=value / abs(runner_up) if runner_up else None)
        relative, error = margin["relative"], margin["uncertainty"]
        margin["margin_within_uncertainty"] = (None if relative is None or error is None else relative <= error)
    return margin


def _uncertainty(best: Sizing, runner_up: Sizing | None) -> dict[str, Any]:
    """How the recommendation compares with the model's error: `uncertainty`, the largest
    measured p90 kernel error of the recommended candidate and the runner-up (None when one
    of them has none: roofline only); the service's capacity headroom over the target rate,
    and whether it is within the recommended candidate's own error (a capacity short by that
    error would miss the target). `margin_within_uncertainty` is set by `rank`."""
    pair = [best] + ([runner_up] if runner_up is not None else [])
    errors = [s.candidate.calibration_error_p90 for s in pair]
    own, headroom = errors[0], best.headroom
    assert headroom is not None  # the recommended candidate is feasible
    return {"uncertainty": None if None in errors else max(cast("list[float]", errors)),
            "margin_within_uncertainty": None, "headroom_over_target": headroom,
            "headroom_within_uncertainty": None if own is None else headroom <= own}
