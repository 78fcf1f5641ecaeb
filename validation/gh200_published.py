"""Replay NVIDIA's MLPerf Inference v4.1 Llama-2-70B results on a GH200 against H100 and H200 systems.

    python -m validation.gh200_published                  # Offline and Server, three systems (about 5 s)
    python -m validation.gh200_published --requests 3000  # a shorter Offline replay an engine

The published figures are NVIDIA's closed-division datacenter submissions to MLPerf Inference
v4.1 for llama2-70b-99 (mlcommons/inference_results_v4.1, `closed/NVIDIA/results/{
GH200-GraceHopper-Superchip_GH200-144GB_aarch64x1_TRT, DGX-H100_H100-SXM-80GBx8_TRT,
H200-SXM-141GBx8_TRT}/llama2-70b-99/{Offline,Server}/performance/run_1/mlperf_log_summary.txt`):
output tokens per second of the whole system. Each is replayed as it was run
(`closed/NVIDIA/configs/llama2-70b/` and `code/llama2-70b/tensorrt/` of the same repository),
with `validation/moe_published.py`'s machinery:
- one GH200 with 144 GB of HBM3e and its Grace host (`gh200-144gb-node`), one TensorRT-LLM
  engine on it (TP 1); the H200 system runs one engine a GPU (TP 1, eight engines); the
  H100 system one engine a pair of GPUs (TP 2 over NVLink, four engines);
- FP8 weights and FP8 KV cache (ModelOpt/AMMO `--qformat fp8 --kv_cache_dtype fp8`);
- `gpu_batch_size` as `max_batch_size` (Offline: GH200 806, H200 806, H100 896; Server: GH200
  806, H200 896, H100 1024), `max_num_tokens` 4096 (the base config's), `kvcache_free_gpu_mem_frac`
  0.90, engines built for 1024 input and 2048 tokens in all;
- the harness's defaults as for Mixtral: `max_utilization`, no chunked context, no CUDA graphs
  (`use_graphs = False`), no block reuse, no overlap of scheduling with the last step's GPU work.
The samples are the benchmark's 24,576 OpenOrca prompts: their token counts (`tok_input_length`,
`tok_output_length` of MLCommons' `open_orca_gpt4_tokenized_llama.sampled_24576.pkl`) are shipped
in `data/mlperf-llama-2-70b-lengths.csv`, mean 222.3 in and 218.9 out. The output lengths there
are GPT-4's reference answers, not what Llama-2-70B writes: the published runs averaged 290-291
tokens a sample (tokens/s over samples/s of each summary; MLPerf's accuracy check holds the
count within 10 % of the reference implementation's 294.45), so each row scales every sample's
output by the published mean over 218.9 (capped at 1,024 tokens: the replayed mean is 0.1 % under).
That is an assumption on the shape of the distribution, not a measurement of it.
Offline and Server are measured as in `validation/moe_published.py`. Nothing was tuned to these
numbers: the H100 runs use its calibration profile, the H200 and GH200 runs transfer it.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

from validation.moe_published import MlperfRow, print_replays

LENGTHS = Path(__file__).parent / "data" / "mlperf-llama-2-70b-lengths.csv"


def llama_row(hardware: str, scenario: str, gpus: int, tp: int, max_batch_size: int, published_tokens_per_s: float,
              published_samples_per_s: float, **server) -> MlperfRow:
    """A llama2-70b-99 row: the engine's build limits and dataset, and the published run's
    tokens a sample (its tokens/s over its samples/s)."""
    return MlperfRow(hardware, scenario, max_batch_size, 4096, published_tokens_per_s, model="llama-2-70b", gpus=gpus,
                     tp=tp, max_seq_len=2048, lengths=LENGTHS,
                     tokens_per_sample=published_tokens_per_s / published_samples_per_s, **server)


ROWS = (
    llama_row("gh200-144gb-node", "Offline", 1, 1, 806, 4067.52, 13.9658),
    llama_row("h100-sxm", "Offline", 8, 2, 896, 24524.9, 84.4792),
    llama_row("h200", "Offline", 8, 1, 806, 31302.7, 107.477),
    # Server: completed tokens/s and samples/s; TTFT p99, TPOT p99 and mean TPOT
    llama_row("gh200-144gb-node", "Server", 1, 1, 806, 3883.67, 13.33, scheduled_qps=13.43, ttft_p99_s=0.579,
              tpot_p99_s=0.193, tpot_mean_s=0.161),
    llama_row("h100-sxm", "Server", 8, 2, 1024, 21605.79, 74.42, scheduled_qps=75.10, ttft_p99_s=0.461,
              tpot_p99_s=0.175, tpot_mean_s=0.155),
    llama_row("h200", "Server", 8, 1, 896, 29228.22, 100.35, scheduled_qps=101.25, ttft_p99_s=0.453,
              tpot_p99_s=0.146, tpot_mean_s=0.123),
)


def per_gpu(replays: list[dict], rows: tuple[MlperfRow, ...], key: str) -> dict[str, float]:
    """Tokens per second a GPU, by row label, of the published (`key` "published") or simulated figures."""
    return {row.label: r[key] / row.gpus for row, r in zip(rows, replays, strict=True)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--requests", type=int, default=12000, help="Offline: requests queued on the one engine")
    parser.add_argument("--seconds", type=float, default=120.0, help="Server: seconds of arrivals")
    args = parser.parse_args(argv)
    replays = print_replays(ROWS, args.requests, args.seconds)
    published, simulated = per_gpu(replays, ROWS, "published"), per_gpu(replays, ROWS, "simulated")
    print("\nper GPU, GH200 over the others (published / simulated):")
    for scenario in ("Offline", "Server"):
        gh200 = f"gh200-144gb-node {scenario}"
        for other in ("h100-sxm", "h200"):
            label = f"{other} {scenario}"
            print(f"  {scenario:7} GH200 / {other:8} {published[gh200] / published[label]:.3f} / "
                  f"{simulated[gh200] / simulated[label]:.3f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
