"""Writing what the harness measured: the measurement CSV and its FILE.meta.yaml sidecar.

The CSV's columns follow docs/contracts.md, section 6, in the order of COLUMNS (only those some
row has; unknown extras last, sorted). Both files are written to a temporary name and renamed,
so an interrupted or failed run never leaves half a file where a good one is expected. The
metadata holds plain YAML types only, whatever torch or NVML handed over.
"""
from __future__ import annotations

import csv
import os
import platform
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from simulator import __version__

META_SCHEMA = "validation.measure/1"

COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "seq_len", "kv_len", "heads", "kv_heads", "head_dim", "bytes",
           "world_size", "direction", "time_us", "p10_us", "p90_us", "trials", "calls_per_trial", "graph_calls",
           "pinned", "backend", "gqa", "sm_clock_mhz", "shape_from", "device", "source")


def meta_path(out: Path) -> Path:
    return out.with_name((out.stem if out.suffix.lower() == ".csv" else out.name) + ".meta.yaml")


def atomic_write(path: Path, write: Callable[[Any], None]) -> None:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    try:
        with open(tmp, "w", newline="") as f:
            write(f)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def write_csv(path: Path, rows: list[dict]) -> None:
    present = set().union(*(r.keys() for r in rows))
    columns = [c for c in COLUMNS if c in present] + sorted(present - set(COLUMNS))

    def write(f):
        w = csv.DictWriter(f, fieldnames=columns, restval="", lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    atomic_write(path, write)


def plain(obj: Any) -> Any:
    """Plain YAML types only (torch's version is a str subclass, NVML returns ctypes-ish values)."""
    if isinstance(obj, dict):
        return {str(k): plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return str(obj)


def versions() -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__, "simulator": __version__,
            "platform": platform.platform()}
