"""The operators one forward iteration runs, with their FLOPs and bytes, per device.

An iteration of a serving engine runs one mixed batch: prefill chunks (new prompt tokens,
attending to context already cached) and decodes (one token each, attending to their whole
KV cache). The linear layers only see the total token count T; attention sees each
sequence's context. Everything is per device after tensor parallelism (heads and MLP
columns split `tp` ways) and per pipeline stage (layers split `pp` ways).
"""
from __future__ import annotations

import math
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, NamedTuple, cast

from .config import DTYPE_BYTES, ModelConfig
from .layers import (
    Linear,
    attention_linears,
    experts_reached,
    latent_attention_linears,
    layers_per_stage,
    mlp_linears,
    moe_linears,
    stage_layer_kinds,
)
from .op_kinds import CollectiveShape, DecodeShape, GemmShape, GroupedGemmShape, MoeShape, PrefillShape, Shape

if TYPE_CHECKING:
    import numpy as np


class Operator(NamedTuple):
    """One kernel (or collective) repeated `count` times per iteration on each device.

    flops and bytes are for one execution; bytes is compulsory traffic to main memory (for a
    collective, the message size per device). `shape` is the kind's own shape (the type its
    `op_kinds.OP_KINDS` entry names; None for elementwise kernels and collectives, whose size
    is their bytes): what a calibration table is looked up by, never recovered from FLOPs.
    A NamedTuple: every iteration builds its attention operators, and a frozen dataclass
    costs five times as much to create. flops, bytes and the shape's sizes are arrays (one
    entry per token count or per step) where the cost model costs many shapes at once
    (`CostModel._eager_dense`, `CostModel.decode_span`, the calibrated attention tables of
    perf/kernel_times.py); floats and ints everywhere else.
    """

    name: str
    kind: str  # a key of op_kinds.OP_KINDS: gemm | elementwise | attn_prefill | attn_decode | allreduce | ...
    flops: float | np.ndarray
    bytes: float | np.ndarray
    dtype: str
    # shadows tuple.count (used nowhere); mypy refuses a NamedTuple field over a tuple method
    count: int = 1  # type: ignore[assignment]
    shape: Shape | None = None


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


# vLLM's default --all2all-backend: an all-gather of every rank's tokens before the experts
# and a reduce-scatter after them; its others (DeepEP's, pplx's kernels) dispatch each token
# to the devices holding its experts and combine the results with all-to-alls
ALLGATHER_REDUCESCATTER = "allgather_reducescatter"


@dataclass(frozen=True)
class Sharding:
    """How one replica is split: tensor and pipeline parallelism, and the data-parallel ranks
    (vLLM's data_parallel_size) whose MoE layers span all dp x tp devices, with experts whole
    on each device under expert parallelism (`ep`) and tokens moved by `all2all`; with
    `experts_on_host` the routed experts run on the host CPU, not on the device."""

    tp: int = 1
    pp: int = 1
    dp: int = 1
    ep: bool = False
    all2all: str = ALLGATHER_REDUCESCATTER
    experts_on_host: bool = False
    ep_load_factor: float | None = None  # busiest expert-parallel device's rows over the mean (None: `busiest_rows`)


def gemm_op(name: str, m: int | np.ndarray, n: int, k: int, prec: Precision, count: int = 1) -> Operator:
    """The GEMM of m rows through a [k -> n] weight matrix: its inputs read at the compute
    dtype (a W8A8 GEMM reads 8-bit activations, quantised by the layer before it; a W4A16 one
    16-bit activations), its weights at their storage dtype, its outputs written at the
    activation dtype. The one formula for a run's GEMMs and a measured row's (perf/kernels.py)."""
    return Operator(name, "gemm", flops=2.0 * m * n * k, bytes=gemm_bytes(m, 1, n, k, prec),
                    dtype=prec.gemm_compute, count=count, shape=GemmShape(m, n, k))


