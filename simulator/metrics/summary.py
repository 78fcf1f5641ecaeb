"""Build `summary.json` (docs/contracts.md, section 5.1) from a finished run's recorder.

Definitions: makespan is from time 0 (the trace's first arrival) to the last completion;
throughputs are completed work over the makespan; MFU and MBU are FLOPs and bytes over
(makespan x peak x devices), i.e. time-averaged over the whole run, idle time included;
energy is busy power over iterations plus idle power for every device's idle time; cost is
the devices' hourly price over the makespan; either is None (unknown) when a device's spec
does not state its power or its price.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .distribution import summarize
from .recorder import Recorder
from .slo import slo_block

SCHEMA = "simulator.summary/1"


def provenance(seconds_by_source: np.ndarray, calibration: str | None, use: str | None = None,
               model_note: str | None = None) -> dict[str, Any]:
    """Where the simulated busy time came from, and whether the run left the calibrated range.

    Kernel time is "calibrated-interpolation" (inside the measured grid), "calibrated-fit"
    (the profile's model, outside the grid), "scaled" (the profile measured the op in another
    dtype, scaled by the peak ratio), "transferred" (the profile was measured on another
    device: its efficiencies on this device's peaks) or "roofline" (no profile covers the
    kernel); "host-overhead" is launch gaps and the engine's per-iteration CPU time. `use`
    says how the run used the profile (perf/profile_use.py, `AppliedProfile.use`);
    `model_note` what the uncalibrated model is where it is not a roofline (a wafer's mesh model).
    """
    from ..perf.kernel_times import HOST, INTERP, KERNEL_SOURCES, SOURCES

    total = float(seconds_by_source.sum()) or 1.0
    kernels = float(seconds_by_source[list(KERNEL_SOURCES)].sum()) or 1.0
    outside = 1.0 - float(seconds_by_source[INTERP]) / kernels
    uncalibrated = model_note or "every kernel is the uncalibrated roofline"
    note = (f"no calibration profile: {uncalibrated}" if calibration is None else
            f"{use or calibration}; {outside:.0%} of kernel time is outside the profile's measured grid"
            if outside > 0.005 else f"{use or calibration}; every kernel inside the profile's measured grid")
    return {
        "calibration": calibration,
        "calibration_use": use,
        "share_of_time_by_source": {name: float(seconds_by_source[i]) / total for i, name in enumerate(SOURCES)},
        "outside_calibrated_range": outside,
        "note": note,
        "host_overhead_share": float(seconds_by_source[HOST]) / total,
    }


def _arr(a) -> np.ndarray:
    return np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0)


def build_summary(*, rec: Recorder, total: int, hardware: str, model: str, scheduler: str,
                  parallelism: dict[str, int], kv_peak: float, kv_mean: float, preemptions: int,
                  skipped: dict[str, int], wall_s: float, events: int, calibration: str | None = None,
                  calibration_use: str | None = None, model_note: str | None = None,
                  extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """`extra` blocks (prefix_cache, swaps, kv_transfer, pools) go after the standard ones."""
    makespan = rec.last_finish_s
    span = makespan if makespan > 0 else 1.0
    summary: dict[str, Any] = {
        "schema": SCHEMA,
        "hardware": hardware,
        "model": model,
        "scheduler": scheduler,
        "parallelism": parallelism,
        "requests": {"total": total, "completed": rec.completed, "rejected": rec.rejected,
                     "rejected_reasons": dict(sorted(rec.reject_reasons.items())),
                     "skipped_trace_rows": skipped},
        "ttft_s": summarize(_arr(rec.ttft)),
        "tbt_s": rec.tbt.summary(),
        "tpot_s": summarize(_arr(rec.tpot)),
        "e2e_s": summarize(_arr(rec.e2e)),
        "queue_s": summarize(_arr(rec.queue)),
        "throughput": {
            "requests_per_s": rec.completed / span,
            "input_tokens_per_s": rec.input_tokens / span,
            "output_tokens_per_s": rec.output_tokens / span,
        },
        "makespan_s": makespan,
        "utilization": {
            "mfu": rec.flops / (span * rec.capacity("peak_flops")),
            "mbu": rec.bytes / (span * rec.capacity("bandwidth")),
            "kv_cache_peak": kv_peak,
            "kv_cache_mean": kv_mean,
        },
        "preemptions": preemptions,
        # unknown, not zero or free, where a device's spec states no power or no price (a wafer's price)
        "energy_j": (rec.active_energy_j + max(0.0, rec.idle_energy_j(makespan))
                     if all(r.powered for r in rec.replicas) else None),
        "cost_usd": (rec.capacity("price_per_hour") * makespan / 3600.0
                     if all(r.price_per_hour is not None for r in rec.replicas) else None),
        "sim": {"wall_s": wall_s, "iterations": rec.iteration_count, "events": events},
        "provenance": provenance(rec.provenance_s, calibration, calibration_use, model_note),
    }
    if rec.slo_judged or rec.slo is not None:
        targets = {key: rec.slo_target(key) for key in ("ttft_s", "tpot_s") if rec.slo_targets[key]}
        if rec.slo is not None:  # the trace's own targets only show when they differ from --slo's
            targets = {key: "per-request" for key, value in targets.items() if value != getattr(rec.slo, key)}
        summary["slo"] = slo_block(rec.slo_met, rec.slo_judged, makespan, rec.slo, targets)
    summary.update(extra or {})
    return summary
