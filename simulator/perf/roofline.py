"""Roofline time of one operator on one device, with named, shape-dependent efficiencies.

    t = max(flops / (peak[dtype] * e_c), bytes / (bandwidth * e_m))

e_c (compute efficiency) = compute_max * wave_efficiency(m, n): a GEMM is split into output
tiles of tile_m x tile_n, one per compute unit at a time; the last partial wave leaves units
idle. e_m (memory efficiency) = memory_max * bytes / (bytes + small_bytes_half): streaming
kernels reach memory_max only once they move enough bytes to hide DRAM latency; this
saturating curve halves the efficiency at `small_bytes_half`.
Attention kernels use attention_compute_max in place of compute_max. All knobs live in the
device spec's `efficiency:` block (see hardware/spec.py `Efficiency`) and are what
calibration fits. Launch and inter-kernel overheads are added by the cost model, which
knows whether the iteration replays a CUDA graph.
"""
from __future__ import annotations

import math

from ..hardware.spec import DeviceSpec
from ..models.operators import Operator


def wave_efficiency(m: int, n: int, tile_m: int, tile_n: int, units: int) -> float:
    """Fraction of compute units busy, averaged over the waves of a tiled GEMM."""
    tiles = math.ceil(m / tile_m) * math.ceil(n / tile_n)
    waves = math.ceil(tiles / units)
    return tiles / (waves * units)


def memory_efficiency(device: DeviceSpec, nbytes: float) -> float:
    eff = device.efficiency
    return eff.memory_max * nbytes / (nbytes + eff.small_bytes_half)


def compute_efficiency(device: DeviceSpec, op: Operator) -> float:
    eff = device.efficiency
    if op.kind == "gemm":
        return eff.compute_max * wave_efficiency(op.m, op.n, eff.tile_m, eff.tile_n, device.compute.units)
    if op.kind in ("attn_prefill", "attn_decode"):
        return eff.attention_compute_max
    return eff.compute_max


def compute_time_s(device: DeviceSpec, op: Operator) -> float:
    if op.flops <= 0:
        return 0.0
    return op.flops / (device.peak_flops(op.dtype) * compute_efficiency(device, op))


def memory_time_s(device: DeviceSpec, op: Operator) -> float:
    if op.bytes <= 0:
        return 0.0
    bandwidth = device.main_memory.bandwidth
    return op.bytes / (bandwidth * memory_efficiency(device, op.bytes))


def operator_time_s(device: DeviceSpec, op: Operator) -> float:
    """Roofline time of one execution of a compute or memory operator (no launch cost)."""
    return max(compute_time_s(device, op), memory_time_s(device, op))
