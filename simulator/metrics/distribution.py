"""Percentile summaries of latency distributions, exact and streaming-friendly.

Percentiles are order statistics (numpy's "inverted_cdf": the smallest observed value with
at least p of the mass at or below it), so every reported figure is a latency that really
occurred. Inter-token gaps are kept as a weighted distribution (value, count): within one
iteration every decode that last produced a token at the same time sees the same gap, so the
exact distribution of all gaps costs memory per iteration, not per token.
"""
from __future__ import annotations

from array import array

import numpy as np

PERCENTILES = {"p50": 50, "p90": 90, "p95": 95, "p99": 99}


def summarize(values: np.ndarray) -> dict[str, float]:
    values = values[~np.isnan(values)]
    if values.size == 0:
        return {"mean": 0.0, **{k: 0.0 for k in PERCENTILES}, "max": 0.0, "count": 0}
    qs = np.percentile(values, list(PERCENTILES.values()), method="inverted_cdf")
    return {"mean": float(values.mean()), **{k: float(q) for k, q in zip(PERCENTILES, qs)},
            "max": float(values.max()), "count": int(values.size)}


def summarize_weighted(values: np.ndarray, counts: np.ndarray) -> dict[str, float]:
    if values.size == 0 or counts.sum() == 0:
        return summarize(np.zeros(0))
    order = np.argsort(values, kind="stable")
    v, c = values[order], counts[order]
    cum = np.cumsum(c)
    total = int(cum[-1])
    out = {"mean": float((v * c).sum() / total)}
    for key, p in PERCENTILES.items():
        out[key] = float(v[np.searchsorted(cum, p / 100.0 * total, side="left")])
    out["max"] = float(v[-1])
    out["count"] = total
    return out


class WeightedSamples:
    """Append-only (value, count) pairs in compact arrays."""

    def __init__(self) -> None:
        self.values = array("d")
        self.counts = array("q")

    def extend(self, values, counts) -> None:
        """Append (value, count) pairs given as two numpy arrays, or two tuples of numbers."""
        if isinstance(values, np.ndarray):
            self.values.frombytes(values.astype(np.float64, copy=False).tobytes())
            self.counts.frombytes(counts.astype(np.int64, copy=False).tobytes())
        else:
            self.values.extend(values)
            self.counts.extend(counts)

    def summary(self) -> dict[str, float]:
        return summarize_weighted(np.frombuffer(self.values, dtype=np.float64),
                                  np.frombuffer(self.counts, dtype=np.int64))
