"""Which device a profile or a measurement file describes, told by numbers where there are numbers.

A calibration profile's absolute times hold only for the device they were measured on. A
device is identified by its spec's numbers, not by its name: `fingerprint(spec)` records
the kind, compute units, clock, main-memory bandwidth and peak FLOP/s per dtype, a profile
stores the fingerprint of the spec it was fitted against (`fitted_on:`), and `same_device`
compares two fingerprints. A spec that `extends:` another with one number changed (twice
the bandwidth, say) is another device, whatever its name; one that changes only what does
not set kernel speed (memory capacity, power, price) is the same device.

`spec_distance` ranks other devices for transfer (perf/profile_use.py): same architecture
family first, then the distance between the log peak, bandwidth and unit count.

`measured_elsewhere(frame, system, kind)` is what `simulate calibrate` checks before it fits
a measurement file against a spec. A file says which device it came from only by a name (the
driver's) and, from the harness, the device kind, so the check uses those and one hard
number: (1) a file from a CPU is not a GPU's and the reverse; (2) every product number in the
file's device name (a word of three or more characters with a digit, such as H100, 4090 or
MI300X, that is not a memory size or type) must appear in the spec's name, and the two names
must share a word; (3) no kernel may run faster than the spec's peak allows.
"""
from __future__ import annotations

import math
import re
from typing import Any

import numpy as np
import pandas as pd

from ..hardware.loader import System
from ..hardware.spec import DeviceSpec

_TOLERANCE = 0.005  # numbers within 0.5 % are the same (unit rounding in hand-written specs)
# words of a device name that say nothing about which product it is
_GENERIC = {"nvidia", "amd", "intel", "r", "tm", "geforce", "instinct", "edition", "processor", "gpu", "cpu",
            "sxm", "pcie", "oam", "server", "vm", "the", "with"}
_NOT_PRODUCT = re.compile(r"^(\d+[gmt]i?b|hbm\d*e?|gddr\d*x?|lpddr\d*x?|ddr\d*|sxm\d*|\d{1,2})$")
_CEILING = 1.25  # measured FLOP/s above this multiple of the spec's peak: not this device


def fingerprint(device: DeviceSpec) -> dict[str, Any]:
    """The numbers that set a device's kernel times (what a profile's absolute tables depend on)."""
    return {
        "name": device.name,
        "kind": device.kind,
        "architecture": device.architecture,
        "compute_units": int(device.compute.units),
        "clock_hz": float(device.compute.clock) if device.compute.clock is not None else None,
        "memory_bandwidth_bytes_per_s": float(device.main_memory.bandwidth),
        "peak_flops": {dtype: float(value) for dtype, value in sorted(device.compute.peak.items())},
    }


def _close(a: float, b: float) -> bool:
    return abs(a - b) <= _TOLERANCE * max(abs(a), abs(b))


def same_device(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """True when two fingerprints describe the same device: same kind and units, bandwidth and
    clock (where both give one) within 0.5 %, and the peaks of every dtype both list within
    0.5 % (at least one dtype in common)."""
    if a.get("kind") != b.get("kind") or int(a["compute_units"]) != int(b["compute_units"]):
        return False
    if not _close(float(a["memory_bandwidth_bytes_per_s"]), float(b["memory_bandwidth_bytes_per_s"])):
        return False
    if a.get("clock_hz") and b.get("clock_hz") and not _close(float(a["clock_hz"]), float(b["clock_hz"])):
        return False
    common = set(a["peak_flops"]) & set(b["peak_flops"])
    return bool(common) and all(_close(float(a["peak_flops"][d]), float(b["peak_flops"][d])) for d in common)


def _main_peak(fp: dict[str, Any]) -> float:
    peaks = fp["peak_flops"]
    return float(next(peaks[d] for d in ("bf16", "fp16", "fp32", *peaks) if d in peaks))


def spec_distance(a: dict[str, Any], b: dict[str, Any]) -> tuple[int, float]:
    """How far device b is from device a, for picking a profile to transfer: (0 when both name
    the same architecture family else 1, Euclidean distance of log 16-bit peak, log bandwidth
    and log units). Sorting by it puts the same family first, then the most similar spec."""
    family = 0 if a.get("architecture") and a.get("architecture") == b.get("architecture") else 1
    logs = [math.log(_main_peak(a) / _main_peak(b)),
            math.log(float(a["memory_bandwidth_bytes_per_s"]) / float(b["memory_bandwidth_bytes_per_s"])),
            math.log(int(a["compute_units"]) / int(b["compute_units"]))]
    return family, math.sqrt(sum(x * x for x in logs))


def _words(name: str) -> set[str]:
    return {w for w in re.split(r"[^a-z0-9]+", name.lower()) if w and w not in _GENERIC}


def _products(words: set[str]) -> set[str]:
    return {w for w in words if len(w) >= 3 and any(c.isdigit() for c in w) and not _NOT_PRODUCT.match(w)}


def _name_mismatch(device: str, spec_names: list[str]) -> bool:
    theirs = _words(device)
    ours = set().union(*(_words(n) for n in spec_names))
    return not (_products(theirs) <= ours and theirs & ours)


def _fastest_share_of_peak(frame: pd.DataFrame, spec: DeviceSpec) -> float:
    """The highest measured FLOP/s of a GEMM row over the spec's peak for its dtype (0 without GEMMs)."""
    best = 0.0
    for dtype, rows in frame[frame["op"] == "gemm"].groupby("dtype"):
        try:
            peak = spec.peak_flops(str(dtype))
        except KeyError:
            continue
        flops = 2.0 * rows["m"].to_numpy(float) * rows["n"].to_numpy(float) * rows["k"].to_numpy(float)
        best = max(best, float(np.max(flops / (rows["time_us"].to_numpy(float) * 1e-6))) / peak)
    return best


def measured_elsewhere(frame: pd.DataFrame, system: System, kind: str | None = None) -> str | None:
    """Why the measurement rows were not taken on `system`'s accelerator, or None if nothing
    says so (see the module docstring). `kind` is the device kind the harness recorded
    (`device_kind` in the file's .meta.yaml), when known."""
    spec = system.accelerator
    device = str(frame["device"].iloc[0])
    if kind is not None and kind != spec.kind:
        return f"its rows come from a {kind} ({device!r}) and {spec.name} is a {spec.kind}"
    if _name_mismatch(device, [spec.name, system.name]):
        return f"its rows were measured on {device!r}, not on {spec.name}"
    share = _fastest_share_of_peak(frame, spec)
    if share > _CEILING:
        return (f"its fastest GEMM ran at {share:.1f}x {spec.name}'s peak, so it was measured on a faster device "
                f"({device!r})")
    return None
