"""Convert per-layer profiler tables (LLMServingSim / vLLM layer timings) to the measurement contract.

The RTX 4090 data in `validation/data/rtx4090-llama-3.1-8b/` times whole layers of Llama-3.1-8B
at a number of tokens: each linear layer is one GEMM of known shape (m = tokens, n and k from
the model), and the attention table holds decode-only and prefill-only batches as well as mixed
ones. This module writes the GEMM and the pure attention rows as contract rows (DESIGN
section 10) so that `simulate calibrate` fits them like any other measurement:

    python -m validation.layer_tables validation/data/rtx4090-llama-3.1-8b OUT.csv

Elementwise layers (activation, norms, rotary embedding, sampler) are not contract ops; the
roofline costs them, and `tests/test_calibration.py` checks the sum against the tables.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import pandas as pd
import yaml

from simulator.models.config import ModelConfig, model_from_dict


def _model(folder: Path) -> tuple[ModelConfig, dict]:
    meta = yaml.safe_load((folder / "meta.yaml").read_text())
    overrides = dict(meta["engine_effective"]["hf_overrides"])
    cfg = {"hidden_size": 4096, "num_hidden_layers": 32, "max_position_embeddings": 131072, "model_type": "llama",
           **overrides}
    return model_from_dict(cfg, str(folder / "meta.yaml"), name=meta["model"]), meta


def gemm_shapes(model: ModelConfig) -> dict[str, tuple[int, int]]:
    """(n, k) of each linear layer of the model at TP 1."""
    h, inter = model.hidden_size, model.intermediate_size
    return {
        "qkv_proj": (model.q_size + 2 * model.kv_size, h),
        "o_proj": (h, model.q_size),
        "gate_up_proj": (2 * inter, h),
        "down_proj": (h, inter),
        "lm_head": (model.vocab_size, h),
    }


def convert(folder: str | Path) -> pd.DataFrame:
    folder = Path(folder)
    model, meta = _model(folder)
    device = meta["gpu"]
    source = f"{meta['model']} layer tables, vLLM {meta['vllm_version']}, LLMServingSim profiler (MIT)"
    shapes = gemm_shapes(model)
    rows = []
    dense = pd.read_csv(folder / "dense.csv")
    per_seq = pd.read_csv(folder / "per_sequence.csv").rename(columns={"sequences": "tokens"})
    for table in (dense, per_seq):
        for r in table.itertuples(index=False):
            if r.layer in shapes:
                n, k = shapes[r.layer]
                rows.append({"op": "gemm", "dtype": "bf16", "m": int(r.tokens), "n": n, "k": k,
                             "time_us": float(r.time_us), "device": device, "source": f"{source}: {r.layer}"})
    heads = {"heads": model.num_heads, "kv_heads": model.num_kv_heads, "head_dim": model.head_dim}
    attention = pd.read_csv(folder / "attention.csv")
    for r in attention.itertuples(index=False):
        if r.prefill_chunk == 0 and r.n_decode > 0 and r.kv_decode > 0:
            rows.append({"op": "attn_decode", "dtype": "bf16", "batch": int(r.n_decode), "kv_len": int(r.kv_decode),
                         **heads, "time_us": float(r.time_us), "device": device, "source": f"{source}: attention"})
        elif r.n_decode == 0 and r.prefill_chunk > 0:
            rows.append({"op": "attn_prefill", "dtype": "bf16", "batch": 1, "seq_len": int(r.prefill_chunk),
                         "kv_len": int(r.kv_prefill + r.prefill_chunk), **heads, "time_us": float(r.time_us),
                         "device": device, "source": f"{source}: attention"})
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
