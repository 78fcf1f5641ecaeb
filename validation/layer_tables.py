"""Convert per-layer profiler tables (LLMServingSim / vLLM layer timings) to the measurement contract.

A folder of such tables times the layers of one model at a number of tokens on one GPU
(`meta.yaml` names the model and the GPU): each linear layer is one GEMM of known shape
(m = tokens, n and k from the model after tensor parallelism), and the attention table holds
decode-only and prefill-only batches as well as mixed ones. A folder holds one table set
(`dense.csv`, `per_sequence.csv`, `attention.csv`, at TP 1) or one per tensor-parallel degree
in `tp1/`, `tp2/` ...: the TP N tables time one device's shard (1/N of the heads, MLP columns
and vocabulary). This module writes the GEMM rows, the pure attention rows and the mixed ones
(decodes in one call with a prefill chunk, `attn_mixed`), and where a folder has `skew.csv`
(decodes of unequal context, `attn_skew`), as contract rows (docs/contracts.md) so that
`simulate calibrate` fits them like any other measurement:

    python -m validation.layer_tables validation/data/rtx4090-llama-3.1-8b OUT.csv

A folder may also hold `moe.csv` (tokens, activated_experts, time_us): one MoE layer's routed
experts as vLLM's fused-MoE layer runs them at TP 1, the profiler forcing how many distinct
experts the tokens reach; each row becomes a `moe` contract row with the model's hidden size,
expert intermediate size, experts and top-k.

Elementwise layers (activation, norms, rotary embedding, sampler) are not contract ops; the
roofline costs them, and `tests/test_calibrated_runs.py` checks the sum against the tables.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
import yaml

from simulator.models.config import ModelConfig, catalogue_name, load_model
from simulator.models.layers import DENSE, linear_layers

# later releases of a catalogue model with the same layers (only their context length and
# training differ): the Instruct-2507 release of Qwen3-30B-A3B keeps hidden 2048, 48 layers,
# 128 experts of 768 and 8 per token
SAME_LAYERS = {"Qwen/Qwen3-30B-A3B-Instruct-2507": "Qwen/Qwen3-30B-A3B"}


def catalogue_model(source: str) -> ModelConfig:
    """The catalogue model whose `source` (Hugging Face id) is `source`, or has its layers."""
    name = catalogue_name(SAME_LAYERS.get(source, source))
    if name is None:
        raise ValueError(f"no model in workloads/models/ has source {source!r}")
    return load_model(name)


def gemm_shapes(model: ModelConfig, tp: int = 1) -> dict[str, tuple[int, int]]:
    """(n, k) of each linear layer of the model on one of `tp` devices."""
    shapes = {lin.name: (lin.n, lin.k) for lin in linear_layers(model, tp, DENSE)}
    return shapes | {"lm_head": (model.vocab_size // tp, model.hidden_size)}


def table_sets(folder: Path) -> list[tuple[int, Path]]:
    """(tp, folder of tables) for every table set of `folder`."""
    nested = sorted((int(m.group(1)), p) for p in folder.iterdir()
                    if p.is_dir() and (m := re.fullmatch(r"tp(\d+)", p.name)))
    return nested or [(1, folder)]


def moe_rows(folder: Path, meta: dict, model: ModelConfig) -> list[dict]:
    """The folder's `moe.csv` as `moe` contract rows (none without one); the table is TP 1."""
    if not (folder / "moe.csv").exists():
        return []
    source = f"{meta['model']} fused-MoE layer at TP 1, vLLM {meta['vllm_version']}, LLMServingSim profiler (MIT)"
    shape = {"hidden": model.hidden_size, "intermediate": model.expert_intermediate_size,
             "experts": model.num_experts, "top_k": model.experts_per_token}
    return [{"op": "moe", "dtype": "bf16", "tokens": int(r.tokens), "experts_reached": int(r.activated_experts),
             **shape, "time_us": float(r.time_us), "device": meta["gpu"], "source": source}
            for r in pd.read_csv(folder / "moe.csv").itertuples(index=False)]


