"""Fitting measured kernel timings: the methods behind `simulate calibrate` (docs/contracts.md, section 6).

`fit_op(rows, system)` turns the measurement rows of one (op, dtype) into an `OpModel` with
two parts, `kfold_errors` measures it on shapes it never saw, and `transfer` carries its
efficiencies to another device's spec. This module holds those three entry points; the
pieces they are made of live beside it, one idea each:

- `fit_inputs.py`: what a fit reads of a row and of the device (shape features, FLOPs and
  bytes; peak, bandwidth, compute units, links).
- `fit_roofline.py`: 1. the **roofline-with-efficiency fit**, used outside the measured grid
  and as the prior the table below is filled from, per kind of op: `fit_compute.py` (GEMM,
  attention) and `fit_links.py` (collectives, memcpy), both solved by `fit_least_squares.py`.
- `fit_table.py`: 2. the **interpolation table** on the measured grid, used inside it; its
  unmeasured nodes are filled by `fit_residual_fill.py`.
- `fit_op_model.py`: the fitted model of one (op, dtype), which answers queries from the two
  parts and is what a profile stores.

**Guarantees.** Within the box of measured ranges the prediction is the table, and it is
non-decreasing in every size axis (gemm m, n, k; attention batch, seq_len, context, kv_len,
heads; collective and memcpy bytes; a fused-MoE layer's tokens and experts reached): the grid
is non-decreasing along every axis and multilinear interpolation (done as successive clamped linear steps) keeps that, exactly at
nodes and on flat stretches. It passes through the measured nodes except where the data
themselves decrease with size (GEMM kernel selection does that: an fp8 GEMM with m = 257
can be slower than with m = 512), where the isotonic fit takes a weighted mean. The fit
alone is non-decreasing in m, n and k between aligned GEMM shapes (an unaligned k or n pays
`unaligned_penalty`, so n = 4100 may cost more than n = 4104). Outside the box, the
prediction is the fit times the table's correction at the nearest point of the box,
decaying by a factor e per factor `_DECAY` (fit_op_model.py) of distance in the log
features, so it is continuous at the box but not guaranteed monotone there. Heads/kv_heads/head_dim, world
size and direction are not forced monotone (GQA packing and split-KV kernels can make more KV heads faster).

**Sources.** A row is "calibrated-interpolation" when it is inside the measured hull: within
the box (categorical features and axes with a single measured value matching exactly) and
every grid corner its interpolation uses is measured, next to a measured node, or between two
measured nodes along some axis. Every other row is "calibrated-fit": the fit, corrected by
the nearest measurements with a weight that fades with distance.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pandas as pd

from ..hardware.loader import System
from ..models.op_kinds import COLLECTIVE_KINDS, MEASURED, TABLE_AXES
from .fit_inputs import device_numbers, features
from .fit_op_model import OpModel
from .fit_roofline import fit_params, fit_predict
from .fit_table import Table

_INSIDE = "monotone log-log interpolation of the measured grid (unmeasured nodes: fit x harmonic fill of residuals); "
_METHOD = {
    "gemm": _INSIDE + "outside, the roofline fit smax(flops / (peak compute_max waves(tile_m, tile_n) k/(k + k_half)), "
                      "bytes / (bandwidth memory_max)) + overhead",
    "attn_prefill": _INSIDE + "outside, the roofline fit smax(flops / (peak attention_compute_max occupancy "
                              "kv/(kv + kv_half)), bytes / (bandwidth memory_max), block waves) + overhead",
    "attn_decode": _INSIDE + "outside, the roofline fit smax(flops / (peak attention_compute_max), bytes / "
                             "(bandwidth memory_max occupancy^p), blocks) + overhead",
    "moe": _INSIDE + "outside, the roofline fit smax(flops padded_rows/rows / (peak compute_max), bytes / "
                     "(bandwidth memory_max)) + overhead, each reached expert's rows padded to tile_m",
    "memcpy": "monotone log-log interpolation per direction; outside, latency + bytes / (link bandwidth efficiency)",
}
_COLLECTIVE_METHOD = ("monotone log-log interpolation per world size; outside, latency + bytes / bandwidth per "
                      "world size, unmeasured world sizes by the ring model with the fitted per-step latency and "
                      "network efficiency")


def _check_group(frame: pd.DataFrame) -> tuple[str, str]:
    if frame.empty:
        raise ValueError("no measurement rows to fit")
    ops, dtypes = frame["op"].unique(), frame["dtype"].astype(str).unique()
    if len(ops) != 1 or len(dtypes) != 1:
        raise ValueError(f"fit_op needs rows of one op and one dtype, got ops {list(ops)} dtypes {list(dtypes)}")
    op = str(ops[0])
    if op not in TABLE_AXES:
        raise ValueError(f"unknown op {op!r}")
    return op, str(dtypes[0])


def fit_op(frame: pd.DataFrame, system: System) -> OpModel:
    """Fit one (op, dtype) group of measurement rows on `system` (see the module docstring)."""
    op, dtype = _check_group(frame)
    f = features(op, frame)
    log_t = np.log(frame["time_us"].to_numpy(float))
    dev = device_numbers(system, op, dtype)
    params = fit_params(op, dtype, f, log_t, dev)
    table = Table.build(op, f, log_t, lambda g: fit_predict(op, dtype, g, params, dev))
    ranges = {p: [float(frame[p].min()), float(frame[p].max())] for p in MEASURED[op] if p != "direction"}
    method = _COLLECTIVE_METHOD if op in COLLECTIVE_KINDS else _METHOD[op]
    return OpModel(op, dtype, method, ranges, len(frame), params, dev, table)


def _shape_keys(frame: pd.DataFrame) -> np.ndarray:
    op = str(frame["op"].iloc[0])
    cols = [p for p in MEASURED[op] if p in frame.columns]
    return frame.groupby(cols, sort=False, dropna=False).ngroup().to_numpy()


def kfold_errors(frame: pd.DataFrame, system: System, k: int = 5, seed: int = 0) -> pd.DataFrame:
    """Held-out errors: every row predicted by a fit that never saw its shape.

    Shapes (unique parameter tuples) are dealt into k folds at random (seeded); all rows of a
    shape share a fold. Returns the rows with `predicted_us`, `error_pct` (signed,
    100 * (pred - meas) / meas), `fold` and `source`.
    """
    _check_group(frame)
    frame = frame.reset_index(drop=True)
    keys = _shape_keys(frame)
    n_shapes = int(keys.max()) + 1
    if n_shapes < 2:
        raise ValueError("held-out errors need at least two distinct shapes")
    k = max(2, min(k, n_shapes))
    fold_of_shape = np.random.default_rng(seed).permutation(n_shapes) % k
    fold = fold_of_shape[keys]
    predicted = np.empty(len(frame))
    source = np.empty(len(frame), dtype=object)
    for i in range(k):
        test = fold == i
        if not test.any():
            continue
        model = fit_op(frame[~test], system)
        predicted[test] = model.predict_us(frame[test])
        source[test] = model.source_of(frame[test])
    out = frame.copy()
    out["predicted_us"] = predicted
    out["error_pct"] = 100.0 * (predicted - out["time_us"].to_numpy(float)) / out["time_us"].to_numpy(float)
    out["fold"] = fold
    out["source"] = source
    return out


def transferred_params(model_or_efficiencies: OpModel | dict[str, float], target_system: System,
                       op: str | None = None) -> tuple[dict[str, float], str]:
    """The fit's parameters as they apply on `target_system`, and the op (see `transfer`): a
    GEMM's fixed cost scaled by the source's clock over the target's."""
    if isinstance(model_or_efficiencies, OpModel):
        params, op = model_or_efficiencies.efficiencies(), model_or_efficiencies.op
        source_clock = model_or_efficiencies.device.get("clock_hz")
    else:
        params, op, source_clock = dict(model_or_efficiencies), op or "gemm", None
    target_clock = target_system.accelerator.compute.clock
    if op == "gemm" and source_clock and target_clock:
        params["overhead_us"] *= source_clock / target_clock
    return params, op


