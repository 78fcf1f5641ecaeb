"""The operators one forward iteration runs, with their FLOPs and bytes, per device.

An iteration of a serving engine runs one mixed batch: prefill chunks (new prompt tokens,
attending to context already cached) and decodes (one token each, attending to their whole
KV cache). The linear layers only see the total token count T; attention sees each
sequence's context. Everything is per device after tensor parallelism (heads and MLP
columns split `tp` ways) and per pipeline stage (layers split `pp` ways).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

from .config import DTYPE_BYTES, ModelConfig


class Operator(NamedTuple):
    """One kernel (or collective) repeated `count` times per iteration on each device.

    flops and bytes are for one execution; bytes is compulsory traffic to main memory.
    For GEMMs m, n, k are the output rows, output columns and reduction size; for
    collectives `bytes` is the message size per device. A NamedTuple: every iteration builds
    its attention operators, and a frozen dataclass costs five times as much to create.
    """

    name: str
    kind: str  # gemm | elementwise | attn_prefill | attn_decode | allreduce | allgather
    flops: float
    bytes: float
    dtype: str
    count: int = 1
    m: int = 0
    n: int = 0
    k: int = 0


@dataclass(frozen=True)
class Precision:
    """Storage dtypes chosen by the deployment, and the compute dtype they imply."""

    weights: str = "bf16"
    kv: str = "bf16"
    activations: str = "bf16"

    @property
    def gemm_compute(self) -> str:
        # fp8 and int8 weights run as W8A8 GEMMs; int4 is weight-only (W4A16, Marlin-style):
        # the weights are dequantised in the main loop and the math runs at activation precision.
        return self.weights if self.weights in ("fp8", "int8") else self.activations


@dataclass(frozen=True)
class Sharding:
    tp: int = 1
    pp: int = 1


def _gemm(name: str, m: int, n: int, k: int, prec: Precision, count: int) -> Operator:
    wb, ab = DTYPE_BYTES[prec.weights], DTYPE_BYTES[prec.activations]
    return Operator(
        name, "gemm", flops=2.0 * m * n * k, bytes=k * n * wb + m * k * ab + m * n * ab,
        dtype=prec.gemm_compute, count=count, m=m, n=n, k=k,
    )


def _elementwise(name: str, elements: float, passes: float, prec: Precision, count: int, flops_per: float = 1.0):
    """A bandwidth-bound kernel touching `elements` values `passes` times (reads + writes)."""
    ab = DTYPE_BYTES[prec.activations]
    return Operator(name, "elementwise", flops=elements * flops_per, bytes=elements * passes * ab,
                    dtype=prec.activations, count=count)


def layers_per_stage(model: ModelConfig, shard: Sharding) -> int:
    return math.ceil(model.num_layers / shard.pp)


def dense_ops(model: ModelConfig, tokens: int, shard: Sharding, prec: Precision) -> list[Operator]:
    """Per-layer token-parallel operators for T = `tokens` (projections, MLP, norms, TP collectives)."""
    T, tp, L = tokens, shard.tp, layers_per_stage(model, shard)
    h = model.hidden_size
    q = model.q_size // tp
    kv = max(model.kv_size // tp, model.head_dim)  # KV heads are replicated when tp > kv_heads
    inter = model.intermediate_size // tp
    ops = [
        # the embedding lookup runs once per iteration (first stage), counted with the layers
        Operator("embedding", "elementwise", 0.0, T * h * DTYPE_BYTES[prec.activations] * 2, prec.activations),
        _elementwise("input_layernorm", T * h, 2, prec, L, flops_per=4),
        _gemm("qkv_proj", T, q + 2 * kv, h, prec, L),
        *([_elementwise("qk_norm", T * (q + kv), 2, prec, L, flops_per=4)] if model.qk_norm else []),
        _elementwise("rotary_emb", T * (q + kv), 2, prec, L, flops_per=3),
        _gemm("o_proj", T, h, q, prec, L),
        _elementwise("post_attention_layernorm", T * h, 2, prec, L, flops_per=4),
    ]
    if model.num_experts > 1:
        ops += _moe_ops(model, T, inter, prec, L)
    elif model.gated_mlp:
        ops += [
            _gemm("gate_up_proj", T, 2 * inter, h, prec, L),
            _elementwise("act_fn", T * inter, 3, prec, L, flops_per=5),
            _gemm("down_proj", T, h, inter, prec, L),
        ]
    else:
        ops += [
            _gemm("fc1", T, inter, h, prec, L),
            _elementwise("act_fn", T * inter, 2, prec, L, flops_per=5),
            _gemm("fc2", T, h, inter, prec, L),
        ]
    if tp > 1:
        # Megatron-style TP: one all-reduce after attention and one after the MLP.
        msg = T * h * DTYPE_BYTES[prec.activations]
        ops.append(Operator("tp_allreduce", "allreduce", flops=0.0, bytes=msg, dtype=prec.activations, count=2 * L))
    return ops


def _moe_ops(model: ModelConfig, T: int, inter: int, prec: Precision, L: int) -> list[Operator]:
    """Top-k routed experts: expected distinct experts touched by T tokens, balanced routing."""
    E, k, h = model.num_experts, model.experts_per_token, model.hidden_size
    active = E * (1.0 - (1.0 - k / E) ** T)
    rows = max(1, round(T * k / active))
    n_active = max(1, round(active))
    mats = 2 if model.gated_mlp else 1
    return [
        _gemm("router", T, E, h, prec, L),
        _gemm("experts_up", rows, mats * inter, h, prec, L * n_active),
        _elementwise("act_fn", T * k * inter, 3, prec, L, flops_per=5),
        _gemm("experts_down", rows, h, inter, prec, L * n_active),
    ]


def attention_prefill_op(
    model: ModelConfig, chunk_tokens: float, context_tokens: float, pair_tokens: float, shard: Sharding, prec: Precision
) -> Operator:
    """One varlen FlashAttention call over all prefill chunks of the batch.

    chunk_tokens: new query tokens summed over chunks (sum c_i);
    context_tokens: KV tokens read, summed (sum ctx_i + c_i);
    pair_tokens: query-key pairs under the causal mask, sum c_i * (ctx_i + (c_i + 1) / 2).
    FLOPs are 4 * heads * head_dim per pair (QK^T and PV); bytes are the compulsory Q, K, V
    and O traffic (FlashAttention keeps the scores on chip; re-reads of K/V tiles hit L2).
    """
    heads = max(1, model.num_heads // shard.tp)
    kv_heads = max(1, model.num_kv_heads // shard.tp)
    d = model.head_dim
    ab, kvb = DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
    flops = 4.0 * heads * d * pair_tokens
    nbytes = 2 * chunk_tokens * heads * d * ab + 2 * context_tokens * kv_heads * d * kvb
    return Operator("attn_prefill", "attn_prefill", flops, nbytes, prec.activations,
                    count=layers_per_stage(model, shard), m=int(chunk_tokens))


def attention_decode_op(
    model: ModelConfig, num_decodes: int, context_tokens: float, shard: Sharding, prec: Precision
) -> Operator:
    """One paged decode-attention call: every decode reads its whole KV cache once."""
    heads = max(1, model.num_heads // shard.tp)
    kv_heads = max(1, model.num_kv_heads // shard.tp)
    d = model.head_dim
    ab, kvb = DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
    flops = 4.0 * heads * d * context_tokens
    nbytes = 2 * context_tokens * kv_heads * d * kvb + 2 * num_decodes * heads * d * ab
    return Operator("attn_decode", "attn_decode", flops, nbytes, prec.activations,
                    count=layers_per_stage(model, shard), m=num_decodes)


def head_ops(model: ModelConfig, sampled: int, shard: Sharding, prec: Precision) -> list[Operator]:
    """Final norm, LM head and sampling (last stage).

    Only sequences that produce a token this iteration (`sampled`) go through the LM head,
    as in vLLM, which gathers the last position of each scheduled sequence.
    """
    h, V, tp = model.hidden_size, model.vocab_size // shard.tp, shard.tp
    ops: list[Operator] = []
    if sampled:
        ops += [
            _elementwise("final_layernorm", sampled * h, 2, prec, 1, flops_per=4),
            _gemm("lm_head", sampled, V, h, prec, 1),
            # fp32 logits: softmax + top-k/top-p read them a few times
            Operator("sampler", "elementwise", sampled * V * 5.0, sampled * V * 4.0 * 3, "fp32"),
        ]
        if tp > 1:
            # each device holds vocab/tp logits in the model dtype; vLLM v1 all-gathers the full
            # rows so that every rank samples (message = the whole result)
            ab = DTYPE_BYTES[prec.activations]
            ops.append(Operator("logits_gather", "allgather", 0.0, sampled * model.vocab_size * ab, prec.activations))
    return ops
