"""Calibration profiles: measured kernel timings turned into per-op predictors, saved as YAML.

`calibrate(system, files)` checks that the files were measured on the system's device
(`device_identity.measured_elsewhere`; `force` skips that), groups the measurements by (op,
dtype), fits each group with `fitting.fit_op` (interpolation inside the measured grid, a
roofline-with-efficiency fit outside it), and records, for every group, its own 5-fold
held-out error, the measured shape ranges, the source files (name and sha256), the device
and the fingerprint of the spec it was fitted against (`fitted_on`: the numbers that say
which device the profile's times hold for). `Calibration.load(path)` reads it back; how a
run uses it (measured here, scaled, transferred) is `profile_use.py`'s.
"""
from __future__ import annotations

import datetime as _dt
import hashlib
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
import pandas as pd
import yaml

from ..errors import InputError, InvalidFile
from ..hardware.loader import System
from ..models.op_kinds import TABLE_AXES
from .context_skew import ContextSkew, row_paths
from .device_identity import fingerprint, measured_elsewhere
from .measurements import read_all
from .mixed_attention import HEAD_KEYS, MixedAttention, default_factor

SCHEMA = "simulator.calibration/1"
# libyaml's C loader reads a profile of a few hundred kB ten times faster than the pure-Python one
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
_DUMPER = getattr(yaml, "CSafeDumper", yaml.SafeDumper)


@dataclass
class OpProfile:
    """One fitted (op, dtype) group of a profile and what is known of its accuracy."""

    op: str
    dtype: str
    model: Any  # fit_op_model.OpModel
    heldout_error_pct: dict[str, float]  # median and p90 of |error| over k folds, and the folds

    def to_dict(self) -> dict[str, Any]:
        return {"op": self.op, "dtype": self.dtype, "method": self.model.method, "rows": int(self.model.n_rows),
                "ranges": {k: [float(a), float(b)] for k, (a, b) in self.model.ranges.items()},
                "heldout_error_pct": self.heldout_error_pct, "model": self.model.to_dict()}


