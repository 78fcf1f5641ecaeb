"""Memory plan of a wafer: weights and KV cache in the SRAM of the cores a placement uses.

A wafer has no HBM: the weights of its pipeline stage and the KV cache live in the SRAM of
the cores of its sub-meshes (perf/wafer_cost.py `Placement`), spread evenly over them (a
deal of layers that does not divide evenly is counted as even). Of each core's SRAM the
engine may use `gpu_memory_utilization` (default 0.9); the rest holds the core's program,
routing tables and I/O buffers. The step's live activations (the same forward pass of
`max_num_batched_tokens` tokens as a GPU's profile run) are set aside; the KV cache gets what
is left, in blocks of `block_size` tokens as vLLM counts them.

A model that does not fit is refused with both ways out, costed: pipelining its layers over
several wafers (`--pp N`, the fewest that fit, each stage's activations crossing the system
I/O) or streaming the weights from host memory every step (`cpu_offload_gb`, read over the
system I/O by every forward pass, as perf/cost_model.py costs it).

`choose_side` picks the sub-mesh side when the deployment leaves `wafer_mesh` unset: of the
sides whose placement fits the weights and one request of `max_model_len` tokens, the one
with the fastest reference step: a decode of one sequence (WaferLLM's per-request decode
rate) for a colocated or decode pool, a prefill chunk of the token budget for a disaggregated
prefill pool, so that prefill gets larger meshes than decode where that is faster.
"""
from __future__ import annotations

import math

from ..deployment import Deployment
from ..engine.batch import BatchShape
from ..errors import InputError
from ..hardware.loader import System
from ..hardware.wafer import WaferDevice, WaferSpec
from ..models.config import ModelConfig
from ..models.layers import layers_per_stage
from .memory_plan import (
    MemoryPlan,
    forward_peak_bytes,
    kv_bytes_per_block,
    offloaded_weights_bytes,
    weights_bytes,
)
from .wafer_cost import WaferCostModel, placement

GB = 1e9


