"""Replay rows of NVIDIA's published TensorRT-LLM throughput tables with `--scheduler trtllm`.

    python -m validation.trtllm_tables            # every row below (a few minutes)
    python -m validation.trtllm_tables --rows 0,3 # some of them, by index

The rows are from TensorRT-LLM's performance overview (docs/source/performance/perf-overview.md
at commit 00f37686aa854010d68bcbd0f4ab000221541ca6 of NVIDIA/TensorRT-LLM, the 1.0-era tables:
total output tokens per second, PyTorch backend). Each was measured with `trtllm-bench
throughput`, and is replayed as it was run:
- N requests queued at once (`--concurrency -1`), every prompt exactly ISL tokens and every
  output exactly OSL (`token-norm-dist` with zero deviation, EOS disabled);
- NVIDIA's FP8 checkpoints (nvidia/Llama-3.1-8B-Instruct-FP8, nvidia/Llama-3.3-70B-Instruct-FP8):
  FP8 weights and FP8 KV cache; Llama-3.3-70B has Llama-3.1-70B's shape, so the catalogue's
  llama-3.1-70b stands for it;
- the defaults of trtllm-bench: guaranteed_no_evict, no chunked context, a KV fraction of 0.90
  (the docs say some rows used 0.95, without saying which), the overlap scheduler, and the
  `max_batch_size` and `max_num_tokens` trtllm-bench derives from the dataset (`bench_limits`);
- the recipe's CUDA graphs: padding on, batch sizes 1, 2, 4 ... 8192 (`llm_options.yml`);
- no API server in front (the benchmark drives the LLM API in-process).
Throughput is all output tokens over the time from the first request to the last token, as
trtllm-bench reports it. The simulator's constants were not tuned to these numbers: the kernel
times are the calibration profile's (the H100's own; the H200 runs transfer it).
"""
from __future__ import annotations

import argparse
import json
import math
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulator import simulate
from simulator.models.config import DTYPE_BYTES, load_model

GiB = 2**30
# What trtllm-bench's heuristic reads (tensorrt_llm/bench/build/tuning.py): the total memory
# NVML reports (MiB) and the checkpoint's parameter count.
NVML_TOTAL_MIB = {"h100-sxm": 81559, "h200": 143771}
PARAMS = {"llama-3.1-8b": 8.03e9, "llama-3.1-70b": 70.55e9, "qwen3-235b-a22b": 235.09e9}
# llm_options.yml of the performance overview's dense-model recipe
GRAPH_BATCH_SIZES = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 1024, 2048, 4096, 8192]
KV_FRACTION = 0.90


@dataclass(frozen=True)
class Row:
    hardware: str
    model: str
    tp: int
    isl: int
    osl: int
    requests: int
    published_tokens_per_s: float  # total output tokens/s
    attention_dp: bool = False  # the MoE recipe: attention data parallelism, experts spread over the tp GPUs

    @property
    def label(self) -> str:
        return f"{self.hardware} {self.model} fp8 tp{self.tp} {self.isl}/{self.osl}"


ROWS = (
    Row("h100-sxm", "llama-3.1-8b", 1, 1000, 1000, 3000, 15220),
    Row("h100-sxm", "llama-3.1-8b", 1, 128, 2048, 3000, 22714),
    Row("h100-sxm", "llama-3.1-8b", 1, 2048, 128, 3000, 3450),
    Row("h100-sxm", "llama-3.1-8b", 1, 2048, 2048, 1500, 9305),
    Row("h200", "llama-3.1-8b", 1, 1000, 1000, 3000, 17744),
    Row("h200", "llama-3.1-70b", 1, 1000, 1000, 3000, 2909),
    Row("h100-sxm", "llama-3.1-70b", 2, 1000, 1000, 3000, 4205),
    Row("h100-sxm", "llama-3.1-70b", 2, 2048, 2048, 1500, 3082),
    # The MoE rows (nvidia/Qwen3-235B-A22B-FP8) ran the MoE recipe: attention data parallelism
    # (enable_attention_dp) and `--ep $ep_size`, whose value the page does not give per row;
    # they are replayed with the experts spread whole over the 8 GPUs (ep 8), and with the
    # batch limits the dense heuristic gives per rank (how trtllm-bench sizes them under
    # attention DP is not documented)
    Row("h100-sxm", "qwen3-235b-a22b", 8, 1000, 1000, 3000, 14898, attention_dp=True),
    Row("h100-sxm", "qwen3-235b-a22b", 8, 128, 2048, 3000, 19658, attention_dp=True),
    Row("h100-sxm", "qwen3-235b-a22b", 8, 2048, 2048, 1500, 9924, attention_dp=True),
    Row("h100-sxm", "qwen3-235b-a22b", 8, 5000, 500, 1500, 3225, attention_dp=True),
    Row("h200", "qwen3-235b-a22b", 8, 1000, 1000, 3000, 23789, attention_dp=True),
    Row("h200", "qwen3-235b-a22b", 8, 2048, 2048, 1500, 16672, attention_dp=True),
)


