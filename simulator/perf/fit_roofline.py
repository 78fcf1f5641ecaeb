"""The roofline-with-efficiency fit, per op kind: the part of a calibration used outside the
measured grid, and the prior the interpolation table (`fit_table.py`) is filled from.

Each kind of op has its own family of model, with a fit and a predictor:
- compute kernels (gemm, attn_prefill, attn_decode, moe): soft maximum of compute, memory and
  thread-block terms with fitted efficiencies, tiles and saturation constants
  (`fit_compute.py`);
- collectives: latency + bytes / bandwidth per measured world size, and the ring model's
  latency per step and network efficiency across them (`fit_links.py`);
- memcpy: latency + bytes / bandwidth per direction (`fit_links.py`).
The handful of parameters are fitted by robust least squares on log(time)
(scipy.optimize.least_squares, soft-L1 loss, bounded to physical ranges; discrete tiles by
trying each; `fit_least_squares.py`). `OpModel.efficiencies()` are ratios to the spec
(compute_max, memory_max, ...), sizes (tiles, k_half, small_bytes_half) and overheads, so
`fitting.transfer` can apply them to another device's peak, bandwidth, units and links.

This module binds an op to its family, so its callers (`fitting.fit_op`, `OpModel`,
`fitting.transfer`) never branch on the kind of op.
"""
from __future__ import annotations

from collections.abc import Callable
from functools import partial

import numpy as np

from ..models.op_kinds import COLLECTIVE_KINDS
from .fit_compute import compute_predict, fit_compute
from .fit_inputs import COMPUTE_OPS
from .fit_links import collective_predict, fit_collective, fit_memcpy, memcpy_predict


def _family(op: str, dtype: str) -> tuple[Callable, Callable]:
    """The op family's (fit, predict) functions, bound to the op (and a compute op's dtype):
    fit(features, log_t, dev) -> params and predict(features, params, dev) -> microseconds."""
    if op in COMPUTE_OPS:
        return partial(fit_compute, op, dtype), partial(compute_predict, op, dtype)
    if op in COLLECTIVE_KINDS:
        return partial(fit_collective, op), partial(collective_predict, op)
    if op == "memcpy":
        return fit_memcpy, memcpy_predict
    raise ValueError(f"unknown op {op}")


def fit_predict(op: str, dtype: str, f: dict[str, np.ndarray], q: dict[str, float],
                dev: dict[str, float]) -> np.ndarray:
    """The fit's time in microseconds."""
    return _family(op, dtype)[1](f, q, dev)


def fit_params(op: str, dtype: str, f: dict[str, np.ndarray], log_t: np.ndarray,
               dev: dict[str, float]) -> dict[str, float]:
    return _family(op, dtype)[0](f, log_t, dev)
