"""TTFT of one request whose prompt is found in the host's memory, against recomputing it.

`python -m validation.kv_offload [--hardware h100-sxm] [--model llama-3.1-8b]` replays, on one
device, prompts of 1k to 32k tokens one at a time, three rounds of the same prompts, with a KV
cache of 2,100 blocks (33,600 tokens) so that each prompt has left the device by its next
round; with `kv_offloading_size` the next rounds load it from the host's memory (vLLM's native
connector). It prints each length's TTFT without and with offloading (second round) and the
ratio, the figure vLLM's blog gives as 2-22x for cached prompts (validation/README.md).
"""
from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from simulator.api import simulate

LENGTHS = (1024, 2048, 4096, 8192, 16384, 32768)


def ladder(hardware: str, model: str) -> list[tuple[int, float, float]]:
    rows, t = [], 0.0
    for rnd in range(3):
        for i, length in enumerate(LENGTHS):
            rows.append({"id": f"{rnd}-{length}", "arrival_s": t, "input_tokens": length, "output_tokens": 1,
                         "prefix_hashes": [10_000 * i + j for j in range(length // 512)]})
            t += 20.0
    with tempfile.TemporaryDirectory() as tmp:
        trace = Path(tmp) / "ladder.jsonl"
        trace.write_text("".join(json.dumps(r) + "\n" for r in rows))
        knobs = {"num_gpu_blocks_override": 2100, "max_model_len": max(LENGTHS) + 1}
        ttft = [dict(zip(r.requests["id"], r.requests["ttft_s"])) for r in (
            simulate(hardware, trace, model=model, knobs=knobs),
            simulate(hardware, trace, model=model, knobs={**knobs, "kv_offloading_size": 64}))]
    return [(length, ttft[0][f"1-{length}"], ttft[1][f"1-{length}"]) for length in LENGTHS]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--hardware", default="h100-sxm")
    parser.add_argument("--model", default="llama-3.1-8b")
    args = parser.parse_args()
    print("prompt tokens | TTFT recomputed (ms) | TTFT loaded from host memory (ms) | ratio")
    for length, recompute, loaded in ladder(args.hardware, args.model):
        print(f"{length:>13,} | {recompute * 1e3:20.1f} | {loaded * 1e3:33.1f} | {recompute / loaded:5.1f}x")


if __name__ == "__main__":
    main()
