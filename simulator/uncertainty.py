"""Uncertainty bands of a run (`--uncertainty`): the headline metrics re-run with the profile's
kernels at the ends of their measured error.

The kernels a calibration profile gave the run (perf/profile_use.py: calibrated, scaled or
transferred) carry the measured p90 error of how they were made; two more runs scale them by
1 / (1 + e) and 1 + e, each by its own source and op's e, and the band is what those runs give.
"""
from __future__ import annotations

from dataclasses import replace
from typing import Any

from .api import Setup, run_setup
from .perf.cost_model import CostModel
from .perf.kernel_times import SOURCES
from .perf.wafer_cost import MESH_MODEL_NOTE
from .topology.pools import Pool
from .workloads.trace import TraceIndex

BAND_METRICS = (("ttft_s", "mean"), ("ttft_s", "p90"), ("tpot_s", "mean"), ("tpot_s", "p90"), ("e2e_s", "mean"),
                ("e2e_s", "p90"), ("throughput", "output_tokens_per_s"), ("throughput", "requests_per_s"))


def uncertainty_bands(setup: Setup, index: TraceIndex, summary: dict[str, Any]) -> dict[str, Any]:
    """Low/high values of the headline metrics when the kernels the profile gave the run
    take 1 / (1 + e) and (1 + e) times as long, e being the measured p90 error of the route
    that made them, per kernel source and op (perf/profile_use.py: the profile's held-out
    error for calibrated kernels, plus the dtype-scaling error for scaled ones, the measured
    transfer error for transferred ones): a deliberately pessimistic, fully correlated error.
    Roofline kernels and host time keep their times (no measured error). Without a profile,
    or when no kernel of the run (`summary`'s shares) came from it, there is no band."""
    errors = _route_errors(setup, summary)
    if not errors:
        if setup.on_wafers:
            note = (f"no measured error band: {MESH_MODEL_NOTE}; its errors against published figures are in "
                    "validation/README.md")
        elif all(pool.calibration is None for pool in setup.pools()):
            note = "uncalibrated roofline: no measured error band; calibrate the device"
        else:
            note = "no kernel of this run came from the profile: no measured error band"
        return {"calibrated": False, "note": note}
    by_source: dict[str, dict[str, float]] = {}
    for (source, op), error in sorted(errors.items()):
        by_source.setdefault(source, {})[op] = error
    bands: dict[str, Any] = {"calibrated": True, "kernel_error_p90": max(errors.values()),
                             "kernel_error_p90_by_source": by_source,
                             "method": "the profile's kernels scaled by 1/(1+e) and 1+e, e the measured p90 error of "
                                       "their source and op in this run, all together"}
    runs = [run_setup(_scaled(setup, summary, high), index, None, keep_frames=False).summary for high in (False, True)]
    for block, key in BAND_METRICS:
        values = sorted(r[block][key] for r in runs)
        bands.setdefault(block, {})[key] = {"low": values[0], "high": values[1]}
    return bands


def _route_errors(setup: Setup | Pool, summary: dict[str, Any]) -> dict[tuple[str, str], float]:
    """Measured p90 kernel error by (source, op), for the sources that took time in the run,
    over `setup`'s pools."""
    shares = summary["provenance"]["share_of_time_by_source"]
    errors: dict[tuple[str, str], float] = {}
    for pool in setup.pools() if isinstance(setup, Setup) else [setup]:
        if pool.calibration is not None:
            for (source, op), error in pool.calibration.errors().items():
                if shares.get(source, 0.0) > 0.0:
                    errors[(source, op)] = max(errors.get((source, op), 0.0), error)
    return errors


def _scaled(setup: Setup, summary: dict[str, Any], high: bool) -> Setup:
    """`setup` with every pool's profile-made kernels scaled by 1 + e (high) or 1 / (1 + e),
    e being that pool's own error for their source and op (`_route_errors`)."""
    def cost(pool: Pool) -> CostModel:
        scale = {(SOURCES.index(source), op): (1.0 + error) ** (1 if high else -1)
                 for (source, op), error in _route_errors(pool, summary).items()}
        # the pool's own cost model class (a CPU's serial dispatch); wafers carry no profile, so never come here
        return type(pool.cost)(pool.system, setup.model, pool.deployment, pool.calibration, kernel_scale=scale,
                               host_overlapped=pool.cost.host_overlapped, budget_tokens=pool.cost.budget_tokens,
                               graphs=pool.cost.graphs, mixed_decode_slowdown=pool.cost.mixed_decode_slowdown)

    if setup.disagg is None:
        return replace(setup, cost=cost(setup.pools()[0]))
    split = setup.disagg
    prefill = replace(split.prefill, cost=cost(split.prefill))
    return replace(setup, cost=prefill.cost, disagg=replace(split, prefill=prefill,
                                                            decode=replace(split.decode, cost=cost(split.decode))))
