"""Replay third-party vLLM measurements of MoE models on H100 and H200 with `--scheduler vllm`.

    python -m validation.vllm_moe_published   # the six rows below (a few seconds)
    python -m validation.moe_published        # prints them after the MLPerf rows

The figures are GPUStack's performance lab ("Optimizing Qwen3-235B-A22B Throughput on NVIDIA
H100 GPUs" and "Optimizing DeepSeek-R1 Throughput on NVIDIA H200 GPUs", GPUStack
documentation, docs.gpustack.ai/latest/performance-lab/, late 2025 by the engine versions
they name; the pages' sources are `docs/performance-lab/{qwen3-235b-a22b/h100,deepseek-r1/h200}.md`
of gpustack/gpustack): the
"Total Token throughput" (input and output tokens over the benchmark's duration) of
`vllm bench serve` with vLLM v0.11.0 on one node of eight GPUs. Each row is replayed as run:
- `vllm serve MODEL -tp N` and nothing else but the flags the page gives: vLLM 0.11's defaults
  for the OpenAI server on a GPU of at least 70 GiB, `max_num_batched_tokens` 8192 and
  `max_num_seqs` 1024 (`EngineArgs.get_batch_defaults`, which the vllm policy applies to the
  knobs left unset: `VLLMScheduler.device_defaults`), chunked prefill, prefix caching (the
  random prompts share nothing), CUDA graphs up to 512, `gpu_memory_utilization` 0.9; the API
  server in front;
- the weights the checkpoint holds: Qwen3-235B-A22B-Instruct-2507 in bf16; its -FP8 and
  DeepSeek-R1-0528 in FP8 (128 x 128 block-scaled; costed as FP8 GEMMs), the KV cache in bf16;
  the catalogue's qwen3-235b-a22b and deepseek-r1 have their shapes (R1 is V3's architecture);
- the random dataset (`--dataset-name random --num-prompts 500 --seed 42`, request rate
  infinite): every prompt sent at once; each request's lengths are the run's own totals over
  its prompts (the retokenised random prompts are a few tokens short of the nominal length,
  and some Qwen3 answers stopped at an end-of-sequence token before the nominal output);
- the Qwen3 FP8 row is one of the two TP 4 instances the page's optimised setting runs on the
  eight GPUs (`--max-num-batched-tokens 16384`): the page benchmarks one and doubles it.
The page does not name the H100's form factor; eight GPUs at TP 8 are an HGX board, the
catalogue's h100-sxm. Nothing was tuned to these numbers: the H100 rows' GEMMs are the H100
profile's (the H200 rows transfer it), the grouped expert GEMMs and the all-reduces roofline.
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from simulator import simulate

from .trtllm_tables import write_offline_trace


@dataclass(frozen=True)
class GpustackRow:
    hardware: str
    model: str  # catalogue name
    tp: int
    weight_dtype: str
    nominal: str  # the page's random-dataset case, input/output tokens
    prompts: int
    input_tokens: int  # the run's "Total input tokens"
    output_tokens: int  # its "Total generated tokens"
    published_tokens_per_s: float  # its "Total Token throughput"
    published_duration_s: float  # its "Benchmark duration"
    max_num_batched_tokens: int | None = None  # where the page sets it; else vllm serve's default

    @property
    def label(self) -> str:
        return f"{self.hardware} {self.model} {self.weight_dtype} tp{self.tp} {self.nominal}"

    def knobs(self) -> dict:
        budget = {} if self.max_num_batched_tokens is None else {"max_num_batched_tokens": self.max_num_batched_tokens}
        return {"weight_dtype": self.weight_dtype, **budget}


ROWS = (
    # vllm serve Qwen/Qwen3-235B-A22B-Instruct-2507 -tp 8 (the page's baseline, "other benchmark cases")
    GpustackRow("h100-sxm", "qwen3-235b-a22b", 8, "bf16", "2000/100", 500, 998175, 49500, 23858.69, 43.91),
    GpustackRow("h100-sxm", "qwen3-235b-a22b", 8, "bf16", "4000/200", 500, 1997942, 92185, 21113.53, 98.99),
    GpustackRow("h100-sxm", "qwen3-235b-a22b", 8, "bf16", "32000/100", 100, 3200000, 8191, 22657.51, 141.60),
    # vllm serve Qwen/Qwen3-235B-A22B-Instruct-2507-FP8 -tp 4 --max-num-batched-tokens 16384 (one instance)
    GpustackRow("h100-sxm", "qwen3-235b-a22b", 4, "fp8", "4000/200", 500, 1997942, 90966, 16478.79, 126.76,
                max_num_batched_tokens=16384),
    # vllm serve deepseek-ai/DeepSeek-R1-0528 -tp 8 (the page's baseline)
    GpustackRow("h200", "deepseek-r1", 8, "fp8", "2000/100", 500, 998393, 50000, 17690.89, 59.26),
    GpustackRow("h200", "deepseek-r1", 8, "fp8", "4000/200", 500, 1997530, 100000, 15808.55, 132.68),
)


def replay(row: GpustackRow, folder: Path) -> dict:
    """Simulate one row: total tokens over the time from the first request to the last token,
    as `vllm bench serve` reports them."""
    trace = folder / f"{row.label.replace(' ', '-').replace('/', '-')}.jsonl"
    # the row's prompts, all at time 0, each of the run's mean lengths
    write_offline_trace(trace, row.prompts, round(row.input_tokens / row.prompts), round(row.output_tokens / row.prompts))
    result = simulate(row.hardware, trace, model=row.model, scheduler="vllm", tp=row.tp, knobs=row.knobs())
    reqs = result.requests
    duration = float(reqs["finish_s"].max() - reqs["arrival_s"].min())
    tokens = float(reqs["input_tokens"].sum() + reqs["output_tokens"].sum())
    shares = result.summary["provenance"]["share_of_time_by_source"]
    simulated = tokens / duration
    return {"row": row.label, "duration_s": duration, "published_duration_s": row.published_duration_s,
            "simulated": simulated, "published": row.published_tokens_per_s,
            "measured_share": sum(v for k, v in shares.items() if k.startswith("calibrated")),
            "error": simulated / row.published_tokens_per_s - 1}


def print_rows(rows: tuple[GpustackRow, ...] = ROWS) -> None:
    print(f"{'GPUStack, vLLM 0.11':46} {'measured':>8} {'duration':>9} {'published':>9} {'tok/s':>8} "
          f"{'published':>9} {'error':>7}")
    with tempfile.TemporaryDirectory() as tmp:
        for row in rows:
            r = replay(row, Path(tmp))
            print(f"{r['row']:46} {r['measured_share']:>8.0%} {r['duration_s']:>8.1f}s {row.published_duration_s:>8.1f}s "
                  f"{r['simulated']:>8,.0f} {r['published']:>9,.0f} {r['error']:>+7.1%}", flush=True)


def main(argv: list[str] | None = None) -> int:
    argparse.ArgumentParser(description=__doc__.split("\n")[0]).parse_args(argv)
    print_rows()
    return 0


if __name__ == "__main__":
    sys.exit(main())
