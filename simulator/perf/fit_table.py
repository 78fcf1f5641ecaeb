"""The interpolation table: the part of a calibration used inside the measured grid.

Its axes are the unique measured values of each shape feature (`models/op_kinds.TABLE_AXES`: m, n, k;
batch, seq_len, context = kv_len - seq_len, heads, kv_heads, head_dim; bytes, world_size,
direction) on a log scale; grids of more than 250k nodes are thinned to quantile knots. A
measured node holds the mean measured log(time). An unmeasured node holds the fit times
exp(residual), the residual log(measured / fit) spread from the measured nodes
(`fit_residual_fill.py`: one offset per axis value, then a harmonic fill along the axes and
steps where the residual is smooth, back to the fit far from data). The grid is then made
non-decreasing along the size axes (the axes of kind "mono") by weighted isotonic regression
along each axis (twice round) and a running maximum, and stored as log(time) rounded to
0.001 (0.05 %). Queries are answered by multilinear interpolation of log(time) in the log
features. A node is "supported" when it is measured, next to a measured node, or between
two measured nodes along some axis; a query whose interpolation uses only supported corners
is inside the measured hull.

The table is also what a profile stores of each (op, dtype): `Table.to_dict` and
`Table.from_dict` are its YAML form (axes, log times, support bits).
"""
from __future__ import annotations

import base64
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..models.op_kinds import TABLE_AXES
from .fit_residual_fill import harmonic_fill, main_effects

_MAX_NODES = 250_000  # a larger grid is thinned to quantile knots per axis
_ROUND = 3  # table log(time_us) kept to 3 decimals (0.05 % at most)


def _pav(y: np.ndarray, w: np.ndarray) -> np.ndarray:
    """Weighted isotonic (non-decreasing) regression of one line, pool-adjacent-violators."""
    vals, wts, lens = [], [], []
    for yi, wi in zip(y.tolist(), w.tolist()):
        vals.append(yi)
        wts.append(wi)
        lens.append(1)
        while len(vals) > 1 and vals[-2] > vals[-1]:
            w2 = wts[-2] + wts[-1]
            v = (vals[-2] * wts[-2] + vals[-1] * wts[-1]) / w2
            n = lens[-2] + lens[-1]
            del vals[-1], wts[-1], lens[-1]
            vals[-1], wts[-1], lens[-1] = v, w2, n
    return np.repeat(vals, lens)


def _isotonic_along(values: np.ndarray, weights: np.ndarray, axis: int) -> np.ndarray:
    v = np.moveaxis(values, axis, -1)
    w = np.moveaxis(weights, axis, -1)
    flat_v, flat_w = v.reshape(-1, v.shape[-1]), w.reshape(-1, v.shape[-1])
    out = flat_v.copy()
    bad = np.flatnonzero((np.diff(flat_v, axis=1) < 0).any(axis=1))
    for i in bad:
        out[i] = _pav(flat_v[i], flat_w[i])
    return np.moveaxis(out.reshape(v.shape), -1, axis)


def _knots(values: np.ndarray, most: int) -> np.ndarray:
    """Unique values, thinned to `most` quantile knots (every so many unique values)."""
    u = np.unique(values)
    if len(u) <= most:
        return u
    pick = np.unique(np.round(np.linspace(0, len(u) - 1, most)).astype(int))
    return u[pick]


