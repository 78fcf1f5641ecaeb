"""Hand-checkable physics of the cost model and the memory plan.

Every expected value below is derived by hand from the numbers in the shipped YAML
(hardware_specs/gpus/h100-sxm.yaml, workloads/models/llama-3.1-8b.yaml) and written out in
the comments; the model's own helpers are never used to produce an expected value.

H100-SXM5-80GB (hardware_specs/gpus/h100-sxm.yaml):
    HBM3 capacity 80 GB = 80e9 B, bandwidth 3.35 TB/s = 3.35e12 B/s
    bf16 dense peak 989 TFLOPS = 989e12 FLOP/s, 132 SMs
    NVLink 450 GB/s per direction, latency 2 us

Llama-3.1-8B (workloads/models/llama-3.1-8b.yaml):
    hidden h = 4096, intermediate i = 14336, layers L = 32, heads 32, kv heads 8,
    head_dim d = 4096 / 32 = 128, vocab V = 128256, embeddings untied.
    Per layer:
        q, o projections:  2 x h x h            = 2 x 4096 x 4096       =  33,554,432
        k, v projections:  2 x h x (8 x 128)    = 2 x 4096 x 1024       =   8,388,608
        gate, up, down:    3 x h x i            = 3 x 4096 x 14336      = 176,160,768
        two RMSNorms:      2 x h                                         =       8,192
        layer total                                                      = 218,112,000
    32 layers                                                            = 6,979,584,000
    embedding + LM head (untied) 2 x V x h = 2 x 128256 x 4096           = 1,050,673,152
    final norm                                                            =       4,096
    total                                                                 = 8,030,261,248  (8.03e9)
    bf16 weights: 2 bytes each                                            = 16,060,522,496 B
"""
from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from simulator.api import prepare, simulate
from simulator.engine.batch import BatchShape
from simulator.errors import InputError
from simulator.hardware.spec import Link
from simulator.models.op_kinds import GemmShape
from simulator.models.operators import Operator, Precision, Sharding, attention_decode_op, dense_ops
from simulator.perf.collectives import allreduce_time_s
from simulator.perf.cost_model import CostModel
from simulator.perf.roofline import compute_time_s, memory_time_s, operator_time_s, wave_efficiency

# --- the spec numbers, typed in from the YAML ------------------------------------------------------
HBM_BYTES = 79.18 * 2**30  # what an H100 SXM reports (hardware_specs/gpus/h100-sxm.yaml)
HBM_BW = 3.35e12
PEAK_BF16 = 989e12
SMS = 132
NVLINK_BW = 450e9
NVLINK_ALPHA = 2e-6

# --- the model shape, typed in from the YAML -------------------------------------------------------
H, INTER, L, HEADS, KV_HEADS, D, V = 4096, 14336, 32, 32, 8, 128, 128256

MATMUL_PARAMS_PER_LAYER = H * H * 2 + H * KV_HEADS * D * 2 + 3 * H * INTER  # q,o + k,v + gate,up,down
LAYER_PARAMS = MATMUL_PARAMS_PER_LAYER + 2 * H  # + two RMSNorm weight vectors
PARAMS = L * LAYER_PARAMS + 2 * V * H + H  # + untied embedding and LM head + final norm
WEIGHTS_BYTES = 2 * PARAMS  # bf16


def test_hand_parameter_count_is_llama_8b():
    assert MATMUL_PARAMS_PER_LAYER == 218_103_808
    assert PARAMS == 8_030_261_248
    assert WEIGHTS_BYTES == 16_060_522_496


# These tests check the roofline by hand, so they run without the shipped H100 calibration
# profile; tests/test_calibrated_runs.py checks the same acceptance bounds with it.
@pytest.fixture(scope="module")
def tp1():
    return prepare("h100-sxm", model="llama-3.1-8b", calibration="none")


@pytest.fixture(scope="module")
def tp2():
    return prepare("h100-sxm", model="llama-3.1-8b", tp=2, calibration="none")