def gemm_bytes(rows: float | np.ndarray, matrices: float, n: int | np.ndarray, k: int | np.ndarray,
               prec: Precision) -> float | np.ndarray:
    """`matrices` [k -> n] weight matrices read once, `rows` input rows read and output rows written."""
    wb, ib, ob = DTYPE_BYTES[prec.weights], DTYPE_BYTES[prec.gemm_compute], DTYPE_BYTES[prec.activations]
    return matrices * k * n * wb + rows * (k * ib + n * ob)


def _linear(lin: Linear, m: int | np.ndarray, prec: Precision, count: int) -> Operator:
    """The GEMM of weight matrix `lin` on m rows."""
    return gemm_op(lin.name, m, lin.n, lin.k, prec, count)


def _elementwise(name: str, elements: float | np.ndarray, passes: float, prec: Precision, count: int,
                 flops_per: float = 1.0) -> Operator:
    """A bandwidth-bound kernel touching `elements` values `passes` times (reads + writes)."""
    ab = DTYPE_BYTES[prec.activations]
    return Operator(name, "elementwise", flops=elements * flops_per, bytes=elements * passes * ab,
                    dtype=prec.activations, count=count)


def dense_ops(model: ModelConfig, tokens: int | np.ndarray, shard: Sharding, prec: Precision) -> list[Operator]:
    """Per-layer token-parallel operators for T = `tokens` (projections, MLP or experts, norms,
    TP collectives) of the busiest pipeline stage; `tokens` an array of token counts gives
    operators whose shapes are arrays (a model without experts only)."""
    T, tp, L = tokens, shard.tp, layers_per_stage(model, shard.pp)
    dense_layers, moe_layers = stage_layer_kinds(model, shard.pp)
    h = model.hidden_size
    *projections, o = attention_linears(model, tp)
    ops = [
        # the embedding lookup runs once per iteration (first stage), counted with the layers
        Operator("embedding", "elementwise", 0.0, T * h * DTYPE_BYTES[prec.activations] * 2, prec.activations),
        _elementwise("input_layernorm", T * h, 2, prec, L, flops_per=4),
        *(_linear(lin, T, prec, L) for lin in projections),
        *_rotary_ops(model, T, tp, prec, L),
        _linear(o, T, prec, L),
        _elementwise("post_attention_layernorm", T * h, 2, prec, L, flops_per=4),
    ]
    if dense_layers:
        ops += _mlp_ops(mlp_linears(model, tp), T, model.gated_mlp, prec, dense_layers)
    if moe_layers:
        ops += _moe_ops(model, cast(int, T), shard, prec, moe_layers)  # experts: one token count at a time
    if tp > 1:
        # Megatron-style TP: one all-reduce after attention and one after the MLP.
        msg = T * h * DTYPE_BYTES[prec.activations]
        ops.append(Operator("tp_allreduce", "allreduce", flops=0.0, bytes=msg, dtype=prec.activations, count=2 * L,
                            shape=CollectiveShape(tp, tp)))
    return ops


def _rotary_ops(model: ModelConfig, T: int | np.ndarray, tp: int, prec: Precision, L: int) -> list[Operator]:
    """RoPE on the query and key heads (with MLA, on their RoPE parts: the queries' and the
    one shared key), after Qwen3's per-head norms or MLA's norms of the latent and the
    low-rank queries."""
    heads = model.heads_per_device(tp)
    if model.is_mla:
        norms = [_elementwise("kv_a_layernorm", T * model.kv_lora_rank, 2, prec, L, flops_per=4)]
        if model.q_lora_rank:
            norms.append(_elementwise("q_a_layernorm", T * model.q_lora_rank, 2, prec, L, flops_per=4))
        return [*norms, _elementwise("rotary_emb", T * (heads + 1) * model.qk_rope_head_dim, 2, prec, L, flops_per=3)]
    rotated = T * (heads + model.kv_heads_per_device(tp)) * model.head_dim
    norms = [_elementwise("qk_norm", rotated, 2, prec, L, flops_per=4)] if model.qk_norm else []
    return [*norms, _elementwise("rotary_emb", rotated, 2, prec, L, flops_per=3)]


