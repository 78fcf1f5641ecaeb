"""Measured kernel timings: the measurement CSV contract (docs/contracts.md, section 6), read and checked.

Every row is `op, dtype, time_us, device, source` plus the op's shape parameters. A bad file
(an unknown op or dtype, a missing parameter column, a time or a shape that is not a positive
finite number, several devices without a filter) is rejected with one line naming the file, the row and the column.
Rows of different ops may share a file; columns that an op does not use may be empty.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from ..errors import InputError
from ..hardware.spec import DTYPES
from ..models.op_kinds import MEASURED

REQUIRED = ("op", "dtype", "time_us", "device")
DIRECTIONS = ("h2d", "d2h", "d2d")


def _row(path: Path, index: int) -> str:
    return f"{path}:{index + 2}"  # +1 for the header, +1 for 1-based lines


def read_measurements(path: str | Path, device: str | None = None) -> pd.DataFrame:
    """One measurement CSV, validated; `device` keeps only rows whose device contains it.

    Rows of several devices need a filter; with one, every row it keeps counts as that device
    (e.g. "A100-SXM4-80GB" keeps single-GPU GEMMs and DGX collectives of the same GPU).
    """
    path = Path(path)
    try:
        frame = pd.read_csv(path, dtype={"op": str, "dtype": str, "device": str, "source": str, "direction": str})
    except FileNotFoundError:
        raise InputError(f"{path}: no such measurement file") from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable CSV ({str(exc).splitlines()[0]})") from None
    missing = [c for c in REQUIRED if c not in frame.columns]
    if missing:
        raise InputError(f"{path}: column {missing[0]} is missing (the contract needs {', '.join(REQUIRED)})")
    if frame.empty:
        raise InputError(f"{path}: no measurement rows")
    if "source" not in frame.columns:
        frame["source"] = path.name
    unknown = ~frame["op"].isin(list(MEASURED))
    if unknown.any():
        i = int(np.flatnonzero(unknown.to_numpy())[0])
        raise InputError(f"{_row(path, i)}: op: {frame['op'].iloc[i]!r} is not one of {', '.join(MEASURED)}")
    wrong_dtype = ~frame["dtype"].isin(DTYPES)
    if wrong_dtype.any():
        i = int(np.flatnonzero(wrong_dtype.to_numpy())[0])
        raise InputError(f"{_row(path, i)}: dtype: {frame['dtype'].iloc[i]!r} is not one of {', '.join(DTYPES)}")
    time = pd.to_numeric(frame["time_us"], errors="coerce")
    bad = ~(time > 0) | ~np.isfinite(time)
    if bad.any():
        i = int(np.flatnonzero(bad.to_numpy())[0])
        raise InputError(f"{_row(path, i)}: time_us: {frame['time_us'].iloc[i]!r} is not a positive number of microseconds")
    frame["time_us"] = time.astype(float)
    for op, params in MEASURED.items():  # each op's shape columns (models/op_kinds.py)
        rows = frame["op"] == op
        if not rows.any():
            continue
        for param in params:
            if param not in frame.columns:
                i = int(np.flatnonzero(rows.to_numpy())[0])
                raise InputError(f"{_row(path, i)}: {param}: column missing (op {op} needs {', '.join(params)})")
            if param == "direction":
                wrong = rows & ~frame[param].isin(DIRECTIONS)
                what = f"one of {', '.join(DIRECTIONS)}"
            else:
                values = pd.to_numeric(frame[param], errors="coerce")
                wrong = rows & ~((values >= 1) & np.isfinite(values))
                what = "a positive finite number"
            if wrong.any():
                i = int(np.flatnonzero(wrong.to_numpy())[0])
                raise InputError(f"{_row(path, i)}: {param}: {frame[param].iloc[i]!r} is not {what}")
    if device is not None:
        frame = frame[frame["device"].str.contains(device, regex=False)]
        if frame.empty:
            raise InputError(f"{path}: no rows for device {device!r}")
    devices = frame["device"].unique()
    if device is None and len(devices) > 1:
        raise InputError(f"{path}: rows from {len(devices)} devices ({devices[0]!r}, {devices[1]!r}, ...); "
                         "pick one with --device")
    return frame.reset_index(drop=True)


def read_all(paths: list[str | Path], device: str | None = None) -> pd.DataFrame:
    """Several measurement files of one device, concatenated, each row keeping its file."""
    frames = []
    for p in paths:
        frame = read_measurements(p, device)
        frame["file"] = Path(p).name
        frames.append(frame)
    merged = pd.concat(frames, ignore_index=True)
    devices = merged["device"].unique()
    if device is None and len(devices) > 1:
        raise InputError(f"{', '.join(map(str, paths))}: rows from {len(devices)} devices ({devices[0]!r}, "
                         f"{devices[1]!r}, ...); pick one with --device")
    return merged
