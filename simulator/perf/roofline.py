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
from typing import cast

import numpy as np

from ..hardware.spec import DeviceSpec
from ..models.op_kinds import ATTENTION, GEMM, OP_KINDS, GemmShape, GroupedGemmShape
from ..models.operators import Operator


def wave_efficiency(m, n: int, tile_m: int, tile_n: int, units: int):
    """Fraction of compute units busy, averaged over the waves of a tiled GEMM (m may be an
    array of row counts: the same values, as floats of whole numbers)."""
    if isinstance(m, np.ndarray):
        tiles = np.ceil(m / tile_m) * math.ceil(n / tile_n)
        return tiles / (np.ceil(tiles / units) * units)
    tiles = math.ceil(m / tile_m) * math.ceil(n / tile_n)
    waves = math.ceil(tiles / units)
    return tiles / (waves * units)


def compute_efficiency(device: DeviceSpec, op: Operator) -> float:
    """The compute efficiency of the operator's family (models/op_kinds.py)."""
    eff = device.efficiency
    family = OP_KINDS[op.kind].family
    if family == GEMM:
        shape = cast(GemmShape | GroupedGemmShape, op.shape)
        # a grouped GEMM's tiles: those of each group's matrix, side by side
        columns = shape.n * shape.groups if isinstance(shape, GroupedGemmShape) else shape.n
        return eff.compute_max * wave_efficiency(shape.m, columns, eff.tile_m, eff.tile_n, device.compute.units)
    if family == ATTENTION:
        return eff.attention_compute_max
    return eff.compute_max


def compute_time_s(device: DeviceSpec, op: Operator):
    """FLOPs over the efficiency-scaled peak; works on numpy arrays of FLOPs too."""
    return op.flops / (device.peak_flops(op.dtype) * compute_efficiency(device, op))


def memory_time_s(device: DeviceSpec, op: Operator):
    """bytes / (bandwidth * memory_max * bytes / (bytes + small_bytes_half)), simplified.

    The saturating efficiency makes a transfer cost (bytes + small_bytes_half) / (bandwidth *
    memory_max): a fixed latency-like term plus the streaming term. Zero bytes cost nothing.
    """
    eff = device.efficiency
    nbytes = op.bytes
    scale = 1.0 / (device.main_memory.bandwidth * eff.memory_max)
    if isinstance(nbytes, np.ndarray):
        return np.where(nbytes > 0, (nbytes + eff.small_bytes_half) * scale, 0.0)
    return (nbytes + eff.small_bytes_half) * scale if nbytes > 0 else 0.0


def operator_time_s(device: DeviceSpec, op: Operator):
    """Roofline time of one execution of a compute or memory operator (no launch cost).

    Scalars give a float; an operator whose flops/bytes are arrays gives an array.
    """
    compute, memory = compute_time_s(device, op), memory_time_s(device, op)
    if isinstance(compute, np.ndarray) or isinstance(memory, np.ndarray):
        return np.maximum(compute, memory)
    return max(compute, memory)
