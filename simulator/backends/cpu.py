"""CPUs: vLLM's CPU backend (vllm/platforms/cpu.py and its CPU worker, 0.8 to 0.19).

- The KV cache is not sized from what is left after profiling: it is `VLLM_CPU_KVCACHE_SPACE`
  GiB of host memory (the knob `cpu_kvcache_space`; unset, vLLM warns "Environment variable
  VLLM_CPU_KVCACHE_SPACE (GiB) for CPU backend is not set, using 4 by default"), split into
  blocks of `block_size` tokens (num_blocks = space // bytes per block). The weights and the
  cache must both fit in the socket's memory.
- No CUDA graphs, and no asynchronous launch queue: the thread that dispatches an operator
  (PyTorch's dispatcher, then an OpenMP parallel region over the socket's cores) is one of those
  that run it, so its dispatch adds to its time: an operator of compute time t costs
  t + OP_DISPATCH_S ("serial dispatch"; a GPU's eager kernel costs max(t, kernel_launch), its
  launch hidden behind the kernels before it). A CPU spec therefore states no `kernel_launch`.
- Threads: one per core of the device (`compute.units`), as vLLM's `VLLM_CPU_OMP_THREADS_BIND`
  (`auto`) binds an engine's OpenMP threads to the cores of one NUMA node. A core kept for the
  API server (`VLLM_CPU_NUM_OF_RESERVED_CPU`, 1 in Intel's vLLM guide) is not taken off: one of
  the 56-128 cores of the shipped sockets.
- Sockets and NUMA ("one rank per socket"): a CPU spec is one socket, one NUMA node with its own
  DDR channels (`memory[0]`); a tp=1 engine uses that socket's cores and memory bandwidth only, as
  the binding above does. A tp (or pp) group spans sockets, one rank per socket (vLLM's CPU
  backend with `VLLM_CPU_OMP_THREADS_BIND="0-63|64-127"`), and its collectives cross the
  socket-to-socket link (`links.upi` on a Xeon, `links.xgmi` on an EPYC: the system's fabric),
  timed like any collective over the fabric. Not modelled, so refused: tp/pp across sockets
  without such a link, and a bare CPU spec grown past the 2 sockets of the servers it stands for
  (a bigger machine is a system spec). Sub-NUMA clustering (SNC/NPS modes) is not modelled: a
  socket is one NUMA node.
- No swap preemption: the KV cache is already in host memory; no TensorRT-LLM (it has no
  CPU backend).
"""
from __future__ import annotations

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.loader import System
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.cost_model import CostModel
from ..perf.cuda_graphs import GraphPlan
from ..perf.memory_plan import GiB, MemoryPlan, kv_bytes_per_block, weights_bytes
from ..schedulers.base import Scheduler
from . import Backend, register

ENGINE = "vLLM 0.19 CPU backend"

# Per-operator cost of the CPU engine, added to every operator's compute time (serial dispatch,
# see above): an estimate, PyTorch's CPU dispatcher overhead of a few microseconds per
# operator plus the fork/join barrier of one OpenMP parallel region over a socket's cores
# (1-2 us on tens of cores); no public figure for vLLM's CPU backend itself was found.
OP_DISPATCH_S = 5e-6
# The largest machine a bare CPU spec stands for: the 2-socket servers of the shipped CPUs.
MAX_SOCKETS = 2
# Links between the sockets of one server, over which a tp/pp group's collectives run.
SOCKET_LINKS = ("upi", "xgmi", "infinity_fabric")


class CpuCostModel(CostModel):
    """CostModel of vLLM's CPU engine: each operator costs its compute time plus OP_DISPATCH_S."""

    def _kernel_overheads(self, graphed: bool) -> tuple[float, float]:
        return OP_DISPATCH_S, 0.0


@register
class CpuBackend(Backend):
    kind = "cpu"
    cost_class = CpuCostModel
    noun, runs_trtllm = "CPU", False

    @staticmethod
    def check_device(dep: Deployment, system: System, where: str) -> None:
        device = system.accelerator.name
        if dep.preemption_mode == "swap":
            raise InputError(f"{where}preemption_mode=swap: on a CPU ({device}) the KV cache already lives in host "
                             "memory; use preemption_mode=recompute")
        if dep.cpu_offload_gb:
            raise InputError(f"{where}cpu_offload_gb: on a CPU ({device}) the weights already live in host memory; "
                             "set it 0")
        spans = dep.devices_per_replica
        if spans > 1 and spans <= system.devices_per_node and system.fabric_name not in SOCKET_LINKS:
            raise InputError(f"{system.source_file}: {where}tp={dep.tp} pp={dep.pp} runs one rank per socket, and "
                             f"{device} has no socket-to-socket link ({' or '.join(SOCKET_LINKS[:2])}) in links:; "
                             "add one (e.g. upi: {bandwidth: 160 GB/s, latency: 10 us}) or use tp=1 pp=1")
        if system.standalone and system.devices_per_node > MAX_SOCKETS:
            raise InputError(f"{system.source_file}: {where}a bare CPU spec stands for a server of up to {MAX_SOCKETS} "
                             f"sockets, and tp x pp x replicas needs {system.devices_per_node}; describe a bigger "
                             "machine as a system spec (count:, nodes:, network:)")

    @staticmethod
    def plan_memory(policy: type[Scheduler], device: DeviceSpec, model: ModelConfig, dep: Deployment,
                    forward_tokens: int) -> MemoryPlan:
        capacity = device.main_memory.capacity
        weights = weights_bytes(model, dep)
        space = dep.cpu_kvcache_space * GiB
        per_block = kv_bytes_per_block(model, dep)
        where = f"{model.name} on {device.name}"
        if weights + space > capacity:
            raise InputError(f"{where}: the weights ({weights / GiB:.2f} GiB) and the KV cache (cpu_kvcache_space "
                             f"{dep.cpu_kvcache_space:g} GiB) need more than the {capacity / GiB:.2f} GiB of memory; "
                             "lower cpu_kvcache_space, use a smaller weight_dtype or a larger machine")
        blocks = int(space // per_block)
        longest = dep.max_model_len if dep.max_model_len not in (None, -1) else model.max_context
        if dep.max_model_len != -1 and -(-longest // dep.block_size) > blocks:
            fits = blocks * dep.block_size
            raise InputError(f"{where}: one request of max_model_len {longest} tokens needs more than the "
                             f"{blocks} KV blocks ({fits} tokens) of cpu_kvcache_space {dep.cpu_kvcache_space:g} GiB "
                             f"({ENGINE} refuses to start); set max_model_len <= {fits} or raise cpu_kvcache_space")
        return MemoryPlan(capacity, weights + space, weights, 0.0, 0.0, per_block, blocks, dep.block_size, ENGINE)

    @staticmethod
    def graph_plan(policy: type[Scheduler], dep: Deployment, forward_tokens: int) -> GraphPlan:
        return GraphPlan(dep.model_copy(update={"enforce_eager": True}), forward_tokens)
