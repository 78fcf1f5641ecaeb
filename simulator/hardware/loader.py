"""Load hardware YAML (a path or a catalogue name) into validated specs and a `System`.

`extends:` merges a parent spec under the child (mappings merge key by key, anything else
is replaced; an inherited relative `calibration:` path keeps pointing where the parent meant). Every error becomes one `InputError` line that names the file, the field path
and what to write instead, e.g.
`hardware_specs/gpus/x.yaml: memory[0].bandwidth: "3.35" has no unit (expected e.g. "3.35 TB/s")`.
"""
from __future__ import annotations

import copy
import os
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path
from types import UnionType
from typing import Any, Union, get_args, get_origin

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import InvalidFile
from ..paths import HARDWARE_DIR, file_stamp, shipped
from .spec import DeviceSpec, Link, Overheads, SystemSpec
from .wafer import SYSTEM_IO, WaferSpec


def catalogue() -> dict[str, Path]:
    """Shipped specs by catalogue name (the file stem); profiles/ holds calibration profiles, not specs."""
    return {p.stem: p for p in sorted(shipped(HARDWARE_DIR).rglob("*.yaml")) if p.parent.name != "profiles"}


def resolve_path(name_or_path: str | Path, relative_to: Path | None = None) -> Path:
    """A spec's file from a path (absolute, relative to the including file or cwd) or a name."""
    candidate = Path(name_or_path)
    if relative_to is not None and not candidate.is_absolute():
        near = (relative_to.parent / candidate).resolve()
        if near.exists():
            return near
    if candidate.exists():
        return candidate.resolve()
    found = catalogue().get(str(name_or_path))
    if found is None:
        known = ", ".join(catalogue())
        raise InvalidFile(f"{name_or_path}: no such hardware file or catalogue name (known: {known})")
    return found


def _read_yaml(path: Path) -> dict[str, Any]:
    """The file's mapping, a fresh copy (callers edit it) of the parse cached under the file's
    stamp (paths.file_stamp: an edited file is read again)."""
    try:
        stamp = file_stamp(path)
    except OSError as exc:
        raise InvalidFile(f"{path}: cannot read ({exc.strerror})") from None
    return copy.deepcopy(_parsed_yaml(path, *stamp))


@lru_cache(maxsize=128)
def _parsed_yaml(path: Path, mtime_ns: int, size: int) -> dict[str, Any]:
    try:
        data = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise InvalidFile(f"{path}: cannot read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise InvalidFile(f"{path}{where}: malformed YAML ({problem})") from None
    if not isinstance(data, dict):
        raise InvalidFile(f"{path}: expected a mapping of fields at the top level")
    return data


def _merge(base: dict[str, Any], child: dict[str, Any]) -> dict[str, Any]:
    merged = dict(base)
    for key, value in child.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def _raw(path: Path, seen: tuple[Path, ...] = ()) -> dict[str, Any]:
    if path in seen:
        raise InvalidFile(f"{path}: extends: cycle through {' -> '.join(map(str, seen))}")
    data = _read_yaml(path)
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str):
        raise InvalidFile(f"{path}: extends: expected a file path or catalogue name")
    try:
        parent_path = resolve_path(parent, path)
    except InvalidFile:
        raise InvalidFile(f"{path}: extends: {parent}: no such file or catalogue name") from None
    base = _raw(parent_path, seen + (path,))
    calibration = base.get("calibration")
    if isinstance(calibration, str) and calibration.lower() != "none" and not Path(calibration).is_absolute():
        # a relative path is relative to the file that names it: restate it from the child's folder
        base["calibration"] = os.path.relpath(parent_path.parent / calibration, path.parent)
    return _merge(base, data)


def format_location(loc: tuple[Any, ...]) -> str:
    """('memory', 0, 'bandwidth') -> 'memory[0].bandwidth'."""
    text = ""
    for part in loc:
        if isinstance(part, int):
            text += f"[{part}]"
        elif not str(part).startswith(("function-", "literal[")):
            text += ("." if text else "") + str(part)
    return text or "(top level)"


def validation_message(path: Path | str, exc: ValidationError, model: type[BaseModel]) -> str:
    """One line for the first pydantic error of validating `model`: file, field path, reason."""
    err = exc.errors()[0]
    message = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        known = _fields_beside(model, err["loc"])
        message = f"unknown field (check its spelling; known here: {', '.join(known)})" if known else \
            "unknown field (check its spelling; the fields are in docs/contracts.md, Hardware YAML)"
    elif err["type"] == "missing":
        message = "required field is missing"
    return f"{path}: {format_location(err['loc'])}: {message}"


def _fields_beside(model: type[BaseModel], loc: tuple[Any, ...]) -> list[str]:
    """The fields the spec accepts where the unknown field at `loc` sits: follow the path
    through nested specs, list items and mapping values (e.g. `links.nvlink`) to its model."""
    annotation: Any = model
    for part in loc[:-1]:
        inner = None
        for option in get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,):
            if isinstance(option, type) and issubclass(option, BaseModel) and part in option.model_fields:
                inner = option.model_fields[part].annotation
            elif get_origin(option) in (list, dict):  # an item or a value: the last type argument
                inner = get_args(option)[-1]
        if inner is None:
            return []
        annotation = inner
    options = get_args(annotation) if get_origin(annotation) in (Union, UnionType) else (annotation,)
    return next((list(o.model_fields) for o in options if isinstance(o, type) and issubclass(o, BaseModel)), [])


