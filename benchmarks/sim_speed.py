"""Simulator speed and scale: requests simulated per wall-second, iterations per second, peak memory.

    python benchmarks/sim_speed.py                     # the Azure conversation trace + 1,000,000 synthetic requests
    python benchmarks/sim_speed.py --quick             # the Azure trace + 100,000 synthetic requests
    python benchmarks/sim_speed.py --azure-only        # the Azure trace alone (quick checks while iterating)
    python benchmarks/sim_speed.py --calibration none  # the same with roofline kernel times

Both replays run Llama-3.1-8B on one H100-SXM replica with the vLLM policy and write the
usual outputs (requests.csv and iterations.csv included) to a temporary directory, as a user
run would. Each case runs in a fresh process so its peak RSS is its own. Targets (issue 2,
on a 2-core machine): Azure trace < 10 s; one million requests < 3 min and < 2 GB.
"""
from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
AZURE = ROOT / "workloads" / "traces" / "azure-conv-2023.csv"

CHILD = """
import json, resource, sys, time
from simulator.api import simulate
t0 = time.perf_counter()
r = simulate("h100-sxm", sys.argv[1], model="llama-3.1-8b", out=sys.argv[2], keep_frames=False,
             calibration=sys.argv[3] or None)
wall = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
s = r.summary
print(json.dumps({"wall_s": wall, "requests": s["requests"]["total"], "iterations": s["sim"]["iterations"],
                  "peak_rss_bytes": peak, "makespan_s": s["makespan_s"]}))
"""


def run_case(name: str, trace: Path, workdir: Path, calibration: str) -> dict:
    out = workdir / f"out-{name}"
    res = subprocess.run([sys.executable, "-c", CHILD, str(trace), str(out), calibration], capture_output=True,
                         text=True, check=False)
    if res.returncode != 0:
        raise SystemExit(f"{name}: simulation failed:\n{res.stderr[-2000:]}")
    data = json.loads(res.stdout.strip().splitlines()[-1])
    data["case"] = name
    return data


def synthetic(n: int, path: Path) -> None:
    """A saturating chat-like load: Poisson arrivals, lognormal lengths (mean 512 in, 128 out)."""
    from simulator.workloads.generate import generate, write_jsonl

    started = time.perf_counter()
    write_jsonl(generate(n, rate=60.0, input="lognormal:512:0.8", output="lognormal:128:0.8", seed=1), path)
    print(f"generated {n:,} requests in {time.perf_counter() - started:.1f} s", file=sys.stderr)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="100k synthetic requests instead of 1M")
    parser.add_argument("--azure-only", action="store_true", help="run the Azure trace only")
    parser.add_argument("--calibration", default="",
                        help="calibration profile, or `none` for roofline kernel times (default: the spec's profile)")
    args = parser.parse_args()
    n = 100_000 if args.quick else 1_000_000
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        rows = [run_case("azure-conv (19,366 requests)", AZURE, work, args.calibration)]
        if not args.azure_only:
            trace = work / "synthetic.jsonl"
            synthetic(n, trace)
            rows.append(run_case(f"synthetic ({n:,} requests)", trace, work, args.calibration))
    print(f"{'case':32} {'wall s':>8} {'req/s':>9} {'iter/s':>9} {'iterations':>11} {'peak RSS':>9}")
    for r in rows:
        print(f"{r['case']:32} {r['wall_s']:8.1f} {r['requests'] / r['wall_s']:9.0f} "
              f"{r['iterations'] / r['wall_s']:9.0f} {r['iterations']:11,} {r['peak_rss_bytes'] / 2**30:7.2f} GiB")


if __name__ == "__main__":
    main()
