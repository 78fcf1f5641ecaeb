"""GPUs: the CUDA engine as the policy models it (vLLM 0.19's or TensorRT-LLM's memory plan and
CUDA-graph capture, perf/memory_plan.py, perf/trtllm_plan.py, perf/cuda_graphs.py)."""
from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import InputError
from . import Backend, register

if TYPE_CHECKING:
    from ..deployment import Deployment
    from ..hardware.loader import System

# bfloat16 arithmetic arrived with Ampere (compute capability 8.0); vLLM checks for it at start-up
BF16_CAPABILITY = 8


@register
class GpuBackend(Backend):
    kind = "gpu"

    @staticmethod
    def check_device(dep: Deployment, system: System, where: str) -> None:
        """Refuse bf16 compute on a GPU without bfloat16 (a T4, a V100), as vLLM refuses to start
        there, naming its --dtype half; 16-bit weights then cost as fp16, as vLLM casts them."""
        device = system.accelerator
        capability = device.compute_capability
        if dep.activation_dtype == "bf16" and capability is not None \
                and int(capability.split(".")[0]) < BF16_CAPABILITY:
            raise InputError(f"{where}deployment: activation_dtype: bf16 on {device.name} (compute capability "
                             f"{capability}), which has no bfloat16, so vLLM refuses to start; set "
                             "activation_dtype=fp16 (vLLM --dtype half)")
