"""One point of a plan: one replica of a candidate serving the workload at one rate.

`evaluate` is what every executor runs, in a worker process or on a Ray node: it prepares
the candidate (once per process and candidate), replays the workload at the point's rate,
and returns the point's metrics, a flat dict of plain numbers that is cached as JSON and
becomes a row of results.csv. Tasks carry only small, picklable values; the workload is
handed to each worker once by its executor.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from ..api import Setup, prepare, run_setup
from ..metrics.slo import SloSpec
from .cache import SEED
from .workload import Workload


@dataclass(frozen=True)
class PointTask:
    """What a worker needs to simulate a point: the candidate's `api.prepare` arguments
    (as canonical JSON, see `Candidate.args_key`), the rate and the SLO."""

    args_key: str
    rate: float
    slo: SloSpec


_setups: dict[str, Setup] = {}  # prepared candidates of this process


def evaluate(task: PointTask, workload: Workload) -> dict[str, Any]:
    """Simulate one point; its metrics (see `metrics`)."""
    setup = _setups.get(task.args_key)
    if setup is None:
        setup = _setups[task.args_key] = prepare(**json.loads(task.args_key))
    result = run_setup(setup, workload.at_rate(task.rate), keep_frames=False, slo=task.slo, seed=SEED)
    return metrics(result.summary)


def metrics(summary: dict[str, Any]) -> dict[str, Any]:
    """A run's summary.json as the point's metrics: results.csv's simulated columns, and the
    share of its time by source (perf/kernel_times.SOURCES), which candidates.csv reports."""
    slo, ttft, tpot = summary["slo"], summary["ttft_s"], summary["tpot_s"]
    throughput, util, requests = summary["throughput"], summary["utilization"], summary["requests"]
    return {
        "slo_met": bool(slo["met"]), "attainment": slo["attainment"],
        "ttft_p50_s": ttft["p50"], "ttft_p90_s": ttft["p90"], "ttft_p99_s": ttft["p99"],
        "tpot_p50_s": tpot["p50"], "tpot_p90_s": tpot["p90"], "tpot_p99_s": tpot["p99"],
        "e2e_p90_s": summary["e2e_s"]["p90"], "goodput_req_s": slo["goodput_requests_per_s"],
        "throughput_req_s": throughput["requests_per_s"], "output_tokens_per_s": throughput["output_tokens_per_s"],
        "mfu": util["mfu"], "mbu": util["mbu"], "kv_cache_peak": util["kv_cache_peak"],
        "kv_cache_mean": util["kv_cache_mean"], "energy_j": summary["energy_j"], "makespan_s": summary["makespan_s"],
        "completed": requests["completed"], "rejected": requests["rejected"],
        "time_by_source": {source: round(share, 4)
                           for source, share in summary["provenance"]["share_of_time_by_source"].items()},
    }
