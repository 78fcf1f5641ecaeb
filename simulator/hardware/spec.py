"""Typed hardware specs: what a GPU, a CPU or a system of them is, as data.

The YAML contract (docs/contracts.md, section 1) is validated here with pydantic: every dimensional field
is a unit string parsed by `units.parse_quantity` into SI base units, so the rest of the code
only ever sees floats in bytes, bytes/s, FLOP/s, Hz, W and s. Physical sanity (positive
bandwidths, capacities and peaks) is enforced at load so nothing fails mid-run.
"""
from __future__ import annotations

import re
from typing import Annotated, Any, Literal, Protocol, cast

from pydantic import BeforeValidator, Field, PositiveInt, model_validator

from ..strict_model import StrictModel
from .units import parse_quantity

DTYPES = ("fp32", "tf32", "bf16", "fp16", "fp8", "int8", "int4")


def quantity(value: Any, dimension: str, positive: bool = True) -> float:
    """`value` ("3.35 TB/s") in SI base units, positive (or, with `positive` False, zero or
    more); ValueError (UnitError for the unit) otherwise, for a validator to report."""
    number = parse_quantity(value, dimension)
    if positive and number <= 0:
        raise ValueError(f'"{value}" must be positive')
    if number < 0:
        raise ValueError(f'"{value}" must be zero or more')
    return number


def _quantity(dimension: str, positive: bool = True):
    return BeforeValidator(lambda value: quantity(value, dimension, positive))


Bytes = Annotated[float, _quantity("bytes")]
Bandwidth = Annotated[float, _quantity("bandwidth")]
Flops = Annotated[float, _quantity("flops")]
Frequency = Annotated[float, _quantity("frequency")]
Power = Annotated[float, _quantity("power", positive=False)]
Duration = Annotated[float, _quantity("time", positive=False)]
MoneyPerHour = Annotated[float, _quantity("money_per_hour", positive=False)]


class Link(StrictModel):
    """A point-to-point or per-device link; bandwidth is per direction.

    efficiency: the fraction of `bandwidth` collectives reach over it; unset, the device's
    `network_efficiency`. A link described by what collectives achieve on it (a measured bus
    bandwidth) says 1.0.
    """

    bandwidth: Bandwidth
    latency: Duration = 0.0
    efficiency: float | None = Field(default=None, gt=0, le=1)


class MemoryTier(StrictModel):
    """One level of the memory hierarchy (HBM, DDR, L2, SRAM, a CXL expander, NVMe drives): on
    the device, or reached over one of its links (`link`, e.g. a Grace CPU's LPDDR over
    nvlink_c2c). `bandwidth` is what the tier reads at; `write_bandwidth` what it writes at
    (unset: the same; NVMe drives write slower than they read); `latency` is the tier's own
    access time, added to its link's when KV blocks are copied to or from it."""

    name: str
    capacity: Bytes
    bandwidth: Bandwidth | None = None
    write_bandwidth: Bandwidth | None = None
    latency: Duration = 0.0
    link: str | None = None  # the name of the device link that reaches it; None: the device's own


class MainMemory(Protocol):
    """A device's main memory (`DeviceSpec.main_memory`): a memory tier whose bandwidth is set."""

    @property
    def name(self) -> str: ...
    @property
    def capacity(self) -> float: ...
    @property
    def bandwidth(self) -> float: ...


class Compute(StrictModel):
    """Compute resources: `units` are SMs (GPU), cores (CPU) or compute units (AMD)."""

    units: PositiveInt
    clock: Frequency | None = None
    peak: dict[Literal[DTYPES], Flops]  # type: ignore[valid-type]

    @model_validator(mode="after")
    def _has_peak(self) -> Compute:
        if not self.peak:
            raise ValueError("peak needs at least one dtype, e.g. {bf16: 989 TFLOPS}")
        return self


class Overheads(StrictModel):
    """Fixed per-kernel and per-iteration host-side costs.

    kernel_launch: host launch cost of one kernel without CUDA graphs (eager mode).
    graph_kernel_gap: idle gap between consecutive kernels replayed from a CUDA graph.
    scheduler_per_iteration: CPU time of the serving engine's scheduling, input preparation
      and sampling bookkeeping per iteration, not hidden behind the GPU.

    On a GPU, kernel_launch and scheduler_per_iteration are host work: the figures are those of
    the reference host, one core of an x86 server CPU of the Xeon Platinum 8480+ (Sapphire
    Rapids) class, the host of DGX/HGX H100 systems (an assumption: the shipped 4 us and 200 us
    carry no record of the host they were taken on). A system whose `host:` CPU states a
    `host_speed` (its per-core speed at that work relative to the reference core) divides both
    by it (`loader.host_overheads`: the "host-speed scaling" model); graph_kernel_gap is the
    GPU's own and stays. A bare GPU spec runs on the reference host.
    """

    kernel_launch: Duration = 4e-6
    graph_kernel_gap: Duration = 1e-6
    scheduler_per_iteration: Duration = 2e-4


