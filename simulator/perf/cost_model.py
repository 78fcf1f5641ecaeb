"""Time, FLOPs and bytes of one serving iteration on one replica: `CostModel.iteration(batch)`.

The iteration's operators come from `models.operators`; each costs its roofline time
(`roofline.py`) on one device, collectives cost their alpha-beta time over the fabric
(`collectives.py`). Kernel overheads follow how the engine launches them:
- eager mode: the CPU enqueues kernels asynchronously, so a kernel costs
  max(GPU time, kernel_launch): small kernels are launch-bound;
- CUDA-graph replay (vLLM captures batches up to `max_cudagraph_capture_size` tokens):
  GPU time + graph_kernel_gap per kernel.
Plus `scheduler_per_iteration` of host time that the engine does not overlap.
Pipeline stages run one after another for a batch (no micro-batch overlap is modelled), with
a point-to-point send of the activations between stages.

Token-parallel operators depend only on the token count, so their cost is memoised by it;
attention is recomputed per batch from the batch's aggregated context sizes.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from ..deployment import Deployment
from ..hardware.loader import System
from ..hardware.spec import Link
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.operators import Operator, attention_decode_op, attention_prefill_op, dense_ops, head_ops
from .collectives import allgather_time_s, allreduce_time_s, p2p_time_s
from .roofline import operator_time_s


@dataclass(frozen=True, slots=True)
class BatchShape:
    """What the cost model needs to know about a mixed batch, aggregated.

    prefill_tokens: new prompt tokens over all chunks; prefill_context: KV tokens the chunks
    attend to (cached context + the chunk itself); prefill_pairs: causal query-key pairs;
    decode_context: KV tokens read by all decodes; sampled: sequences producing a token.
    """

    prefill_tokens: int = 0
    prefill_context: float = 0.0
    prefill_pairs: float = 0.0
    num_decodes: int = 0
    decode_context: float = 0.0
    sampled: int = 0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.num_decodes


@dataclass(frozen=True, slots=True)
class IterationCost:
    """Cost of one iteration (floats) or of a span of iterations (numpy arrays)."""

    time_s: float | np.ndarray
    flops: float | np.ndarray  # per device
    bytes: float | np.ndarray  # per device, main memory traffic
    compute_dtype: str


@dataclass(frozen=True, slots=True)
class _Part:
    time_s: float
    flops: float
    bytes: float


class CostModel:
    """Per-iteration cost of a deployment of `model` on `system`."""

    def __init__(self, system: System, model: ModelConfig, dep: Deployment):
        self.system, self.model, self.dep = system, model, dep
        self.device = system.accelerator
        self.shard, self.prec = dep.sharding, dep.precision
        self.tp_link = self._link_for(dep.tp)
        self.pp_link = self._link_for(dep.tp * dep.pp)
        self._dense = lru_cache(maxsize=65536)(self._dense_part)
        self._head = lru_cache(maxsize=65536)(self._head_part)

    def _link_for(self, devices: int) -> Link | None:
        """The slowest link a group of `devices` consecutive devices must cross."""
        if devices <= 1:
            return None
        if devices <= self.system.devices_per_node:
            return self.system.fabric or self.system.network
        return self.system.network or self.system.fabric

    def _require_link(self, link: Link | None, what: str) -> Link:
        if link is None:
            raise ValueError(f"{self.system.name}: no link for {what}; add links: or network: to the spec")
        return link

    def op_time_s(self, op: Operator, graphed: bool) -> float:
        """Time of all `op.count` executions of one operator, overheads included."""
        eff = self.device.efficiency.network_efficiency
        if op.kind == "allreduce":
            link = self._require_link(self.tp_link, "tensor-parallel all-reduce")
            return op.count * allreduce_time_s(op.bytes, self.dep.tp, link, eff)
        if op.kind == "allgather":
            link = self._require_link(self.tp_link, "tensor-parallel all-gather")
            return op.count * allgather_time_s(op.bytes, self.dep.tp, link, eff)
        gpu = operator_time_s(self.device, op)
        over = self.device.overheads
        if graphed:
            one = gpu + over.graph_kernel_gap
        else:
            one = np.maximum(gpu, over.kernel_launch) if isinstance(gpu, np.ndarray) else max(gpu, over.kernel_launch)
        return op.count * one

    def _sum(self, ops: list[Operator], graphed: bool) -> _Part:
        return _Part(
            sum(self.op_time_s(op, graphed) for op in ops),
            sum(op.flops * op.count for op in ops),
            sum(op.bytes * op.count for op in ops if op.kind not in ("allreduce", "allgather")),
        )

    def _graphed(self, tokens: int) -> bool:
        return not self.dep.enforce_eager and tokens <= self.dep.max_cudagraph_capture_size

    def _dense_part(self, tokens: int) -> _Part:
        return self._sum(dense_ops(self.model, tokens, self.shard, self.prec), self._graphed(tokens))

    def _head_part(self, sampled: int, graphed: bool) -> _Part:
        return self._sum(head_ops(self.model, sampled, self.shard, self.prec), graphed)

    def _attention_part(self, batch: BatchShape) -> _Part:
        ops = []
        if batch.prefill_tokens:
            ops.append(attention_prefill_op(self.model, batch.prefill_tokens, batch.prefill_context,
                                            batch.prefill_pairs, self.shard, self.prec))
        if batch.num_decodes:
            ops.append(attention_decode_op(self.model, batch.num_decodes, batch.decode_context, self.shard, self.prec))
        return self._sum(ops, self._graphed(batch.tokens))

    def pipeline_send_s(self, tokens: int) -> float:
        if self.dep.pp <= 1:
            return 0.0
        link = self._require_link(self.pp_link, "pipeline send/recv")
        nbytes = tokens * self.model.hidden_size * DTYPE_BYTES[self.prec.activations]
        return (self.dep.pp - 1) * p2p_time_s(nbytes, link, self.device.efficiency.network_efficiency)

    def _combine(self, tokens: int, dense: _Part, attn: _Part, head: _Part) -> IterationCost:
        """Stages run their share of layers in turn; embeddings and the head run once."""
        pp = self.dep.pp
        time_s = pp * (dense.time_s + attn.time_s) + head.time_s + self.pipeline_send_s(tokens)
        time_s = time_s + self.device.overheads.scheduler_per_iteration
        flops = dense.flops + attn.flops + head.flops / pp
        nbytes = dense.bytes + attn.bytes + head.bytes / pp
        return IterationCost(time_s, flops, nbytes, self.prec.gemm_compute)

    def iteration(self, batch: BatchShape) -> IterationCost:
        """Wall time of one iteration of `batch`, and per-device FLOPs and bytes."""
        tokens = batch.tokens
        return self._combine(tokens, self._dense(tokens), self._attention_part(batch), self._head(batch.sampled, self._graphed(tokens)))

    def decode_span(self, num_decodes: int, context0: float, steps: int) -> IterationCost:
        """`steps` consecutive decode-only iterations of the same sequences, as arrays.

        Each step every sequence adds one token, so the KV context read grows by
        `num_decodes` per step from `context0`; step j costs exactly what `iteration` gives
        for that batch (the same operators, evaluated on an array of contexts).
        """
        n = num_decodes
        context = context0 + n * np.arange(steps, dtype=np.float64)
        op = attention_decode_op(self.model, n, context, self.shard, self.prec)
        attn = _Part(self.op_time_s(op, self._graphed(n)), op.flops * op.count, op.bytes * op.count)
        return self._combine(n, self._dense(n), attn, self._head(n, self._graphed(n)))