def candidate_sides(wafer: WaferSpec) -> list[int]:
    """Sub-mesh sides worth trying: those that tile the rows or the columns exactly with 1 to 32
    sub-meshes (the largest side for each count), and a geometric grid (5 % apart) between."""
    rows, cols = wafer.mesh.rows, wafer.mesh.cols
    most = min(rows, cols)
    sides = {rows // n for n in range(1, 33)} | {cols // n for n in range(1, 33)}
    side = float(most)
    while side >= 2:
        sides.add(int(side))
        side /= 1.05
    return sorted((s for s in sides if 2 <= s <= most), reverse=True)


def _needs(model: ModelConfig, dep: Deployment, forward_tokens: int) -> tuple[float, float, float, float]:
    """Resident weights, activations, one KV block, and the KV of one request of max_model_len."""
    weights = weights_bytes(model, dep) - offloaded_weights_bytes(model, dep)
    per_block = kv_bytes_per_block(model, dep)
    longest = dep.max_model_len if dep.max_model_len not in (None, -1) else dep.block_size
    return weights, forward_peak_bytes(model, dep, forward_tokens), per_block, math.ceil(longest / dep.block_size) * per_block


def _usable(wafer: WaferSpec, cores: int, dep: Deployment) -> float:
    return cores * wafer.core.sram * dep.gpu_memory_utilization


def fits(wafer: WaferSpec, model: ModelConfig, dep: Deployment, side: int, forward_tokens: int) -> bool:
    weights, activations, _, request = _needs(model, dep, forward_tokens)
    cores = placement(wafer, side, layers_per_stage(model, dep.pp)).cores
    return weights + activations + request <= _usable(wafer, cores, dep)


def plan_wafer_memory(device: WaferDevice, model: ModelConfig, dep: Deployment, forward_tokens: int) -> MemoryPlan:
    """The KV cache a wafer's placement leaves (see the module docstring)."""
    wafer = device.wafer
    assert dep.wafer_mesh is not None  # the wafer backend sets it
    place = placement(wafer, dep.wafer_mesh, layers_per_stage(model, dep.pp))
    usable = _usable(wafer, place.cores, dep)
    weights, activations, per_block, request = _needs(model, dep, forward_tokens)
    available = usable - weights - activations
    if available < max(request, 2 * per_block):
        raise InputError(not_fit_message(device, model, dep, forward_tokens, usable))
    blocks = int(available // per_block)
    if dep.num_gpu_blocks_override is not None:
        if dep.num_gpu_blocks_override > blocks:
            raise InputError(f"{model.name} on {device.name}: num_gpu_blocks_override {dep.num_gpu_blocks_override} "
                             f"needs more than the {blocks} KV blocks the SRAM has left; set it <= {blocks}")
        blocks = dep.num_gpu_blocks_override
    engine = f"wafer: {place.groups} sub-mesh(es) of {place.side} x {place.side} cores"
    return MemoryPlan(wafer.cores * wafer.core.sram, usable, weights, activations, 0.0, per_block, blocks,
                      dep.block_size, engine, offloaded_weights_bytes=offloaded_weights_bytes(model, dep))


def _largest_usable(wafer: WaferSpec, dep: Deployment, layers: int) -> float:
    return max(_usable(wafer, placement(wafer, side, layers).cores, dep) for side in candidate_sides(wafer))


def not_fit_message(device: WaferDevice, model: ModelConfig, dep: Deployment, forward_tokens: int,
                    usable: float) -> str:
    """Why the model does not fit and the two ways out, with their numbers."""
    wafer = device.wafer
    weights, activations, _, request = _needs(model, dep, forward_tokens)
    what = (f"{model.name} does not fit on {device.name} with pp={dep.pp}: weights {weights / GB:.1f} GB, activations "
            f"{activations / GB:.2f} GB and one request of max_model_len {dep.max_model_len} tokens "
            f"({request / GB:.2f} GB of KV) need more than the {usable / GB:.1f} GB of SRAM the engine may use "
            f"({wafer.cores:,} cores x {wafer.core.sram / 1024:g} KiB x gpu_memory_utilization "
            f"{dep.gpu_memory_utilization}, over the cores its placement uses)")
    io = wafer.host_io.bandwidth
    ways = []
    if weights + activations + request <= _largest_usable(wafer, dep, layers_per_stage(model, dep.pp)):
        ways.append("use a sub-mesh side whose placement covers more cores (leave wafer_mesh unset to have it chosen)")
    for pp in range(dep.pp + 1, model.num_layers + 1):
        staged = dep.model_copy(update={"pp": pp})
        stage_weights, stage_activations, _, stage_request = _needs(model, staged, forward_tokens)
        if stage_weights + stage_activations + stage_request <= _largest_usable(wafer, staged, layers_per_stage(model, pp)):
            ways.append(f"pipeline the layers over {pp} wafers (--pp {pp}: activations cross the {io / GB:g} GB/s "
                        "system I/O between stages)")
            break
    streamed = weights + activations + request - usable + offloaded_weights_bytes(model, dep)
    total = weights_bytes(model, dep)
    if streamed < total:
        gib = math.ceil(streamed / 2**30)
        ways.append(f"stream weights from host memory (--set cpu_offload_gb={gib}: every step then reads "
                    f"{gib * 2**30 / GB:.1f} GB over the {io / GB:g} GB/s system I/O, "
                    f"{gib * 2**30 / io * 1e3:.0f} ms or more)")
    return f"{what}; " + (" or ".join(ways) if ways else "lower max_model_len or use a larger wafer")


def choose_side(system: System, model: ModelConfig, dep: Deployment, role: str, forward_tokens: int) -> int:
    """The sub-mesh side for a pool of `role` (see the module docstring); ties go to the side
    whose placement uses more cores (more KV blocks)."""
    device = system.accelerator
    assert isinstance(device, WaferDevice)
    wafer, layers = device.wafer, layers_per_stage(model, dep.pp)
    if role == "prefill":
        chunk = forward_tokens
        batch = BatchShape(prefill_tokens=chunk, prefill_context=chunk, prefill_pairs=chunk * (chunk + 1) / 2,
                           sampled=1)
    else:
        batch = BatchShape(num_decodes=1, decode_context=1.0, sampled=1)
    best: tuple[float, int, int] | None = None
    for side in candidate_sides(wafer):
        if not fits(wafer, model, dep, side, forward_tokens):
            continue
        sided = dep.model_copy(update={"wafer_mesh": side})
        step_s = WaferCostModel(system, model, sided, budget_tokens=forward_tokens).iteration(batch).time_s
        key = (step_s, -placement(wafer, side, layers).cores, side)
        best = key if best is None or key < best else best
    if best is None:
        raise InputError(not_fit_message(device, model, dep, forward_tokens, _largest_usable(wafer, dep, layers)))
    return best[2]