def _load(path: Path) -> DeviceSpec | SystemSpec:
    data = _raw(path)
    kind: Any = data.get("kind")  # whatever the YAML says
    models: dict[str, type[DeviceSpec] | type[SystemSpec] | type[WaferSpec]] = {
        "gpu": DeviceSpec, "cpu": DeviceSpec, "wafer": WaferSpec, "system": SystemSpec}
    model = models.get(kind) if isinstance(kind, str) else None
    if model is None:
        raise InvalidFile(f"{path}: kind: {kind!r} is not one of {', '.join(models)} (set kind:)")
    try:
        spec = model.model_validate(data)
    except ValidationError as exc:
        raise InvalidFile(validation_message(path, exc, model)) from None
    return spec.device() if isinstance(spec, WaferSpec) else spec


def load_spec(name_or_path: str | Path) -> DeviceSpec | SystemSpec:
    """Validated spec of one YAML file (catalogue names allowed)."""
    return _load(resolve_path(name_or_path))


@dataclass(frozen=True)
class Tier:
    """A level of memory an accelerator can keep data in: its capacity and bandwidth for that
    accelerator (its share, for memory shared by several; None if no spec states it), the
    link that reaches it (None: the device's own memory), what it writes at (None: its
    bandwidth) and its own access latency."""

    name: str
    capacity: float | None
    bandwidth: float | None
    link: Link | None
    write_bandwidth: float | None = None
    latency: float = 0.0

    def copy_bandwidth(self, write: bool = False) -> float:
        """Bytes/s a copy between the accelerator and this tier reaches: the slower of the
        link (per direction) and the tier itself (reading, or writing when `write`)."""
        assert self.link is not None  # only tiers off the device are copied to
        own = (self.write_bandwidth or self.bandwidth) if write else self.bandwidth
        return min(self.link.bandwidth, own) if own is not None else self.link.bandwidth

    @property
    def copy_latency(self) -> float:
        """Seconds a copy takes before its first byte: the link's latency and the tier's own."""
        return (self.link.latency if self.link is not None else 0.0) + self.latency


@dataclass(frozen=True)
class System:
    """The hardware a deployment runs on, resolved: devices per node, links, network."""

    name: str
    accelerator: DeviceSpec
    devices_per_node: int
    nodes: int
    fabric: Link | None  # between accelerators within a node
    fabric_name: str | None
    host: DeviceSpec | None
    host_link: Link | None  # accelerator <-> host
    network: Link | None  # between nodes, per accelerator
    deployment: dict[str, Any]
    source_file: str
    accelerator_file: str  # the accelerator spec's own file (relative paths in it resolve from there)
    standalone: bool = False  # a bare gpu/cpu spec: a box of as many such devices as needed
    hosts_per_node: int = 1
    price_per_hour: float | None = None  # a system spec's own `price:`, for all of its nodes
    node_tiers: tuple[Tier, ...] = ()  # the node's own tiers (node.tiers), each accelerator's share

    def sized_for(self, devices: int) -> System:
        """The system with room for `devices` accelerators (only a standalone spec grows)."""
        if not self.standalone or devices <= self.devices_per_node:
            return self
        return replace(self, devices_per_node=devices)

    @property
    def memory_tiers(self) -> list[Tier]:
        """The memory hierarchy of one accelerator, nearest first: its own tiers (those its
        spec reaches over a link included), then its host's main memory over the host link
        (capacity and bandwidth shared evenly by the node's accelerators), then the node's own
        tiers (`node.tiers`: CXL memory, NVMe drives)."""
        device = self.accelerator
        tiers = [Tier(t.name, t.capacity, t.bandwidth, device.links[t.link] if t.link else None, t.write_bandwidth,
                      t.latency) for t in device.memory]
        if self.host_link is not None:
            if self.host is None:  # a bare accelerator spec: the host's memory is not described
                tiers.append(Tier("host memory", None, None, self.host_link))
            else:
                memory = self.host.main_memory
                share = self.hosts_per_node / self.devices_per_node
                tiers.append(Tier(f"host {memory.name}", memory.capacity * share, memory.bandwidth * share,
                                  self.host_link))
        return tiers + list(self.node_tiers)

    @property
    def overheads(self) -> Overheads:
        """The accelerator's overheads as its host runs them (`host_overheads`)."""
        return host_overheads(self.accelerator, self.host)

    @property
    def offload_tier(self) -> Tier | None:
        """The nearest tier outside the device's own memory, where KV blocks can be swapped to."""
        return next((tier for tier in self.memory_tiers if tier.link is not None), None)

    @property
    def total_devices(self) -> int:
        return self.devices_per_node * self.nodes

    @property
    def device_price_per_hour(self) -> float | None:
        """USD per accelerator-hour: a system's own price (what the whole system rents for,
        hosts and network included) shared evenly among its accelerators, else the
        accelerator spec's price; None without either."""
        if self.price_per_hour is not None:
            return self.price_per_hour / self.total_devices
        return self.accelerator.price.per_hour if self.accelerator.price is not None else None


