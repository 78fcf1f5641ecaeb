"""How the interpolation table fills its unmeasured nodes: the residual log(measured / fit)
spread from the measured nodes.

The measured grid (`fit_table.py`) rarely measures every combination of its axis values. An
unmeasured node holds the fit times exp(residual), and the residual comes from two steps:
first one offset per axis value (`main_effects`, a ridge fit; kernel selection often singles
out one m or one k for every other dimension), then what is left is spread from the measured
nodes by a harmonic (graph-Laplacian) fill (`harmonic_fill`) whose edge weight between two
neighbouring axis values is 1 / (how much the residual changes between measured neighbours
across that step)^2, with a weak pull back to the fit far from data. The residual thus
travels along the axes and steps where it is smooth, not across the jumps of kernel
selection. Kept apart from the table because it is a numerical method of its own (a sparse
ridge least squares, then a sparse linear system solved directly or by conjugate gradients)
that the table only calls.
"""
from __future__ import annotations

import numpy as np

_STEP_PRIOR = 10.0  # pairs of measured neighbours a step's own spread needs to count as much as its axis's


def main_effects(residual: np.ndarray, known: np.ndarray, shape: tuple[int, ...],
                 kinds: tuple[str, ...], damp: float = 1.0) -> np.ndarray:
    """Per-axis-value offsets of the residual (r ~ sum_i a_i[index_i]), ridge-fitted on the
    measured nodes and evaluated on every node.

    Kernel selection often depends on one dimension alone (an m that is a multiple of the
    tile, an unaligned k): such a value is slower or faster for every other dimension, which
    this additive term carries to the unmeasured nodes of the same row, column or slab.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import lsqr
    kn = np.flatnonzero(known)
    if kn.size < 10:
        return np.zeros(known.size)
    index = np.unravel_index(np.arange(known.size), shape)
    columns, offset = [], 0
    for i in range(len(kinds)):
        if shape[i] < 2:
            continue
        columns.append(index[i] + offset)
        offset += shape[i]
    if not columns:
        return np.zeros(known.size)
    cols = np.stack(columns, axis=1)

    def design(rows):
        n = len(rows)
        per_row = cols.shape[1]
        return sp.csr_matrix((np.ones(n * per_row), (np.repeat(np.arange(n), per_row), cols[rows].ravel())),
                             shape=(n, offset))
    mu = float(residual[kn].mean())
    coef = lsqr(design(kn), residual[kn] - mu, damp=damp, atol=1e-6, btol=1e-6, iter_lim=2000)[0]
    return mu + design(np.arange(known.size)) @ coef


def _cg(A, b, M) -> np.ndarray:
    from scipy.sparse.linalg import cg
    try:
        solution, _ = cg(A, b, rtol=1e-7, maxiter=3000, M=M)
    except TypeError:  # scipy < 1.12 calls it tol
        solution, _ = cg(A, b, tol=1e-7, maxiter=3000, M=M)
    return solution


def harmonic_fill(residual: np.ndarray, known: np.ndarray, shape: tuple[int, ...],
                  kinds: tuple[str, ...]) -> np.ndarray:
    """Residuals of unmeasured nodes: the graph-harmonic extension of the measured ones.

    Edges join neighbours along every non-categorical axis. The edges between axis values j
    and j + 1 weigh 1 / s^2, s being the typical change of the residual between measured
    neighbours across that step (1.48 x median |difference|, a robust standard deviation,
    shrunk toward the whole axis's value with the weight of `_STEP_PRIOR` pairs): the
    residual spreads along the axes and steps where it is smooth and not across the jumps
    of kernel selection (m = 512 -> 513, say). A small pull to zero (`eps`) makes nodes far
    from any measurement decay back to the fit.
    """
    import scipy.sparse as sp
    from scipy.sparse.linalg import spsolve
    n = int(np.prod(shape))
    if known.all() or not known.any():
        return residual
    index = np.arange(n).reshape(shape)
    r_grid, k_grid = residual.reshape(shape), known.reshape(shape)
    rows, cols, wts, spreads, steps = [], [], [], [], []
    for i, kind in enumerate(kinds):
        if kind == "cat" or shape[i] < 2:
            continue
        lo, hi = np.arange(shape[i] - 1), np.arange(1, shape[i])
        both = np.take(k_grid, lo, axis=i) & np.take(k_grid, hi, axis=i)
        diff = np.abs(np.take(r_grid, hi, axis=i) - np.take(r_grid, lo, axis=i))
        spread = 1.4826 * float(np.median(diff[both])) if both.sum() >= 5 else np.nan
        # per step along the axis: how much the residual changes from value j to j + 1
        moved = np.moveaxis(np.where(both, diff, np.nan), i, 0).reshape(shape[i] - 1, -1)
        counts = np.isfinite(moved).sum(axis=1)
        with np.errstate(all="ignore"):
            per_step = 1.4826 * np.nanmedian(np.where(counts[:, None] > 0, moved, 0.0), axis=1)
        spreads.append(spread)
        steps.append((per_step, counts))
        rows.append(np.take(index, lo, axis=i))
        cols.append(np.take(index, hi, axis=i))
    if not rows:
        return residual
    known_spreads = [v for v in spreads if np.isfinite(v)]
    fallback = float(np.median(known_spreads)) if known_spreads else 0.05
    for j, (a, spread, (per_step, counts)) in enumerate(zip(rows, spreads, steps)):
        spread = spread if np.isfinite(spread) else fallback
        # shrink each step's spread toward the axis's (weight: pairs seen at that step)
        shrunk = (counts * per_step ** 2 + _STEP_PRIOR * spread ** 2) / (counts + _STEP_PRIOR)
        local = np.where(counts >= 3, shrunk, spread ** 2)
        local = np.maximum(np.sqrt(local), 0.005)
        w = 1.0 / local ** 2
        axis = [k for k, kind in enumerate(kinds) if kind != "cat" and shape[k] >= 2][j]
        w = np.broadcast_to(np.expand_dims(w, [d for d in range(len(shape)) if d != axis]), a.shape)
        wts.append(w.ravel())
        rows[j], cols[j] = a.ravel(), cols[j].ravel()
    rows, cols, wts = rows + cols, cols + rows, wts + wts
    if not rows:
        return residual
    W = sp.csr_matrix((np.concatenate(wts), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n))
    deg = np.asarray(W.sum(axis=1)).ravel()
    eps = 1e-3 * float(np.median(np.concatenate(wts)))
    unknown = np.flatnonzero(~known)
    kn = np.flatnonzero(known)
    diag = deg[unknown] + eps
    A = (sp.diags(diag) - W[unknown][:, unknown]).tocsr()
    rhs = W[unknown][:, kn] @ residual[kn]
    out = residual.copy()
    if len(unknown) <= 5000:
        out[unknown] = spsolve(A.tocsc(), rhs)
    else:  # symmetric, strictly diagonally dominant: Jacobi-preconditioned conjugate gradients
        out[unknown] = _cg(A, rhs, sp.diags(1.0 / diag))
    return out
