"""Attention of a mixed step: decodes that share a step with prefill chunks cost more.

A serving engine runs a step's attention as one call over all its sequences. With only
decodes in the step the attention backend takes its decode path (split-KV, the query heads
that share a KV head packed into one tile); once a prefill chunk is in the step, every
sequence goes through the varlen prefill path, where a decode is a one-token query and its
KV is read with less reuse across the query heads that share it. Measured on vLLM 0.19's
backends (the RTX 4090 and RTX PRO 6000 layer tables, `attention.csv`, which time mixed
batches as well as pure ones), the decode part of a mixed step costs 1.3-3.5x the same
decodes alone, growing with the number of query heads per KV head g (a median 1.4-1.9 at
g = 4, 2.5-2.6 at g = 8, over 16-128 decodes of 512-4096 tokens):

    t(mixed) = t(prefill part alone) + factor x t(decodes alone)

`MixedAttention` holds the measured factor over (decodes, context per decode) per attention
shape, fitted by `simulate calibrate` from `attn_mixed` rows; without such a measurement
the factor is 1 + mixed_decode_gqa_miss x (g - 1) (spec `efficiency:`, 0.2 by default: the
median of the measured tables' 0.13-0.30).
"""
from __future__ import annotations

import bisect
import math
from collections.abc import Iterable
from typing import Any

import numpy as np
import pandas as pd

HEAD_KEYS = ("heads", "kv_heads", "head_dim")


def shape_key(values: Iterable[Any]) -> tuple[int, int, int]:
    """An attention shape's key, from its values in HEAD_KEYS' order."""
    heads, kv_heads, head_dim = (int(v) for v in values)
    return heads, kv_heads, head_dim


def default_factor(heads: int, kv_heads: int, gqa_miss: float) -> float:
    """The factor where nothing was measured: the extra KV reads of the query heads per KV head."""
    return 1.0 + gqa_miss * max(heads / max(kv_heads, 1) - 1.0, 0.0)


class FactorTable:
    """log(factor) on a grid of log2(decodes) x log2(context per decode), bilinear inside,
    clamped at the edges (the measured range; no extrapolation of a kernel's behaviour)."""

    def __init__(self, batch: list[float], context: list[float], log_factor: list[list[float]]):
        self.batch, self.context, self.log_factor = batch, context, log_factor

    def __call__(self, decodes: float, context: float) -> float:
        x = min(max(math.log2(max(decodes, 1.0)), self.batch[0]), self.batch[-1])
        y = min(max(math.log2(max(context, 1.0)), self.context[0]), self.context[-1])
        return math.exp(_bilinear(self.log_factor, self.batch, x, self.context, y))

    def to_dict(self) -> dict[str, Any]:
        return {"log2_batch": self.batch, "log2_context": self.context,
                "factor": [[round(math.exp(v), 4) for v in row] for row in self.log_factor]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FactorTable:
        return cls([float(v) for v in d["log2_batch"]], [float(v) for v in d["log2_context"]],
                   [[math.log(float(v)) for v in row] for row in d["factor"]])


def _bilinear(grid: list[list[float]], xs: list[float], x: float, ys: list[float], y: float) -> float:
    i = max(min(bisect.bisect_right(xs, x) - 1, len(xs) - 2), 0)
    j = max(min(bisect.bisect_right(ys, y) - 1, len(ys) - 2), 0)
    fx = (x - xs[i]) / (xs[i + 1] - xs[i]) if len(xs) > 1 else 0.0
    fy = (y - ys[j]) / (ys[j + 1] - ys[j]) if len(ys) > 1 else 0.0
    i1, j1 = min(i + 1, len(xs) - 1), min(j + 1, len(ys) - 1)
    return ((1 - fx) * (1 - fy) * grid[i][j] + fx * (1 - fy) * grid[i1][j]
            + (1 - fx) * fy * grid[i][j1] + fx * fy * grid[i1][j1])


class MixedAttention:
    """Measured factors per attention shape (heads, kv_heads, head_dim on one device)."""

    def __init__(self, tables: dict[tuple[int, int, int], FactorTable], rows: int):
        self.tables, self.rows = tables, rows

    def table(self, heads: int, kv_heads: int, head_dim: int) -> FactorTable | None:
        return self.tables.get((heads, kv_heads, head_dim))

    @classmethod
    def fit(cls, rows: pd.DataFrame, prefill_us, decode_us) -> MixedAttention:
        """From `attn_mixed` rows and predictors of the two parts alone (callables of a frame
        of `attn_prefill` / `attn_decode` rows, in microseconds): the median factor per
        (decodes, context) cell of each shape, over the prefill chunks measured with it."""
        prefill = pd.DataFrame({"batch": 1, "seq_len": rows["seq_len"], "kv_len": rows["prefill_kv_len"],
                                **{k: rows[k] for k in HEAD_KEYS}})
        decode = pd.DataFrame({"batch": rows["batch"], "kv_len": rows["kv_len"], **{k: rows[k] for k in HEAD_KEYS}})
        factor = (rows["time_us"].to_numpy() - np.asarray(prefill_us(prefill))) / np.asarray(decode_us(decode))
        frame = rows.assign(log_factor=np.log(np.clip(factor, 0.5, 10.0)))
        tables: dict[tuple[int, int, int], FactorTable] = {}
        for shape, group in frame.groupby(list(HEAD_KEYS)):
            cells = group.groupby(["batch", "kv_len"])["log_factor"].median().unstack()
            cells = cells.apply(lambda col: col.fillna(col.median())).fillna(cells.stack().median())
            tables[shape_key(shape)] = FactorTable(
                [math.log2(float(b)) for b in cells.index], [math.log2(float(k)) for k in cells.columns],
                cells.to_numpy().tolist())
        return cls(tables, len(rows))

    def to_dict(self) -> dict[str, Any]:
        return {"method": "median of (mixed time - prefill part alone) / decodes alone, per (decodes, context) cell",
                "rows": self.rows,
                "shapes": [{**dict(zip(HEAD_KEYS, shape)), **table.to_dict()} for shape, table in self.tables.items()]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> MixedAttention:
        return cls({shape_key(s[k] for k in HEAD_KEYS): FactorTable.from_dict(s) for s in d["shapes"]},
                   int(d.get("rows", 0)))