def _mlp_ops(linears: list[Linear], T: int | np.ndarray, gated: bool, prec: Precision, count: int) -> list[Operator]:
    """An MLP on T tokens, `count` times: up projection (gate and up fused), activation, down."""
    up, down = linears[:2]
    act = _elementwise("act_fn", T * down.k, 3 if gated else 2, prec, count, flops_per=5)
    return [_linear(up, T, prec, count), act, _linear(down, T, prec, count)]


def _moe_ops(model: ModelConfig, T: int, shard: Sharding, prec: Precision, L: int) -> list[Operator]:
    """Router, top-k routed experts and shared experts of the MoE layers on one device. The
    routed experts run as vLLM's fused-MoE kernel runs them: one grouped GEMM for the up
    (gate and up) projections of every expert the batch reaches and one for the down
    projections, which read the weights of the expected number of distinct experts reached,
    E (1 - (1 - k/E)^T) under balanced routing, and compute the routed rows. With dp
    data-parallel ranks the experts see every rank's T tokens (vLLM pads the ranks to one
    count), brought by the all-to-all backend's dispatch and returned by its combine; under
    expert parallelism a device holds E / (dp x tp) whole experts and computes the rows
    routed to them (the step waits for the busiest device: `busiest_rows`), else a
    1 / (dp x tp) slice of every expert on every row. With the experts on the host
    (`experts_on_host`) the device runs the router and the shared experts only; the host's
    part is costed by perf/host_experts.py."""
    k, dp, devices = model.experts_per_token, shard.dp, shard.dp * shard.tp
    router, up, down, *shared = moe_linears(model, shard.tp, dp=dp, ep=shard.ep)
    tokens = T * dp
    layer = MoeShape(tokens, experts_reached(model, tokens, up.copies), down.n, down.k, up.copies, k)
    rows = busiest_rows(tokens * k, devices, shard.ep_load_factor) if shard.ep else tokens * k
    ops = [_linear(router, T, prec, L)]
    if not shard.experts_on_host:
        ops += routed_expert_ops(layer, rows, model.gated_mlp, prec, L)
    if shared:
        ops += _mlp_ops(shared, T, model.gated_mlp, prec, L)
        ops += [_linear(gate, T, prec, L) for gate in shared[2:]]
    if dp > 1:
        ops += _dispatch_ops(model, T, shard, prec, L)
    return ops


def busiest_rows(routed: float, devices: int, load_factor: float | None = None) -> float:
    """Routed rows on the busiest of `devices` expert-parallel devices, which the others wait
    for: each row lands on a device with probability 1 / devices (routing balanced on
    average), so a device's load is binomial, mean m = routed / devices and variance
    m (1 - 1 / devices), and the expected largest of `devices` such loads is about
    m + sqrt(2 var ln devices) (the Gaussian maximum). Real routers are more skewed than
    uniform and engines rebalance (redundant experts): this matches a rebalanced deployment
    (validation/README.md); `load_factor`, the user's busiest-over-mean ratio, replaces it."""
    mean = routed / devices
    if devices <= 1:
        return mean
    if load_factor is not None:
        return load_factor * mean
    return mean + math.sqrt(2.0 * mean * (1.0 - 1.0 / devices) * math.log(devices))


