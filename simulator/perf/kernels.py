"""Standalone kernels as the measurement contract names them, mapped onto the cost model.

A measured row (`gemm` m,n,k; `attn_prefill`; `attn_decode`; collectives; `memcpy`) becomes
the same `Operator` the simulator costs inside an iteration, and a `moe` row the same routed
experts (`moe_operators`), so validation compares exactly what a run uses; `roofline_us`
gives the uncalibrated prediction of each row with the spec's named default efficiencies.
"""
from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd

from ..hardware.loader import System
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.op_kinds import COLLECTIVE, COPY, OP_KINDS, MoeShape
from ..models.operators import (
    Operator,
    Precision,
    Sharding,
    attention_decode_op,
    attention_prefill_op,
    gemm_op,
    routed_expert_ops,
)
from .collectives import TIME_MODELS
from .roofline import operator_time_s


def attention_model(heads: int, kv_heads: int, head_dim: int) -> ModelConfig:
    """A one-layer model with the measured attention shape (only its attention is used)."""
    return ModelConfig("kernel", heads * head_dim, 1, 1, heads, kv_heads, head_dim, 1, 1 << 30, False, True, False)


def measured_precision(dtype: str) -> Precision:
    """The precision a measured row of `dtype` ran at: 8- and 4-bit rows have 8- or 4-bit
    weights and 16-bit activations (a W8A8 GEMM quantises them on the way in)."""
    act = dtype if dtype in ("bf16", "fp16", "fp32") else "bf16"
    return Precision(weights=dtype if dtype in DTYPE_BYTES else "bf16", kv=act, activations=act)


def operator_for(row) -> Operator:
    """The Operator a measured compute row stands for (gemm or attention)."""
    op, dtype = row.op, str(row.dtype)
    if op == "gemm":
        return gemm_op("gemm", int(row.m), int(row.n), int(row.k), measured_precision(dtype))
    model = attention_model(int(row.heads), int(row.kv_heads), int(row.head_dim))
    prec, shard, batch = measured_precision(dtype), Sharding(), int(row.batch)
    if op == "attn_prefill":
        seq, kv = int(row.seq_len), int(row.kv_len)
        cached = kv - seq  # context before the chunk
        return attention_prefill_op(model, batch * seq, batch * kv, batch * seq * (cached + (seq + 1) / 2.0),
                                    shard, prec)
    if op == "attn_decode":
        return attention_decode_op(model, batch, batch * int(row.kv_len), shard, prec)
    raise ValueError(f"{op} is not a compute kernel")


def moe_operators(row) -> list[Operator]:
    """The routed-expert operators a measured `moe` row stands for: its tokens each routed to
    top_k experts (no expert parallelism), through gated experts (the layer vLLM's fused-MoE
    kernel runs; the measurement contract's `moe` rows are of gated experts)."""
    layer = MoeShape(float(row.tokens), float(row.experts_reached), int(row.hidden), int(row.intermediate),
                     int(row.experts), int(row.top_k))
    return routed_expert_ops(layer, layer.tokens * layer.top_k, True, measured_precision(str(row.dtype)), 1)


def _collective_link(system: System, world: int):
    link = system.fabric if world <= system.devices_per_node or system.network is None else system.network
    if link is None:
        raise ValueError(f"{system.name} has no link for a {world}-device collective")
    return link


def roofline_us(frame: pd.DataFrame, system: System) -> np.ndarray:
    """Uncalibrated predictions (default efficiencies) for every measured row, in microseconds."""
    device = system.accelerator
    eff = device.efficiency.network_efficiency
    out = np.empty(len(frame))
    row: Any  # a namedtuple of one row, its fields of whatever types the frame's columns hold
    for i, row in enumerate(frame.itertuples(index=False)):
        family = OP_KINDS[row.op].family
        if family == COLLECTIVE:
            world = int(row.world_size)
            link = _collective_link(system.sized_for(world), world)
            out[i] = TIME_MODELS[row.op](float(row.bytes), world, link, eff) * 1e6
        elif family == COPY:
            nbytes = float(row.bytes)
            if row.direction == "d2d":  # read and write device memory
                out[i] = 2 * nbytes / (device.main_memory.bandwidth * device.efficiency.memory_max) * 1e6
            else:
                link = system.host_link
                if link is None:
                    raise ValueError(f"{system.name} has no host link for {row.direction} copies")
                out[i] = (link.latency + nbytes / (link.bandwidth * eff)) * 1e6
        elif row.op == "moe":
            out[i] = sum(operator_time_s(device, op) for op in moe_operators(row)) * 1e6
        else:
            out[i] = operator_time_s(device, operator_for(row)) * 1e6
    return out
