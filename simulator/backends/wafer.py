"""Wafer-scale meshes: the serving engine's policies on a wafer (docs/wafer.md).

- Placement and memory: a stage's weights and KV cache live in the SRAM of the sub-meshes
  its layers are placed on (perf/wafer_plan.py); the sub-mesh side is the `wafer_mesh` knob,
  chosen per pool when unset (a disaggregated prefill pool's is `wafer_prefill_mesh`).
- Time: every operator on the mesh (perf/wafer_cost.py), no kernel launches, no CUDA graphs.
- The longest request defaults to min(the model's context, 8,192 tokens), the context
  Cerebras's inference API gave Llama 3.1 8B and Llama 3.3 70B in its free tier (the AI SDK's
  Cerebras provider documentation, 2024-2025), since no wafer holds a 128k-token context
  beside an 8B model's weights; max_model_len sets it.
- Refused: tensor parallelism across wafers (a layer never leaves its wafer: split the layers
  with --pp), mixture-of-experts models (grouped expert GEMMs are not modelled on a mesh),
  TensorRT-LLM (no wafer backend) and calibration profiles (they time GPU and CPU kernels).
"""
from __future__ import annotations

from ..deployment import Deployment
from ..errors import InputError
from ..hardware.loader import System
from ..hardware.spec import DeviceSpec
from ..hardware.wafer import WaferDevice
from ..models.config import ModelConfig
from ..perf.cost_model import CostModel
from ..perf.memory_plan import MemoryPlan
from ..perf.profile_use import AppliedProfile
from ..perf.wafer_cost import WaferCostModel
from ..perf.wafer_plan import choose_side, plan_wafer_memory
from ..schedulers.base import Scheduler
from . import Backend, register

DEFAULT_CONTEXT = 8192  # tokens: Cerebras's inference API's context for its Llama models (free tier)


@register
class WaferBackend(Backend):
    kind = "wafer"
    own_knobs = ("wafer_mesh", "wafer_prefill_mesh")
    noun, runs_trtllm = "wafer", False

    @staticmethod
    def check_device(dep: Deployment, system: System, where: str) -> None:
        device = system.accelerator.name
        if dep.tp > 1:
            raise InputError(f"{where}--tp {dep.tp}: a layer runs on one wafer's mesh ({device}); split the layers "
                             "over wafers with --pp instead")

    @staticmethod
    def resolve(dep: Deployment, system: System, model: ModelConfig, role: str,
                policy: type[Scheduler]) -> Deployment:
        device = system.accelerator
        assert isinstance(device, WaferDevice)
        if model.is_moe:
            raise InputError(f"{model.name} is a mixture of experts: the wafer cost model covers dense models "
                             "(grouped expert GEMMs are not modelled on a mesh)")
        if dep.max_model_len is None:
            dep = dep.model_copy(update={"max_model_len": min(model.max_context, DEFAULT_CONTEXT)})
        knob = "wafer_prefill_mesh" if role == "prefill" and dep.wafer_prefill_mesh else "wafer_mesh"
        side = getattr(dep, knob)
        most = min(device.wafer.mesh.rows, device.wafer.mesh.cols)
        if side is not None and side > most:
            raise InputError(f"{knob} {side}: {device.name}'s mesh is {device.wafer.mesh.rows} x "
                             f"{device.wafer.mesh.cols} cores; set it <= {most}")
        if side is None:
            longest = model.max_context if dep.max_model_len in (None, -1) else dep.max_model_len
            side = choose_side(system, model, dep, role, policy.forward_tokens(dep, longest))
        return dep.model_copy(update={"wafer_mesh": side})

    @staticmethod
    def plan_memory(policy: type[Scheduler], device: DeviceSpec, model: ModelConfig, dep: Deployment,
                    forward_tokens: int) -> MemoryPlan:
        assert isinstance(device, WaferDevice)
        return plan_wafer_memory(device, model, dep, forward_tokens)

    @classmethod
    def cost_model(cls, system: System, model: ModelConfig, dep: Deployment, calibration: AppliedProfile | None,
                   policy: type[Scheduler], forward_tokens: int) -> CostModel:
        if calibration is not None:
            raise InputError(f"--calibration: {system.accelerator.name} is a wafer, timed by the mesh model "
                             "(docs/wafer.md); calibration profiles time GPU and CPU kernels; drop --calibration")
        return WaferCostModel(system, model, dep, host_overlapped=policy.host_overlapped(dep),
                              budget_tokens=forward_tokens)