class PowerSpec(StrictModel):
    tdp: Power
    idle: Power

    @model_validator(mode="after")
    def _idle_below_tdp(self) -> PowerSpec:
        if self.idle > self.tdp:
            raise ValueError(f"idle ({self.idle} W) exceeds tdp ({self.tdp} W)")
        return self


class Price(StrictModel):
    per_hour: MoneyPerHour


class Efficiency(StrictModel):
    """Named efficiency knobs of the roofline cost model (see simulator/perf/roofline.py).

    compute_max: best fraction of the dtype's peak that a large, well-shaped GEMM reaches.
    memory_max: best fraction of the memory bandwidth a long streaming kernel reaches.
    tile_m, tile_n: output tile a GEMM kernel assigns to one compute unit; with `units`
      they give wave quantisation (a partial last wave leaves units idle).
    attention_compute_max: best fraction of peak reached by fused attention kernels.
    small_bytes_half: bytes at which a memory-bound kernel reaches half of memory_max
      (latency-bound small transfers; it also sets the shortest a kernel can be).
    network_efficiency: fraction of link bandwidth collectives reach: 0.41, the median over
      Vidur's NCCL all-reduces of 1-64 MiB on a DGX A100 (2, 4 and 8 GPUs on NVSwitch) of the
      efficiency that reproduces each (0.28-0.56 between the 10th and 90th percentiles;
      `python -m validation.collective_defaults`). A link that states what collectives achieve
      on it sets its own `efficiency`.
    mixed_decode_gqa_miss: in a step with prefill chunks, decodes take the prefill kernel's
      path and cost 1 + miss x (query heads per KV head - 1) times their decode-only time
      (perf/mixed_attention.py: 0.2, the median of the measured RTX 4090 and RTX PRO 6000
      tables' 0.13-0.30); a calibration profile with mixed-step measurements replaces it.

    The defaults of compute_max, memory_max and attention_compute_max are derived from the
    shipped measurements of four GPUs (`python -m validation.roofline_defaults`): each
    measurement group (H100 GEMMs bf16 and fp8, H100 prefill and decode attention, A100
    GEMMs, RTX 4090 and RTX PRO 6000 GEMMs and attention, rows of at least 20 us) is fitted
    on its own, and each default is the median over the groups it governs: compute_max 0.82
    (GEMM fits 0.50-1.00: H100 0.83, H100 fp8 0.50, A100 0.76, RTX PRO 0.82, RTX 4090 1.00),
    memory_max 0.76 (GEMM and decode fits 0.49-0.88), attention_compute_max 0.50 (prefill
    fits 0.46, 0.50, 0.75). small_bytes_half stays 2 MB: the elementwise kernels of the RTX
    layer tables (1.9-2.7 us at one token) need it. The previous defaults (0.75, 0.90, 0.60)
    left the roofline optimistic (median signed error on rows of at least 20 us: H100 GEMMs
    bf16 +1.5 %, H100 attention -39 % and -45 %, RTX attention -16 % to -57 %); the roofline
    has no fixed per-kernel cost, so very short kernels stay optimistic (bounds and numbers:
    tests/test_roofline_defaults.py, validation/README.md).
    """

    compute_max: float = Field(default=0.82, gt=0, le=1)
    memory_max: float = Field(default=0.76, gt=0, le=1)
    tile_m: PositiveInt = 128
    tile_n: PositiveInt = 128
    attention_compute_max: float = Field(default=0.50, gt=0, le=1)
    small_bytes_half: float = Field(default=2e6, ge=0)
    network_efficiency: float = Field(default=0.41, gt=0, le=1)
    mixed_decode_gqa_miss: float = Field(default=0.2, ge=0)


def _capability(value: Any) -> Any:
    """A CUDA compute capability as "major.minor" (YAML's unquoted 9.0 is a number: taken too)."""
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = f"{float(value):.1f}"
    if value is not None and not (isinstance(value, str) and re.fullmatch(r"[0-9]+\.[0-9]+", value)):
        raise ValueError(f"{value!r} is not a CUDA compute capability: write it as \"major.minor\", e.g. \"9.0\"")
    return value


