"""Replay NVIDIA's MLPerf Inference v4.1 Mixtral-8x7B results (H100, H200) with `--scheduler trtllm`.

    python -m validation.moe_published                  # Offline and Server, H100 and H200 (about 20 s)
    python -m validation.moe_published --requests 3000  # a shorter Offline replay per GPU

After the MLPerf rows it prints the vLLM rows of `validation/vllm_moe_published.py`
(GPUStack's vLLM 0.11 measurements of Qwen3-235B-A22B on H100 and DeepSeek-R1 on H200).

The published figures are NVIDIA's closed-division datacenter submissions to MLPerf Inference
v4.1 (mlcommons/inference_results_v4.1, `closed/NVIDIA/results/{DGX-H100_H100-SXM-80GBx8_TRT,
H200-SXM-141GBx8_TRT}/mixtral-8x7b/{Offline,Server}/performance/run_1/mlperf_log_summary.txt`:
tokens per second, the output tokens of the completed samples). Each is replayed as it was run
(`closed/NVIDIA/configs/mixtral-8x7b/` and `code/mixtral-8x7b/tensorrt/` of the same repository):
- eight independent TensorRT-LLM engines, one per GPU (tensor and pipeline parallelism 1), the
  harness spreading the samples over them: one GPU is simulated and its throughput times eight;
- NVIDIA's ModelOpt FP8 checkpoint: FP8 weights and FP8 KV cache (`--kv_cache_dtype=fp8`);
- `gpu_batch_size` as `max_batch_size` (H100 896, H200 3072 Offline and 1200 Server) and
  `max_num_tokens` (H100 8192 Offline and 16384 Server, H200 16384 Offline and 8192 Server),
  `kvcache_free_gpu_mem_frac` 0.90, engines built for 2048 + 1024 tokens;
- the harness's defaults: the `max_utilization` batch policy, no chunked context, no CUDA
  graphs (`use_graphs = False`), no block reuse (the C++ executor's default then), and no
  overlap of one step's scheduling with the last step's GPU work; no API server in front.
The samples are the benchmark's 15,000 prompts (OpenOrca, GSM8K and MBXP, 5,000 each): their
token counts (`tok_input_len`, `tok_ref_output_len` of `09292024_mixtral_15k_mintoken2_v1.pkl`)
are shipped in `data/mlperf-mixtral-8x7b-lengths.csv`, mean 427.4 in and 144.84 out. Each
request generates its reference output's length; NVIDIA's FP8 engine averaged 145.9 tokens a
sample (its README), 0.7 % more. Drawn uniformly with replacement, as loadgen draws them.

Offline issues all samples at once (971,520 on the H100 system, 121,440 a GPU, for 2,715 s);
the replay queues `--requests` at time 0 on one GPU and measures the output tokens per second
while the engine is saturated (from the time a tenth of the requests have finished to the
time the last one starts), which is what a 45-minute run measures: its ramp-up and drain are
a few seconds of it. Server issues Poisson arrivals at the run's scheduled rate; the replay
gives each GPU an eighth of it (Poisson; the harness's spreading makes each GPU's arrivals
somewhat more regular) for `--seconds`. An engine that keeps up completes the offered load,
so its tokens per second only confirm that it did; the latencies MLPerf constrains (TTFT p99
<= 2 s, TPOT p99 <= 200 ms) are the comparison.
Nothing was tuned to these numbers: the kernel times are the H100 calibration profile's (the
H200 runs transfer it), the MoE grouped GEMMs the roofline's.
"""
from __future__ import annotations

import argparse
import csv
import json
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from simulator import simulate
from validation import vllm_moe_published

LENGTHS = Path(__file__).parent / "data" / "mlperf-mixtral-8x7b-lengths.csv"
GPUS = 8  # one engine per GPU in both systems
MAX_OUTPUT = 1024  # tokens a sample may generate (the engines' max_output_len)


