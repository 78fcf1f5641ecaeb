"""Time, FLOPs and bytes of one serving iteration on one replica: `CostModel.iteration(batch)`.

The iteration's operators come from `models.operators`; each costs its roofline time
(`roofline.py`) on one device, collectives cost their alpha-beta time over the fabric
(`collectives.py`). Kernel overheads follow how the engine launches them:
- eager mode: the CPU enqueues kernels asynchronously, so a kernel costs
  max(GPU time, kernel_launch): small kernels are launch-bound;
- CUDA-graph replay (`cuda_graphs.py`: vLLM pads a step of up to the capture limit to the
  next captured size; FULL graphs for decode-only steps, PIECEWISE ones with eager attention
  otherwise; TensorRT-LLM graphs only decode-only steps, `trtllm_plan.py`): GPU time +
  graph_kernel_gap per kernel, on the padded token count. The logits and the sampler run
  after the graph, eagerly.
Both kernel_launch and the engine's per-step time are host work, taken as the spec states them
for the reference x86 host and divided by the `host_speed` of the system's host CPU (a Grace on a
GH200 node: `loader.host_overheads`).
The engine's own CPU time per step (`scheduler_per_iteration`: scheduling, input preparation,
output processing) adds to the step, or, when the engine schedules asynchronously (vLLM v1,
TensorRT-LLM's overlap scheduler), overlaps it: the step then takes max(GPU time, CPU time).
Pipeline stages run one after another for a batch, with a point-to-point send of the
activations between stages: this is one micro-batch's time through the whole pipeline. How
the micro-batches of a replica's virtual engines overlap is the engine's (engine/pipeline.py).

Everything but attention depends only on the token count and the sequences sampled, so it is
memoised by them (`_fixed`); attention is costed per batch from its aggregated context sizes.
One iteration is summed in plain Python floats, as numpy's per-call overhead would dominate
on a few numbers; a span of decode steps in numpy arrays, with the fixed part of each step
looked up by its batch size (`_decode_columns`).
"""
from __future__ import annotations

from functools import lru_cache
from typing import NamedTuple, cast, overload

import numpy as np

from ..deployment import Deployment
from ..engine.batch import BatchShape
from ..hardware.loader import System
from ..hardware.spec import Link
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.op_kinds import COLLECTIVE_KINDS, CollectiveShape, DecodeShape
from ..models.operators import (
    Operator,
    attention_decode_op,
    attention_prefill_op,
    dense_ops,
    head_ops,
    latent_context_op,
)
from .collectives import TIME_MODELS, p2p_time_s
from .cuda_graphs import GraphPlan, graphed_decode_unsplit
from .flash_weights import FlashWeights, flash_tier
from .host_experts import HostExperts
from .kernel_times import GEMM_TABLE_ROWS, HOST, ROOFLINE, SOURCES, grown_size, kernel_times
from .memory_plan import offloaded_weights_bytes
from .profile_use import AppliedProfile

# Eager steps of up to this many tokens have their dense part tabulated (`_eager_dense`);
# the calibrated GEMM tables reach as far.
EAGER_TABLE_TOKENS = GEMM_TABLE_ROWS
_SOURCE_IDS = np.arange(len(SOURCES))[:, None]

# Rows of the decode table (`CostModel._decode_columns`), one column per batch size: the fixed
# part's time, FLOPs and bytes; the kernel overheads (`_kernel_overheads`); the decode-attention
# bytes that grow with the batch size rather than the context; the share of the longest
# decode's extra time the step pays (`_skew_alpha`); the fixed part's sources.
_TIME, _FLOPS, _BYTES, _GAP, _LAUNCH, _BATCH_BYTES, _SKEW = range(7)
_SOURCE_ROWS = slice(7, 7 + len(SOURCES))


class IterationCost(NamedTuple):
    """Cost of one iteration (`CostModel.iteration`).

    sources_s splits time_s by where it came from (kernel_times.SOURCES): a list of S floats
    (the recorder takes them as they are), S being the number of sources.
    """

    time_s: float
    flops: float  # per device
    bytes: float  # per device, main memory traffic
    compute_dtype: str
    sources_s: list[float]


class SpanCost(NamedTuple):
    """Cost of a span of k decode iterations (`CostModel.decode_span`): IterationCost's fields
    as arrays of k entries, one per step; sources_s an (S, k) array."""

    time_s: np.ndarray
    flops: np.ndarray  # per device
    bytes: np.ndarray  # per device, main memory traffic
    compute_dtype: str
    sources_s: np.ndarray