def _dispatch_ops(model: ModelConfig, T: int, shard: Sharding, prec: Precision, L: int) -> list[Operator]:
    """Moving the tokens of dp ranks to the experts and back, once each per MoE layer: an
    all-gather of every rank's hidden states over the data-parallel group (one device per
    rank, spread over all dp x tp) and a reduce-scatter of the expert outputs; or an
    all-to-all over all dp x tp devices sending each of a device's tokens (its 1 / tp share
    of the rank's) to the devices of its k experts, and back."""
    ab, h, devices = DTYPE_BYTES[prec.activations], model.hidden_size, shard.dp * shard.tp
    if shard.all2all == ALLGATHER_REDUCESCATTER:
        gathered = T * shard.dp * h * ab
        group = CollectiveShape(shard.dp, devices)
        return [Operator("moe_dispatch", "allgather", 0.0, gathered, prec.activations, L, group),
                Operator("moe_combine", "reducescatter", 0.0, gathered, prec.activations, L, group)]
    sent = T / shard.tp * model.experts_per_token * h * ab
    group = CollectiveShape(devices, devices)
    return [Operator("moe_dispatch", "alltoall", 0.0, sent, prec.activations, L, group),
            Operator("moe_combine", "alltoall", 0.0, sent, prec.activations, L, group)]


def routed_expert_ops(layer: MoeShape, rows: float, gated: bool, prec: Precision, count: int) -> list[Operator]:
    """The routed experts of an MoE layer as vLLM's fused-MoE layer runs them, `count` times:
    a grouped GEMM of the up (gate and up) projections of the experts reached, the
    activation of the `rows` routed rows, a grouped GEMM of the down projections. Every one
    carries the layer's shape, which a measured fused-MoE table is looked up by. The one
    formula for a run's routed experts and a measured `moe` row's (perf/kernels.py)."""
    up = Linear("experts_up", (2 if gated else 1) * layer.intermediate, layer.hidden, layer.experts, routed=True)
    down = Linear("experts_down", layer.hidden, layer.intermediate, layer.experts, routed=True)
    act = _elementwise("experts_act_fn", rows * layer.intermediate, 3 if gated else 2, prec, count, flops_per=5)
    return [_grouped(up, rows, layer.experts_reached, prec, count, layer), act._replace(kind="experts_act", shape=layer),
            _grouped(down, rows, layer.experts_reached, prec, count, layer)]


def _grouped(lin: Linear, rows: float, experts: float, prec: Precision, count: int,
             layer: MoeShape | None = None) -> Operator:
    """The grouped GEMM of `rows` routed rows through `experts` (expected, so fractional)
    copies of expert matrix `lin`, each read once; part of MoE layer `layer`."""
    groups = max(1, round(experts))
    return Operator(lin.name, "grouped_gemm", flops=2.0 * rows * lin.n * lin.k,
                    bytes=gemm_bytes(rows, experts, lin.n, lin.k, prec), dtype=prec.gemm_compute, count=count,
                    shape=GroupedGemmShape(math.ceil(rows / groups), lin.n, lin.k, groups, layer))


def attention_prefill_op(
    model: ModelConfig, chunk_tokens: float, context_tokens: float, pair_tokens: float, shard: Sharding, prec: Precision
) -> Operator:
    """One varlen FlashAttention call over all prefill chunks of the batch.

    chunk_tokens: new query tokens summed over chunks (sum c_i);
    context_tokens: KV tokens read, summed (sum ctx_i + c_i);
    pair_tokens: query-key pairs under the causal mask, sum c_i * (ctx_i + (c_i + 1) / 2).
    FLOPs are 4 * heads * head_dim per pair (QK^T and PV); bytes are the compulsory Q, K, V
    and O traffic (FlashAttention keeps the scores on chip; re-reads of K/V tiles hit L2).
    With MLA (kind mla_prefill) vLLM's prefill attends with up-projected keys and values,
    each head's key of head_dim and value of v_head_dim, which it writes and reads at the
    activation dtype (`latent_context_op` up-projects the cached part).
    """
    heads, kv_heads = model.heads_per_device(shard.tp), model.kv_heads_per_device(shard.tp)
    d = model.head_dim
    ab, kvb = DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
    shape = PrefillShape(chunk_tokens, context_tokens, pair_tokens)
    count = layers_per_stage(model, shard.pp)
    if model.is_mla:
        qkv = heads * (d + model.v_head_dim)
        return Operator("mla_prefill", "mla_prefill", 2.0 * qkv * pair_tokens,
                        (chunk_tokens + context_tokens) * qkv * ab, prec.activations, count, shape)
    flops = 4.0 * heads * d * pair_tokens
    nbytes = 2 * chunk_tokens * heads * d * ab + 2 * context_tokens * kv_heads * d * kvb
    return Operator("attn_prefill", "attn_prefill", flops, nbytes, prec.activations, count, shape)