def convert(folder: str | Path) -> pd.DataFrame:
    folder = Path(folder)
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    model = catalogue_model(meta["model"])
    device = meta["gpu"]
    rows = moe_rows(folder, meta, model)
    for tp, tables in table_sets(folder):
        source = f"{meta['model']} layer tables at TP {tp}, vLLM {meta['vllm_version']}, LLMServingSim profiler (MIT)"
        heads = {"heads": model.heads_per_device(tp), "kv_heads": model.kv_heads_per_device(tp),
                 "head_dim": model.head_dim}
        if (tables / "dense.csv").exists():  # (a folder may hold the MoE or skew tables alone)
            rows.extend(layer_rows(tables, model, tp, heads, device, source))
        if (tables / "skew.csv").exists():
            rows.extend(skew_rows(pd.read_csv(tables / "skew.csv"), heads, device, f"{source}: skew"))
    return pd.DataFrame(rows)


def layer_rows(tables: Path, model: ModelConfig, tp: int, heads: dict[str, int], device: str,
               source: str) -> list[dict]:
    """The GEMM and attention rows of one table set (`dense.csv`, `per_sequence.csv`, `attention.csv`)."""
    rows: list[dict] = []
    shapes = gemm_shapes(model, tp)
    dense = pd.read_csv(tables / "dense.csv")
    per_seq = pd.read_csv(tables / "per_sequence.csv").rename(columns={"sequences": "tokens"})
    for table in (dense, per_seq):
        for r in table.itertuples(index=False):
            if r.layer in shapes:
                n, k = shapes[r.layer]
                rows.append({"op": "gemm", "dtype": "bf16", "m": int(r.tokens), "n": n, "k": k,
                             "time_us": float(r.time_us), "device": device, "source": f"{source}: {r.layer}"})
    attention = pd.read_csv(tables / "attention.csv")
    for r in attention.itertuples(index=False):
        if r.prefill_chunk == 0 and r.n_decode > 0 and r.kv_decode > 0:
            rows.append({"op": "attn_decode", "dtype": "bf16", "batch": int(r.n_decode),
                         "kv_len": int(r.kv_decode), **heads, "time_us": float(r.time_us), "device": device,
                         "source": f"{source}: attention"})
        elif r.n_decode == 0 and r.prefill_chunk > 0:
            rows.append({"op": "attn_prefill", "dtype": "bf16", "batch": 1, "seq_len": int(r.prefill_chunk),
                         "kv_len": int(r.kv_prefill + r.prefill_chunk), **heads, "time_us": float(r.time_us),
                         "device": device, "source": f"{source}: attention"})
        elif r.n_decode > 0 and r.kv_decode > 0 and r.prefill_chunk > 0:
            rows.append({"op": "attn_mixed", "dtype": "bf16", "batch": int(r.n_decode), "kv_len": int(r.kv_decode),
                         "seq_len": int(r.prefill_chunk), "prefill_kv_len": int(r.kv_prefill + r.prefill_chunk),
                         **heads, "time_us": float(r.time_us), "device": device, "source": f"{source}: attention"})
    return rows


def skew_rows(skew: pd.DataFrame, heads: dict[str, int], device: str, source: str) -> list[dict]:
    """`attn_skew` rows from a profiler's skew table: per row `n` decodes at `kvs` tokens of
    which `nb` at `kv_big`, mean `kv_mean`, alone (`pc` = 0) or with a chunk of `pc` tokens after
    `kp` cached ones; `t_skew_us` timed beside the uniform batches at the mean (`t_mean_us`) and
    at the longest (`t_max_us`). Its times run about 3x the attention table's for the same
    batch (its own runs, apparently summed over the profiler's 3 iterations), so only their
    ratios within a row are used (perf/context_skew.py)."""
    rows = []
    for r in skew.itertuples(index=False):
        chunk = {"seq_len": int(r.pc), "prefill_kv_len": int(r.kp + r.pc)} if r.pc > 0 else {}
        rows.append({"op": "attn_skew", "dtype": "bf16", "batch": int(r.n), "kv_len": int(r.kv_mean),
                     "kv_max": int(r.kv_big), "long": int(r.nb), **chunk, **heads, "time_us": float(r.t_skew_us),
                     "mean_us": float(r.t_mean_us), "max_us": float(r.t_max_us), "device": device, "source": source})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder")
    parser.add_argument("output")
    args = parser.parse_args()
    frame = convert(args.folder)
    frame.to_csv(args.output, index=False)
    print(f"wrote {len(frame)} rows to {args.output}")


if __name__ == "__main__":
    main()
