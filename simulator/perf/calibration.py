"""Calibration profiles: measured kernel timings turned into per-op predictors, saved as YAML.

`calibrate(system, files)` groups the measurements by (op, dtype), fits each group with
`fitting.fit_op` (interpolation inside the measured grid, a roofline-with-efficiency fit
outside it), and records, for every group, its own 5-fold held-out error, the measured shape
ranges, the source files and the device. `Calibration.load(path)` reads it back; the cost
model asks `predict_us` for an op and falls back to the uncalibrated roofline for ops and
dtypes the profile does not cover. Every prediction says where it came from.
"""
from __future__ import annotations

import datetime as _dt
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError
from ..hardware.loader import System
from .measurements import read_all

SCHEMA = "simulator.calibration/1"
# libyaml's C loader reads a profile of a few hundred kB ten times faster than the pure-Python one
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class OpProfile:
    """One fitted (op, dtype) group of a profile and what is known of its accuracy."""

    op: str
    dtype: str
    model: Any  # fitting.OpModel
    heldout_error_pct: dict[str, float]  # median and p90 of |error| over k folds, and the folds

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dtype": self.dtype, "method": self.model.method, "rows": int(self.model.n_rows),
                "ranges": {k: [float(a), float(b)] for k, (a, b) in self.model.ranges.items()},
                "heldout_error_pct": self.heldout_error_pct, "model": self.model.to_dict()}


@dataclass
class Calibration:
    device: str
    hardware: str
    sources: list[str]
    ops: dict[tuple[str, str], OpProfile] = field(default_factory=dict)
    path: Path | None = None

    def covers(self, op: str, dtype: str) -> bool:
        return (op, dtype) in self.ops

    def predict_us(self, op: str, dtype: str, frame: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Predicted times and their sources ("calibrated-interpolation" / "calibrated-fit")."""
        profile = self.ops[(op, dtype)]
        return profile.model.predict_us(frame), profile.model.source_of(frame)

    def error_band_pct(self, quantile: str = "p90") -> float:
        """The worst held-out error quantile over the profile's groups (for uncertainty bands)."""
        return max((p.heldout_error_pct[quantile] for p in self.ops.values()), default=0.0)

    # -- YAML ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = {
            "schema": SCHEMA,
            "device": self.device,
            "hardware": self.hardware,
            "created": _dt.date.today().isoformat(),
            "created_by": "simulate calibrate",
            "sources": self.sources,
            "ops": [p.to_dict() for p in self.ops.values()],
        }
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.dump(data, Dumper=_DUMPER, sort_keys=False, width=120))
        os.replace(tmp, path)
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        from .fitting import OpModel

        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=_LOADER)
        except OSError as exc:
            raise InputError(f"{path}: cannot read calibration ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InputError(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
        if not isinstance(data, dict) or data.get("schema") != SCHEMA:
            raise InputError(f"{path}: schema: not a calibration profile (expected schema: {SCHEMA}; "
                             "write one with `simulate calibrate`)")
        calib = cls(str(data.get("device", "")), str(data.get("hardware", "")), list(data.get("sources", [])),
                    path=path)
        for i, entry in enumerate(data.get("ops", [])):
            try:
                model = OpModel.from_dict(entry["model"])
                calib.ops[(entry["op"], entry["dtype"])] = OpProfile(entry["op"], entry["dtype"], model,
                                                                      dict(entry["heldout_error_pct"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InputError(f"{path}: ops[{i}]: malformed entry ({exc})") from None
        return calib


def calibrate(system: System, files: list[str | Path], device: str | None = None, folds: int = 5,
              progress=None) -> Calibration:
    """Fit every (op, dtype) group of the measurement files; see the module docstring."""
    from .fitting import fit_op, kfold_errors

    frame = read_all(files, device)
    calib = Calibration(str(frame["device"].iloc[0]), system.name, [Path(f).name for f in files])
    groups = list(frame.groupby(["op", "dtype"], sort=True))
    for i, ((op, dtype), rows) in enumerate(groups):
        rows = rows.reset_index(drop=True)
        errors = kfold_errors(rows, system, k=folds, seed=0)["error_pct"].abs()
        heldout = {"median": round(float(errors.median()), 3), "p90": round(float(errors.quantile(0.9)), 3),
                   "folds": folds}
        calib.ops[(op, dtype)] = OpProfile(op, dtype, fit_op(rows, system), heldout)
        if progress is not None:
            progress(i + 1, len(groups))
    return calib


def resolve_calibration(system: System, option: str | None) -> Calibration | None:
    """The profile a run uses: `--calibration FILE`, `none`, or the spec's `calibration:` field."""
    if option is not None and option.lower() == "none":
        return None
    if option is not None:
        return Calibration.load(option)
    declared = system.accelerator.calibration
    if declared is None:
        return None
    path = Path(declared)
    if not path.is_absolute():
        path = Path(system.accelerator_file).parent / path
    return Calibration.load(path)


def predict_rows(frame: pd.DataFrame, system: System, calib: Calibration | None) -> tuple[np.ndarray, np.ndarray]:
    """Predicted time (us) and its source for every measured row: the profile where it covers
    the row's (op, dtype), else the uncalibrated roofline."""
    from .kernels import roofline_us

    predicted = np.empty(len(frame))
    source = np.empty(len(frame), dtype=object)
    for (op, dtype), index in frame.groupby(["op", "dtype"], sort=False).groups.items():
        rows = frame.loc[index]
        where = frame.index.get_indexer(index)
        if calib is not None and calib.covers(op, dtype):
            predicted[where], source[where] = calib.predict_us(op, dtype, rows)
        else:
            predicted[where], source[where] = roofline_us(rows, system), "roofline"
    return predicted, source


def error_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per op (and overall): rows, median and p90 of |error_pct|, and MAPE."""
    abs_err = frame["error_pct"].abs()
    groups = {op: abs_err[frame["op"] == op] for op in sorted(frame["op"].unique())}
    groups["all"] = abs_err
    return pd.DataFrame(
        [{"op": op, "rows": len(e), "median_pct": e.median(), "p90_pct": e.quantile(0.9), "mape_pct": e.mean()}
         for op, e in groups.items()]
    )