class DeviceSpec(StrictModel):
    """A GPU or CPU: anything that runs the model's operators."""

    name: str
    kind: Literal["gpu", "cpu"]
    vendor: str | None = None
    # architecture family (hopper, ampere, ada, blackwell, cdna3, ...): a device without a profile of
    # its own transfers the efficiencies of a profiled device of the same family first
    architecture: str | None = None
    # CUDA compute capability ("major.minor", NVIDIA GPUs): which attention backend vLLM picks
    # on it, and so how its decode attention splits under CUDA graphs (perf/cuda_graphs.py)
    compute_capability: Annotated[str | None, BeforeValidator(_capability)] = None
    compute: Compute
    memory: list[MemoryTier] = Field(min_length=1)
    links: dict[str, Link] = {}
    overheads: Overheads = Overheads()
    efficiency: Efficiency = Efficiency()
    power: PowerSpec | None = None
    price: Price | None = None
    calibration: str | None = None
    # a CPU's speed at a serving engine's host work, relative to the reference host core (`Overheads`)
    host_speed: float | None = Field(default=None, gt=0)
    sources: list[str] = Field(min_length=1)

    @model_validator(mode="after")
    def _host_speed_on_a_cpu(self) -> DeviceSpec:
        if self.kind != "cpu" and self.host_speed is not None:
            raise ValueError("host_speed: only a cpu hosts a serving engine (the speed of its cores at the engine's "
                             "host work); remove it")
        return self

    @model_validator(mode="after")
    def _main_memory_has_bandwidth(self) -> DeviceSpec:
        if self.memory[0].bandwidth is None:
            raise ValueError("memory[0] is the main memory and needs a bandwidth, e.g. 3.35 TB/s")
        return self

    @model_validator(mode="after")
    def _tier_links_exist(self) -> DeviceSpec:
        for i, tier in enumerate(self.memory):
            if tier.link is not None and tier.link not in self.links:
                raise ValueError(f"memory[{i}].link: {tier.link!r} is not one of this device's links "
                                 f"({', '.join(self.links) or 'none'})")
        if self.memory[0].link is not None:
            raise ValueError("memory[0] is the device's own main memory and is reached over no link")
        return self

    @model_validator(mode="after")
    def _no_cuda_graphs_on_a_cpu(self) -> DeviceSpec:
        for name in ("graph_kernel_gap", "kernel_launch") if self.kind == "cpu" else ():
            if name in self.overheads.model_fields_set:
                raise ValueError(f"overheads.{name}: a CPU launches no GPU kernels and replays no CUDA graphs (each "
                                 "operator costs the CPU backend's dispatch, backends/cpu.py); remove it")
        return self

    @property
    def main_memory(self) -> MainMemory:
        return cast(MainMemory, self.memory[0])  # its bandwidth is set (_main_memory_has_bandwidth)

    def peak_flops(self, dtype: str) -> float:
        """Peak FLOP/s for `dtype`, falling back to the nearest wider dtype the device has."""
        for candidate in _FALLBACK[dtype]:
            if candidate in self.compute.peak:
                return self.compute.peak[candidate]
        raise KeyError(f"{self.name} lists no peak for {dtype} (has {sorted(self.compute.peak)})")


# A dtype the hardware cannot run natively executes at the next wider one's rate
# (e.g. int4 weights are dequantised to bf16/fp16 in the GEMM's main loop).
_FALLBACK = {
    "int4": ("int4", "int8", "fp8", "bf16", "fp16", "fp32"),
    "int8": ("int8", "fp8", "bf16", "fp16", "fp32"),
    "fp8": ("fp8", "bf16", "fp16", "fp32"),
    "bf16": ("bf16", "fp16", "fp32"),
    "fp16": ("fp16", "bf16", "fp32"),
    "tf32": ("tf32", "fp32"),
    "fp32": ("fp32", "tf32", "bf16", "fp16"),
}


class Member(StrictModel):
    """A group of identical devices inside a system node."""

    spec: str
    count: PositiveInt = 1
    # among the devices: the name of one of their links (e.g. nvlink), or a link of the system's
    # own (e.g. PCIe peer-to-peer through a CPU's root complex, slower than each card's PCIe)
    fabric: str | Link | None = None
    link: str | None = None  # link name to the accelerators (hosts)


class Node(StrictModel):
    """One node: its accelerators, their hosts, and `tiers`, memory or storage of the node
    beyond those (a CXL memory expander, local NVMe drives), each reached from an accelerator
    over `link` (one of its links, e.g. pcie) and listed with the node's whole capacity and
    bandwidth, which its accelerators share evenly."""

    accelerator: Member
    host: Member | None = None
    tiers: list[MemoryTier] = []


class SystemSpec(StrictModel):
    """Nodes of accelerators and host CPUs joined by links and a network."""

    name: str
    kind: Literal["system"]
    node: Node
    nodes: PositiveInt = 1
    network: Link | None = None
    deployment: dict[str, Any] = {}
    price: Price | None = None
    sources: list[str] = Field(min_length=1)