def test_spec_numbers_are_the_ones_typed_in(tp1):
    # Guards the hand derivations below: if the YAML changes, the comments must change too.
    dev = tp1.system.accelerator
    assert dev.main_memory.capacity == HBM_BYTES
    assert dev.main_memory.bandwidth == HBM_BW
    assert dev.peak_flops("bf16") == PEAK_BF16
    assert dev.compute.units == SMS
    assert dev.links["nvlink"].bandwidth == NVLINK_BW
    assert dev.links["nvlink"].latency == pytest.approx(NVLINK_ALPHA)
    m = tp1.model
    assert (m.hidden_size, m.intermediate_size, m.num_layers) == (H, INTER, L)
    assert (m.num_heads, m.num_kv_heads, m.head_dim, m.vocab_size) == (HEADS, KV_HEADS, D, V)
    assert not m.tie_word_embeddings


# --- decode: one token per step reads all the weights once ---------------------------------------------

# Lower bound: streaming 16.06e9 B of weights at 3.35e12 B/s takes
#     16,060,522,496 / 3.35e12 = 4.794 ms per token.
# (Strictly, the 1.05e9 B input-embedding table is only gathered row by row, so the bytes a
# step must stream are 15,009,849,344 B = 4.481 ms at full bandwidth; no kernel reaches the
# 93.5 % of HBM bandwidth it would take to go below 4.794 ms.) A good implementation (vLLM
# on H100 reaches ~85-90 % of HBM bandwidth, plus a few hundred us of per-step host
# overhead) stays within 1.4x of it (6.71 ms).
DECODE_FLOOR_S = WEIGHTS_BYTES / HBM_BW
DECODE_CEIL_S = 1.4 * DECODE_FLOOR_S


def test_decode_floor_by_hand():
    assert DECODE_FLOOR_S == pytest.approx(4.794e-3, rel=1e-3)


def test_single_decode_step_is_weight_bandwidth_bound(tp1):
    # one request with 160 tokens of context: KV read 160 x 131072 B = 21 MB, negligible
    cost = tp1.cost.iteration(BatchShape(num_decodes=1, decode_context=160, sampled=1))
    assert DECODE_FLOOR_S <= cost.time_s <= DECODE_CEIL_S
    # it reads every weight once, except the input-embedding table (only 1 row is gathered):
    #     (8,030,261,248 - 128256 x 4096) x 2 = 15,009,849,344 B
    assert cost.bytes >= (PARAMS - V * H) * 2
    assert (PARAMS - V * H) * 2 == 15_009_849_344


def test_end_to_end_single_request_tpot(tmp_path):
    trace = tmp_path / "one.jsonl"
    trace.write_text(json.dumps({"arrival_s": 0.0, "input_tokens": 128, "output_tokens": 64}) + "\n")
    result = simulate("h100-sxm", trace, model="llama-3.1-8b", keep_frames=False)
    s = result.summary
    assert s["requests"]["completed"] == 1
    assert DECODE_FLOOR_S <= s["tpot_s"]["mean"] <= DECODE_CEIL_S
    # 63 decode steps after the first token: e2e - ttft = 63 x tpot
    assert s["e2e_s"]["mean"] - s["ttft_s"]["mean"] == pytest.approx(63 * s["tpot_s"]["mean"], rel=1e-9)
    # the prefill of 128 tokens also streams the weights once: TTFT >= the decode floor
    assert s["ttft_s"]["mean"] >= DECODE_FLOOR_S


# --- prefill of a long prompt is compute-bound ----------------------------------------------------------

