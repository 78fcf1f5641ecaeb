"""Attention over decodes of unequal context: the longest decodes leave a tail.

An attention call runs its sequences as thread blocks over the GPU's compute units, so a call
whose decodes read very different amounts of KV does not take the time of the same decodes
at their mean context: the blocks of the longest run on after the others have finished, with
only a few units streaming. The tables of vLLM 0.19's attention on the RTX PRO 6000 (the
layer-table profiler's `skew.csv`: batches of n decodes at kvs tokens, a share of them at 4 x
kvs, each timed beside the uniform batches at the mean and at the longest context, alone and
with a prefill chunk in the call) show it as

    t(skewed) = t(every decode at the mean) + alpha x (t(every decode at the longest) - t(mean))

with alpha falling as the batch grows (a long decode is a smaller share of more blocks). For
Llama-3.1-8B's attention (32 query and 8 KV heads) with a prefill chunk in the call (the
varlen path: one block per sequence and head, a long sequence's KV not split) it is 0.53 at
4 decodes, 0.28 at 8, 0.09 at 32, 0.015 at 128; with decodes alone (the split-KV path) 0.03
or less from 8 to 32 decodes, where the kernel splits long sequences, then 0.08 at 64 and
0.04 at 128.

`ContextSkew` holds alpha per attention shape (heads, kv_heads, head_dim on one device) and
path (`mixed`: a prefill chunk in the call; `decode`: decodes alone) over log2(decodes),
fitted by `simulate calibrate` from `attn_skew` rows: the median alpha of the rows where at
most a quarter of the decodes are the long ones (serving batches have a long tail: few
requests near the longest). It applies on the device the tables were measured on, to the
path a step's attention takes (`CostModel._skew_alpha`): a call with a prefill chunk takes the
unsplit curve, decodes alone run eagerly the split one, and a decode replayed from a FULL CUDA
graph the unsplit one where vLLM's FlashAttention-2 froze the split at one part per sequence
when it captured the graph (perf/cuda_graphs.py), none where the graph's attention splits
otherwise (the tables do not time that). Without a measurement alpha is 0 (every decode
costed at the mean context).
"""
from __future__ import annotations

import math
from typing import Any

import numpy as np
import pandas as pd

from .mixed_attention import HEAD_KEYS, shape_key

PATHS = ("decode", "mixed")
# rows whose long decodes are at most this share of the batch are fitted (the long-tail case)
LONG_SHARE_FITTED = 0.25


class SkewCurve:
    """alpha over log2(decodes), linear between the measured batch sizes, clamped at the ends."""

    def __init__(self, log2_batch: list[float], alpha: list[float]):
        self.log2_batch, self.alpha = log2_batch, alpha

    def __call__(self, decodes: float) -> float:
        return float(np.interp(math.log2(max(decodes, 1.0)), self.log2_batch, self.alpha))

    def many(self, decodes: np.ndarray) -> np.ndarray:
        return np.interp(np.log2(np.maximum(decodes, 1.0)), self.log2_batch, self.alpha)

    def to_dict(self) -> dict[str, Any]:
        return {"log2_batch": self.log2_batch, "alpha": [round(a, 4) for a in self.alpha]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SkewCurve:
        return cls([float(v) for v in d["log2_batch"]], [float(v) for v in d["alpha"]])


def row_alpha(rows: pd.DataFrame) -> np.ndarray:
    """Each `attn_skew` row's alpha: where its time lies between its uniform references."""
    mean, longest = rows["mean_us"].to_numpy(dtype=float), rows["max_us"].to_numpy(dtype=float)
    return (rows["time_us"].to_numpy(dtype=float) - mean) / np.maximum(longest - mean, 1e-9)


def row_paths(rows: pd.DataFrame) -> np.ndarray:
    """'mixed' for rows with a prefill chunk in the call, else 'decode'."""
    chunk = pd.to_numeric(rows["seq_len"], errors="coerce") if "seq_len" in rows else pd.Series(0.0, index=rows.index)
    return np.where(chunk.fillna(0.0).to_numpy() > 0, "mixed", "decode")


class ContextSkew:
    """Measured alpha per attention shape and path (see the module docstring)."""

    def __init__(self, curves: dict[tuple[tuple[int, int, int], str], SkewCurve], rows: int):
        self.curves, self.rows = curves, rows

    def curve(self, heads: int, kv_heads: int, head_dim: int, path: str) -> SkewCurve | None:
        return self.curves.get(((heads, kv_heads, head_dim), path))

    @classmethod
    def fit(cls, rows: pd.DataFrame) -> ContextSkew:
        frame = rows.assign(alpha=np.clip(row_alpha(rows), -0.5, 1.5), path=row_paths(rows))
        frame = frame[frame["long"] <= LONG_SHARE_FITTED * frame["batch"]]
        curves: dict[tuple[tuple[int, int, int], str], SkewCurve] = {}
        for (*shape, path), group in frame.groupby([*HEAD_KEYS, "path"]):
            medians = group.groupby("batch")["alpha"].median().clip(lower=0.0, upper=1.0)
            curves[(shape_key(shape), str(path))] = SkewCurve(
                [math.log2(float(b)) for b in medians.index], [float(a) for a in medians])
        return cls(curves, len(rows))

    def to_dict(self) -> dict[str, Any]:
        return {"method": f"median alpha = (skewed - uniform at mean) / (uniform at longest - uniform at mean) per "
                          f"decode count, rows with at most {LONG_SHARE_FITTED:.0%} long decodes",
                "rows": self.rows,
                "curves": [{**dict(zip(HEAD_KEYS, shape)), "path": path, **curve.to_dict()}
                           for (shape, path), curve in self.curves.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ContextSkew:
        curves = {}
        for entry in d["curves"]:
            if entry["path"] not in PATHS:
                raise ValueError(f"path {entry['path']!r} is not one of {', '.join(PATHS)}")
            curves[(shape_key(entry[k] for k in HEAD_KEYS), str(entry["path"]))] = SkewCurve.from_dict(entry)
        return cls(curves, int(d.get("rows", 0)))
