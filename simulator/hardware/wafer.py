"""Wafer-scale meshes (`kind: wafer`) as data: the YAML schema and the device it stands for.

A wafer is described in its own terms (docs/wafer.md, docs/contracts.md section 1): a mesh
of rows x cols usable cores, each with a clock, MACs per cycle per dtype, its SRAM and the
SRAM's bandwidth; the fabric between neighbouring cores (link bandwidth per direction, hop
latency, the fixed cost of a message a core acts on, routes per core); and the system's
host I/O. `WaferSpec.device()` turns it into the `WaferDevice` the rest of the simulator
reads as any device (its peaks, one memory tier of all the SRAM, the host I/O as its link),
carrying the wafer itself for the mesh cost model (perf/mesh.py, perf/wafer_cost.py).
"""
from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BeforeValidator, Field, NonNegativeFloat, PositiveFloat, PositiveInt

from ..strict_model import StrictModel
from .spec import (
    DTYPES,
    Bandwidth,
    Bytes,
    Compute,
    DeviceSpec,
    Duration,
    Efficiency,
    Frequency,
    Link,
    MemoryTier,
    Overheads,
    PowerSpec,
    Price,
)

# the derived device's link to the host and to other wafers (the system's Ethernet I/O)
SYSTEM_IO = "system_io"


class MeshShape(StrictModel):
    """The usable cores: `rows` x `cols` (a wafer's spare rows and columns left out)."""

    rows: PositiveInt
    cols: PositiveInt


def _cycles(value: object) -> object:
    """A count of cycles as a number, or written with its unit ("13 cycles")."""
    if isinstance(value, str):
        number, _, unit = value.strip().partition(" ")
        if unit.strip() in ("cycle", "cycles"):
            return number
        raise ValueError(f'"{value}" is not a number of cycles (expected e.g. 13 or "13 cycles")')
    return value


class Core(StrictModel):
    """One core: its clock, its multiply-accumulates per cycle per dtype (a dtype not listed
    runs at the nearest listed one's rate, as a GPU's peaks do: the lanes of one vector
    instruction), its SRAM and the SRAM's bandwidth (reads and writes, per core), and the
    fixed cycles a vector instruction costs besides its lanes' work (issue, operand set-up,
    the loop that issues it), which short vectors pay often."""

    clock: Frequency
    macs_per_cycle: dict[Literal[DTYPES], PositiveFloat] = Field(min_length=1)  # type: ignore[valid-type]
    sram: Bytes
    sram_bandwidth: Bandwidth
    vector_op_overhead_cycles: Annotated[NonNegativeFloat, BeforeValidator(_cycles)] = 0.0


class MeshFabric(StrictModel):
    """The links between neighbouring cores. link_bandwidth is per direction; hop_latency
    what one hop adds; message_overhead the fixed cost of a message a core receives and acts
    on (a task switch and setting up the transfer), paid once per message whatever its
    distance; routes_per_core how many routes (Cerebras: colors) one core's router holds."""

    link_bandwidth: Bandwidth
    hop_latency: Duration
    message_overhead: Duration
    routes_per_core: int = Field(ge=3)


class StepOverheads(StrictModel):
    """The serving engine's host time per step (a wafer launches no kernels: every core runs
    its resident program)."""

    scheduler_per_iteration: Duration = 2e-4


class WaferSpec(StrictModel):
    """A wafer-scale engine: a 2-D mesh of cores with local SRAM and no shared memory."""

    name: str
    kind: Literal["wafer"]
    vendor: str | None = None
    architecture: str | None = None
    mesh: MeshShape
    core: Core
    fabric: MeshFabric
    host_io: Link  # the system's I/O: to the host's memory and to other wafers
    overheads: StepOverheads = StepOverheads()
    power: PowerSpec | None = None
    price: Price | None = None
    sources: list[str] = Field(min_length=1)

    @property
    def cores(self) -> int:
        return self.mesh.rows * self.mesh.cols

    def device(self) -> WaferDevice:
        """The device the engine sees: the mesh's peaks (cores x MACs x 2 x clock), all its SRAM
        as main memory at the cores' summed bandwidth, the host I/O as its only link, no
        kernel overheads. Built from validated numbers, so it is not validated again."""
        core = self.core
        compute = Compute.model_construct(units=self.cores, clock=core.clock, peak={
            dtype: self.cores * macs * 2 * core.clock for dtype, macs in core.macs_per_cycle.items()})
        sram = MemoryTier.model_construct(name="sram", capacity=self.cores * core.sram,
                                          bandwidth=self.cores * core.sram_bandwidth, link=None)
        overheads = Overheads.model_construct(kernel_launch=0.0, graph_kernel_gap=0.0,
                                              scheduler_per_iteration=self.overheads.scheduler_per_iteration)
        return WaferDevice.model_construct(
            name=self.name, kind="wafer", vendor=self.vendor, architecture=self.architecture, compute=compute,
            memory=[sram], links={SYSTEM_IO: self.host_io}, overheads=overheads, efficiency=Efficiency(),
            power=self.power, price=self.price, calibration=None, sources=self.sources, wafer=self)


class WaferDevice(DeviceSpec):
    """A wafer as a device (`WaferSpec.device`), with the wafer it came from."""

    kind: Literal["wafer"]  # type: ignore[assignment]  # a device of its own kind, not a gpu or cpu
    wafer: WaferSpec
