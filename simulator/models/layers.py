"""The linear layers of a model on one device: the one place their shapes are written down.

A decoder layer is attention (the QKV and output projections) followed by a feed-forward
block: one dense MLP, or a mixture of experts (a router, routed experts of which each token
uses `experts_per_token`, and optionally shared experts every token uses). `linear_layers`
lists every weight matrix of one layer kind as `Linear(name, n, k, copies, routed)`, split
over `tp` devices as vLLM splits them (Megatron-style: QKV, gate/up and the experts by output
columns, the output and down projections by input rows; KV heads replicated once `tp`
exceeds them; the router replicated). From this one list derive the operators of a step
(`operators.py`), the parameter count (`ModelConfig.total_params`), the weights in memory
(`perf/memory_plan.py`) and the shapes the measuring harness times (`validation/shapes.py`).
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    from .config import ModelConfig

DENSE, MOE = "dense", "moe"  # the two layer kinds, by feed-forward block


class Linear(NamedTuple):
    """One weight matrix [k inputs -> n outputs] on one device, `copies` of it per layer;
    a `routed` one (an expert) sees only the tokens routed to it."""

    name: str
    n: int
    k: int
    copies: int = 1
    routed: bool = False


def attention_linears(model: ModelConfig, tp: int) -> list[Linear]:
    """The attention's projections, the output projection last."""
    if model.is_mla:
        return latent_attention_linears(model, tp)
    h, d = model.hidden_size, model.head_dim
    q, kv = model.heads_per_device(tp) * d, model.kv_heads_per_device(tp) * d
    return [Linear("qkv_proj", q + 2 * kv, h), Linear("o_proj", h, q)]


def latent_attention_linears(model: ModelConfig, tp: int) -> list[Linear]:
    """MLA as vLLM lays it out: the down projections (to the latent and RoPE key, and to the
    queries' low rank when there is one) fused in one GEMM replicated on every device; the
    up projections of the queries and of the latent to each head's key and value, and the
    output projection, split by heads. At decode vLLM absorbs kv_b_proj into the queries and
    outputs: the same FLOPs per token, so it is costed here as one GEMM either way."""
    h, heads, rope = model.hidden_size, model.heads_per_device(tp), model.qk_rope_head_dim
    nope, v = model.head_dim - rope, model.v_head_dim
    if model.q_lora_rank:
        queries = [Linear("fused_qkv_a_proj", model.q_lora_rank + model.latent_size, h),
                   Linear("q_b_proj", heads * model.head_dim, model.q_lora_rank)]
    else:
        queries = [Linear("q_proj", heads * model.head_dim, h), Linear("kv_a_proj_with_mqa", model.latent_size, h)]
    return queries + [Linear("kv_b_proj", heads * (nope + v), model.kv_lora_rank), Linear("o_proj", h, heads * v)]


def mlp_linears(model: ModelConfig, tp: int) -> list[Linear]:
    """The dense MLP: gate and up fused (SwiGLU), or fc1/fc2."""
    h, inter = model.hidden_size, model.intermediate_size // tp
    if model.gated_mlp:
        return [Linear("gate_up_proj", 2 * inter, h), Linear("down_proj", h, inter)]
    return [Linear("fc1", inter, h), Linear("fc2", h, inter)]


def moe_linears(model: ModelConfig, tp: int, *, dp: int = 1, ep: bool = False) -> list[Linear]:
    """Router, routed experts and shared experts on one device. The routed experts are spread
    over the dp x tp devices of the data-parallel ranks (vLLM's MoE layers span all of them):
    with expert parallelism (`ep`) each device holds E / (dp x tp) whole experts, else every
    expert split dp x tp ways by columns (vLLM's fused-MoE layout); shared experts are split
    over tp within a rank and the router replicated."""
    h, E, devices = model.hidden_size, model.num_experts, dp * tp
    experts, inter = (E // devices, model.expert_intermediate_size) if ep else (E, model.expert_intermediate_size // devices)
    mats = 2 if model.gated_mlp else 1
    out = [Linear("router", E, h),
           Linear("experts_up", mats * inter, h, experts, routed=True),
           Linear("experts_down", h, inter, experts, routed=True)]
    shared = model.shared_expert_intermediate_size // tp
    if shared:
        out += [Linear("shared_expert_up", mats * shared, h), Linear("shared_expert_down", h, shared)]
        if model.shared_expert_gate:
            out.append(Linear("shared_expert_gate", 1, h))
    return out


def experts_reached(model: ModelConfig, tokens: float, held: float | None = None) -> float:
    """The expected number of distinct experts, of the `held` ones (default: all), that
    `tokens` tokens reach when each picks `experts_per_token` of the model's experts at
    random (balanced routing): held (1 - (1 - k/E)^T)."""
    E, k = model.num_experts, model.experts_per_token
    return (E if held is None else held) * (1.0 - (1.0 - k / E) ** tokens)


def linear_layers(model: ModelConfig, tp: int, kind: str, *, dp: int = 1, ep: bool = False) -> list[Linear]:
    """Every weight matrix of one layer of `kind` (DENSE or MOE) on one of `tp` devices (of
    one of `dp` data-parallel ranks, which share the routed experts: `moe_linears`)."""
    return attention_linears(model, tp) + (moe_linears(model, tp, dp=dp, ep=ep) if kind == MOE
                                           else mlp_linears(model, tp))


def linear_params(model: ModelConfig, tp: int, dense_layers: int, moe_layers: int, *, dp: int = 1,
                  ep: bool = False) -> float:
    """Linear weights of that many dense and MoE layers on one of `tp` devices."""
    return sum(layers * sum(lin.n * lin.k * lin.copies for lin in linear_layers(model, tp, kind, dp=dp, ep=ep))
               for kind, layers in ((DENSE, dense_layers), (MOE, moe_layers)) if layers)


def layer_small_params(model: ModelConfig, tp: int) -> float:
    """Biases and norms of one layer on one device (kept at 16 bits by quantised checkpoints)."""
    if model.is_mla:  # the norms of the latent and of the low-rank queries
        return 2 * model.hidden_size + model.kv_lora_rank + model.q_lora_rank
    d = model.head_dim
    q, kv = model.heads_per_device(tp) * d, model.kv_heads_per_device(tp) * d
    bias = q + 2 * kv if model.qkv_bias else 0
    return bias + 2 * model.hidden_size + (2 * d if model.qk_norm else 0)


def layers_per_stage(model: ModelConfig, pp: int) -> int:
    return math.ceil(model.num_layers / pp)


def stage_layer_kinds(model: ModelConfig, pp: int) -> tuple[int, int]:
    """(dense, MoE) layers of the busiest of `pp` pipeline stages: a stage of ceil(L / pp)
    layers, as many of them MoE as there are (the slowest stage paces the pipeline)."""
    layers = layers_per_stage(model, pp)
    moe = min(model.moe_layers, layers)
    return layers - moe, moe