T = 8192
# Linear layers: 2 FLOPs per multiply-add, per weight, per token:
#     2 x 218,103,808 x 32 x 8192 = 1.14349e14
# LM head: only the last position is sampled: 2 x 128256 x 4096 x 1 = 1.05e9
# Causal attention: QK^T and PV are 2 x 2 x d FLOPs per (query, key) pair per head; with the
# causal mask there are T(T+1)/2 pairs:
#     4 x 32 heads x 128 x 8192 x 8193 / 2 x 32 layers = 1.75943e13
# total = 1.31945e14 FLOPs; at 989e12 FLOP/s that is 133.4 ms.
# Memory: the weights (16 GB) plus unfused activations (a few GB per layer at most) move in
# well under 40 ms at 3.35 TB/s, so compute dominates.
PAIRS = T * (T + 1) / 2
PREFILL_FLOPS = 2 * MATMUL_PARAMS_PER_LAYER * L * T + 2 * V * H + 4 * HEADS * D * PAIRS * L


def test_prefill_flops_by_hand():
    assert PREFILL_FLOPS == pytest.approx(1.31945e14, rel=1e-5)


def test_long_prefill_is_compute_bound_and_near_peak(tp1):
    cost = tp1.cost.iteration(BatchShape(prefill_tokens=T, prefill_context=T, prefill_pairs=PAIRS, sampled=1))
    # the model counts the same FLOPs (plus norms/activations/sampling, < 1 %)
    assert cost.flops == pytest.approx(PREFILL_FLOPS, rel=0.01)
    compute_s = PREFILL_FLOPS / PEAK_BF16
    memory_s = cost.bytes / HBM_BW
    assert compute_s > memory_s
    assert cost.bytes >= WEIGHTS_BYTES
    # cuBLAS GEMMs reach 70-80 % of peak and FlashAttention 50-70 %: within [1, 1.6] x ideal
    assert compute_s <= cost.time_s <= 1.6 * compute_s


def test_every_prefill_gemm_is_compute_bound(tp1):
    dev = tp1.system.accelerator
    gemms = [op for op in dense_ops(tp1.model, T, Sharding(), Precision()) if op.kind == "gemm"]
    assert {op.name for op in gemms} == {"qkv_proj", "o_proj", "gate_up_proj", "down_proj"}
    for op in gemms:
        assert compute_time_s(dev, op) > memory_time_s(dev, op), op.name


# --- tensor parallelism: ring all-reduce over NVLink --------------------------------------------------


def test_allreduce_matches_alpha_beta_ring_by_hand(tp2):
    eff = tp2.system.accelerator.efficiency.network_efficiency
    link = tp2.cost.tp_link
    assert link.bandwidth == NVLINK_BW  # TP=2 inside one box goes over NVLink, not PCIe
    for nbytes in (8192, 1 << 20, 64 << 20):
        # p = 2: 2(p-1) = 2 latency steps; 2(p-1)/p = 1 x bytes over the link
        expected = 2 * NVLINK_ALPHA + 1.0 * nbytes / (NVLINK_BW * eff)
        assert allreduce_time_s(nbytes, 2, link, eff) == pytest.approx(expected, rel=1e-12)
    # p = 8: 14 latency steps and 14/8 of the message
    expected8 = 14 * NVLINK_ALPHA + 14 / 8 * (1 << 20) / (NVLINK_BW * eff)
    assert allreduce_time_s(1 << 20, 8, link, eff) == pytest.approx(expected8, rel=1e-12)
    assert allreduce_time_s(1 << 20, 1, link, eff) == 0.0


def test_tp2_layer_has_two_allreduces_per_layer(tp2):
    eff = tp2.system.accelerator.efficiency.network_efficiency
    ops = [op for op in dense_ops(tp2.model, 1, Sharding(tp=2), Precision()) if op.kind == "allreduce"]
    assert len(ops) == 1
    op = ops[0]
    # one decode token: the message is the hidden state, 4096 x 2 bytes; after attention and MLP
    assert op.bytes == H * 2
    assert op.count == 2 * L
    one = 2 * NVLINK_ALPHA + H * 2 / (NVLINK_BW * eff)  # = 4 us + 0.023 us
    assert tp2.cost.op_time_s(op, graphed=True)[0] == pytest.approx(2 * L * one, rel=1e-12)


