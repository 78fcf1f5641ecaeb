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


def _arr(a) -> np.ndarray:
    return np.frombuffer(a, dtype=np.float64) if len(a) else np.zeros(0)


def build_summary(*, rec: Recorder, total: int, hardware: str, model: str, scheduler: str,
                  parallelism: dict[str, int], devices: int, idle_w: float, price_per_hour: float,
                  kv_peak: float, kv_mean: float, preemptions: int, skipped: dict[str, int],
                  wall_s: float, events: int) -> dict[str, Any]:
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
