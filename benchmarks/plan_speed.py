"""Speed of `simulate plan`: a plan of about 200 points, on local processes and on Ray, and
how it scales with the number of workers.

    python benchmarks/plan_speed.py                            # local processes, then a local Ray
    python benchmarks/plan_speed.py --executor ray --workers 1,2 --repeat 3
    python benchmarks/plan_speed.py --executor ray --workers 1,2,4,8,16   # on a 16-core machine
    python benchmarks/plan_speed.py --executor ray --ray-address auto     # on a running cluster

The plan sizes Llama-3.1-8B for 20 req/s of the Azure conversation trace (its first 400
requests) under TTFT p90 <= 0.5 s and TPOT p90 <= 50 ms, over 24 candidates: six GPUs
(H100 SXM and PCIe, H200, A100 80 GB and 40 GB, L40S) x tp 1 or 2 x max_num_seqs 64 or 256. Each
candidate's capacity search takes about 10 points, so the plan simulates about 200, and 24
searches run side by side, enough to keep up to 24 workers busy. Every run goes into a fresh
output directory (nothing cached); the first run of each executor is then repeated into
the same directory, where every point comes from the cache.

Printed per run: points, wall time, points per second, and the speed-up and parallel
efficiency over the first worker count of the list. For Ray, the cluster's start-up
(`ray.init`, a few seconds on a small machine, paid once per session) is timed apart and
left out of the plan's wall time; starting its worker processes and importing the
simulator in them is not. The recommendation must not depend on the executor or the
number of workers: the script fails if it does.
Target (issue "Capacity planning"): under 10 minutes on a 2-core machine, and scaling
across Ray workers. Figures: benchmarks/README.md.
"""
from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path

from simulator.planning.run_plan import run_plan

ROOT = Path(__file__).resolve().parent.parent
PLAN = """\
workload: {{trace: {trace}, max_requests: {requests}}}
model: llama-3.1-8b
slo: {{ttft_p90: 0.5, tpot_p90: 0.05}}
target_rate: 20
objective: min_cost
sweep:
  hardware: [h100-sxm, h100-pcie, h200, a100-80gb-sxm, a100-40gb-sxm, l40s]
  tp: [1, 2]
  knobs: {{max_num_seqs: [64, 256]}}
"""


@contextmanager
def cluster(executor: str, workers: int, address: str | None):
    """A Ray of `workers` CPUs (or the cluster at `address`) for the run, its start-up timed;
    nothing for the local executor."""
    if executor != "ray":
        yield 0.0
        return
    import ray

    started = time.perf_counter()
    ray.init(address=address, num_cpus=None if address else workers, include_dashboard=False,
             log_to_driver=False, configure_logging=False)
    try:
        yield time.perf_counter() - started
    finally:
        ray.shutdown()


def plan_once(executor: str, out: Path, plan: Path, workers: int, address: str | None, rerun: bool):
    """One plan into `out`: (outcome, wall time, start-up time), checking a cached re-run."""
    with cluster(executor, workers, address) as startup_s:
        started = time.perf_counter()
        outcome = run_plan(plan, out, executor=executor, workers=workers, report=False)
        wall = time.perf_counter() - started
        if rerun:
            again_started = time.perf_counter()
            again = run_plan(plan, out, executor=executor, workers=workers, report=False)
            assert again.simulated == 0 and again.cached == len(outcome.points)
            print(f"  re-run with every point cached: {time.perf_counter() - again_started:.1f} s", flush=True)
    return outcome, wall, startup_s


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=("local", "ray", "both"), default="both")
    parser.add_argument("--workers", default="0",
                        help="comma-separated worker counts to compare (local processes / Ray CPUs); "
                             "0 = one per CPU of this machine")
    parser.add_argument("--repeat", type=int, default=1, help="runs per worker count (the median is compared)")
    parser.add_argument("--requests", type=int, default=400, help="requests of the Azure trace per point")
    parser.add_argument("--ray-address", help="a running Ray cluster (then --workers only labels the rows)")
    args = parser.parse_args()
    counts = [int(n) or os.cpu_count() or 1 for n in args.workers.split(",")]
    recommendations = set()
    with tempfile.TemporaryDirectory(prefix="plan-speed-") as scratch:
        directory = Path(scratch)
        trace = ROOT / "workloads" / "traces" / "azure-conv-2023.csv"
        plan = directory / "plan.yaml"
        plan.write_text(PLAN.format(trace=trace, requests=args.requests))
        for executor in ("local", "ray") if args.executor == "both" else (args.executor,):
            baseline = None
            for count in counts:
                walls = []
                for run in range(args.repeat):
                    out = directory / f"{executor}-{count}-{run}"
                    outcome, wall, startup_s = plan_once(executor, out, plan, count, args.ray_address,
                                                         rerun=count == counts[0] and run == 0)
                    walls.append(wall)
                    best = outcome.recommended
                    recommendations.add((best.candidate.name, best.max_rate) if best else None)
                    print(f"{executor:5} workers {count:>3}: {len(outcome.points)} points "
                          f"({outcome.simulated} simulated) in {wall:5.1f} s = {len(outcome.points) / wall:5.2f} "
                          f"points/s" + (f" (+ Ray start-up {startup_s:.1f} s)" if executor == "ray" else "")
                          + f" · recommended {best.candidate.name if best else None}", flush=True)
                median = statistics.median(walls)
                baseline = baseline or (median, count)
                speedup = baseline[0] / median
                efficiency = speedup * baseline[1] / count
                print(f"{executor:5} workers {count:>3}: median {median:5.1f} s, speed-up "
                      f"{speedup:4.2f}x over {baseline[1]}, parallel efficiency {efficiency:4.0%}", flush=True)
    assert len(recommendations) == 1, f"the recommendation depends on the executor: {recommendations}"


if __name__ == "__main__":  # worker processes re-import this file: it must not run the plan then
    main()