@dataclass(frozen=True)
class MlperfRow:
    hardware: str
    scenario: str  # "Offline" or "Server"
    max_batch_size: int  # the config's gpu_batch_size
    max_num_tokens: int
    published_tokens_per_s: float  # the 8-GPU system's, from mlperf_log_summary.txt
    scheduled_qps: float = 0.0  # Server: loadgen's scheduled samples per second (8 GPUs)
    ttft_p99_s: float = 0.0  # Server: published 99th percentiles and mean TPOT
    tpot_p99_s: float = 0.0
    tpot_mean_s: float = 0.0
    model: str = "mixtral-8x7b"
    gpus: int = GPUS  # in the published system
    tp: int = 1  # GPUs an engine spans; the system runs gpus / tp engines
    max_seq_len: int = 2048 + 1024  # the engine's build limit
    lengths: Path = LENGTHS
    # the published tokens a sample (tokens/s over samples/s) where the engine's outputs are
    # not the dataset's reference lengths; 0 replays the reference lengths as they are
    tokens_per_sample: float = 0.0

    @property
    def label(self) -> str:
        return f"{self.hardware} {self.scenario}"


ROWS = (
    MlperfRow("h100-sxm", "Offline", 896, 8192, 52415.9),
    MlperfRow("h200", "Offline", 3072, 16384, 59022.3),
    MlperfRow("h100-sxm", "Server", 896, 16384, 50795.57, scheduled_qps=348.37, ttft_p99_s=0.629, tpot_p99_s=0.123,
              tpot_mean_s=0.1026),
    MlperfRow("h200", "Server", 1200, 8192, 57177.20, scheduled_qps=392.18, ttft_p99_s=0.540, tpot_p99_s=0.167,
              tpot_mean_s=0.1384),
)


def load_lengths(path: Path = LENGTHS) -> np.ndarray:
    """The dataset's (input, output) token counts, one row a sample."""
    with open(path, newline="") as handle:
        rows = [(int(r["input_length"]), int(r["output_length"])) for r in csv.DictReader(handle)]
    return np.array(rows, dtype=np.int64)


def row_lengths(row: MlperfRow) -> np.ndarray:
    """The samples `row` replays: the reference lengths, or, with `tokens_per_sample`, their
    outputs scaled to that mean (each sample keeps its share; at least 1 token, at most
    MAX_OUTPUT, the benchmark's limit)."""
    lengths = load_lengths(row.lengths)
    if row.tokens_per_sample:
        scaled = lengths[:, 1] * row.tokens_per_sample / lengths[:, 1].mean()
        lengths[:, 1] = np.clip(np.rint(scaled), 1, MAX_OUTPUT)
    return lengths


def write_trace(path: Path, lengths: np.ndarray, requests: int, rate_per_s: float, seed: int) -> None:
    """`requests` samples drawn uniformly with replacement; all at time 0 (rate 0) or Poisson."""
    rng = np.random.default_rng(seed)
    picked = lengths[rng.integers(0, len(lengths), size=requests)]
    arrivals = np.cumsum(rng.exponential(1 / rate_per_s, size=requests)) if rate_per_s else np.zeros(requests)
    with open(path, "w") as handle:
        for i, ((isl, osl), t) in enumerate(zip(picked, arrivals, strict=True)):
            handle.write(json.dumps({"id": f"s{i}", "arrival_s": round(float(t), 6), "input_tokens": int(isl),
                                     "output_tokens": int(osl)}) + "\n")


def knobs(row: MlperfRow) -> dict:
    return {"weight_dtype": "fp8", "kv_cache_dtype": "fp8", "max_batch_size": row.max_batch_size,
            "max_num_tokens": row.max_num_tokens, "max_seq_len": row.max_seq_len, "free_gpu_memory_fraction": 0.90,
            "capacity_scheduler_policy": "max_utilization", "enable_chunked_context": False,
            "enable_block_reuse": False, "disable_overlap_scheduler": True, "cuda_graph_max_batch_size": 0,
            "api_server": False}


