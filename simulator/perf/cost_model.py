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
from .calibration import Calibration
from .collectives import allgather_time_s, allreduce_time_s, p2p_time_s
from .kernel_times import HOST, ROOFLINE, SOURCES, kernel_times


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
    """Cost of one iteration (floats) or of a span of iterations (numpy arrays).

    sources_s splits time_s by where it came from (kernel_times.SOURCES): shape (4,) for one
    iteration, (4, k) for a span.
    """

    time_s: float | np.ndarray
    flops: float | np.ndarray  # per device
    bytes: float | np.ndarray  # per device, main memory traffic
    compute_dtype: str
    sources_s: np.ndarray


@dataclass(frozen=True, slots=True)
class _Part:
    time_s: float | np.ndarray
    flops: float | np.ndarray
    bytes: float | np.ndarray
    sources_s: np.ndarray


class CostModel:
    """Per-iteration cost of a deployment of `model` on `system`."""

    def __init__(self, system: System, model: ModelConfig, dep: Deployment, calibration: Calibration | None = None,
                 kernel_scale: float = 1.0):
        """kernel_scale multiplies every kernel's device time (uncertainty bands use it)."""
        self.system, self.model, self.dep = system, model, dep
        self.kernel_scale = kernel_scale
        self.device = system.accelerator
        self.kernels = kernel_times(system, model, dep, calibration)
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

    def op_time_s(self, op: Operator, graphed: bool | np.ndarray) -> tuple[float | np.ndarray, np.ndarray]:
        """Time of all `op.count` executions of one operator, overheads included, and that
        time split by source (kernel_times.SOURCES)."""
        if op.kind in ("allreduce", "allgather"):
            return self._collective_s(op)
        gpu, source = self.kernels.gpu_time_s(op)
        if self.kernel_scale != 1.0:
            gpu = gpu * self.kernel_scale
        over = self.device.overheads
        if isinstance(graphed, np.ndarray):  # a span: some steps replay a CUDA graph, others not
            one = np.where(graphed, gpu + over.graph_kernel_gap, np.maximum(gpu, over.kernel_launch))
        elif graphed:
            one = gpu + over.graph_kernel_gap
        else:
            one = np.maximum(gpu, over.kernel_launch) if isinstance(gpu, np.ndarray) else max(gpu, over.kernel_launch)
        total = op.count * one
        sources = np.zeros((len(SOURCES),) + np.shape(total))
        if np.ndim(source):
            for s in range(len(SOURCES)):
                sources[s] = np.where(source == s, op.count * gpu, 0.0)
        else:
            sources[source] = op.count * gpu
        sources[HOST] += total - op.count * gpu
        return total, sources

    def _collective_s(self, op: Operator) -> tuple[float, np.ndarray]:
        world = self.dep.tp
        measured = (self.kernels.calibration is not None
                    and self.kernels.collective_time_s(op.kind, op.bytes, world))
        if measured:
            one, source = measured
            one *= self.kernel_scale
        else:
            link = self._require_link(self.tp_link, f"tensor-parallel {op.kind}")
            model = allreduce_time_s if op.kind == "allreduce" else allgather_time_s
            one = model(op.bytes, world, link, self.device.efficiency.network_efficiency) * self.kernel_scale
            source = ROOFLINE
        sources = np.zeros(len(SOURCES))
        sources[source] = op.count * one
        return op.count * one, sources

    def _sum(self, ops: list[Operator], graphed: bool) -> _Part:
        times = [self.op_time_s(op, graphed) for op in ops]
        return _Part(
            sum(t for t, _ in times),
            sum(op.flops * op.count for op in ops),
            sum(op.bytes * op.count for op in ops if op.kind not in ("allreduce", "allgather")),
            sum((s for _, s in times), np.zeros(len(SOURCES))),
        )

    def _graphed(self, tokens: int) -> bool:
        return not self.dep.enforce_eager and tokens <= self.dep.max_cudagraph_capture_size

    def _dense_part(self, tokens: int) -> _Part:
        return self._sum(dense_ops(self.model, tokens, self.shard, self.prec), self._graphed(tokens))

    def _head_part(self, sampled: int, graphed: bool) -> _Part:
        return self._sum(head_ops(self.model, sampled, self.shard, self.prec), graphed)

    def _attention_part(self, batch: BatchShape) -> _Part:
        ops: list[Operator] = []
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
        send = self.pipeline_send_s(tokens)
        host = self.device.overheads.scheduler_per_iteration
        time_s = pp * (dense.time_s + attn.time_s) + head.time_s + send + host
        flops = dense.flops + attn.flops + head.flops / pp
        nbytes = dense.bytes + attn.bytes + head.bytes / pp
        sources = pp * (dense.sources_s + attn.sources_s) + head.sources_s
        sources[ROOFLINE] += send
        sources[HOST] += host
        return IterationCost(time_s, flops, nbytes, self.prec.gemm_compute, sources)

    def iteration(self, batch: BatchShape) -> IterationCost:
        """Wall time of one iteration of `batch`, and per-device FLOPs and bytes."""
        tokens = batch.tokens
        return self._combine(tokens, self._dense(tokens), self._attention_part(batch), self._head(batch.sampled, self._graphed(tokens)))

    def decode_span(self, num_decodes: np.ndarray, context: np.ndarray) -> IterationCost:
        """Many decode-only iterations at once: step j decodes num_decodes[j] sequences that
        read context[j] KV tokens in all. Each step costs exactly what `iteration` gives for
        that batch (the same operators, evaluated on arrays). num_decodes is non-increasing
        (sequences only leave a span), so its runs of equal sizes are few."""
        if num_decodes[0] == num_decodes[-1]:  # one batch size throughout
            fixed = np.array([self._fixed_decode(int(num_decodes[0]))])
        else:
            edges = (num_decodes[1:] != num_decodes[:-1]).nonzero()[0] + 1
            starts = np.concatenate(([0], edges))
            lengths = np.diff(np.concatenate((starts, [len(num_decodes)])))
            fixed = np.repeat(np.array([self._fixed_decode(int(n)) for n in num_decodes[starts]]), lengths, axis=0)
        op = attention_decode_op(self.model, num_decodes, context, self.shard, self.prec)
        graphed = fixed[:, 6] > 0
        attn_time, attn_src = self.op_time_s(op, graphed)
        attn = _Part(attn_time, op.flops * op.count, op.bytes * op.count, attn_src)
        zero = np.zeros((len(SOURCES), len(num_decodes)))
        # dense and head sources are folded into `dense` (pp * dense + head) so _combine adds them once
        return self._combine(
            num_decodes,
            _Part(fixed[:, 0], fixed[:, 1], fixed[:, 2], fixed[:, 7:].T / self.dep.pp),
            attn,
            _Part(fixed[:, 3], fixed[:, 4], fixed[:, 5], zero),
        )

    @lru_cache(maxsize=4096)  # noqa: B019 (one CostModel per run; the cache dies with it)
    def _fixed_decode(self, n: int) -> tuple[float, ...]:
        """Token-parallel and head costs of a decode step of n sequences, whether it is graphed,
        and the sources of the dense and head times (pp * dense + head, as _combine adds them)."""
        graphed = self._graphed(n)
        dense, head = self._dense(n), self._head(n, graphed)
        by_source = self.dep.pp * dense.sources_s + head.sources_s
        return (dense.time_s, dense.flops, dense.bytes, head.time_s, head.flops, head.bytes, float(graphed),
                *by_source)

    @property
    def min_step_s(self) -> float:
        """A lower bound on any iteration's time: one decode of one token of context."""
        return self.iteration(BatchShape(num_decodes=1, decode_context=1.0, sampled=1)).time_s