def latent_context_op(model: ModelConfig, cached_tokens: float, shard: Sharding, prec: Precision) -> Operator | None:
    """MLA prefill after cached context: vLLM up-projects the cached latents to keys and
    values (kv_b_proj over the context tokens, per layer) before attending to them; None for
    other attention or no cached context."""
    if not model.is_mla or cached_tokens < 1:
        return None
    kv_b = next(lin for lin in latent_attention_linears(model, shard.tp) if lin.name == "kv_b_proj")
    return _linear(kv_b._replace(name="kv_b_proj_context"), int(cached_tokens), prec, layers_per_stage(model, shard.pp))


def attention_decode_op(
    model: ModelConfig, num_decodes: int | np.ndarray, context_tokens: float | np.ndarray, shard: Sharding,
    prec: Precision
) -> Operator:
    """One paged decode-attention call: every decode reads its whole KV cache once (arrays of
    batch sizes and contexts: one call per entry).

    With MLA (kind mla_decode) it is vLLM's absorbed decode (FlashMLA and its kin): each
    head's query, mapped into the latent space, attends to the cached latents and RoPE keys
    directly, like multi-query attention with keys of latent_size and values of kv_lora_rank
    values; every device reads the whole latent cache for its heads."""
    heads, kv_heads = model.heads_per_device(shard.tp), model.kv_heads_per_device(shard.tp)
    d = model.head_dim
    ab, kvb = DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
    shape = DecodeShape(num_decodes, context_tokens)
    count = layers_per_stage(model, shard.pp)
    if model.is_mla:
        latent, values = model.latent_size, model.kv_lora_rank
        return Operator("mla_decode", "mla_decode", 2.0 * heads * (latent + values) * context_tokens,
                        context_tokens * latent * kvb + num_decodes * heads * (latent + values) * ab,
                        prec.activations, count, shape)
    flops = 4.0 * heads * d * context_tokens
    nbytes = 2 * context_tokens * kv_heads * d * kvb + 2 * num_decodes * heads * d * ab
    return Operator("attn_decode", "attn_decode", flops, nbytes, prec.activations, count, shape)


def head_ops(model: ModelConfig, sampled: int, shard: Sharding, prec: Precision) -> list[Operator]:
    """Final norm, LM head and sampling (last stage).

    Only sequences that produce a token this iteration (`sampled`) go through the LM head,
    as in vLLM, which gathers the last position of each scheduled sequence. The LM head stays
    at the activation dtype in quantised checkpoints, as in memory (`perf/memory_plan.py`).
    """
    h, V, tp = model.hidden_size, model.vocab_size // shard.tp, shard.tp
    ops: list[Operator] = []
    if sampled:
        ops += [
            _elementwise("final_layernorm", sampled * h, 2, prec, 1, flops_per=4),
            gemm_op("lm_head", sampled, V, h, replace(prec, weights=prec.activations)),
            # fp32 logits: softmax + top-k/top-p read them a few times
            Operator("sampler", "elementwise", sampled * V * 5.0, sampled * V * 4.0 * 3, "fp32"),
        ]
        if tp > 1:
            # each device holds vocab/tp logits in the model dtype; vLLM v1 all-gathers the full
            # rows so that every rank samples (message = the whole result)
            ab = DTYPE_BYTES[prec.activations]
            ops.append(Operator("logits_gather", "allgather", 0.0, sampled * model.vocab_size * ab, prec.activations,
                                shape=CollectiveShape(tp, tp)))
    return ops
