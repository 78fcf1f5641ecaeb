"""Device backends: what running a serving engine on each kind of device means, keyed by the
spec's `kind`.

A backend supplies the engine's start-up plans on its devices (the KV cache it sizes, the
CUDA graphs it captures, or none), the cost model that times its steps, the knobs it sets
itself, and refuses what the engine cannot do there. `gpu.py` is vLLM's (or TensorRT-LLM's)
CUDA engine: the policy's own memory and graph plans. `cpu.py` is vLLM's CPU backend: a KV
cache of a fixed size in host memory, no CUDA graphs, no swapping to a host memory the cache
already lives in, no TensorRT-LLM. `wafer.py` is a wafer-scale mesh: weights and KV cache in
the cores' SRAM, every operator timed on the mesh (docs/wafer.md). A new kind of device is one
new module that registers its backend here.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError
from ..perf.cost_model import CostModel

if TYPE_CHECKING:
    from ..deployment import Deployment
    from ..hardware.loader import System
    from ..hardware.spec import DeviceSpec
    from ..models.config import ModelConfig
    from ..perf.cuda_graphs import GraphPlan
    from ..perf.memory_plan import MemoryPlan
    from ..perf.profile_use import AppliedProfile
    from ..schedulers.base import Scheduler


class Backend:
    """The GPU engine's behaviour, which other kinds override where they differ."""

    kind = "gpu"
    own_knobs: tuple[str, ...] = ()  # knobs only this kind of device reads: refused on the others
    cost_class: type[CostModel] = CostModel  # the cost model of its steps (CPU: serial operator dispatch)
    noun = "GPU"  # what messages call a device of this kind
    runs_trtllm = True  # TensorRT-LLM has a backend for this kind

    @classmethod
    def check(cls, dep: Deployment, system: System, where: str) -> None:
        """Refuse what the engine cannot do on this kind of device: TensorRT-LLM where it has no
        backend, then the kind's own limits (`check_device`)."""
        if dep.scheduler == "trtllm" and not cls.runs_trtllm:
            raise InputError(f"{where}--scheduler trtllm: TensorRT-LLM has no {cls.noun} backend "
                             f"({system.accelerator.name} is a {cls.noun}); use vllm, sarathi or splitfuse")
        cls.check_device(dep, system, where)

    @staticmethod
    def check_device(dep: Deployment, system: System, where: str) -> None:
        """Refuse knobs the engine does not support on this kind of device (none on a GPU)."""

    @staticmethod
    def resolve(dep: Deployment, system: System, model: ModelConfig, role: str,
                policy: type[Scheduler]) -> Deployment:
        """The deployment as this kind's engine runs it, for a pool of `role`: the knobs it
        defaults or chooses itself (those the policy's engine picks by device)."""
        return policy.device_defaults(dep, system.accelerator)

    @staticmethod
    def plan_memory(policy: type[Scheduler], device: DeviceSpec, model: ModelConfig, dep: Deployment,
                    forward_tokens: int) -> MemoryPlan:
        return policy.plan_memory(device, model, dep, forward_tokens)

    @staticmethod
    def graph_plan(policy: type[Scheduler], dep: Deployment, forward_tokens: int) -> GraphPlan:
        return policy.graph_plan(dep, forward_tokens)

    @classmethod
    def cost_model(cls, system: System, model: ModelConfig, dep: Deployment, calibration: AppliedProfile | None,
                   policy: type[Scheduler], forward_tokens: int) -> CostModel:
        """The cost model of the pool's steps: the roofline (or the profile) with the policy's
        launch, graph and host-overlap behaviour."""
        return cls.cost_class(system, model, dep, calibration, host_overlapped=policy.host_overlapped(dep),
                              budget_tokens=forward_tokens, graphs=cls.graph_plan(policy, dep, forward_tokens),
                              mixed_decode_slowdown=policy.mixed_decode_slowdown)


BACKENDS: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.kind] = cls
    return cls


def _registered() -> dict[str, type[Backend]]:
    """Every backend: each module of this package registers one when it is imported (all of
    them, even where one was imported directly before, say `backends.cpu` by a test)."""
    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        importlib.import_module(f"{__package__}.{info.name}")  # a dictionary look-up once imported
    return BACKENDS


def backend_for(device: DeviceSpec) -> type[Backend]:
    """The backend of the device's kind."""
    return _registered()[device.kind]


def refuse_foreign_knobs(dep: Deployment, system: System, where: str) -> None:
    """A knob only another kind of device reads (say `wafer_mesh` on a GPU) is an input error,
    so that it never looks as if it took effect."""
    kind = system.accelerator.kind
    for other in _registered().values():
        for name in other.own_knobs if other.kind != kind else ():
            if getattr(dep, name) is not None:
                raise InputError(f"{where}{name}: a {other.kind} knob, and {system.accelerator.name} is a {kind}; "
                                 "remove it")