class _Part(NamedTuple):
    """Time, FLOPs and bytes of some of an iteration's operators; sources_s as a list of floats."""

    time_s: float
    flops: float
    bytes: float
    sources_s: list[float]


class CostModel:
    """Per-iteration cost of a deployment of `model` on `system`."""

    def __init__(self, system: System, model: ModelConfig, dep: Deployment,
                 calibration: AppliedProfile | None = None, kernel_scale: dict[tuple[int, str], float] | None = None,
                 host_overlapped: bool = False, budget_tokens: int | None = None, graphs: GraphPlan | None = None,
                 mixed_decode_slowdown: bool = True):
        """kernel_scale: factors by (kernel_times.SOURCES index, operator kind) multiplying the
        device time of the kernels of that source and kind, 1 for the others (uncertainty bands
        use it; None: unscaled);
        host_overlapped: the engine's CPU work overlaps the GPU's (asynchronous scheduling);
        budget_tokens: the most tokens a step holds (it bounds vLLM's CUDA-graph sizes);
        graphs: which steps replay a CUDA graph (None: vLLM's rule for this deployment);
        mixed_decode_slowdown: decodes in a step with prefill chunks take the prefill kernel's
        slower path (one attention call over all sequences, as vLLM's backends make it; false
        where the engine runs them through its decode kernel, as TensorRT-LLM does)."""
        self.system, self.model, self.dep = system, model, dep
        self.kernel_scale = kernel_scale
        self.host_overlapped = host_overlapped
        self.budget_tokens = budget_tokens or dep.max_num_batched_tokens or 2048
        self.graphs = graphs or GraphPlan(dep, self.budget_tokens)
        # vLLM's FULL-graph decodes on FlashAttention-2 do not split a sequence's KV (cuda_graphs.py)
        self._graphed_unsplit = graphed_decode_unsplit(system.accelerator.compute_capability)
        self.mixed_decode_slowdown = mixed_decode_slowdown
        self.overheads = system.overheads  # the host's speed applied (loader.host_overheads)
        self.host_s = self.overheads.scheduler_per_iteration
        self.device = system.accelerator
        self.kernels = kernel_times(system, model, dep, calibration)
        self.shard, self.prec = dep.sharding, dep.precision
        self.offload_s = self._weights_offload_s()
        self.host_experts = HostExperts(system, model, dep) if dep.experts_on_host else None
        self.flash = self._flash_weights()
        self.tp_link = self._link_for(dep.tp)
        self.pp_link = self._link_for(dep.tp * dep.pp)
        self._dense = lru_cache(maxsize=65536)(self._dense_part)
        self._head = lru_cache(maxsize=65536)(self._head_part)
        self._fixed = lru_cache(maxsize=65536)(self._fixed_part)
        # decode attention per KV token read; what grows with the batch size is in the decode table
        self._decode_per_token = attention_decode_op(model, 0, 1.0, self.shard, self.prec)
        self._decode_table = np.empty((_SOURCE_ROWS.stop, 0))
        self._eager_table: np.ndarray | None = None  # see _eager_dense; built when first needed
        self._eager_built = False

    def _weights_offload_s(self) -> float:
        """Reading the weights a device keeps in host memory (`cpu_offload_gb`) over the link
        to that memory, once per forward pass: vLLM reads them in place (unified addressing),
        so the layers wait for them; at the link's full bandwidth, as swapping assumes."""
        offloaded = offloaded_weights_bytes(self.model, self.dep)
        if not offloaded:
            return 0.0
        tier = self.system.offload_tier
        link = self._require_link(tier.link if tier is not None else None, f"cpu_offload_gb {self.dep.cpu_offload_gb}")
        return link.latency + offloaded / link.bandwidth

    def _flash_weights(self) -> FlashWeights | None:
        """The FFN weights read from a flash tier every step (`flash_offload_gb`)."""
        if not self.dep.flash_offload_gb:
            return None
        tier = flash_tier(self.system, self.dep)
        assert tier is not None, "topology.pools refuses flash_offload_gb without a flash tier"
        return FlashWeights(tier, self.model, self.dep)

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

    def _kernel_overheads(self, graphed: bool) -> tuple[float, float]:
        """(gap, launch) such that a kernel of GPU time t costs max(t + gap, launch): replayed
        from a CUDA graph it costs t + graph_kernel_gap, launched eagerly max(t, kernel_launch).
        One formula for both lets a span mix graphed and eager steps without branching."""
        over = self.overheads
        return (over.graph_kernel_gap, 0.0) if graphed else (0.0, over.kernel_launch)

    def op_time_s(self, op: Operator, graphed: bool, factor: float = 1.0) -> tuple[float, float, int]:
        """Time of all `op.count` executions of one operator, overheads included; the part of
        it the kernels (or the collective) take themselves, and the source of that part
        (kernel_times.SOURCES). The rest is host overhead. `factor` scales the kernel time
        (decodes in a step with prefill chunks, perf/mixed_attention.py)."""
        if op.kind in COLLECTIVE_KINDS:
            one, source = self._collective_s(op)
            return op.count * one, op.count * one, source
        gpu, source = self.kernels.gpu_time_s(op)
        gpu *= factor
        if self.kernel_scale is not None:
            gpu *= self.kernel_scale.get((source, op.kind), 1.0)
        gap, launch = self._kernel_overheads(graphed)
        return op.count * max(gpu + gap, launch), op.count * gpu, source

    def _group_link(self, op: Operator) -> tuple[int, Link]:
        """A collective's group size and the link its devices cross: the tensor-parallel
        group's, or (MoE dispatch) the data-parallel ranks' devices."""
        world, span = cast(CollectiveShape, op.shape)
        link = self.tp_link if span == self.dep.tp else self._link_for(span)
        return world, self._require_link(link, f"a {world}-device {op.kind} ({op.name})")

    def _collective_s(self, op: Operator) -> tuple[float, int]:
        """One execution of a collective and its source: measured by the profile if it covers
        it, else the alpha-beta model over the link its group crosses."""
        world, link = self._group_link(op)
        measured = (self.kernels.calibration is not None
                    and self.kernels.collective_time_s(op.kind, cast(float, op.bytes), world))
        if measured:
            one, source = measured
        else:
            model = TIME_MODELS[op.kind]
            one, source = model(op.bytes, world, link, self.device.efficiency.network_efficiency), ROOFLINE
        if self.kernel_scale is not None:
            one *= self.kernel_scale.get((source, op.kind), 1.0)
        return one, source

    def _sum(self, ops: list[Operator], graphed: bool, factors: tuple[float, ...] = ()) -> _Part:
        """Totals of some scalar operators of one iteration, split by source; `factors`
        scale the kernel times of the first operators (see op_time_s)."""
        time_s = flops = nbytes = 0.0
        sources = [0.0] * len(SOURCES)
        for i, op in enumerate(ops):
            total, device, source = self.op_time_s(op, graphed, factors[i] if i < len(factors) else 1.0)
            time_s += total
            sources[source] += device
            sources[HOST] += total - device
            flops += cast(float, op.flops) * op.count  # operators of one shape: floats
            if op.kind not in COLLECTIVE_KINDS:
                nbytes += cast(float, op.bytes) * op.count
        return _Part(time_s, flops, nbytes, sources)

    def _dense_part(self, padded_tokens: int, graphed: bool) -> _Part:
        """The token-parallel layers of a step run on `padded_tokens` (its padded token count),
        replayed from a CUDA graph or launched eagerly."""
        if not graphed:
            table = self._eager_dense()
            if table is not None and padded_tokens <= table.shape[1]:
                time_s, flops, nbytes, *sources = table[:, padded_tokens - 1].tolist()
                return _Part(time_s, flops, nbytes, sources)
        return self._sum(dense_ops(self.model, padded_tokens, self.shard, self.prec), graphed)

    def _eager_dense(self) -> np.ndarray | None:
        """The dense part of an eager step of every token count up to the budget, computed at
        once on arrays: column T - 1 holds time, FLOPs, bytes and the time by source of T tokens,
        the values `_sum` gives one by one (the same operations in the same order). Steps
        with prefill chunks take many token counts, each a few tens of microseconds by
        itself. None where an operator cannot be costed on arrays (MoE routing, scaled kernel
        times for uncertainty bands, token counts past the calibrated GEMM tables)."""
        if not self._eager_built:
            self._eager_built = True
            if self.model.num_experts <= 1 and self.kernel_scale is None:
                tokens = np.arange(1, min(self.budget_tokens, EAGER_TABLE_TOKENS) + 1)
                self._eager_table = self._sum_many(dense_ops(self.model, tokens, self.shard, self.prec))
        return self._eager_table

    def _sum_many(self, ops: list[Operator]) -> np.ndarray | None:
        """`_sum` of eager operators whose shapes are arrays (one entry per token count), as
        rows time, FLOPs, bytes, then time by source; None if one cannot be costed so."""
        width = len(cast(np.ndarray, ops[0].bytes))
        columns = np.arange(width)
        time_s, flops, nbytes = np.zeros(width), np.zeros(width), np.zeros(width)
        sources = np.zeros((len(SOURCES), width))
        gap, launch = self._kernel_overheads(False)
        for op in ops:
            if op.kind in COLLECTIVE_KINDS:
                one, source = self._collective_many(op)
                total = device = op.count * one
            else:
                timed = self.kernels.gpu_time_many(op)
                if timed is None:
                    return None
                gpu, source = timed
                total, device = op.count * np.maximum(gpu + gap, launch), op.count * gpu
            time_s += total
            if isinstance(source, np.ndarray):
                sources[source, columns] += device
            else:
                sources[source] += device
            sources[HOST] += total - device
            flops += op.flops * op.count
            if op.kind not in COLLECTIVE_KINDS:
                nbytes += op.bytes * op.count
        return np.vstack([time_s, flops, nbytes, sources])

    def _collective_many(self, op: Operator) -> tuple[np.ndarray, np.ndarray | int]:
        """`_collective_s` of a collective whose message sizes are an array."""
        world, link = self._group_link(op)
        if self.kernels.calibration is not None:
            measured = self.kernels.collective_times_many(op.kind, cast(np.ndarray, op.bytes), world)
            if measured is not None:
                return measured
        model = TIME_MODELS[op.kind]
        return model(op.bytes, world, link, self.device.efficiency.network_efficiency), ROOFLINE

    def _head_part(self, sampled: int) -> _Part:
        return self._sum(head_ops(self.model, sampled, self.shard, self.prec), False)

    def _fixed_part(self, tokens: int, sampled: int, decode_only: bool) -> _Part:
        """Everything of an iteration but attention, per device: stages run their share of the
        token-parallel layers in turn and send to the next, embeddings and the head run once."""
        pp, graphs = self.dep.pp, self.graphs
        dense = self._dense(graphs.padded(tokens, decode_only), graphs.graphed(tokens, decode_only))
        head = self._head(sampled)
        flash = self.flash.step_s(tokens) if self.flash is not None else 0.0
        send = self.pipeline_send_s(tokens) + pp * (self.offload_s + flash + self._host_experts_s(tokens, decode_only))
        sources = [pp * d + h for d, h in zip(dense.sources_s, head.sources_s)]
        sources[ROOFLINE] += send
        return _Part(pp * dense.time_s + head.time_s + send, dense.flops + head.flops / pp,
                     dense.bytes + head.bytes / pp, sources)

    def _host_experts_s(self, tokens: int, decode_only: bool) -> float:
        """What the routed experts on the host CPU (`experts_on_host`) add to one stage's step,
        overlapped with the GPU's shared experts (perf/host_experts.py)."""
        if self.host_experts is None:
            return 0.0
        graphed = self.graphs.graphed(tokens, decode_only)
        shared = [op for op in dense_ops(self.model, self.graphs.padded(tokens, decode_only), self.shard, self.prec)
                  if op.name.startswith("shared_expert")]
        return self.host_experts.step_s(tokens, sum(self.op_time_s(op, graphed)[1] for op in shared))

    @overload
    def with_host(self, gpu_s: float) -> float: ...
    @overload
    def with_host(self, gpu_s: np.ndarray) -> np.ndarray: ...
    def with_host(self, gpu_s: float | np.ndarray) -> float | np.ndarray:
        """A step's time from its GPU time: the engine's CPU time added, or overlapped."""
        if self.host_overlapped:
            return np.maximum(gpu_s, self.host_s) if isinstance(gpu_s, np.ndarray) else max(gpu_s, self.host_s)
        return gpu_s + self.host_s

    def _attention_part(self, batch: BatchShape, graphed: bool) -> _Part:
        """Attention of one stage: its layers' prefill and decode attention calls; decodes
        in a step with prefill chunks run the prefill kernel's slower path (not with MLA, whose
        backends in vLLM run decodes and prefills as separate calls)."""
        ops: list[Operator] = []
        factor = 1.0
        if batch.num_decodes:
            op = attention_decode_op(self.model, batch.num_decodes, batch.decode_context, self.shard, self.prec)
            ops.append(op)
            n = batch.num_decodes
            one_call = bool(batch.prefill_tokens) and self.mixed_decode_slowdown and not self.model.is_mla
            if one_call:
                factor = self.kernels.mixed_decode_factor(n, batch.decode_context / n)
            alpha = self._skew_alpha(n, "mixed" if one_call else "decode", graphed)
            if alpha and batch.decode_max_context * n > batch.decode_context:
                at_longest = attention_decode_op(self.model, n, n * batch.decode_max_context, self.shard, self.prec)
                ratio = self.kernels.gpu_time_s(at_longest)[0] / self.kernels.gpu_time_s(op)[0]
                factor *= 1.0 + alpha * max(ratio - 1.0, 0.0)
        if batch.prefill_tokens:
            ops.append(attention_prefill_op(self.model, batch.prefill_tokens, batch.prefill_context,
                                            batch.prefill_pairs, self.shard, self.prec))
            upprojection = latent_context_op(self.model, batch.prefill_context - batch.prefill_tokens,
                                             self.shard, self.prec)
            if upprojection is not None:
                ops.append(upprojection)
        return self._sum(ops, graphed, (factor,))

    def _skew_alpha(self, decodes: int, path: str, graphed: bool) -> float:
        """The share of the longest decode's extra time over the mean that an attention call
        of `decodes` pays (perf/context_skew.py), as the profile measured it for the call's path:
        `mixed` (one call with a prefill chunk, no KV split) or `decode` (decodes alone, split
        as the kernel chooses). A FULL-graph decode runs with the split frozen at capture: one
        part per sequence on FlashAttention-2 (cuda_graphs.py), the unsplit path's tail; no
        tail elsewhere, where the capture's split is not what the tables timed. 0 with MLA,
        where the profile did not measure it, and under an engine with attention kernels of its
        own (`mixed_decode_slowdown` off: TensorRT-LLM), which the tables (vLLM's) do not time."""
        if not self.mixed_decode_slowdown:
            return 0.0
        if graphed:
            if not self._graphed_unsplit:
                return 0.0
            path = "mixed"
        curve = None if self.model.is_mla else self.kernels.context_skew(path)
        return curve(decodes) if curve is not None else 0.0

    def pipeline_send_s(self, tokens: int) -> float:
        if self.dep.pp <= 1:
            return 0.0
        link = self._require_link(self.pp_link, "pipeline send/recv")
        nbytes = tokens * self.model.hidden_size * DTYPE_BYTES[self.prec.activations]
        return (self.dep.pp - 1) * p2p_time_s(nbytes, link, self.device.efficiency.network_efficiency)

    def iteration(self, batch: BatchShape) -> IterationCost:
        """Wall time of one iteration of `batch`, and per-device FLOPs and bytes."""
        tokens = batch.tokens
        decode_only = not batch.prefill_tokens
        return self._with_attention(self._fixed(tokens, batch.sampled, decode_only), batch,
                                    decode_only and self.graphs.graphed(tokens))

    def lockstep(self, batches: list[BatchShape]) -> list[IterationCost]:
        """One step of the data-parallel ranks of an MoE replica (engine/data_parallel.py),
        each rank's cost: vLLM pads every rank to the step's largest token count (and runs
        it through the same CUDA graph or none), so each runs the token-parallel layers on
        that count, whose MoE layers take the experts over all ranks' padded tokens
        (`operators.dense_ops` with the sharding's dp), and its own attention."""
        tokens = max(batch.tokens for batch in batches)
        decode_only = not any(batch.prefill_tokens for batch in batches)
        fixed = self._fixed(tokens, max(batch.sampled for batch in batches), decode_only)
        graphed = decode_only and self.graphs.graphed(tokens)
        return [self._with_attention(fixed, batch, graphed) for batch in batches]

    def _with_attention(self, fixed: _Part, batch: BatchShape, graphed: bool) -> IterationCost:
        """A step's cost: its token-parallel part and the attention of `batch` in every stage
        (attention is inside the graph only in a FULL graph: a decode-only step)."""
        pp = self.dep.pp
        attn = self._attention_part(batch, graphed)
        sources = [f + pp * a for f, a in zip(fixed.sources_s, attn.sources_s)]
        gpu = fixed.time_s + pp * attn.time_s
        time_s = self.with_host(gpu)
        sources[HOST] += time_s - gpu
        return IterationCost(time_s, fixed.flops + attn.flops, fixed.bytes + attn.bytes,
                             self.prec.gemm_compute, sources)

    def decode_span(self, num_decodes: np.ndarray, context: np.ndarray, longest: np.ndarray | None = None) -> SpanCost:
        """Many decode-only iterations at once: step j decodes num_decodes[j] sequences that
        read context[j] KV tokens in all. Each step costs what `iteration` gives for that
        batch, up to float rounding: the same formulas on arrays. The decode-attention
        operator's FLOPs and bytes are linear in the context and the batch size, and whole
        numbers, so they are split exactly into a part per KV token and one per batch size.
        num_decodes is non-increasing (sequences only leave a span), so its first entry is
        its largest. `longest`: the KV tokens of each step's longest decode (None: as if every
        decode read the mean)."""
        columns = self._decode_columns(int(num_decodes[0]))[:, num_decodes]
        unit = self._decode_per_token
        op = Operator(unit.name, unit.kind, context * unit.flops, context * unit.bytes + columns[_BATCH_BYTES],
                      unit.dtype, unit.count, DecodeShape(num_decodes, context))
        gpu, source = self.kernels.gpu_time_s(op)
        alpha = columns[_SKEW]
        if longest is not None and alpha.any():
            at_longest = num_decodes * longest
            gpu_longest, _ = self.kernels.gpu_time_s(Operator(
                unit.name, unit.kind, at_longest * unit.flops, at_longest * unit.bytes + columns[_BATCH_BYTES],
                unit.dtype, unit.count, DecodeShape(num_decodes, at_longest)))
            gpu = gpu * (1.0 + alpha * np.maximum(gpu_longest / gpu - 1.0, 0.0))
        if self.kernel_scale is not None:
            gpu = gpu * np.array([self.kernel_scale.get((i, op.kind), 1.0) for i in range(len(SOURCES))])[source]
        runs = self.dep.pp * op.count  # attention calls per step: its layers in every stage
        total = np.maximum(gpu + columns[_GAP], columns[_LAUNCH]) * runs
        device = gpu * runs
        sources = columns[_SOURCE_ROWS]  # a view of the fresh array the gather made: safe to update
        step_gpu = columns[_TIME] + total
        step_s = self.with_host(step_gpu)
        sources[HOST] += total - device + step_s - step_gpu
        if isinstance(source, np.ndarray):  # calibrated: each step's nearest table point
            first = source[0]
            if (source == first).all():  # usually one source for the whole span
                sources[first] += device
            else:
                sources += (_SOURCE_IDS == source) * device
        else:
            sources[source] += device
        return SpanCost(step_s, columns[_FLOPS] + op.flops * op.count,
                        columns[_BYTES] + op.bytes * op.count, self.prec.gemm_compute, sources)

    def _decode_columns(self, most: int) -> np.ndarray:
        """The decode table: column n describes a decode step of n sequences (`_decode_column`),
        for n = 0..most at least, so that a span gathers all its steps' columns at once. It
        grows by doubling as larger batches come, up to the largest batch the deployment
        schedules (each new column costs a dense part); column 0 (no decodes) is never gathered."""
        if most >= self._decode_table.shape[1]:
            sizes = range(1, grown_size(self._decode_table.shape[1], most, self.dep.max_num_seqs))
            self._decode_table = np.array([[np.nan] * _SOURCE_ROWS.stop] + [self._decode_column(n) for n in sizes]).T
        return self._decode_table

    def _decode_column(self, n: int) -> list[float]:
        """The decode table's column for a decode step of n sequences (rows: see _TIME...)."""
        fixed = self._fixed(n, n, True)
        batch_bytes = cast(float, attention_decode_op(self.model, n, 0.0, self.shard, self.prec).bytes)
        graphed = self.graphs.graphed(n)
        return [fixed.time_s, fixed.flops, fixed.bytes, *self._kernel_overheads(graphed), batch_bytes,
                self._skew_alpha(n, "decode", graphed), *fixed.sources_s]

    @property
    def min_step_s(self) -> float:
        """A lower bound on any iteration's time: one decode of one token of context."""
        return self.iteration(BatchShape(num_decodes=1, decode_context=1.0, sampled=1)).time_s
