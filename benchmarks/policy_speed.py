"""Simulator speed of each serving policy on the same trace, relative to vLLM.

    python benchmarks/policy_speed.py                  # the whole Azure conversation trace (19,366 requests, 1 h)
    python benchmarks/policy_speed.py --requests 5000  # its first 5,000 requests
    python benchmarks/policy_speed.py --repeat 3       # medians of 3 interleaved rounds

Every policy replays the Azure conversation trace at its real arrival times onto one
H100-SXM replica of Llama-3.1-8B (the shipped calibration profile, as a user run) with the
policy's default knobs; only the outputs are not written. The policies: static, orca, vLLM
v1 (chunked prefill), vLLM v0 (`enable_chunked_prefill=false`), sarathi, splitfuse and
disagg (one prefill and one decode replica, so two GPUs), and
as a control vLLM v1 with sarathi's 512-token budget (a smaller budget means more steps that
hold a prompt chunk, and those run one at a time, never in spans). A short warm-up run
first pays for what a process loads once (imports, the calibration profile), so that no
policy does. With --repeat N the policies run N times in turn (interleaved, so a slow spell
of a shared machine hits them alike). Printed per policy, as medians over the rounds: wall
and CPU time, simulated iterations, iterations and requests per wall-second, and the wall
(and CPU) time relative to vLLM v1's in the same round (the same trace, so also per
request). CPU time is the steadier figure on a shared machine, where other work stretches
the wall time.
Target: no policy more than 2x vLLM's wall time per request.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
import time
from itertools import islice
from pathlib import Path
from statistics import median

from simulator.api import simulate
from simulator.workloads.formats import iter_azure
from simulator.workloads.generate import write_jsonl

ROOT = Path(__file__).resolve().parent.parent
AZURE = ROOT / "workloads" / "traces" / "azure-conv-2023.csv"
HARDWARE, MODEL = "h100-sxm", "llama-3.1-8b"
POLICIES = (  # (label, scheduler, knobs)
    ("static", "static", {}),
    ("orca", "orca", {}),
    ("vllm v1", "vllm", {}),
    ("vllm v0", "vllm", {"enable_chunked_prefill": False}),
    ("sarathi", "sarathi", {}),
    ("splitfuse", "splitfuse", {}),
    ("disagg", "disagg", {}),  # one prefill and one decode replica, KV over NVLink
    # control: vLLM with Sarathi's 512-token budget schedules as many steps as sarathi
    ("vllm 512", "vllm", {"max_num_batched_tokens": 512}),
)


def first_requests(n: int, path: Path) -> Path:
    """The first n requests of the Azure trace, as a contract JSONL file."""
    write_jsonl((dict(r, id=f"r{i}") for i, (_, r) in enumerate(islice(iter_azure(AZURE), n))), path)
    return path


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--requests", type=int, default=None, help="only the trace's first N requests")
    parser.add_argument("--repeat", type=int, default=1, help="rounds of all policies, interleaved")
    args = parser.parse_args()
    runs: dict[str, list[tuple[float, float]]] = {label: [] for label, _, _ in POLICIES}  # (wall, CPU) per round
    iterations: dict[str, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        trace = AZURE if args.requests is None else first_requests(args.requests, Path(tmp) / "trace.jsonl")
        simulate(HARDWARE, ROOT / "workloads" / "traces" / "example-chat.jsonl", model=MODEL, keep_frames=False)
        for _ in range(args.repeat):
            for label, scheduler, knobs in POLICIES:
                started, cpu_started = time.perf_counter(), time.process_time()
                summary = simulate(HARDWARE, trace, model=MODEL, scheduler=scheduler, knobs=knobs,
                                   keep_frames=False).summary
                runs[label].append((time.perf_counter() - started, time.process_time() - cpu_started))
                iterations[label] = summary["sim"]["iterations"]
                requests = summary["requests"]["total"]
                print(f"{label}: {runs[label][-1][0]:.1f} s wall, {runs[label][-1][1]:.1f} s CPU", file=sys.stderr)
    base = runs["vllm v1"]
    print(f"{requests:,} requests; medians of {args.repeat} round(s); ratios to vLLM v1 in the same round")
    print(f"{'policy':10} {'wall s':>7} {'CPU s':>7} {'iterations':>11} {'iter/s':>8} {'req/s':>7} "
          f"{'x vllm':>7} {'(CPU)':>6}")
    for label, times in runs.items():
        wall, cpu = median(w for w, _ in times), median(c for _, c in times)
        ratio = median(w / b for (w, _), (b, _) in zip(times, base))
        cpu_ratio = median(c / b for (_, c), (_, b) in zip(times, base))
        its = iterations[label]
        print(f"{label:10} {wall:7.1f} {cpu:7.1f} {its:11,} {its / wall:8.0f} {requests / wall:7.0f} "
              f"{ratio:7.2f} {cpu_ratio:6.2f}")


if __name__ == "__main__":
    main()