def host_overheads(accelerator: DeviceSpec, host: DeviceSpec | None) -> Overheads:
    """Host-speed scaling: a GPU's `kernel_launch` and `scheduler_per_iteration` are the time
    of one core of the reference host (spec.Overheads) at the engine's host work, which is
    single-threaded (the engine's Python loop; the CUDA driver's launch path), so on a host whose
    cores run it `host_speed` times as fast both take 1 / host_speed as long. `graph_kernel_gap`
    is spent on the GPU and does not change. A host without `host_speed`, and a CPU or wafer
    accelerator (the engine's loop runs beside its own operators), keep the spec's figures."""
    over = accelerator.overheads
    if accelerator.kind != "gpu" or host is None or host.host_speed is None or host.host_speed == 1.0:
        return over
    return over.model_copy(update={"kernel_launch": over.kernel_launch / host.host_speed,
                                   "scheduler_per_iteration": over.scheduler_per_iteration / host.host_speed})


def _pick_link(device: DeviceSpec, name: str | None, preference: tuple[str, ...]) -> tuple[str | None, Link | None]:
    if name is not None:
        return name, device.links.get(name)
    for candidate in preference:
        if candidate in device.links:
            return candidate, device.links[candidate]
    return None, None


# a wafer's system I/O (Ethernet) joins it to other wafers and to its host
_FABRIC_PREFERENCE = ("nvlink", "infinity_fabric", "xgmi", "upi", "pcie", SYSTEM_IO)
_HOST_PREFERENCE = ("nvlink_c2c", "pcie", SYSTEM_IO)


def load_system(name_or_path: str | Path) -> System:
    """Resolve a GPU/CPU spec (a single-node box of such devices) or a system spec."""
    path = resolve_path(name_or_path)
    spec = _load(path)
    if isinstance(spec, DeviceSpec):
        fabric_name, fabric = _pick_link(spec, None, _FABRIC_PREFERENCE)
        _, host_link = _pick_link(spec, None, _HOST_PREFERENCE)
        return System(spec.name, spec, 1, 1, fabric, fabric_name, None, host_link, None, {}, str(path), str(path), True)
    accel_path = resolve_path(spec.node.accelerator.spec, path)
    accel = _load(accel_path)
    if not isinstance(accel, DeviceSpec):
        raise InvalidFile(f"{path}: node.accelerator.spec: {accel_path} is a system, expected a gpu, cpu or wafer")
    declared = spec.node.accelerator.fabric
    if isinstance(declared, Link):
        fabric_name, fabric = "fabric", declared
    else:
        fabric_name, fabric = _pick_link(accel, declared, _FABRIC_PREFERENCE)
    if declared is not None and fabric is None:
        raise InvalidFile(
            f"{path}: node.accelerator.fabric: {accel.name} has no link named "
            f"{spec.node.accelerator.fabric!r} (has {sorted(accel.links)})"
        )
    node_tiers = []
    for i, tier in enumerate(spec.node.tiers):  # the node's, shared evenly by its accelerators
        if tier.link is None or tier.link not in accel.links:
            raise InvalidFile(f"{path}: node.tiers[{i}].link: {tier.link!r} is not one of {accel.name}'s links "
                              f"({', '.join(accel.links) or 'none'}); name the link that reaches the tier, e.g. pcie")
        share = 1 / spec.node.accelerator.count
        node_tiers.append(Tier(tier.name, tier.capacity * share, tier.bandwidth * share if tier.bandwidth else None,
                               accel.links[tier.link],
                               tier.write_bandwidth * share if tier.write_bandwidth else None, tier.latency))
    host: DeviceSpec | SystemSpec | None
    host = host_link = None
    if spec.node.host is not None:
        host_path = resolve_path(spec.node.host.spec, path)
        host = _load(host_path)
        if not isinstance(host, DeviceSpec):
            raise InvalidFile(f"{path}: node.host.spec: {host_path} is not a cpu spec")
        _, host_link = _pick_link(accel, spec.node.host.link, _HOST_PREFERENCE)
    else:
        _, host_link = _pick_link(accel, None, _HOST_PREFERENCE)
    return System(
        name=spec.name,
        accelerator=accel,
        devices_per_node=spec.node.accelerator.count,
        nodes=spec.nodes,
        fabric=fabric,
        fabric_name=fabric_name,
        host=host,
        host_link=host_link,
        network=spec.network,
        deployment=dict(spec.deployment),
        source_file=str(path),
        accelerator_file=str(accel_path),
        hosts_per_node=spec.node.host.count if spec.node.host is not None else 1,
        price_per_hour=spec.price.per_hour if spec.price is not None else None,
        node_tiers=tuple(node_tiers),
    )
