"""What the GPU's clocks did while the harness timed it, through NVML (pynvml) or nvidia-smi.

A GPU that throttles (power, heat) times slower than its rated clock, and nothing in a kernel's
time says so: the torch path samples the SM clock and the throttle reasons while each shape's
trials run (the sm_clock_mhz column), and the metadata records the clock range, the reasons
seen, the driver and the power limit, so that a slow measurement can be told from a slow GPU.
All of it is optional: without pynvml there is a note, and nvidia-smi answers what it can.
"""
from __future__ import annotations

import os
import subprocess
from collections import Counter
from typing import Any

import numpy as np

from validation.measuring.failures import first_line


class GpuMonitor:
    """SM clock and throttle reasons through NVML (pynvml), when it is installed."""

    REASONS = {0x4: "sw_power_cap", 0x8: "hw_slowdown", 0x20: "sw_thermal", 0x40: "hw_thermal",
               0x80: "hw_power_brake"}

    def __init__(self, torch, notes: Counter):
        self.nvml = self.handle = None
        self.clocks: list[float] = []
        self.reasons: Counter = Counter()
        try:
            import pynvml
        except ImportError:
            notes["SM clocks not recorded: pynvml is not installed (pip install nvidia-ml-py)"] += 1
            return
        try:
            pynvml.nvmlInit()
            self.handle = self._handle(pynvml, torch)
            self.nvml = pynvml
        except Exception as exc:  # noqa: BLE001 - NVML is optional
            notes[f"SM clocks not recorded: NVML failed ({first_line(exc)})"] += 1
            self.handle = None

    @staticmethod
    def _handle(pynvml, torch):
        uuid = getattr(torch.cuda.get_device_properties(torch.cuda.current_device()), "uuid", None)
        if uuid:
            text = str(uuid)
            try:
                return pynvml.nvmlDeviceGetHandleByUUID(text if text.startswith(("GPU-", "MIG-")) else f"GPU-{text}")
            except Exception:  # noqa: BLE001
                pass
        visible = os.environ.get("CUDA_VISIBLE_DEVICES", "").split(",")[0].strip()
        if visible.startswith(("GPU-", "MIG-")):
            return pynvml.nvmlDeviceGetHandleByUUID(visible)
        return pynvml.nvmlDeviceGetHandleByIndex(int(visible) if visible.isdigit() else 0)

    def sample(self) -> float | None:
        if self.handle is None:
            return None
        nv = self.nvml
        try:
            mhz = float(nv.nvmlDeviceGetClockInfo(self.handle, nv.NVML_CLOCK_SM))
        except Exception:  # noqa: BLE001
            return None
        try:
            fn = getattr(nv, "nvmlDeviceGetCurrentClocksEventReasons", None) or nv.nvmlDeviceGetCurrentClocksThrottleReasons
            bits = int(fn(self.handle))
            for bit, name in self.REASONS.items():
                if bits & bit:
                    self.reasons[name] += 1
        except Exception:  # noqa: BLE001
            pass
        self.clocks.append(mhz)
        return mhz

    def _call(self, name: str, *args):
        try:
            value = getattr(self.nvml, name)(*args)
            return value.decode() if isinstance(value, bytes) else value
        except Exception:  # noqa: BLE001
            return None

    def info(self) -> dict[str, Any]:
        if self.handle is None:
            return {}
        nv, h = self.nvml, self.handle
        power = self._call("nvmlDeviceGetEnforcedPowerLimit", h)
        return {"driver": self._call("nvmlSystemGetDriverVersion"),
                "max_sm_clock_mhz": self._call("nvmlDeviceGetMaxClockInfo", h, nv.NVML_CLOCK_SM),
                "max_mem_clock_mhz": self._call("nvmlDeviceGetMaxClockInfo", h, nv.NVML_CLOCK_MEM),
                "temperature_c": self._call("nvmlDeviceGetTemperature", h, nv.NVML_TEMPERATURE_GPU),
                "power_limit_w": None if power is None else power / 1000.0}

    def summary(self) -> dict[str, Any]:
        if not self.clocks:
            return {}
        c = np.asarray(self.clocks)
        return {"sm_clock_mhz": {"min": float(c.min()), "median": float(np.median(c)), "max": float(c.max())},
                "throttle_reasons_seen": dict(self.reasons)}


def nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15)
        return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None
