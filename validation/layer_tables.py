"""Convert per-layer profiler tables (LLMServingSim / vLLM layer timings) to the measurement contract.

A folder of such tables times the layers of one model at a number of tokens on one GPU
(`meta.yaml` names the model and the GPU): each linear layer is one GEMM of known shape
(m = tokens, n and k from the model after tensor parallelism), and the attention table holds
decode-only and prefill-only batches as well as mixed ones. A folder holds one table set
(`dense.csv`, `per_sequence.csv`, `attention.csv`, at TP 1) or one per tensor-parallel degree
in `tp1/`, `tp2/` ...: the TP N tables time one device's shard (1/N of the heads, MLP columns
and vocabulary). This module writes the GEMM rows, the pure attention rows and the mixed ones
(decodes in one call with a prefill chunk, `attn_mixed`) as contract rows (docs/contracts.md)
so that `simulate calibrate` fits them like any other measurement:

    python -m validation.layer_tables validation/data/rtx4090-llama-3.1-8b OUT.csv

Elementwise layers (activation, norms, rotary embedding, sampler) are not contract ops; the
roofline costs them, and `tests/test_calibrated_runs.py` checks the sum against the tables.
"""
from __future__ import annotations

import argparse
import re
from pathlib import Path

import pandas as pd
import yaml

from simulator.models.config import ModelConfig, load_model, model_catalogue
from simulator.models.layers import DENSE, linear_layers


def catalogue_name(source: str) -> str | None:
    """The catalogue name of the model whose `source` (Hugging Face id) is `source`, if any."""
    for name, path in model_catalogue().items():
        if yaml.safe_load(path.read_text()).get("source") == source:
            return name
    return None


def catalogue_model(source: str) -> ModelConfig:
    """The catalogue model whose `source` (Hugging Face id) is `source`."""
    name = catalogue_name(source)
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


def convert(folder: str | Path) -> pd.DataFrame:
    folder = Path(folder)
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    model = catalogue_model(meta["model"])
    device = meta["gpu"]
    rows = []
    for tp, tables in table_sets(folder):
        source = f"{meta['model']} layer tables at TP {tp}, vLLM {meta['vllm_version']}, LLMServingSim profiler (MIT)"
        shapes = gemm_shapes(model, tp)
        dense = pd.read_csv(tables / "dense.csv")
        per_seq = pd.read_csv(tables / "per_sequence.csv").rename(columns={"sequences": "tokens"})
        for table in (dense, per_seq):
            for r in table.itertuples(index=False):
                if r.layer in shapes:
                    n, k = shapes[r.layer]
                    rows.append({"op": "gemm", "dtype": "bf16", "m": int(r.tokens), "n": n, "k": k,
                                 "time_us": float(r.time_us), "device": device, "source": f"{source}: {r.layer}"})
        heads = {"heads": model.heads_per_device(tp), "kv_heads": model.kv_heads_per_device(tp),
                 "head_dim": model.head_dim}
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
    return pd.DataFrame(rows)


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