@dataclass
class Calibration:
    device: str  # as the measurements name it
    hardware: str  # the spec's name
    sources: list[str]
    fitted_on: dict[str, Any]  # device_identity.fingerprint of the spec it was fitted against
    source_sha256: dict[str, str] = field(default_factory=dict)  # file name -> sha256 of its bytes
    ops: dict[tuple[str, str], OpProfile] = field(default_factory=dict)
    path: Path | None = None
    mixed: MixedAttention | None = None  # measured cost of decodes in steps with prefill chunks
    skew: ContextSkew | None = None  # measured tail of decodes of unequal context

    # -- YAML ---------------------------------------------------------------------------
    def save(self, path: str | Path) -> None:
        path = Path(path)
        data = {
            "schema": SCHEMA,
            "device": self.device,
            "hardware": self.hardware,
            "fitted_on": self.fitted_on,
            "created": _dt.date.today().isoformat(),
            "created_by": "simulate calibrate",
            "sources": self.sources,
            "source_sha256": self.source_sha256,
            "ops": [p.to_dict() for p in self.ops.values()],
        }
        if self.mixed is not None:
            data["mixed_attention"] = self.mixed.to_dict()
        if self.skew is not None:
            data["context_skew"] = self.skew.to_dict()
        tmp = path.with_name(f".{path.name}.tmp")
        tmp.write_text(yaml.dump(data, Dumper=_DUMPER, sort_keys=False, width=120))
        os.replace(tmp, path)
        self.path = path

    @classmethod
    def load(cls, path: str | Path) -> Calibration:
        from .fit_op_model import OpModel

        path = Path(path)
        try:
            data = yaml.load(path.read_text(), Loader=_LOADER)
        except OSError as exc:
            raise InvalidFile(f"{path}: cannot read calibration ({exc.strerror})") from None
        except yaml.YAMLError as exc:
            raise InvalidFile(f"{path}: malformed YAML ({str(exc).splitlines()[0]})") from None
        _check_header(path, data)
        calib = cls(str(data.get("device", "")), str(data.get("hardware", "")), list(data.get("sources", [])),
                    dict(data["fitted_on"]), dict(data.get("source_sha256") or {}), path=path)
        for i, entry in enumerate(data.get("ops", [])):
            try:
                model = OpModel.from_dict(entry["model"])
                calib.ops[(entry["op"], entry["dtype"])] = OpProfile(entry["op"], entry["dtype"], model,
                                                                      dict(entry["heldout_error_pct"]))
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidFile(f"{path}: ops[{i}]: malformed entry ({exc})") from None
        if data.get("mixed_attention"):
            try:
                calib.mixed = MixedAttention.from_dict(data["mixed_attention"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidFile(f"{path}: mixed_attention: malformed entry ({exc})") from None
        if data.get("context_skew"):
            try:
                calib.skew = ContextSkew.from_dict(data["context_skew"])
            except (KeyError, TypeError, ValueError) as exc:
                raise InvalidFile(f"{path}: context_skew: malformed entry ({exc})") from None
        return calib


def _check_header(path: Path, data: Any) -> None:
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise InvalidFile(f"{path}: schema: not a calibration profile (expected schema: {SCHEMA}; "
                         "write one with `simulate calibrate`)")
    if not isinstance(data.get("fitted_on"), dict):
        raise InvalidFile(f"{path}: fitted_on: missing (a profile written before device fingerprints); "
                         "re-run `simulate calibrate` on its measurements")


def read_header(path: Path) -> dict[str, Any] | None:
    """A profile's top-level fields without its op tables (cheap: read up to `ops:`), or None
    for a YAML file that is not a calibration profile."""
    text = path.read_text()
    cut = text.find("\nops:")
    try:
        data = yaml.load(text if cut < 0 else text[:cut], Loader=_LOADER)
        _check_header(path, data)
    except (yaml.YAMLError, InputError):
        return None
    return data


def _measured_kind(path: Path) -> str | None:
    """The device kind the harness recorded beside a measurement file (FILE.meta.yaml), if any."""
    meta = Path(path).with_suffix(".meta.yaml")
    try:
        data = yaml.safe_load(meta.read_text())
    except (OSError, yaml.YAMLError):
        return None
    kind = data.get("device_kind") if isinstance(data, dict) else None
    return {"cuda": "gpu", "cpu": "cpu"}.get(str(kind))


def calibrate(system: System, files: list[str | Path], device: str | None = None, folds: int = 5,
              progress=None, force: bool = False) -> Calibration:
    """Fit every (op, dtype) group of the measurement files; see the module docstring.
    Measurements of another device are refused (InputError) unless `force`."""
    from .fitting import fit_op, kfold_errors

    frame = read_all(files, device)
    if not force:
        kinds = {_measured_kind(Path(f)) for f in files} - {None}
        problem = measured_elsewhere(frame, system, kinds.pop() if len(kinds) == 1 else None)
        if problem is not None:
            raise InputError(f"{', '.join(Path(f).name for f in files)}: {problem} ({system.source_file}); "
                             "calibrate against that device's spec, or pass --force to fit anyway")
    calib = Calibration(str(frame["device"].iloc[0]), system.name, [Path(f).name for f in files],
                        fingerprint(system.accelerator),
                        {Path(f).name: hashlib.sha256(Path(f).read_bytes()).hexdigest() for f in files})
    mixed = frame[frame["op"] == "attn_mixed"]
    skew = frame[frame["op"] == "attn_skew"]
    frame = frame[frame["op"].isin(list(TABLE_AXES))]  # the rest are factors over these ops, fitted below
    groups = list(frame.groupby(["op", "dtype"], sort=True))
    for i, ((op, dtype), rows) in enumerate(groups):
        rows = rows.reset_index(drop=True)
        errors = kfold_errors(rows, system, k=folds, seed=0)["error_pct"].abs()
        heldout = {"median": round(float(errors.median()), 3), "p90": round(float(errors.quantile(0.9)), 3),
                   "folds": folds}
        calib.ops[(op, dtype)] = OpProfile(op, dtype, fit_op(rows, system), heldout)
        if progress is not None:
            progress(i + 1, len(groups))
    if len(mixed):
        calib.mixed = _fit_mixed(calib, mixed.reset_index(drop=True))
    if len(skew):
        calib.skew = ContextSkew.fit(skew.reset_index(drop=True))
    return calib


def _fit_mixed(calib: Calibration, rows: pd.DataFrame) -> MixedAttention:
    """The mixed-step factors, against this profile's own fits of the two parts alone."""
    dtype = str(rows["dtype"].iloc[0])
    for op in ("attn_prefill", "attn_decode"):
        if (op, dtype) not in calib.ops:
            raise InputError(f"attn_mixed rows need {op} rows of the same dtype ({dtype}) to be calibrated against")
    return MixedAttention.fit(rows, calib.ops[("attn_prefill", dtype)].model.predict_us,
                              calib.ops[("attn_decode", dtype)].model.predict_us)


def predict_rows(frame: pd.DataFrame, system: System, calib) -> tuple[np.ndarray, np.ndarray]:
    """Predicted time (us) and its source for every measured row: the applied profile
    (`profile_use.AppliedProfile`) where it covers the row's (op, dtype), else the
    uncalibrated roofline; `attn_mixed` rows as `_predict_mixed` says. A table used only as
    measured (`profile_use.AS_MEASURED_ONLY`: a fused-MoE layer) covers only rows of its
    measured model sizes, as in a run."""
    from .kernels import roofline_us
    from .profile_use import AS_MEASURED_ONLY

    predicted = np.empty(len(frame))
    source = np.empty(len(frame), dtype=object)
    groups = cast("dict[tuple[str, str], pd.Index]", frame.groupby(["op", "dtype"], sort=False).groups)
    for (op, dtype), index in groups.items():
        rows = frame.loc[index]
        where = frame.index.get_indexer(index)
        if op == "attn_mixed":
            predicted[where], source[where] = _predict_mixed(rows, str(dtype), system, calib)
        elif op == "attn_skew":
            predicted[where], source[where] = _predict_skew(rows, str(dtype), calib)
        elif calib is not None and calib.covers(op, dtype):
            covered = np.ones(len(rows), dtype=bool)
            if op in AS_MEASURED_ONLY:
                covered = calib.profile.ops[(op, calib.route(op, dtype).measured_dtype)].model.measured_categories(rows)
            if covered.any():
                predicted[where[covered]], source[where[covered]] = calib.predict_us(op, dtype, rows[covered])
            if not covered.all():
                predicted[where[~covered]], source[where[~covered]] = roofline_us(rows[~covered], system), "roofline"
        else:
            predicted[where], source[where] = roofline_us(rows, system), "roofline"
    return predicted, source


def _predict_mixed(rows: pd.DataFrame, dtype: str, system: System, calib) -> tuple[np.ndarray, np.ndarray]:
    """`attn_mixed` rows timed as a run times such a step (`CostModel._attention_part`): the
    prefill chunk alone plus the decodes alone times the mixed-step factor
    (perf/mixed_attention.py), each part predicted like an `attn_prefill` / `attn_decode` row.
    The factor is the profile's measured one where its decode times are this device's own
    (as `kernel_times` uses it), else the spec's `mixed_decode_gqa_miss` default. A row's
    source is that of its longer part."""
    from .profile_use import CALIBRATED

    heads = {k: rows[k].to_numpy(dtype=int) for k in HEAD_KEYS}
    prefill = pd.DataFrame({"op": "attn_prefill", "dtype": dtype, "batch": 1, "seq_len": rows["seq_len"].to_numpy(),
                            "kv_len": rows["prefill_kv_len"].to_numpy(), **heads})
    decode = pd.DataFrame({"op": "attn_decode", "dtype": dtype, "batch": rows["batch"].to_numpy(),
                           "kv_len": rows["kv_len"].to_numpy(), **heads})
    prefill_us, prefill_source = predict_rows(prefill, system, calib)
    decode_us, decode_source = predict_rows(decode, system, calib)
    route = calib.route("attn_decode", dtype) if calib is not None else None
    measured = calib.profile.mixed if route is not None and route.kind == CALIBRATED else None
    miss = system.accelerator.efficiency.mixed_decode_gqa_miss
    factor = np.empty(len(rows))
    for i, (h, kv, d, n, context) in enumerate(zip(*heads.values(), decode["batch"], decode["kv_len"])):
        table = measured.table(h, kv, d) if measured is not None else None
        factor[i] = table(n, context) if table is not None else default_factor(h, kv, miss)
    decode_us = decode_us * factor
    return prefill_us + decode_us, np.where(prefill_us >= decode_us, prefill_source, decode_source)


def _predict_skew(rows: pd.DataFrame, dtype: str, calib) -> tuple[np.ndarray, np.ndarray]:
    """`attn_skew` rows from their own uniform references (mean_us, max_us): mean_us + alpha x
    (max_us - mean_us), alpha the profile's measured curve for the row's shape and path where
    its decode times are this device's own (as `kernel_times` uses it), else 0 (the mean
    context, source roofline). What this checks is the tail model, not the uniform times."""
    from .profile_use import CALIBRATED

    route = calib.route("attn_decode", dtype) if calib is not None else None
    measured = calib.profile.skew if route is not None and route.kind == CALIBRATED else None
    alpha = np.zeros(len(rows))
    if measured is not None:
        groups = pd.DataFrame({**{k: rows[k].to_numpy(dtype=int) for k in HEAD_KEYS}, "path": row_paths(rows)})
        for (h, kv, d, path), where in groups.groupby([*HEAD_KEYS, "path"]).indices.items():
            curve = measured.curve(h, kv, d, str(path))
            if curve is not None:
                alpha[where] = curve.many(rows["batch"].to_numpy(dtype=float)[where])
    mean, longest = rows["mean_us"].to_numpy(dtype=float), rows["max_us"].to_numpy(dtype=float)
    source = np.where(alpha > 0, "calibrated-interpolation", "roofline")
    return mean + alpha * (longest - mean), source


def in_sample(frame: pd.DataFrame, files: list[str | Path], calib: Calibration | None) -> np.ndarray:
    """Per row (of `read_all`'s frame, with its `file` column): whether the profile was fitted
    on it, i.e. its file has the contents (sha256) or the name of one of the profile's sources
    (a source rewritten before fitting, e.g. with its device renamed, keeps its name). Errors
    on such rows are in-sample, not held out."""
    if calib is None:
        return np.zeros(len(frame), dtype=bool)
    fitted = set(calib.source_sha256.values())
    inside = {Path(f).name for f in files
              if Path(f).name in calib.sources or hashlib.sha256(Path(f).read_bytes()).hexdigest() in fitted}
    return frame["file"].isin(inside).to_numpy()


def error_table(frame: pd.DataFrame) -> pd.DataFrame:
    """Per op (and overall): rows, in-sample rows (`in_sample` column, when present), median
    and p90 of |error_pct|, and MAPE."""
    abs_err = frame["error_pct"].abs()
    inside = frame["in_sample"] if "in_sample" in frame.columns else pd.Series(False, index=frame.index)
    groups = {op: frame["op"] == op for op in sorted(frame["op"].unique())}
    groups["all"] = pd.Series(True, index=frame.index)
    return pd.DataFrame(
        [{"op": op, "rows": int(rows.sum()), "in_sample": int((rows & inside).sum()),
          "median_pct": abs_err[rows].median(), "p90_pct": abs_err[rows].quantile(0.9),
          "mape_pct": abs_err[rows].mean()} for op, rows in groups.items()]
    )
