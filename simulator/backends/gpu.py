"""GPUs: the CUDA engine as the policy models it (vLLM 0.19's or TensorRT-LLM's memory plan and
CUDA-graph capture, perf/memory_plan.py, perf/trtllm_plan.py, perf/cuda_graphs.py)."""
from __future__ import annotations

from . import Backend, register


@register
class GpuBackend(Backend):
    kind = "gpu"
