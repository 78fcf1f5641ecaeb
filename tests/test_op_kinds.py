"""The operator-kind registry: every kind's measurement columns, calibration axes and time
model agree, and the alpha-beta models match hand-computed values."""
from __future__ import annotations

from types import SimpleNamespace

import pytest

from simulator.hardware.spec import Link
from simulator.models.config import load_model
from simulator.models.op_kinds import COLLECTIVE_KINDS, MEASURED, OP_KINDS, TABLE_AXES
from simulator.models.operators import (
    Precision,
    Sharding,
    attention_decode_op,
    attention_prefill_op,
    dense_ops,
    head_ops,
)
from simulator.perf.collectives import TIME_MODELS
from simulator.perf.kernels import operator_for


def test_every_table_axis_comes_from_the_rows_columns():
    for name, axes in TABLE_AXES.items():
        columns = set(MEASURED[name]) | ({"context"} if "kv_len" in MEASURED[name] else set())
        assert {feature for feature, _, _ in axes} <= columns, name
        assert OP_KINDS[name].monotone, f"{name}: a table needs a size axis"


def test_every_collective_kind_has_a_time_model():
    assert set(COLLECTIVE_KINDS) == set(TIME_MODELS)


@pytest.mark.parametrize("kind, steps, share", [("allreduce", 14, 14 / 8), ("allgather", 7, 7 / 8),
                                                 ("reducescatter", 7, 7 / 8), ("alltoall", 7, 7 / 8)])
def test_alpha_beta_models_by_hand(kind, steps, share):
    # 8 devices, 1 us latency, 100 GB/s at 80 % efficiency, a 64 MB message
    link = Link(bandwidth="100 GB/s", latency="1 us")
    expected = steps * 1e-6 + share * 64e6 / (100e9 * 0.8)
    assert TIME_MODELS[kind](64e6, 8, link, 0.8) == pytest.approx(expected, rel=1e-12)


@pytest.mark.parametrize("weights", ["bf16", "fp8", "int4"])
def test_every_operator_carries_the_shape_its_kind_declares(weights):
    model, shard, prec = load_model("llama-3.1-8b"), Sharding(tp=2), Precision(weights=weights)
    ops = [*dense_ops(model, 96, shard, prec), *head_ops(model, 8, shard, prec),
           attention_prefill_op(model, 64, 64 + 300, 64 * (300 + 65 / 2), shard, prec),
           attention_decode_op(model, 32, 32 * 900, shard, prec)]
    assert {op.kind for op in ops} >= {"gemm", "elementwise", "attn_prefill", "attn_decode", "allreduce", "allgather"}
    for op in ops:
        declared = OP_KINDS[op.kind].shape
        assert (op.shape is None) if declared is None else isinstance(op.shape, declared), op.name
    decode = ops[-1]
    # the shape is what a calibration table reads: the context is carried, not recovered from FLOPs
    assert decode.shape.sequences == 32 and decode.shape.context_tokens == 32 * 900


@pytest.mark.parametrize("dtype, input_bytes", [("bf16", 2), ("fp8", 1), ("int8", 1), ("int4", 2)])
def test_a_measured_gemm_row_is_the_operator_a_run_costs(dtype, input_bytes):
    # one formula: a validation row and a run's GEMM of the same shape and weights have the
    # same bytes (W8A8 reads 8-bit inputs, W4A16 16-bit ones; outputs 16-bit)
    m, n, k = 4096, 6144, 4096
    row = operator_for(SimpleNamespace(op="gemm", dtype=dtype, m=m, n=n, k=k))
    weight_bytes = {"bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5}[dtype]
    assert row.bytes == k * n * weight_bytes + m * k * input_bytes + m * n * 2
    run = [op for op in dense_ops(load_model("llama-3.1-8b"), m, Sharding(), Precision(weights=dtype))
           if op.name == "qkv_proj"][0]
    assert run.shape == row.shape and run.bytes == row.bytes and run.dtype == row.dtype