def transfer(model_or_efficiencies: OpModel | dict[str, float], target_system: System,
             op: str | None = None) -> Callable[[pd.DataFrame], np.ndarray]:
    """A predictor (frame -> microseconds) that applies fitted efficiencies to another device.

    Only the fit's device-independent parameters travel (compute_max, memory_max, tiles,
    saturation constants, overheads; network efficiency and latency per step for
    collectives); the target's peak for each row's dtype, its memory bandwidth, compute units
    and links come from `target_system`. No measurement of the target is used. A GEMM's fixed
    cost (overhead_us: prologue, epilogue, tile scheduling) counts clock cycles, so it is
    scaled by the source's clock over the target's when the model knows its device's clock:
    on the shipped GEMM measurements that lowers the transfer's median error in 10 of the 12
    device pairs and raises it in one (A100 to H100: 20.1 % to 19.0 %); attention, where it
    raised it in most pairs, keeps its overheads. Pass `op` when giving a bare efficiencies
    dict (default gemm; no clock scaling, the dict knows no device).
    """
    params, op = transferred_params(model_or_efficiencies, target_system, op)
    if op in COLLECTIVE_KINDS:  # per-world-size fits are device specific; keep the link model
        params = {k: v for k, v in params.items() if "@" not in k}
    elif op == "memcpy":  # efficiencies of the link travel, latencies are the target link's
        params = {k: v for k, v in params.items() if k.startswith("efficiency@")}

    def predict(frame: pd.DataFrame) -> np.ndarray:
        if "dtype" not in frame.columns:
            raise ValueError("transfer needs a dtype column (the target's peak depends on it)")
        dtypes = frame["dtype"].astype(str).to_numpy()
        out = np.empty(len(frame))
        for dtype in np.unique(dtypes):
            where = np.flatnonzero(dtypes == dtype)
            dev = device_numbers(target_system, op, str(dtype))
            out[where] = fit_predict(op, str(dtype), features(op, frame.iloc[where]), params, dev)
        return out

    return predict