def test_tp2_iteration_pays_every_collective_latency(tp2):
    # Raise the NVLink latency by 10 us: the decode iteration has 64 ring all-reduces of 2 steps
    # each plus one logits all-gather of 1 step, so it must get (64 x 2 + 1) x 10 us slower.
    batch = BatchShape(num_decodes=1, decode_context=160, sampled=1)
    base = tp2.cost.iteration(batch).time_s
    slow_link = Link(bandwidth="450 GB/s", latency="12 us")
    system = dataclasses.replace(tp2.system, fabric=slow_link)
    slow = CostModel(system, tp2.model, tp2.deployment, host_overlapped=tp2.cost.host_overlapped).iteration(batch).time_s
    assert slow - base == pytest.approx((2 * 2 * L + 1) * 10e-6, rel=1e-6)


def test_tp2_decode_is_faster_but_not_twice_as_fast(tp1, tp2):
    batch = BatchShape(num_decodes=1, decode_context=160, sampled=1)
    t1 = tp1.cost.iteration(batch).time_s
    t2 = tp2.cost.iteration(batch).time_s
    # half the weights per device, but 64 all-reduces (>= 64 x 4 us = 0.26 ms) and the same
    # per-step host overhead are added
    assert t1 / 2 < t2 < t1
    assert t2 - t1 / 2 >= 2 * L * 2 * NVLINK_ALPHA


# --- memory plan: KV-cache capacity in blocks ---------------------------------------------------------


def test_model_that_does_not_fit_is_rejected_with_numbers():
    # Llama-3.1-70B: h 8192, i 28672, 80 layers, 64 heads, 8 kv heads, vocab 128256
    layer = 8192 * 8192 * 2 + 8192 * 1024 * 2 + 3 * 8192 * 28672 + 2 * 8192
    params = 80 * layer + 2 * 128256 * 8192 + 8192  # 70,553,706,496
    # bf16, plus the rotary table (131,072 x 128 x 2 B): 131.45 GiB, far above the 71.26 GiB
    # vLLM requests of an H100 (79.18 GiB x 0.9)
    weights_gib = (2 * params + 131072 * 128 * 2) / 2**30
    with pytest.raises(InputError) as info:
        prepare("h100-sxm", model="llama-3.1-70b")
    message = str(info.value)
    assert f"{weights_gib:.2f} GiB" == "131.45 GiB"
    assert "does not fit" in message
    assert "131.45 GiB" in message  # needed (weights)
    assert "71.26 GiB requested" in message  # available (usable)
    assert "\n" not in message


# --- roofline units ------------------------------------------------------------------------------------


def test_wave_efficiency_by_hand():
    # 132 x 132 tiles of 128 x 128 = 17424 tiles = exactly 132 full waves on 132 SMs
    assert wave_efficiency(128 * 132, 128 * 132, 128, 128, 132) == 1.0
    # 133 tiles on 132 SMs: two waves, the second with one busy SM -> 133 / 264
    assert wave_efficiency(128, 128 * 133, 128, 128, 132) == pytest.approx(133 / 264)
    # one tile: one of 132 SMs busy
    assert wave_efficiency(1, 1, 128, 128, 132) == pytest.approx(1 / 132)
    # partial tiles count as whole ones: 129 x 128 -> 2 tiles in one wave of 132
    assert wave_efficiency(129, 128, 128, 128, 132) == pytest.approx(2 / 132)