def _round_up(x: float, step: int) -> int:
    return step * math.ceil(x / step)


def bench_limits(row: Row) -> tuple[int, int]:
    """`max_batch_size` and `max_num_tokens` as trtllm-bench derives them for the row's dataset
    (`calc_engine_setting` and `get_benchmark_engine_settings`, chunked context off): an
    estimate of the requests the KV cache holds, rounded up to coarse steps."""
    model = load_model(row.model)
    kv_bytes_per_token = 2 * model.num_layers * max(row.tp, model.num_kv_heads) * model.head_dim \
        * DTYPE_BYTES["fp8"]
    cache_bytes = (NVML_TOTAL_MIB[row.hardware] * 2**20 * row.tp - PARAMS[row.model] * DTYPE_BYTES["fp8"]) \
        * KV_FRACTION
    batch = min(cache_bytes / (kv_bytes_per_token * (row.isl + row.osl)), 4096)
    tokens = min(batch * (1 + row.isl / row.osl), 32768)
    if batch < 256:
        max_batch = max(64, _round_up(batch, 32))
    else:
        max_batch = _round_up(batch, 128) if batch < 1024 else _round_up(batch, 256)
    if tokens < 4096:
        max_tokens = max(2048, _round_up(tokens, 256))
    else:
        max_tokens = _round_up(tokens, 512) if tokens < 8192 else _round_up(tokens, 1024)
    return max_batch, max(max_tokens, row.isl + max_batch)


def write_offline_trace(path: Path, requests: int, isl: int, osl: int) -> None:
    """`requests` prompts of `isl` tokens, each asking for `osl`, all sent at time 0: a
    throughput benchmark's offline load."""
    with open(path, "w") as handle:
        for i in range(requests):
            handle.write(json.dumps({"id": f"r{i}", "arrival_s": 0.0, "input_tokens": isl, "output_tokens": osl}) + "\n")


def replay(row: Row, folder: Path) -> dict:
    """Simulate one row; returns its limits, KV pool, simulated and published throughput."""
    trace = folder / f"{row.isl}-{row.osl}-{row.requests}.jsonl"
    if not trace.exists():
        write_offline_trace(trace, row.requests, row.isl, row.osl)
    max_batch, max_tokens = bench_limits(row)
    knobs = {"weight_dtype": "fp8", "kv_cache_dtype": "fp8", "max_batch_size": max_batch,
             "max_num_tokens": max_tokens, "max_seq_len": row.isl + row.osl, "free_gpu_memory_fraction": KV_FRACTION,
             "cuda_graph_padding": True, "cuda_graph_batch_sizes": GRAPH_BATCH_SIZES, "api_server": False}
    if row.attention_dp:
        knobs |= {"enable_attention_dp": True, "moe_expert_parallel_size": row.tp}
    summary = simulate(row.hardware, trace, model=row.model, scheduler="trtllm", tp=row.tp, knobs=knobs,
                       keep_frames=False, uncertainty=True).summary
    blocks, block_tokens = summary["memory"]["kv_blocks"], summary["memory"]["block_size"]
    simulated = summary["throughput"]["output_tokens_per_s"]
    band = summary["uncertainty"]["throughput"]["output_tokens_per_s"]
    shares = summary["provenance"]["share_of_time_by_source"]
    return {"row": row.label, "max_batch_size": max_batch, "max_num_tokens": max_tokens, "kv_blocks": blocks,
            "concurrency": min(max_batch, blocks // math.ceil((row.isl + row.osl) / block_tokens)),
            "simulated": simulated, "low": band["low"], "high": band["high"],
            "measured_share": shares["calibrated-interpolation"] + shares["calibrated-fit"],
            "published": row.published_tokens_per_s, "error": simulated / row.published_tokens_per_s - 1}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rows", help="comma list of row indices (default: all)")
    args = parser.parse_args(argv)
    picked = [ROWS[int(i)] for i in args.rows.split(",")] if args.rows else list(ROWS)
    print(f"{'row':44} {'max_bs':>6} {'max_tok':>7} {'blocks':>7} {'conc':>5} {'measured':>8} {'simulated':>10} "
          f"{'band':>15} {'published':>10} {'error':>7}")
    errors = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in picked:
            r = replay(row, Path(tmp))
            errors.append(abs(r["error"]))
            band = f"{r['low']:,.0f}-{r['high']:,.0f}"
            print(f"{r['row']:44} {r['max_batch_size']:>6} {r['max_num_tokens']:>7} {r['kv_blocks']:>7} "
                  f"{r['concurrency']:>5} {r['measured_share']:>8.0%} {r['simulated']:>10,.0f} {band:>15} "
                  f"{r['published']:>10,.0f} {r['error']:>+7.1%}", flush=True)
    print(f"mean |error| {sum(errors) / len(errors):.1%} over {len(errors)} rows")
    return 0


if __name__ == "__main__":
    sys.exit(main())
