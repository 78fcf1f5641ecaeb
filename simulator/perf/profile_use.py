"""How a run uses a calibration profile: measured here, scaled to another dtype, or transferred.

A profile's absolute tables hold for the device it was measured on and nowhere else, so
`resolve_calibration` decides which profile a run uses and `AppliedProfile` how, op by op
(a `Route` per (op, dtype) the run asks for, resolved once and memoised):

- **calibrated**: the profile was fitted against a spec with this device's numbers
  (`device_identity.same_device`) and measured the op in this dtype, or in one with the same
  width and the same peak on this device (fp16 answers for bf16 where the peaks are equal).
  Its times are the profile's ("calibrated-interpolation" inside the measured grid,
  "calibrated-fit" outside).
- **scaled**: same device, the op measured only in another dtype (fp8 asked, bf16 measured;
  a CPU profile in fp32 for a bf16 run): the measured time times the ratio of the profile's
  fitted roofline at the two dtypes, i.e. the ratio of their peaks where the kernel is
  compute bound and of their bytes where it is memory bound. Source "scaled".
- **transferred**: the profile was measured on another device of the same kind (GPU or
  CPU): the efficiencies it fitted (`fitting.transfer`) applied to this device's peaks,
  bandwidth and compute units. Source "transferred". Collectives and copies do not transfer
  (the fabric is another one): they stay on the alpha-beta model.

A measured fused-MoE layer (`moe`) is used only as measured: on the device, in the dtype and
(`kernel_times.py`) for the layer shape it was measured at. Its efficiency comes from the
kernel's tile configurations, which vLLM tunes per (experts, intermediate size, device), and
from one model's shapes; no error of scaling or transferring it has been measured, so any
other model, dtype or device costs its routed experts' grouped GEMMs from the GEMM route of
their dtype: that route's fitted model with every group's tiles in one launch
(`fit_compute.grouped_gemm_us`), sourced as the route is ("calibrated-fit" on the device).
Its error is at least `GROUPED_GEMM_ERROR_P90`, what that costing gives on the one measured
fused-MoE table.

Each route carries its measured p90 error, which `--uncertainty` uses: the profile's held-out
p90 for calibrated ops; for scaled ops that plus the measured error of dtype scaling; for
transferred ops the measured transfer error. Those two come from
`hardware_specs/profiles/transfer-errors.yaml`, written by `python -m validation.transfer_errors`
from the shipped profiles and measurements. Transfers were measured between GPUs only, so a
CPU (or an op without a measured transfer error) is not transferred and stays on the
roofline; dtype scaling was measured on H100 GEMMs and stands for every op and device.

Which profile: `--calibration FILE`, else the spec's `calibration:` (either applied directly
when measured on this device, else transferred), else the shipped profile nearest to the
device: one measured on this very device, else the same architecture family, else the most
similar spec (`device_identity.spec_distance`). `none` (option or spec) is the roofline.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError
from ..hardware.loader import System
from ..models.op_kinds import COLLECTIVE_KINDS, ROUTED_EXPERT_KINDS
from ..paths import HARDWARE_DIR
from .calibration import Calibration, read_header
from .device_identity import fingerprint, same_device, spec_distance
from .fit_inputs import DTYPE_BYTES
from .fit_op_model import FIT, INTERPOLATION
from .fitting import transfer

PROFILES_DIR = HARDWARE_DIR / "profiles"
ERRORS_FILE = PROFILES_DIR / "transfer-errors.yaml"
ERRORS_SCHEMA = "simulator.transfer-errors/1"
CALIBRATED, SCALED, TRANSFERRED = "calibrated", "scaled", "transferred"
AS_MEASURED_ONLY = ("moe",)  # neither scaled nor transferred (see the module docstring)
# route kind -> the kernel-time sources (kernel_times.SOURCES) its predictions carry
ROUTE_SOURCES = {CALIBRATED: (INTERPOLATION, FIT), SCALED: ("scaled",), TRANSFERRED: ("transferred",)}


@lru_cache(maxsize=4)
def _error_table(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    data = yaml.safe_load(path.read_text())
    if not isinstance(data, dict) or data.get("schema") != ERRORS_SCHEMA:
        raise InputError(f"{path}: schema: expected {ERRORS_SCHEMA} (regenerate with python -m validation.transfer_errors)")
    return data


def measured_error_p90(kind: str, op: str, device_kind: str) -> float | None:
    """The measured p90 |error| (a fraction) of `kind` (scaled / transferred) predictions of
    `op` on a device of `device_kind`; None when nothing was measured. Transfers were measured
    between devices of the table's `transfer_device_kinds` only; dtype scaling was measured on
    GEMMs and stands for every compute op on any device (no other measurement of it exists)."""
    table = _error_table(ERRORS_FILE)
    if kind == TRANSFERRED and device_kind not in table.get("transfer_device_kinds", []):
        return None
    entries = table.get(kind) or {}
    entry = entries.get(op) or (entries.get("gemm") if kind == SCALED and op not in COLLECTIVE_KINDS else None)
    return float(entry["p90_pct"]) / 100.0 if entry else None


# p90 |error| of the fused-MoE layers of the RTX PRO 6000's `moe.csv` (50 rows, Qwen3-30B-A3B)
# predicted from that GPU's dense GEMM fit as grouped GEMMs (`fit_compute.grouped_gemm_us`),
# the table itself unused: the error of costing a grouped GEMM from a GEMM route
# (`tests/test_grouped_gemm.py` recomputes it)
GROUPED_GEMM_ERROR_P90 = 0.16


@dataclass(frozen=True)
class Route:
    """How the profile answers one (op, dtype) of the run."""

    op: str
    dtype: str  # what the run asks for
    measured_dtype: str  # the profile group that answers
    kind: str  # CALIBRATED, SCALED or TRANSFERRED
    error_p90: float  # measured p90 |error| of this route's predictions, a fraction


class AppliedProfile:
    """A calibration profile as one device's runs use it (see the module docstring)."""

    def __init__(self, profile: Calibration, system: System):
        self.profile, self.system = profile, system
        self.here = same_device(profile.fitted_on, fingerprint(system.accelerator))
        self._routes: dict[tuple[str, str], Route | None] = {}
        # dtypes whose routed experts' grouped GEMMs a run has costed from the GEMM route (kernel_times)
        self.grouped_dtypes: set[str] = set()

    @property
    def path(self) -> Path | None:
        return self.profile.path

    @property
    def use(self) -> str:
        """How the run uses the profile, in words (summary.json's provenance)."""
        name = self.path.name if self.path is not None else "the profile"
        if self.here:
            return f"measured on this device ({name})"
        return f"transferred from {name} (measured on {self.profile.device}, fitted against {self.profile.hardware})"

    # -- routes ------------------------------------------------------------------------------
    def route(self, op: str, dtype: str) -> Route | None:
        key = (op, dtype)
        if key not in self._routes:
            self._routes[key] = self._resolve(op, dtype)
        return self._routes[key]

    def covers(self, op: str, dtype: str) -> bool:
        return self.route(op, dtype) is not None

    def _resolve(self, op: str, dtype: str) -> Route | None:
        """The route with its measured error; None when the profile cannot answer or the
        error of answering that way was never measured (then the op stays on the roofline)."""
        route = self.candidate_route(op, dtype)
        if route is None or route.kind == CALIBRATED:
            return route
        error = measured_error_p90(route.kind, op, self.system.accelerator.kind)
        if error is None:
            return None
        return Route(op, dtype, route.measured_dtype, route.kind,
                     error + (self._heldout(op, route.measured_dtype) if route.kind == SCALED else 0.0))

    def candidate_route(self, op: str, dtype: str) -> Route | None:
        """How the profile would answer (op, dtype), whether or not that way's error has been
        measured (error_p90 is nan for scaled and transferred routes); what
        `validation.transfer_errors` measures those errors with."""
        measured = sorted(d for (o, d) in self.profile.ops if o == op)
        if not measured:
            return None
        if op in COLLECTIVE_KINDS or op == "memcpy":  # bytes on this fabric: only where measured
            if not self.here:
                return None
            chosen = dtype if dtype in measured else measured[0]
            return Route(op, dtype, chosen, CALIBRATED, self._heldout(op, chosen))
        chosen, equal = self._measured_dtype(measured, dtype)
        if op in AS_MEASURED_ONLY:
            return Route(op, dtype, chosen, CALIBRATED, self._heldout(op, chosen)) if self.here and equal else None
        if not self.here:  # only between devices of one kind: a CPU's efficiencies say nothing of a GPU
            same_kind = self.profile.fitted_on.get("kind") == self.system.accelerator.kind
            return Route(op, dtype, chosen, TRANSFERRED, math.nan) if same_kind else None
        if equal:
            return Route(op, dtype, chosen, CALIBRATED, self._heldout(op, chosen))
        return Route(op, dtype, chosen, SCALED, math.nan)

    def _measured_dtype(self, measured: list[str], dtype: str) -> tuple[str, bool]:
        """The measured dtype that answers for `dtype`, and whether it answers as is: the
        dtype itself, or one as wide with the same peak on this device; else the nearest
        in width (scaled)."""
        if dtype in measured:
            return dtype, True
        device = self.system.accelerator
        for other in measured:
            if DTYPE_BYTES.get(other) == DTYPE_BYTES.get(dtype) and _peak(device, other) == _peak(device, dtype):
                return other, True
        width = DTYPE_BYTES.get(dtype, 2.0)
        return min(measured, key=lambda d: (abs(math.log(DTYPE_BYTES.get(d, 2.0) / width)), d)), False

    def _heldout(self, op: str, dtype: str) -> float:
        return self.profile.ops[(op, dtype)].heldout_error_pct["p90"] / 100.0

    def collective_dtype(self, op: str) -> str | None:
        """The measured dtype a collective of this run is looked up in (None: not covered)."""
        route = self.route(op, "bf16")
        return route.measured_dtype if route is not None else None

    def errors(self) -> dict[tuple[str, str], float]:
        """Largest measured p90 error of the routes resolved so far, by (kernel-time source, op
        kind of the operators whose time it gives): a measured MoE layer's lands on its
        operators' kinds, a GEMM route's also on the grouped GEMMs costed from it."""
        out: dict[tuple[str, str], float] = {}
        for route in self._routes.values():
            if route is None:
                continue
            for source in ROUTE_SOURCES[route.kind]:
                for op in ROUTED_EXPERT_KINDS if route.op == "moe" else (route.op,):
                    out[(source, op)] = max(out.get((source, op), 0.0), route.error_p90)
            if route.op == "gemm" and route.dtype in self.grouped_dtypes:  # grouped GEMMs from its fit
                source = FIT if route.kind == CALIBRATED else ROUTE_SOURCES[route.kind][0]
                error = max(route.error_p90, GROUPED_GEMM_ERROR_P90)
                out[(source, "grouped_gemm")] = max(out.get((source, "grouped_gemm"), 0.0), error)
        return out

    def routes(self) -> list[Route]:
        return [r for r in self._routes.values() if r is not None]

    # -- predictions -------------------------------------------------------------------------
    def predict_us(self, op: str, dtype: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted times (us) of the frame's rows of (op, dtype) and each one's source."""
        route = self.route(op, dtype)
        if route is None:
            raise KeyError(f"the profile covers no {op} in {dtype}")
        return self.predict_route(route, frame)

    def predict_route(self, route: Route, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted times (us) of the frame's rows along `route`, and each one's source."""
        model = self.profile.ops[(route.op, route.measured_dtype)].model
        asked = frame.assign(dtype=route.dtype)
        if route.kind == TRANSFERRED:
            return transfer(model, self.system)(asked), np.full(len(frame), TRANSFERRED, dtype=object)
        measured = frame.assign(dtype=route.measured_dtype)
        times = model.predict_us(measured)
        if route.kind == CALIBRATED:
            return times, model.source_of(measured)
        fitted = transfer(model, self.system)  # the profile's own fit, at either dtype's peak and bytes
        return times * fitted(asked) / fitted(measured), np.full(len(frame), SCALED, dtype=object)


def _peak(device, dtype: str) -> float | None:
    try:
        return device.peak_flops(dtype)
    except KeyError:
        return None


def nearest_profile(system: System, directory: Path = PROFILES_DIR) -> Path | None:
    """The shipped profile a device without one of its own uses: one fitted against this very
    device, else one of the same kind whose transfer error has been measured, nearest by
    `spec_distance` (same architecture family first); None when there is none."""
    target = fingerprint(system.accelerator)
    candidates = []
    for path in sorted(directory.glob("*.yaml")):
        header = read_header(path)
        if header is None:
            continue
        fitted_on = header["fitted_on"]
        if same_device(fitted_on, target):
            return path
        if fitted_on.get("kind") == target["kind"] and measured_error_p90(TRANSFERRED, "gemm", target["kind"]):
            candidates.append((spec_distance(target, fitted_on), path.name, path))
    return min(candidates)[2] if candidates else None


def resolve_calibration(system: System, option: str | None) -> AppliedProfile | None:
    """The profile a run uses and how (see the module docstring): `--calibration FILE` or
    `none`, else the spec's `calibration:`, else the nearest shipped profile."""
    if option is not None and option.lower() == "none":
        return None
    if option is not None:
        return AppliedProfile(Calibration.load(option), system)
    declared = system.accelerator.calibration
    if declared is not None and declared.lower() == "none":
        return None
    if declared is not None:
        path = Path(declared)
        if not path.is_absolute():
            path = Path(system.accelerator_file).parent / path
        return AppliedProfile(Calibration.load(path), system)
    nearest = nearest_profile(system)
    return AppliedProfile(Calibration.load(nearest), system) if nearest is not None else None
