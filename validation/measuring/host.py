"""Facts about the host CPU that the measuring harness needs or records.

The last-level cache size decides how large the CPU path's rotation buffers are (twice it, so
that no call finds its operands in cache) and the flush buffer of torch's CPU self-test path;
available memory bounds what the CPU path may allocate; the CPU model names the device in every
CSV row; the clock and the BLAS library go into the metadata. Each reads /proc, /sys or lscpu
where it can and falls back to something plain where it cannot (no call here fails the run).
"""
from __future__ import annotations

import importlib.util
import platform
import re
import subprocess
from pathlib import Path
from typing import Any

import numpy as np

from validation import shapes as S

DEFAULT_LLC = 64 * S.MIB


def cpu_model_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown CPU"


def _size_bytes(text: str) -> int | None:
    m = re.fullmatch(r"\s*([\d.]+)\s*([KMG]?)(i?B)?\s*", text)
    if not m:
        return None
    return int(float(m.group(1)) * {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}[m.group(2)])


def llc_bytes() -> tuple[int, str]:
    """The last-level cache of one CPU (from /sys, else lscpu, else 64 MiB) and where it came from."""
    best = (0, 0)
    for index in sorted(Path("/sys/devices/system/cpu/cpu0/cache").glob("index*")):
        try:
            if (index / "type").read_text().strip() == "Instruction":
                continue
            level = int((index / "level").read_text())
            size = _size_bytes((index / "size").read_text())
        except (OSError, ValueError):
            continue
        if size and level >= best[0]:
            best = (level, size)
    if best[1]:
        return best[1], f"/sys L{best[0]}"
    try:
        text = subprocess.run(["lscpu"], capture_output=True, text=True, timeout=10).stdout
        for level in ("L3", "L2"):
            m = re.search(rf"^{level} cache:\s*([\d.]+\s*[KMG]i?B)", text, re.MULTILINE)
            if m and _size_bytes(m.group(1)):
                return _size_bytes(m.group(1)), f"lscpu {level}"
    except (OSError, subprocess.SubprocessError):
        pass
    return DEFAULT_LLC, "default (64 MiB; no cache size found)"


def mem_available() -> int | None:
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return None


def cpu_mhz() -> float | None:
    try:
        values = [float(line.split(":")[1]) for line in Path("/proc/cpuinfo").read_text().splitlines()
                  if line.startswith("cpu MHz")]
        return round(sum(values) / len(values), 1) if values else None
    except (OSError, ValueError):
        return None


def blas_info() -> dict[str, Any]:
    info: dict[str, Any] = {}
    try:
        cfg = np.show_config(mode="dicts")  # numpy >= 1.26
        blas = cfg.get("Build Dependencies", {}).get("blas", {})
        info = {"name": blas.get("name"), "version": blas.get("version")}
    except Exception:  # noqa: BLE001 - optional information only
        pass
    if importlib.util.find_spec("threadpoolctl") is not None:
        try:
            from threadpoolctl import threadpool_info

            info["threads"] = [p.get("num_threads") for p in threadpool_info() if p.get("user_api") == "blas"]
        except Exception:  # noqa: BLE001
            pass
    return info
