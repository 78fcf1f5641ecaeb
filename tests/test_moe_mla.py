"""Mixture-of-experts and multi-head latent attention: the catalogue's models as their model
cards count them, MLA's latent cache and operators by hand, and the routed experts as one
grouped GEMM checked against vLLM's fused-MoE kernel measured on a real GPU.

Published parameter counts: the model cards of deepseek-ai/DeepSeek-V3 (671B, the main model
without its 14B multi-token-prediction module), deepseek-ai/DeepSeek-V2-Lite (15.7B),
Qwen/Qwen3-235B-A22B (235B), Qwen/Qwen3-30B-A3B (30.5B), mistralai/Mixtral-8x7B-v0.1
(46.7B), mistralai/Mixtral-8x22B-v0.1 (141B) and meta-llama/Llama-3.3-70B-Instruct (70.6B).
"""
from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest

from simulator.hardware.loader import load_system
from simulator.models.config import load_model, model_from_dict
from simulator.models.layers import MOE, linear_layers, moe_linears
from simulator.models.op_kinds import GroupedGemmShape, MoeShape
from simulator.models.operators import (
    Precision,
    Sharding,
    _grouped,
    attention_decode_op,
    attention_prefill_op,
    dense_ops,
    latent_context_op,
)
from simulator.perf.roofline import compute_time_s, memory_time_s, operator_time_s

MOE_CSV = Path(__file__).resolve().parent.parent / "validation" / "data" / "rtxpro6000-qwen3-30b-a3b" / "moe.csv"

# deepseek-ai/DeepSeek-V2-Lite: MLA without the low-rank queries (q_lora_rank null)
DEEPSEEK_V2_LITE = {
    "model_type": "deepseek_v2", "hidden_size": 2048, "intermediate_size": 10944, "moe_intermediate_size": 1408,
    "num_hidden_layers": 27, "num_attention_heads": 16, "num_key_value_heads": 16, "kv_lora_rank": 512,
    "q_lora_rank": None, "qk_nope_head_dim": 128, "qk_rope_head_dim": 64, "v_head_dim": 128,
    "n_routed_experts": 64, "n_shared_experts": 2, "num_experts_per_tok": 6, "first_k_dense_replace": 1,
    "moe_layer_freq": 1, "vocab_size": 102400, "tie_word_embeddings": False,
}


@pytest.mark.parametrize("name, published", [
    ("deepseek-v3", 671e9), ("deepseek-r1", 671e9), ("qwen3-235b-a22b", 235e9), ("qwen3-30b-a3b", 30.5e9), ("mixtral-8x7b", 46.7e9),
    ("mixtral-8x22b", 141e9), ("llama-3.3-70b", 70.6e9), ("qwen2.5-32b", 32.5e9), ("llama-3.2-3b", 3.21e9),
])
def test_catalogue_models_have_their_published_parameter_counts(name, published):
    assert load_model(name).total_params() == pytest.approx(published, rel=0.01)


def test_deepseek_v3_is_read_as_mla_with_dense_first_layers():
    model = load_model("deepseek-v3")
    assert model.attention_kind == "mla" and (model.dense_layers, model.moe_layers) == (3, 58)
    # 61 layers x (512 latent + 64 RoPE key) x 2 bytes = 70,272 B per token (not 1.75 MB of 128 K/V heads)
    assert model.kv_bytes_per_token("bf16") == 61 * 576 * 2 == 70_272
    # replicated over tensor parallelism: every device holds the whole latent
    assert model.kv_bytes_per_token("fp8", tp=8) == 61 * 576
    names = [lin.name for lin in linear_layers(model, 8, MOE)]
    assert names[:4] == ["fused_qkv_a_proj", "q_b_proj", "kv_b_proj", "o_proj"]
    assert [lin.n for lin in linear_layers(model, 8, MOE)[:4]] == [1536 + 576, 16 * 192, 16 * 256, 7168]


def test_mla_without_low_rank_queries():
    model = model_from_dict(DEEPSEEK_V2_LITE, "DeepSeek-V2-Lite")
    assert model.total_params() == pytest.approx(15.7e9, rel=0.01)
    assert [lin.name for lin in linear_layers(model, 1, MOE)[:2]] == ["q_proj", "kv_a_proj_with_mqa"]
    assert model.kv_bytes_per_token("bf16") == 27 * 576 * 2


