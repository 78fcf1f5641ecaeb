"""A serving step on a wafer-scale mesh: the CostModel with every operator timed on the mesh.

Placement (`Placement`), WaferLLM's: each layer's weights are tiled over a square sub-mesh
of P x P cores, and its KV cache is spread over the same cores, so every core holds a part
of every layer placed on its sub-mesh. The usable mesh holds (rows // P) x (cols // P) such
sub-meshes; the layers of a pipeline stage are dealt over them (at most one sub-mesh per
layer) and a step runs them one after another, handing each layer's output to the next
sub-mesh. P is the deployment's `wafer_mesh`, which the wafer backend chooses per pool when
it is unset (perf/wafer_plan.py: the fastest that fits, for a decode step, or for a prefill
chunk in a disaggregated prefill pool: WaferLLM's larger meshes for prefill than for decode).

The operators of a step are the same as on a GPU (models/operators.py); `MeshKernelTimes`
times each by its shape with the PLMR formulas of perf/mesh.py: a GEMM as the faster of
MeshGEMV and MeshGEMM, attention by its decode or prefill algorithm, elementwise kernels as
local work. What a GPU step does not have, `WaferCostModel` adds: the all-reduce of each
RMSNorm's sum of squares across the P cores that hold a token's hidden vector, the hand-off
of the hidden states from one layer's sub-mesh to the next, and the sampler's arg-max over the
vocabulary spread over the whole sub-mesh. A wafer launches no kernels and captures no CUDA
graphs; the serving engine's host time per step is the spec's. Weights that do not fit stream
from host memory (`cpu_offload_gb`) or are pipelined over wafers (`pp`) as on GPUs.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import cast

import numpy as np

from ..deployment import Deployment
from ..hardware.loader import System
from ..hardware.wafer import WaferDevice, WaferSpec
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.layers import layers_per_stage
from ..models.op_kinds import ATTENTION, GEMM, OP_KINDS, DecodeShape, GemmShape, PrefillShape
from ..models.operators import Operator
from .cost_model import CostModel, _Part
from .cuda_graphs import GraphPlan
from .kernel_times import ROOFLINE, KernelTimes
from .memory_plan import forward_peak_bytes
from .mesh import (
    Mesh,
    allreduce_s,
    decode_attention_s,
    gemm_s,
    gemv_s,
    local_s,
    prefill_attention_s,
    reduce_s,
)

# what a wafer run's time is, in its summary's provenance (no profile calibrates a wafer)
MESH_MODEL_NOTE = ("every operator from the wafer's PLMR mesh model: first principles, with one per-core number "
                   "(vector_op_overhead_cycles) fitted to a published prefill figure (docs/wafer.md)")


@dataclass(frozen=True)
class Placement:
    """Where a stage's layers live: `groups` sub-meshes of side x side cores."""

    side: int
    groups: int

    @property
    def cores(self) -> int:
        return self.groups * self.side * self.side


