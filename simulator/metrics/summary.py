"""Build `summary.json` (DESIGN section 7) from a finished run's recorder.

Definitions: makespan is from time 0 (the trace's first arrival) to the last completion;
throughputs are completed work over the makespan; MFU and MBU are FLOPs and bytes over
(makespan x peak x devices), i.e. time-averaged over the whole run, idle time included;
energy is busy power over iterations plus idle power for every device's idle time; cost is
the devices' hourly price over the makespan.
"""
from __future__ import annotations

from typing import Any

import numpy as np

from .distribution import summarize
from .recorder import Recorder

SCHEMA = "simulator.summary/1"


def provenance(seconds_by_source: np.ndarray, calibration: str | None) -> dict[str, Any]:
    """Where the simulated busy time came from, and whether the run left the calibrated range.

    Kernel time is "calibrated-interpolation" (inside the measured grid), "calibrated-fit"
    (the profile's model, outside the grid) or "roofline" (no profile covers the kernel);
    "host-overhead" is launch gaps and the engine's per-iteration CPU time.
    """
    from ..perf.kernel_times import FIT, HOST, INTERP, ROOFLINE, SOURCES

    total = float(seconds_by_source.sum()) or 1.0
    kernels = float(seconds_by_source[[INTERP, FIT, ROOFLINE]].sum()) or 1.0
    outside = float(seconds_by_source[FIT] + seconds_by_source[ROOFLINE]) / kernels
    note = ("no calibration profile: every kernel is the uncalibrated roofline" if calibration is None else
            f"{outside:.0%} of kernel time is outside the profile's measured grid" if outside > 0.005 else
            "every kernel inside the profile's measured grid")
    return {
        "calibration": calibration,
        "share_of_time_by_source": {name: float(seconds_by_source[i]) / total for i, name in enumerate(SOURCES)},
        "outside_calibrated_range": outside,
        "note": note,
        "host_overhead_share": float(seconds_by_source[HOST]) / total,
    }


def _arr(a) -> np.ndarray:
    return np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0)


def build_summary(*, rec: Recorder, total: int, hardware: str, model: str, scheduler: str,
                  parallelism: dict[str, int], devices: int, idle_w: float, price_per_hour: float,
                  kv_peak: float, kv_mean: float, preemptions: int, skipped: dict[str, int],
                  wall_s: float, events: int, calibration: str | None = None) -> dict[str, Any]:
    makespan = rec.last_finish_s
    span = makespan if makespan > 0 else 1.0
    idle_device_s = max(0.0, makespan * devices - rec.busy_device_s)
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
            "mfu": rec.flops / (span * rec.peak_flops * devices),
            "mbu": rec.bytes / (span * rec.bandwidth * devices),
            "kv_cache_peak": kv_peak,
            "kv_cache_mean": kv_mean,
        },
        "preemptions": preemptions,
        "energy_j": rec.active_energy_j + idle_w * idle_device_s,
        "cost_usd": price_per_hour * devices * makespan / 3600.0,
        "sim": {"wall_s": wall_s, "iterations": rec.iteration_count, "events": events},
        "provenance": provenance(rec.provenance_s, calibration),
    }
    if rec.slo_judged:
        summary["slo"] = {
            "ttft_s": rec.slo_target("ttft_s"),
            "tpot_s": rec.slo_target("tpot_s"),
            "attainment": rec.slo_met / rec.slo_judged,
            "goodput_requests_per_s": rec.slo_met / span,
            "judged_requests": rec.slo_judged,
        }
    return summary