def test_mla_decode_is_absorbed_attention_over_the_latent_by_hand():
    model, prec = load_model("deepseek-v3"), Precision(weights="fp8")
    op = attention_decode_op(model, 64, 64 * 4096.0, Sharding(tp=8), prec)
    assert op.kind == "mla_decode" and op.count == 61
    heads = 128 // 8
    # per KV token and head: scores over 576 values, output over 512 -> 2 x (576 + 512) FLOPs
    assert op.flops == 2 * heads * (576 + 512) * 64 * 4096
    # the latent cache read once (bf16) plus each decode's latent query and output
    assert op.bytes == 64 * 4096 * 576 * 2 + 64 * heads * (576 + 512) * 2
    # memory-bound on an H100 at 16 heads per device: 37 FLOPs per byte, under the ridge point
    h100 = load_system("h100-sxm").accelerator
    assert memory_time_s(h100, op) > 3 * compute_time_s(h100, op)
    # the per-device latent read does not shrink with TP (replicated), the heads do
    one = attention_decode_op(model, 64, 64 * 4096.0, Sharding(tp=1), prec)
    assert one.flops == 8 * op.flops and one.bytes - 64 * 128 * 1088 * 2 == op.bytes - 64 * heads * 1088 * 2


def test_mla_prefill_attends_with_up_projected_keys_and_values():
    model, shard, prec = load_model("deepseek-v3"), Sharding(tp=8), Precision()
    chunk, cached = 512, 3000
    pairs = chunk * (cached + (chunk + 1) / 2)
    op = attention_prefill_op(model, chunk, chunk + cached, pairs, shard, prec)
    assert op.kind == "mla_prefill"
    assert op.flops == 2 * 16 * (192 + 128) * pairs  # QK^T over 192 values, PV over 128, per head
    # the cached latents are up-projected to keys and values (kv_b_proj on the context) first
    up = latent_context_op(model, cached, shard, prec)
    assert up is not None and up.shape == (cached, 16 * 256, 512) and up.count == 61
    assert latent_context_op(model, 0, shard, prec) is None
    assert latent_context_op(load_model("llama-3.1-8b"), cached, shard, prec) is None


def test_routed_experts_are_one_grouped_gemm_reading_the_experts_reached():
    model, prec = load_model("qwen3-30b-a3b"), Precision()
    ops = {op.name: op for op in dense_ops(model, 4, Sharding(), prec)}
    up = ops["experts_up"]
    assert up.kind == "grouped_gemm" and up.count == 48  # one kernel per layer, not one per expert
    # 4 tokens x top-8 of 128 experts reach 128 (1 - (1 - 8/128)^4) = 29.1 distinct experts
    reached = 128 * (1 - (1 - 8 / 128) ** 4)
    # the layer it is part of: what a measured fused-MoE table is looked up by (test_moe_calibration.py)
    assert up.shape == GroupedGemmShape(2, 2 * 768, 2048, 29, MoeShape(4, pytest.approx(reached), 2048, 768, 128, 8))
    assert ops["experts_act_fn"].shape == up.shape.layer == ops["experts_down"].shape.layer
    assert up.bytes == pytest.approx(reached * 2 * 768 * 2048 * 2 + 32 * (2048 + 2 * 768) * 2)
    assert up.flops == 2 * 32 * 2 * 768 * 2048


def test_grouped_gemm_roofline_against_the_measured_fused_moe_kernel():
    """vLLM 0.19's fused-MoE layer of Qwen3-30B-A3B on an RTX PRO 6000 (validation/data), with
    the profiler forcing 8..128 experts reached for 1..2048 tokens, against the uncalibrated
    roofline of the two grouped GEMMs. Memory-bound rows (few tokens per expert) come within
    a third: reading the reached experts' weights is the time. The median error bounds the
    whole table; the compute-bound corner (2048 tokens on 8-16 experts, where the Triton
    kernel runs below the GEMM efficiency) is the worst, about -30 %."""
    device = load_system("rtx-pro-6000").accelerator
    model, prec = load_model("qwen3-30b-a3b"), Precision()
    up, down = moe_linears(model, 1)[1:3]
    errors = []
    with MOE_CSV.open() as f:
        for row in csv.DictReader(f):
            tokens, reached = int(row["tokens"]), int(row["activated_experts"])
            predicted = sum(operator_time_s(device, _grouped(lin, tokens * 8, reached, prec, 1)) for lin in (up, down))
            errors.append(predicted * 1e6 / float(row["time_us"]) - 1)
    errors = np.array(errors)
    assert len(errors) == 50
    assert np.median(np.abs(errors)) < 0.2
    assert np.all(np.abs(errors) < 0.35)
