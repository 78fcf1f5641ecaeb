"""Device backends: what running a serving engine on each kind of device means, keyed by the
spec's `kind`.

A backend supplies the engine's start-up plans on its devices (the KV cache it sizes, the
CUDA graphs it captures, or none) and refuses what the engine cannot do there. `gpu.py` is
vLLM's (or TensorRT-LLM's) CUDA engine: the policy's own memory and graph plans. `cpu.py` is
vLLM's CPU backend: a KV cache of a fixed size in host memory, no CUDA graphs, no swapping
to a host memory the cache already lives in, no TensorRT-LLM. A new kind of device (a
wafer-scale mesh) is one new module that registers its backend here.
"""
from __future__ import annotations

import importlib
import pkgutil
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from ..deployment import Deployment
    from ..hardware.loader import System
    from ..hardware.spec import DeviceSpec
    from ..models.config import ModelConfig
    from ..perf.cuda_graphs import GraphPlan
    from ..perf.memory_plan import MemoryPlan
    from ..schedulers.base import Scheduler


class Backend:
    """The GPU engine's behaviour, which other kinds override where they differ."""

    kind = "gpu"

    @staticmethod
    def check(dep: Deployment, system: System, where: str) -> None:
        """Refuse knobs the engine does not support on this kind of device."""

    @staticmethod
    def plan_memory(policy: type[Scheduler], device: DeviceSpec, model: ModelConfig, dep: Deployment,
                    forward_tokens: int) -> MemoryPlan:
        return policy.plan_memory(device, model, dep, forward_tokens)

    @staticmethod
    def graph_plan(policy: type[Scheduler], dep: Deployment, forward_tokens: int) -> GraphPlan:
        return policy.graph_plan(dep, forward_tokens)


BACKENDS: dict[str, type[Backend]] = {}


def register(cls: type[Backend]) -> type[Backend]:
    BACKENDS[cls.kind] = cls
    return cls


def backend_for(device: DeviceSpec) -> type[Backend]:
    """The backend of the device's kind (every module of this package registers one)."""
    if not BACKENDS:
        for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
            importlib.import_module(f"{__package__}.{info.name}")
    return BACKENDS[device.kind]
