"""What the calibration fits are computed from: the kind of each op, the shape features of
each measurement row, its FLOPs and bytes, and the numbers of the device it ran on.

A measurement row (`measurements.py`) carries an op, a dtype, shape parameters and a time. The
fits (`fit_roofline.py`) and the interpolation table (`fit_table.py`) work on the features
derived here: the table's axes per op (`models/op_kinds.TABLE_AXES`: which are size axes the
table keeps non-decreasing, which are interpolated freely, which are categorical), FLOPs and
bytes computed with the same formulas as `kernels.operator_for` (vectorised over rows), and
the spec's peak, bandwidth, compute units and links that the fitted efficiencies are ratios
to. They live apart so that fitting, predicting, and transferring a fit to another device
all read a row, and a device, the same way.
"""
from __future__ import annotations

from types import SimpleNamespace

import numpy as np
import pandas as pd

from ..hardware.loader import System
from ..models.op_kinds import ATTENTION, GEMM, TABLE_AXES, kinds_of
from ..models.operators import gemm_bytes
from .kernels import measured_precision, moe_operators

DIRECTIONS = ("h2d", "d2h", "d2d")
DTYPE_BYTES = {"fp32": 4.0, "tf32": 4.0, "bf16": 2.0, "fp16": 2.0, "fp8": 1.0, "int8": 1.0, "int4": 0.5}

COMPUTE_OPS = tuple(op for op in kinds_of(GEMM, ATTENTION) if op in TABLE_AXES)  # timed by a roofline fit


# ---------------------------------------------------------------------------------------
# shape features, FLOPs and bytes (vectorised; the same formulas as kernels.operator_for)

def features(op: str, frame: pd.DataFrame) -> dict[str, np.ndarray]:
    """The table features of each row (raw values; `context` = kv_len - seq_len)."""
    if op == "attn_prefill":
        seq = frame["seq_len"].to_numpy(float)
        out = {c: frame[c].to_numpy(float) for c in ("batch", "heads", "kv_heads", "head_dim")}
        out["seq_len"] = seq
        out["context"] = np.maximum(frame["kv_len"].to_numpy(float) - seq, 0.0)
        return out
    if op == "memcpy":
        codes = frame["direction"].map({d: i for i, d in enumerate(DIRECTIONS)})
        return {"bytes": frame["bytes"].to_numpy(float), "direction": codes.to_numpy(float)}
    return {name: frame[name].to_numpy(float) for name, _, _ in TABLE_AXES[op]}


def work(op: str, dtype: str, f: dict[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """(FLOPs, bytes) of each row, as `kernels.operator_for` computes them."""
    if op == "gemm":
        m, n, k = f["m"], f["n"], f["k"]
        return 2.0 * m * n * k, np.asarray(gemm_bytes(m, 1, n, k, measured_precision(dtype)))
    if op == "moe":  # the routed experts' three operators summed, row by row (tables of tens of rows)
        layers = [moe_operators(SimpleNamespace(dtype=dtype, **{name: v[i] for name, v in f.items()}))
                  for i in range(len(f["tokens"]))]
        return (np.array([sum(o.flops for o in ops) for ops in layers], dtype=float),
                np.array([sum(o.bytes for o in ops) for ops in layers], dtype=float))
    ab = DTYPE_BYTES[dtype] if dtype in ("bf16", "fp16") else 2.0  # attention runs in 16-bit
    h, kvh, d, batch = f["heads"], f["kv_heads"], f["head_dim"], f["batch"]
    if op == "attn_prefill":
        seq, ctx = f["seq_len"], f["context"]
        flops = 4.0 * h * d * batch * seq * (ctx + (seq + 1) / 2.0)
        return flops, 2 * batch * seq * h * d * ab + 2 * batch * (ctx + seq) * kvh * d * ab
    if op == "attn_decode":
        kv = f["kv_len"]
        return 4.0 * h * d * batch * kv, 2 * batch * kv * kvh * d * ab + 2 * batch * h * d * ab
    raise ValueError(f"{op} is not a compute kernel")


def device_numbers(system: System, op: str, dtype: str) -> dict[str, float]:
    """What the fit needs of the hardware: peak of the dtype, memory bandwidth, units, links."""
    dev = system.accelerator
    out = {"bandwidth": float(dev.main_memory.bandwidth), "units": float(dev.compute.units)}
    if dev.compute.clock is not None:
        out["clock_hz"] = float(dev.compute.clock)
    if op in COMPUTE_OPS:
        out["peak_flops"] = float(dev.peak_flops(dtype if op in ("gemm", "moe") else (dtype if dtype in ("bf16", "fp16")
                                                                                    else "bf16")))
    if system.fabric is not None:
        out["fabric_bandwidth"] = float(system.fabric.bandwidth)
        out["fabric_latency_us"] = system.fabric.latency * 1e6
    if system.network is not None:
        out["network_bandwidth"] = float(system.network.bandwidth)
        out["network_latency_us"] = system.network.latency * 1e6
    if system.host_link is not None:
        out["host_bandwidth"] = float(system.host_link.bandwidth)
        out["host_latency_us"] = system.host_link.latency * 1e6
    out["devices_per_node"] = float(system.devices_per_node)
    out["memory_max"] = float(dev.efficiency.memory_max)  # the spec's defaults, for what was not measured
    out["network_efficiency"] = float(dev.efficiency.network_efficiency)
    return out