def placement(wafer: WaferSpec, side: int, layers: int) -> Placement:
    """The sub-meshes of side x side cores that tile the usable mesh, at most one per layer."""
    return Placement(side, min((wafer.mesh.rows // side) * (wafer.mesh.cols // side), layers))


def mesh_of(wafer: WaferSpec, side: int) -> Mesh:
    fabric = wafer.fabric
    return Mesh(side, wafer.core.sram_bandwidth, fabric.link_bandwidth, fabric.hop_latency, fabric.message_overhead,
                fabric.routes_per_core, wafer.core.clock, wafer.core.vector_op_overhead_cycles)


class MeshKernelTimes(KernelTimes):
    """Each operator's time on a side x side sub-mesh (perf/mesh.py), all from first principles
    (the "roofline" source: no wafer measurement is calibrated)."""

    def __init__(self, device: WaferDevice, model: ModelConfig, dep: Deployment, mesh: Mesh, buffer_bytes: float):
        self.device, self.model, self.mesh = device, model, mesh
        self.buffer_bytes = buffer_bytes  # the SRAM a core sets aside for a step's activations
        prec = dep.precision
        self.act_bytes, self.kv_bytes = DTYPE_BYTES[prec.activations], DTYPE_BYTES[prec.kv]
        self.in_bytes, self.weight_bytes = DTYPE_BYTES[prec.gemm_compute], DTYPE_BYTES[prec.weights]
        # MeshGEMV keeps every token's slice of x on each core of a row: WaferLLM compiles it for a
        # decode batch, and runs prompts through MeshGEMM. More tokens than a step's sequences
        # (max_num_seqs) hold a prefill chunk, so they take MeshGEMM.
        self.gemv_tokens = dep.max_num_seqs

    def core_flops(self, dtype: str) -> float:
        return self.device.peak_flops(dtype) / self.device.compute.units

    def gpu_time_s(self, op: Operator):
        rate, family, model, mesh = self.core_flops(op.dtype), OP_KINDS[op.kind].family, self.model, self.mesh
        if family == GEMM:
            if not isinstance(op.shape, GemmShape):
                raise ValueError(f"{op.kind} ({op.name}): the mesh model times dense GEMMs only")
            m, n, k = op.shape
            steps = gemm_s(mesh, m, n, k, rate, self.in_bytes, self.weight_bytes)
            vector = np.minimum(gemv_s(mesh, m, n, k, rate, self.act_bytes, self.weight_bytes, self.buffer_bytes),
                                steps)
            return np.where(np.asarray(m) > self.gemv_tokens, steps, vector), ROOFLINE
        if family == ATTENTION:
            heads, dim = model.num_heads, model.head_dim
            if isinstance(op.shape, DecodeShape):
                sequences, context = op.shape
                return decode_attention_s(mesh, sequences, context, heads, model.num_kv_heads, dim, op.bytes, rate,
                                          self.act_bytes), ROOFLINE
            chunk, context, _ = cast(PrefillShape, op.shape)
            return prefill_attention_s(mesh, chunk, context, heads, model.num_kv_heads * dim, op.flops, op.bytes, rate,
                                       self.kv_bytes), ROOFLINE
        return local_s(mesh, op.flops, op.bytes, rate), ROOFLINE

    def gpu_time_many(self, op: Operator) -> None:
        """Token counts are costed one at a time on a mesh (and memoised by the cost model)."""
        return None

    def mixed_decode_factor(self, decodes: int, context_per_decode: float) -> float:
        """Decodes beside prefill chunks take no slower path on a mesh: each runs its own algorithm."""
        return 1.0


class WaferCostModel(CostModel):
    """CostModel on a wafer: operators timed on the placement's sub-mesh, plus the mesh's own
    collectives of a step (see the module docstring)."""

    def __init__(self, system: System, model: ModelConfig, dep: Deployment, host_overlapped: bool = False,
                 budget_tokens: int | None = None):
        eager = dep.model_copy(update={"enforce_eager": True})  # no CUDA graphs: no padded token counts
        super().__init__(system, model, dep, None, host_overlapped=host_overlapped, budget_tokens=budget_tokens,
                         graphs=GraphPlan(eager, budget_tokens or 1), mixed_decode_slowdown=False)
        device = cast(WaferDevice, system.accelerator)
        assert dep.wafer_mesh is not None  # the wafer backend sets it (backends/wafer.py)
        self.layers = layers_per_stage(model, dep.pp)
        self.placement = placement(device.wafer, dep.wafer_mesh, self.layers)
        self.mesh = mesh_of(device.wafer, dep.wafer_mesh)
        # the activations the memory plan sets aside (perf/wafer_plan.py), spread over the placement's cores
        buffer = forward_peak_bytes(model, dep, budget_tokens or dep.max_num_seqs) / self.placement.cores
        self.kernels = MeshKernelTimes(device, model, dep, self.mesh, buffer)

    def _fixed_part(self, tokens: int, sampled: int, decode_only: bool) -> _Part:
        part = super()._fixed_part(tokens, sampled, decode_only)
        extra = float(self.mesh_collectives_s(tokens, sampled))
        sources = list(part.sources_s)
        sources[ROOFLINE] += extra
        return _Part(part.time_s + extra, part.flops, part.bytes, sources)

    def mesh_collectives_s(self, tokens: int, sampled: int):
        """What a step adds on a mesh to its operators, in every stage: per layer, one
        all-reduce of 4 bytes per token row a core holds for each RMSNorm (two, three with
        per-head query and key norms) and, when the layers are spread over several sub-meshes,
        the hand-off of the T x hidden activations to the next (P hops away, over the P links
        of a sub-mesh's side); once, the final norm's all-reduce and the sampler's arg-max
        (value and index per sequence, reduced along the rows, then along a column)."""
        mesh, side, model = self.mesh, self.mesh.side, self.model
        norms = 2 + int(model.qk_norm)
        norm = allreduce_s(mesh, side, 4.0 * math.ceil(tokens / side))
        handoff = 0.0
        if self.placement.groups > 1:
            activations = tokens * model.hidden_size * DTYPE_BYTES[self.prec.activations]
            handoff = mesh.message_s + side * mesh.hop_s + activations / (side * mesh.link_bandwidth)
        per_stage = self.layers * (norms * norm + handoff)
        head = 0.0
        if sampled:
            head = allreduce_s(mesh, side, 4.0 * math.ceil(sampled / side)) + 2 * reduce_s(mesh, side, 8.0 * sampled)
        return self.dep.pp * per_stage + head
