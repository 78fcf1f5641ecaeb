"""Routed experts kept in host memory and computed by the host CPU (`experts_on_host`), as
KTransformers and Fiddler run an MoE model on one GPU: attention, the dense layers, the
router and the shared experts stay on the GPU (`operators._moe_ops` drops the routed experts
from its operators), the routed experts' weights live in the host's DRAM and its cores run
them.

Per MoE layer and step of T tokens:
- the hidden states of the T tokens go to the host over the host link and the expert outputs
  come back, T x hidden x 2 bytes each way (`copy_s`: the link's latency + bytes / bandwidth,
  twice);
- the host reads the weights of the expected distinct experts the step reaches,
  E (1 - (1 - k/E)^T) under balanced routing (as `operators._moe_ops` counts them on a
  GPU), once, from DRAM, and computes the T x k routed rows: its time is the larger of the
  read at HOST_MEMORY_EFFICIENCY of the DRAM bandwidth and the FLOPs at
  HOST_COMPUTE_EFFICIENCY of the CPU's peak for the weight dtype (`DeviceSpec.peak_flops`:
  int4 runs at the int8 rate of AMX or AVX-512 VNNI where the spec gives one, else at bf16
  or fp32). Decode steps read few experts' weights per token and are memory-bound;
  prefill chunks reach every expert and are compute-bound on the CPU's peak.
- Overlap: KTransformers submits the CPU's expert work asynchronously and the GPU runs the
  shared experts meanwhile, so a layer waits for the later of the two; the step gains
  max(0, host path - shared experts' GPU time) per MoE layer. Nothing else overlaps: the next
  layer's attention needs the expert outputs.

The host is the system's `host:` CPU spec, all of its sockets (`hosts_per_node`) serving the
node's devices evenly (`System.memory_tiers` shares its memory so): a dual-socket host's two
DDR systems and core counts add up, as KTransformers' NUMA mode (USE_NUMA=1) uses them, each
socket reading its own copy of the experts. That copy doubles the host memory KTransformers
needs; the simulator keeps one copy and checks that against the host's capacity.

Not modelled: KTransformers' CPU-side prefix cache and its GPU-resident "Marlin" experts
(some experts kept on the GPU), skewed routing (fewer distinct experts read than balanced
routing reaches), the host's own engine work beyond the scheduler's per-step time, and the
CPU's dispatch per operator.
"""
from __future__ import annotations

from ..deployment import Deployment
from ..hardware.loader import System
from ..models.config import DTYPE_BYTES, ModelConfig
from ..models.layers import experts_reached, stage_layer_kinds
from .memory_plan import expert_params, linear_bytes_per_param

# Fraction of the DRAM peak the host's expert kernels stream weights at: an estimate. STREAM
# triad reaches about 80 % of a DDR5 server socket's peak; the CPU's quantised-GEMV kernels
# (llamafile's, which KTransformers v0.2 runs; its AMX kernels in v0.3) dequantise as they
# read and synchronise their threads once per expert, which we take to cost a third of that.
HOST_MEMORY_EFFICIENCY = 0.5
# Fraction of the CPU's peak (AMX or AVX-512 for the dtype) the expert GEMMs reach: an estimate
# for the small per-expert GEMMs of a prefill chunk (tens of rows each), half the peak that
# oneDNN's AMX kernels are reported to approach on large GEMMs.
HOST_COMPUTE_EFFICIENCY = 0.3


class HostExperts:
    """Cost of the routed experts on the host CPU, per step (see the module docstring)."""

    def __init__(self, system: System, model: ModelConfig, dep: Deployment):
        host, link = system.host, system.host_link
        assert host is not None and link is not None, "topology.pools refuses experts_on_host without them"
        share = system.hosts_per_node / system.devices_per_node
        self.model, self.link = model, link
        self.moe_layers = stage_layer_kinds(model, dep.pp)[1]
        self.bandwidth = host.main_memory.bandwidth * share * HOST_MEMORY_EFFICIENCY
        self.flops_rate = host.peak_flops(dep.weight_dtype) * share * HOST_COMPUTE_EFFICIENCY
        self.expert_params = expert_params(model)
        self.expert_bytes = self.expert_params * linear_bytes_per_param(dep.weight_dtype)
        self.hidden_bytes = model.hidden_size * DTYPE_BYTES[dep.activation_dtype]

    def layer_s(self, tokens: int) -> float:
        """One MoE layer's routed experts for `tokens` tokens: the copies over the host link
        and the CPU's time (the larger of reading the reached experts and computing)."""
        read_s = experts_reached(self.model, tokens) * self.expert_bytes / self.bandwidth
        compute_s = 2.0 * tokens * self.model.experts_per_token * self.expert_params / self.flops_rate
        copy_s = 2.0 * (self.link.latency + tokens * self.hidden_bytes / self.link.bandwidth)
        return copy_s + max(read_s, compute_s)

    def step_s(self, tokens: int, shared_s: float) -> float:
        """What the experts add to a step of `tokens` tokens whose shared experts take
        `shared_s` on the GPU (over all the stage's MoE layers), overlapped with them."""
        if not self.moe_layers:
            return 0.0
        return self.moe_layers * max(0.0, self.layer_s(tokens) - shared_s / self.moe_layers)