@dataclass
class Table:
    """log(time_us) on the grid of measured feature values; see the module docstring."""

    names: tuple[str, ...]
    offsets: tuple[float, ...]
    kinds: tuple[str, ...]
    axes: list[np.ndarray]  # raw feature values per axis, sorted
    values: np.ndarray  # log(time_us), shape = axis lengths
    support: np.ndarray  # bool, same shape: measured or bracketed by measured nodes

    def coords(self, i: int, x: np.ndarray) -> np.ndarray:
        return np.log(x + self.offsets[i])

    # -- building --------------------------------------------------------------------------
    @classmethod
    def build(cls, op: str, f: dict[str, np.ndarray], log_t: np.ndarray,
              baseline: Callable[[dict[str, np.ndarray]], np.ndarray]) -> Table:
        spec = TABLE_AXES[op]
        names = tuple(s[0] for s in spec)
        offsets = tuple(s[1] for s in spec)
        kinds = tuple(s[2] for s in spec)
        axes = [np.unique(f[n]) for n in names]
        most = max(len(a) for a in axes)
        while int(np.prod([len(a) for a in axes])) > _MAX_NODES and most > 4:
            most = int(most * 0.8)
            axes = [a if kinds[i] == "cat" else _knots(f[names[i]], most) for i, a in enumerate(axes)]
        shape = tuple(len(a) for a in axes)
        # each row on its nearest node (exact when the axes are not thinned)
        idx = []
        for i, a in enumerate(axes):
            if kinds[i] == "cat":
                idx.append(np.searchsorted(a, f[names[i]]))
                continue
            c = np.log(a + offsets[i])
            x = np.log(f[names[i]] + offsets[i])
            j = np.clip(np.searchsorted(c, x), 1, max(len(c) - 1, 1))
            if len(c) > 1:
                j = np.where(np.abs(x - c[j - 1]) <= np.abs(c[j] - x), j - 1, j)
            else:
                j = np.zeros(len(x), dtype=int)
            idx.append(j)
        flat = np.ravel_multi_index(idx, shape)
        n_nodes = int(np.prod(shape))
        count = np.bincount(flat, minlength=n_nodes).astype(float)
        known = count > 0
        grid = np.meshgrid(*axes, indexing="ij")
        node_f = {n: g.ravel() for n, g in zip(names, grid)}
        base = np.log(baseline(node_f))
        # a node's value: the fit there times the mean ratio measured / fit of its rows (the
        # mean measured time when the axes are the measured values; on thinned axes this
        # keeps the fit's shape between a row and its node)
        ratio = np.bincount(flat, weights=log_t - np.log(baseline(f)), minlength=n_nodes)
        mean = base.copy()
        mean[known] += ratio[known] / count[known]
        base = base + main_effects(mean - base, known, shape, kinds)
        residual = np.zeros(n_nodes)
        residual[known] = mean[known] - base[known]
        residual = harmonic_fill(residual, known, shape, kinds)
        values = (base + residual).reshape(shape)
        support = _support(known.reshape(shape), kinds)
        # measured nodes weigh their row count, filled nodes near data 1, far ones 0.01
        weights = np.where(known, count, np.where(support.ravel(), 1.0, 0.01)).reshape(shape)
        mono = [i for i, k in enumerate(kinds) if k == "mono" and shape[i] > 1]
        for _ in range(2):
            for i in mono:
                values = _isotonic_along(values, weights, i)
        for i in mono:
            values = np.maximum.accumulate(values, axis=i)
        values = np.round(values, _ROUND)
        for i in mono:  # rounding keeps order, but be exact
            values = np.maximum.accumulate(values, axis=i)
        return cls(names, offsets, kinds, axes, values, support)

    # -- querying -----------------------------------------------------------------------------
    def _corners(self, f: dict[str, np.ndarray]):
        """Per axis: lower index, weight of the upper index, and whether the value is in the box."""
        n = len(next(iter(f.values())))
        lows, ups, ok = [], [], np.ones(n, dtype=bool)
        for i, name in enumerate(self.names):
            a = self.axes[i]
            x = f[name]
            if self.kinds[i] == "cat" or len(a) == 1:
                j = np.clip(np.searchsorted(a, x), 0, len(a) - 1)
                ok &= np.isclose(a[j], x, rtol=1e-9, atol=1e-9)
                lows.append(j)
                ups.append(np.zeros(n))
                continue
            c = self.coords(i, a)
            xc = self.coords(i, x)
            ok &= (x >= a[0] * (1 - 1e-9)) & (x <= a[-1] * (1 + 1e-9))
            j = np.clip(np.searchsorted(c, xc, side="right") - 1, 0, len(a) - 2)
            t = np.clip((xc - c[j]) / (c[j + 1] - c[j]), 0.0, 1.0)
            lows.append(j)
            ups.append(t)
        return lows, ups, ok

    def lookup(self, f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(interpolated log time, in the box, in the measured hull) for every query.

        Values outside the box are clamped to it (use `clamp` and the fit there instead)."""
        lows, ups, ok = self._corners(f)
        n = len(ok)
        supported = np.ones(n, dtype=bool)
        live = [i for i in range(len(self.names)) if self.kinds[i] != "cat" and len(self.axes[i]) > 1]
        vflat, sflat = self.values.ravel(), self.support.ravel()
        corners = np.empty((n,) + (2,) * len(live))
        for corner in range(1 << len(live)):
            idx, w, pos = list(lows), np.ones(n), []
            for b, i in enumerate(live):
                bit = corner >> b & 1
                pos.append(bit)
                if bit:
                    idx[i] = lows[i] + 1
                w = w * (ups[i] if bit else 1.0 - ups[i])
            flat = np.ravel_multi_index(idx, self.values.shape)
            at: tuple[slice | int, ...] = (slice(None), *pos)
            corners[at] = vflat[flat]
            supported &= (w <= 1e-12) | sflat[flat]
        # successive linear interpolations, last axis first: exact at the nodes and on flat
        # stretches, and monotone in each coordinate
        for b in reversed(range(len(live))):
            t = ups[live[b]].reshape((n,) + (1,) * b)
            lo, hi = corners[..., 0], corners[..., 1]
            corners = np.where(t >= 1.0, hi, np.clip(lo + t * (hi - lo), np.minimum(lo, hi), np.maximum(lo, hi)))
        out = corners.reshape(n)
        return out, ok, ok & supported

    def clamp(self, f: dict[str, np.ndarray]) -> tuple[dict[str, np.ndarray], np.ndarray]:
        """Queries moved to the nearest point of the box, and the log distance moved."""
        g, dist2 = {}, 0.0
        for i, name in enumerate(self.names):
            a, x = self.axes[i], f[name]
            if self.kinds[i] == "cat":
                g[name] = x
                continue
            y = np.clip(x, a[0], a[-1])
            g[name] = y
            dist2 = dist2 + (self.coords(i, x) - self.coords(i, y)) ** 2
        return g, np.sqrt(dist2) * np.ones(len(next(iter(f.values()))))

    # -- YAML ----------------------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {
            "axes": {n: [float(v) if not float(v).is_integer() else int(v) for v in a]
                     for n, a in zip(self.names, self.axes)},
            "log_time_us": " ".join(_fmt(v) for v in self.values.ravel()),
            "support_bits": base64.b64encode(np.packbits(self.support.ravel()).tobytes()).decode("ascii"),
        }

    @classmethod
    def from_dict(cls, op: str, d: dict[str, Any]) -> Table:
        spec = TABLE_AXES[op]
        names = tuple(s[0] for s in spec)
        axes = [np.asarray(d["axes"][n], dtype=float) for n in names]
        shape = tuple(len(a) for a in axes)
        values = np.array(d["log_time_us"].split(), dtype=float).reshape(shape)
        bits = np.frombuffer(base64.b64decode(d["support_bits"]), dtype=np.uint8)
        support = np.unpackbits(bits)[: values.size].astype(bool).reshape(shape)
        return cls(names, tuple(s[1] for s in spec), tuple(s[2] for s in spec), axes, values, support)


def _fmt(v: float) -> str:
    text = f"{v:.{_ROUND}f}".rstrip("0").rstrip(".")
    return "0" if text in ("-0", "") else text


def _support(known: np.ndarray, kinds: tuple[str, ...]) -> np.ndarray:
    """Nodes measured, next to a measured node, or between two measured nodes, along an axis."""
    out = known.copy()
    for i, kind in enumerate(kinds):
        if kind == "cat" or known.shape[i] < 2:
            continue
        before = np.maximum.accumulate(known, axis=i)
        after = np.flip(np.maximum.accumulate(np.flip(known, axis=i), axis=i), axis=i)
        out |= before & after
        lo, hi = [slice(None)] * known.ndim, [slice(None)] * known.ndim
        lo[i], hi[i] = slice(0, -1), slice(1, None)
        out[tuple(lo)] |= known[tuple(hi)]
        out[tuple(hi)] |= known[tuple(lo)]
    return out