def window_tokens_per_s(requests, iterations, start: float, end: float) -> float:
    """Output tokens per second of the steps that start between `start` and `end`: a token
    per generating request plus the first token of each prompt a step finishes."""
    steps = iterations[(iterations["start_s"] >= start) & (iterations["start_s"] < end)]
    if steps.empty:
        raise ValueError(f"no step between {start:.1f} s and {end:.1f} s: too few requests to fill the engine")
    t0, t1 = float(steps["start_s"].min()), float((steps["start_s"] + steps["duration_s"]).max())
    first = requests["first_token_s"].to_numpy()
    tokens = steps["decode_tokens"].sum() + np.count_nonzero((first > t0) & (first <= t1))
    return float(tokens / (t1 - t0))


def replay(row: MlperfRow, folder: Path, requests: int, seconds: float, seed: int = 0) -> dict:
    """Simulate one engine of `row` (`tp` GPUs); the system's figures are its throughput times
    the system's engines."""
    trace = folder / f"{row.label.replace(' ', '-')}.jsonl"
    engines = row.gpus // row.tp
    rate = row.scheduled_qps / engines
    write_trace(trace, row_lengths(row), requests if row.scenario == "Offline" else round(rate * seconds), rate, seed)
    result = simulate(row.hardware, trace, model=row.model, scheduler="trtllm", tp=row.tp, knobs=knobs(row))
    summary = result.summary
    out = {"row": row.label, "published": row.published_tokens_per_s, "kv_blocks": summary["memory"]["kv_blocks"],
           "measured_share": sum(v for k, v in summary["provenance"]["share_of_time_by_source"].items()
                                 if k.startswith("calibrated"))}
    reqs = result.requests
    if row.scenario == "Offline":
        # saturated: from the time a tenth of the requests have finished to the last start
        start = float(np.sort(reqs["finish_s"].to_numpy())[len(reqs) // 10])
        out["simulated"] = engines * window_tokens_per_s(reqs, result.iterations, start, float(reqs["first_token_s"].max()))
    else:
        # an engine that keeps up completes what arrives: the output tokens over the span of
        # the arrivals (a 40-minute MLPerf run's ramp-up and drain are as negligible); whether
        # it kept up is what the latencies show
        done = reqs[reqs["status"] == "completed"]
        if len(done) < len(reqs):
            raise ValueError(f"{len(reqs) - len(done)} requests did not complete")
        out["simulated"] = engines * float(done["output_tokens"].sum() / reqs["arrival_s"].max())
        out["ttft_p99_s"] = float(np.percentile(done["ttft_s"], 99))
        out["tpot_p99_s"] = float(np.nanpercentile(done["tpot_s"], 99))
        out["tpot_mean_s"] = float(np.nanmean(done["tpot_s"]))
    out["error"] = out["simulated"] / row.published_tokens_per_s - 1
    return out


def print_replays(rows: tuple[MlperfRow, ...], requests: int, seconds: float) -> list[dict]:
    """Replay `rows` and print each against its published figures; returns the replays."""
    print(f"{'row':26} {'blocks':>7} {'measured':>8} {'simulated':>10} {'published':>10} {'error':>7}  latencies")
    replays = []
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            r = replay(row, Path(tmp), requests, seconds)
            extra = "" if row.scenario == "Offline" else (
                f"TTFT p99 {r['ttft_p99_s']:.2f} s (published {row.ttft_p99_s:.2f}), TPOT p99 "
                f"{r['tpot_p99_s'] * 1e3:.0f} ms (published {row.tpot_p99_s * 1e3:.0f}), mean {r['tpot_mean_s'] * 1e3:.0f} ms ({row.tpot_mean_s * 1e3:.0f})")
            print(f"{r['row']:26} {r['kv_blocks']:>7} {r['measured_share']:>8.0%} {r['simulated']:>10,.0f} "
                  f"{r['published']:>10,.0f} {r['error']:>+7.1%}  {extra}", flush=True)
            replays.append(r)
    return replays


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=12000, help="Offline: requests queued on the one GPU")
    parser.add_argument("--seconds", type=float, default=120.0, help="Server: seconds of arrivals")
    args = parser.parse_args(argv)
    print_replays(ROWS, args.requests, args.seconds)
    print()
    vllm_moe_published.print_rows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
