"""Speed of `simulate plan`: a plan of about 200 points, on local processes and on Ray.

    python benchmarks/plan_speed.py                      # local processes, then a local Ray
    python benchmarks/plan_speed.py --executor local     # one executor only
    python benchmarks/plan_speed.py --requests 300 --workers 4

The plan sizes Llama-3.1-8B for 20 req/s of the Azure conversation trace (its first 400
requests) under TTFT p90 <= 0.5 s and TPOT p90 <= 50 ms, over 24 candidates: six GPUs
(H100 SXM and PCIe, H200, A100 80 GB and 40 GB, L40S) x tp 1 or 2 x max_num_seqs 64 or 256. Each
candidate's capacity search takes about 10 points, so the plan simulates about 200. Every
executor runs the same plan into a fresh output directory (nothing cached), and then once
more into the same directory, where every point comes from the cache. Printed per
executor: points, wall time, points per second, the re-run's time, and the recommendation
(which must not depend on the executor).
Target (issue "Capacity planning"): under 10 minutes on a 2-core machine.

Figures (2-core development VM shared with other work, 2026-11-22; 204 points, 400
requests each; ranges over 3-4 runs, the machine's speed varies by up to 2.5x):
  local, 2 workers: 17-51 s (4-12 points/s);  1 worker: 26-44 s (4.6-7.8 points/s)
  Ray, 2 CPUs: 42-51 s (4-4.8 points/s);      1 CPU: 37-47 s (4.3-5.5 points/s)
  re-run with every point cached: about 1 s for either executor.
On two cores Ray's own processes (raylet, GCS, object store) compete with its workers and
its start-up costs about 3.5 s; it pays off on a cluster with more cores than this machine.
"""
from __future__ import annotations

import argparse
import tempfile
import time
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


def run(executor: str, directory: Path, workers: int | None) -> None:
    started = time.perf_counter()
    outcome = run_plan(directory / "plan.yaml", directory / executor, executor=executor, workers=workers,
                       report=False)
    wall = time.perf_counter() - started
    rerun_started = time.perf_counter()
    rerun = run_plan(directory / "plan.yaml", directory / executor, executor=executor, workers=workers,
                     report=False)
    rerun_wall = time.perf_counter() - rerun_started
    assert rerun.simulated == 0 and rerun.cached == len(outcome.points)
    best = outcome.recommended
    print(f"{executor:6} {len(outcome.points):4d} points ({outcome.simulated} simulated) in {wall:6.1f} s = "
          f"{len(outcome.points) / wall:5.2f} points/s · re-run from the cache {rerun_wall:4.1f} s · "
          f"recommended {best.candidate.name if best else None} at {best.max_rate if best else 0:g} req/s/replica",
          flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--executor", choices=("local", "ray", "both"), default="both")
    parser.add_argument("--workers", type=int, help="worker processes / local Ray CPUs (default: one per CPU)")
    parser.add_argument("--requests", type=int, default=400, help="requests of the Azure trace per point")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="plan-speed-") as scratch:
        directory = Path(scratch)
        trace = ROOT / "workloads" / "traces" / "azure-conv-2023.csv"
        (directory / "plan.yaml").write_text(PLAN.format(trace=trace, requests=args.requests))
        for executor in ("local", "ray") if args.executor == "both" else (args.executor,):
            run(executor, directory, args.workers)


if __name__ == "__main__":  # worker processes re-import this file: it must not run the plan then
    main()
