"""The kinds of operator the simulator costs, measures and calibrates: one entry each.

An `OpKind` gives a kind the type of its shape (`GemmShape`, `GroupedGemmShape`, `PrefillShape`,
`DecodeShape`, `MoeShape`: what a calibration table looks its operators up by; `CollectiveShape`: a
collective's group, whose message is its bytes; none for elementwise kernels);
its family (a tiled GEMM, an attention kernel, a bandwidth-bound elementwise kernel, a
collective over a link, a copy between memories), which fixes its roofline (`perf/roofline.py`: the wave-quantised GEMM efficiency, the attention kernels'
own ceiling, or the plain one; collectives and copies go over links, not the roofline);
the shape parameters a measurement row of it carries (the measurement CSV's columns,
docs/contracts.md section 6); and the axes a calibration table of it interpolates over
(`perf/fit_inputs.py`: size axes kept non-decreasing, free axes, categorical axes).

A new kind (an all-to-all, MLA attention, a mesh collective) is one entry here, plus the
formulas of its FLOPs and bytes where its operators are built (`operators.py`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import numpy as np


class GemmShape(NamedTuple):
    """A GEMM's output rows m (tokens), output columns n and reduction size k; m is an array
    where many token counts are costed at once."""

    m: int | np.ndarray
    n: int
    k: int


class MoeShape(NamedTuple):
    """The routed experts of one MoE layer on one device, as vLLM's fused-MoE layer runs them
    (up GEMM, activation, down GEMM): `tokens` tokens entering the layer, each routed to
    `top_k` of the `experts` the device holds, reaching `experts_reached` distinct ones
    (expected, so fractional in a run); every expert a [hidden -> 2 x intermediate] gated up
    projection and an [intermediate -> hidden] down projection on this device. What a
    measured fused-MoE table (`moe` rows) is looked up by."""

    tokens: float
    experts_reached: float
    hidden: int
    intermediate: int
    experts: int
    top_k: int


class GroupedGemmShape(NamedTuple):
    """The routed experts of an MoE layer as one grouped GEMM (vLLM's fused-MoE kernel):
    `groups` experts, each a [k -> n] weight matrix, with m rows (tokens) each on average;
    `layer`, the MoE layer it is part of (None for a grouped GEMM by itself)."""

    m: int
    n: int
    k: int
    groups: int
    layer: MoeShape | None = None


class PrefillShape(NamedTuple):
    """One attention call over a batch's prefill chunks: new query tokens summed over the
    chunks (sum c_i), KV tokens read (sum ctx_i + c_i) and query-key pairs under the causal
    mask (sum c_i * (ctx_i + (c_i + 1) / 2))."""

    chunk_tokens: float
    context_tokens: float
    pair_tokens: float


class DecodeShape(NamedTuple):
    """One decode-attention call: `sequences` decodes reading `context_tokens` KV tokens in
    all (arrays of them: the steps of a span)."""

    sequences: int | np.ndarray
    context_tokens: float | np.ndarray


class CollectiveShape(NamedTuple):
    """A collective's group: `world` devices, spread over `span` consecutive devices (the
    data-parallel group of MoE dispatch has one device in every tp; the span picks the link)."""

    world: int
    span: int


Shape = GemmShape | GroupedGemmShape | MoeShape | PrefillShape | DecodeShape | CollectiveShape

GEMM, ATTENTION, ELEMENTWISE, COLLECTIVE, COPY = "gemm", "attention", "elementwise", "collective", "copy"

# table axis: (feature, log offset, kind), kind "mono" (a size axis, forced non-decreasing),
# "free" (interpolated, not forced) or "cat" (categorical: exact match)
Axis = tuple[str, float, str]
_HEADS: tuple[Axis, ...] = (("heads", 0.0, "mono"), ("kv_heads", 0.0, "free"), ("head_dim", 0.0, "free"))
_LINK: tuple[Axis, ...] = (("bytes", 0.0, "mono"), ("world_size", 0.0, "cat"))


@dataclass(frozen=True)
class OpKind:
    name: str
    family: str
    shape: type | None = None  # the Operator.shape its operators carry (None: sized by their bytes)
    params: tuple[str, ...] = ()  # measurement CSV columns of its shape, in the contract's order
    axes: tuple[Axis, ...] = ()  # calibration table axes; () if a table of it is not fitted

    @property
    def monotone(self) -> tuple[str, ...]:
        """The size axes a table keeps non-decreasing."""
        return tuple(name for name, _, kind in self.axes if kind == "mono")


OP_KINDS: dict[str, OpKind] = {k.name: k for k in (
    OpKind("gemm", GEMM, GemmShape, ("m", "n", "k"), (("m", 0.0, "mono"), ("n", 0.0, "mono"), ("k", 0.0, "mono"))),
    # the routed experts of a layer in one kernel, and the activation between the two of a layer
    # (its shape: the layer's); each costed by the roofline, or sharing a measured `moe` time
    OpKind("grouped_gemm", GEMM, GroupedGemmShape),
    OpKind("experts_act", ELEMENTWISE, MoeShape),
    # a whole fused-MoE layer's routed experts, measured (no run builds an operator of it: a
    # run's are the three above, `perf/kernel_times.py` spreads the measured time over them);
    # the model's sizes are categorical, so a table answers only for the shapes it measured
    OpKind("moe", GEMM, MoeShape, ("tokens", "experts_reached", "hidden", "intermediate", "experts", "top_k"),
           (("tokens", 0.0, "mono"), ("experts_reached", 0.0, "mono"), ("hidden", 0.0, "cat"),
            ("intermediate", 0.0, "cat"), ("experts", 0.0, "cat"), ("top_k", 0.0, "cat"))),
    OpKind("attn_prefill", ATTENTION, PrefillShape, ("batch", "seq_len", "kv_len", "heads", "kv_heads", "head_dim"),
           (("batch", 0.0, "mono"), ("seq_len", 0.0, "mono"), ("context", 1.0, "mono"), *_HEADS)),
    OpKind("attn_decode", ATTENTION, DecodeShape, ("batch", "kv_len", "heads", "kv_heads", "head_dim"),
           (("batch", 0.0, "mono"), ("kv_len", 0.0, "mono"), *_HEADS)),
    # one step's attention over `batch` decodes of kv_len tokens each and one prefill chunk of
    # seq_len tokens attending to prefill_kv_len (the chunk and the context before it): fitted
    # as a slowdown of the two alone (perf/mixed_attention.py), not as a table
    OpKind("attn_mixed", ATTENTION, None, ("batch", "kv_len", "seq_len", "prefill_kv_len", "heads", "kv_heads", "head_dim")),
    # one call over `batch` decodes of mean context kv_len, `long` of them at kv_max (and, in
    # optional seq_len / prefill_kv_len columns, a prefill chunk), timed beside the same call
    # with every decode at kv_len (mean_us) and at kv_max (max_us): fitted as the share of the
    # difference the skewed call pays (perf/context_skew.py), not as a table
    OpKind("attn_skew", ATTENTION, None, ("batch", "kv_len", "kv_max", "long", "heads", "kv_heads", "head_dim",
                                          "mean_us", "max_us")),
    # multi-head latent attention (DeepSeek): prefill over up-projected keys and values, decode
    # absorbed into the latent space; costed by the roofline until a harness measures them
    OpKind("mla_prefill", ATTENTION, PrefillShape),
    OpKind("mla_decode", ATTENTION, DecodeShape),
    OpKind("elementwise", ELEMENTWISE),
    OpKind("allreduce", COLLECTIVE, CollectiveShape, ("bytes", "world_size"), _LINK),
    OpKind("allgather", COLLECTIVE, CollectiveShape, ("bytes", "world_size"), _LINK),
    OpKind("reducescatter", COLLECTIVE, CollectiveShape, ("bytes", "world_size"), _LINK),
    OpKind("alltoall", COLLECTIVE, CollectiveShape, ("bytes", "world_size"), _LINK),
    OpKind("memcpy", COPY, None, ("bytes", "direction"), (("bytes", 0.0, "mono"), ("direction", 0.0, "cat"))),
)}


def kinds_of(*families: str) -> tuple[str, ...]:
    """The kinds of the given families, in registry order."""
    return tuple(name for name, kind in OP_KINDS.items() if kind.family in families)


COLLECTIVE_KINDS = kinds_of(COLLECTIVE)
# what a measurement CSV may hold, and the tables calibration fits
MEASURED = {name: kind.params for name, kind in OP_KINDS.items() if kind.params}
TABLE_AXES = {name: kind.axes for name, kind in OP_KINDS.items() if kind.axes}
# the operators of a run over which a measured `moe` layer's time is spread
ROUTED_EXPERT_KINDS = ("grouped_gemm", "experts_act")