def test_large_gemv_is_memory_bound_at_streaming_bandwidth(tp1):
    dev = tp1.system.accelerator
    memory_max = dev.efficiency.memory_max
    n = k = 16384
    # weights k x n bf16 = 536,870,912 B dominate; x and y add 2 x 16384 x 2 B
    nbytes = k * n * 2 + k * 2 + n * 2
    op = Operator("gemv", "gemm", flops=2.0 * n * k, bytes=nbytes, dtype="bf16", shape=GemmShape(1, n, k))
    t = operator_time_s(dev, op)
    ideal = nbytes / (HBM_BW * memory_max)  # 536.9e6 / (3.35e12 x 0.9) = 178 us
    assert t == pytest.approx(ideal, rel=0.01)
    # and it is nowhere near compute-bound: 2 x 16384^2 / 989e12 = 0.54 us
    assert compute_time_s(dev, op) < 0.01 * t


def test_memory_time_never_beats_bandwidth(tp1):
    dev = tp1.system.accelerator
    for nbytes in (1e3, 1e6, 1e8, 1e10):
        op = Operator("copy", "elementwise", flops=0.0, bytes=nbytes, dtype="bf16")
        assert operator_time_s(dev, op) >= nbytes / HBM_BW


# --- decode attention reads every sequence's KV cache once --------------------------------------------


def test_decode_attention_bytes_by_hand(tp1):
    kv_lens = [100, 300, 1000, 7]
    n = len(kv_lens)
    op = attention_decode_op(tp1.model, n, float(sum(kv_lens)), Sharding(), Precision())
    # per layer: sum(kv_len) x (K, V) x 8 kv heads x 128 x 2 bytes  = 1407 x 4096 = 5,763,072 B
    kv_bytes = sum(kv_lens) * 2 * KV_HEADS * D * 2
    # plus q read and o written: n x 2 x 32 heads x 128 x 2 bytes    = 4 x 16384  =    65,536 B
    qo_bytes = n * 2 * HEADS * D * 2
    assert op.bytes == kv_bytes + qo_bytes
    assert op.count == L
    # 4 FLOPs per head-dim element per key: 4 x 32 x 128 x 1407
    assert op.flops == 4 * HEADS * D * sum(kv_lens)


def test_decode_iteration_bytes_grow_by_the_kv_read(tp1):
    # 1000 more context tokens over the batch cost 1000 x 131,072 B (= 2 x 8 x 128 x 2 x 32) more
    a = tp1.cost.iteration(BatchShape(num_decodes=4, decode_context=1400, sampled=4))
    b = tp1.cost.iteration(BatchShape(num_decodes=4, decode_context=2400, sampled=4))
    assert b.bytes - a.bytes == 1000 * 2 * KV_HEADS * D * 2 * L
    assert b.time_s > a.time_s


def test_decode_span_equals_single_iterations(tp1):
    # the vectorised span must cost each step exactly as iteration() does
    span = tp1.cost.decode_span(np.full(5, 3), 600.0 + 3 * np.arange(5.0))
    for j in range(5):
        one = tp1.cost.iteration(BatchShape(num_decodes=3, decode_context=600.0 + 3 * j, sampled=3))
        assert span.time_s[j] == pytest.approx(one.time_s, rel=1e-12)
        assert span.bytes[j] == pytest.approx(one.bytes, rel=1e-12)


@pytest.mark.parametrize("hardware, tp, calibration", [
    ("h100-sxm", 1, "none"), ("h100-sxm", 1, None), ("h100-sxm", 2, "none"), ("dgx-a100", 4, None)])
def test_eager_dense_table_equals_costing_each_token_count(hardware, tp, calibration):
    # The dense part of eager steps is tabulated for every token count at once on arrays; each
    # column must be what costing that count's operators one by one gives, to the last bit
    # (the same IEEE operations in the same order), calibrated GEMM tables and measured
    # collectives included.
    cost = prepare(hardware, model="llama-3.1-8b", tp=tp, calibration=calibration).cost
    assert cost._eager_dense() is not None
    for tokens in (1, 7, 100, 513, 1024, 2047, 2048):
        one = cost._sum(dense_ops(cost.model, tokens, cost.shard, cost.prec), False)
        assert cost._dense_part(tokens, False) == one
