"""CPUs: vLLM's CPU backend (vllm/platforms/cpu.py and its CPU worker, 0.8 to 0.19).

- The KV cache is not sized from what is left after profiling: it is `VLLM_CPU_KVCACHE_SPACE`
  GiB of host memory (the knob `cpu_kvcache_space`; unset, vLLM warns "Environment variable
  VLLM_CPU_KVCACHE_SPACE (GiB) for CPU backend is not set, using 4 by default"), split into
  blocks of `block_size` tokens (num_blocks = space // bytes per block). The weights and the
  cache must both fit in the socket's memory.
- No CUDA graphs: every step dispatches its operators one by one (the spec's
  `kernel_launch`, one operator dispatch of the CPU runtime).
- No swap preemption: the KV cache is already in host memory; no TensorRT-LLM (it has no
  CPU backend).
"""
from __future__ import annotations

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.loader import System
from ..hardware.spec import DeviceSpec
from ..models.config import ModelConfig
from ..perf.cuda_graphs import GraphPlan
from ..perf.memory_plan import GiB, MemoryPlan, kv_bytes_per_block, weights_bytes
from ..schedulers.base import Scheduler
from . import Backend, register

ENGINE = "vLLM 0.19 CPU backend"


@register
class CpuBackend(Backend):
    kind = "cpu"

    @staticmethod
    def check(dep: Deployment, system: System, where: str) -> None:
        device = system.accelerator.name
        if dep.scheduler == "trtllm":
            raise InputError(f"{where}--scheduler trtllm: TensorRT-LLM has no CPU backend ({device} is a CPU); "
                             "use vllm, sarathi or splitfuse")
        if dep.preemption_mode == "swap":
            raise InputError(f"{where}preemption_mode=swap: on a CPU ({device}) the KV cache already lives in host "
                             "memory; use preemption_mode=recompute")
        if dep.cpu_offload_gb:
            raise InputError(f"{where}cpu_offload_gb: on a CPU ({device}) the weights already live in host memory; "
                             "set it 0")

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
        longest = dep.max_model_len if dep.max_model_len not in (None, -1) else model.max_position_embeddings
        if dep.max_model_len != -1 and -(-longest // dep.block_size) > blocks:
            fits = blocks * dep.block_size
            raise InputError(f"{where}: one request of max_model_len {longest} tokens needs more than the "
                             f"{blocks} KV blocks ({fits} tokens) of cpu_kvcache_space {dep.cpu_kvcache_space:g} GiB "
                             f"({ENGINE} refuses to start); set max_model_len <= {fits} or raise cpu_kvcache_space")
        return MemoryPlan(capacity, weights + space, weights, 0.0, 0.0, per_block, blocks, dep.block_size, ENGINE)

    @staticmethod
    def graph_plan(policy: type[Scheduler], dep: Deployment, forward_tokens: int) -> GraphPlan:
        return GraphPlan(dep.model_copy(update={"enforce_eager": True}), forward_tokens)
