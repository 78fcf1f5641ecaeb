"""Quantised weights: W4A16's speed-up over 16-bit weights shrinks with the batch as the GEMM
leaves the memory-bound regime (MARLIN's curve), and what quantised checkpoints keep at 16
bits (the LM head, embeddings, norms) stays at 16 bits in time as in memory."""
from __future__ import annotations

import pytest

from simulator.api import prepare
from simulator.hardware.loader import load_system
from simulator.models.config import load_model
from simulator.models.operators import Precision, Sharding, gemm_op, head_ops
from simulator.perf.roofline import operator_time_s

# MARLIN's benchmark layer (IST-DASLab/marlin README and paper, Frantar et al. 2024): a
# 18432 x 73728 weight matrix, "close to ideal (4x) speedups up to batchsizes of 16-32 tokens"
N, K = 72 * 256, 4 * 72 * 256


def _speedup(device, m: int) -> float:
    bf16 = operator_time_s(device, gemm_op("w", m, N, K, Precision()))
    int4 = operator_time_s(device, gemm_op("w", m, N, K, Precision(weights="int4")))
    return bf16 / int4


def test_w4a16_speedup_is_near_4x_when_memory_bound_and_fades_when_compute_bound():
    device = load_system("a100-80gb-sxm").accelerator
    # memory-bound: 4x fewer weight bytes, the activations a rounding error
    assert 3.7 < _speedup(device, 1) <= 4.0
    assert 3.5 < _speedup(device, 16) <= 4.0
    # both compute-bound at large batches: the same bf16 tensor-core math (W4A16 dequantises)
    assert _speedup(device, 4096) == pytest.approx(1.0, abs=0.02)
    curve = [_speedup(device, m) for m in (16, 64, 128, 256, 512, 1024)]
    assert all(a >= b for a, b in zip(curve, curve[1:]))
    # the turn: int4 becomes compute-bound at about 4x fewer tokens than bf16, past the ridge
    # point (peak FLOPs / effective bandwidth) / 4; by then the speed-up has started to fall
    eff = device.efficiency
    ridge_tokens = device.peak_flops("bf16") * eff.compute_max / (device.main_memory.bandwidth * eff.memory_max) / 2
    assert _speedup(device, int(ridge_tokens)) < 2.0 < _speedup(device, int(ridge_tokens / 8))


def test_sixteen_bit_parts_of_a_quantised_model_stay_sixteen_bit():
    model, prec = load_model("llama-3.1-8b"), Precision(weights="fp8")
    head = {op.name: op for op in head_ops(model, 8, Sharding(), prec)}["lm_head"]
    # the LM head reads 128256 x 4096 bf16 weights, not fp8 ones
    assert head.dtype == "bf16" and head.bytes == 128256 * 4096 * 2 + 8 * 4096 * 2 + 8 * 128256 * 2
    plan = prepare("h100-sxm", "llama-3.1-8b", calibration="none", knobs={"weight_dtype": "fp8"}).plan
    bf16 = prepare("h100-sxm", "llama-3.1-8b", calibration="none").plan
    # weights: the 6.98 B linear parameters at 1 byte, embeddings, LM head and norms at 2
    linear = 8_030_261_248 - 2 * 128256 * 4096 - (2 * 32 + 1) * 4096
    assert bf16.weights_bytes - plan.weights_bytes == pytest.approx(linear, rel=0.002)
