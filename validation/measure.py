"""Time kernels on a real GPU or CPU and write them as a measurement CSV (docs/contracts.md, section 6).

    python -m validation.measure --device cuda --out h100.csv
    python -m validation.measure --device cpu --quick --out cpu.csv
    python -m validation.measure --device cuda --ops gemm --dtype bf16,fp8 --out gemm.csv

Each row is `op, dtype, <the op's parameters>, time_us, device, source` (the median over
repeats) plus extra columns: p10_us and p90_us, trials, and per path pinned / backend / gqa /
sm_clock_mhz / graph_calls / calls_per_trial, and shape_from (which model layer or grid the
shape comes from). `FILE.meta.yaml` beside the CSV records the device, the software versions,
the clocks, the date, the command line and every note about what was skipped and why.

CUDA path (torch, imported only here): CUDA events on the kernel's stream after a time-based
warm-up, an L2 flush (a buffer larger than L2 is written) before every trial, optionally
`--cuda-graph N` calls captured in one CUDA graph with rotating operands (per-call time =
replay / N), median with p10/p90, the SM clock read while the trials run (pynvml). GEMMs are
`torch.mm(x, W.t())` (nn.Linear's layout), fp8 through `torch._scaled_mm`; attention is
`scaled_dot_product_attention` with the fastest fused backend that takes the shape; collectives
are torch.distributed NCCL over 2..N GPUs in spawned processes; copies are pinned and
pageable host<->device and device-to-device.

CPU path (numpy only): numpy matmul in fp32 (numpy has no fast bf16/fp16/fp8 matmul, so
those are measured as fp32 and recorded as fp32), and a numpy copy of a buffer as the `d2d`
memcpy (host memory bandwidth). perf_counter_ns after a time-based warm-up, median over
repeats, operands rotated through buffers twice the last-level cache so no call finds its
operands in cache.
"""
from __future__ import annotations

import argparse
import csv
import datetime as _dt
import importlib.util
import json
import math
import os
import platform
import re
import shlex
import socket
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import yaml

from simulator import __version__
from validation import shapes as S

OPS = ("gemm", "attn_prefill", "attn_decode", "allreduce", "allgather", "reducescatter", "alltoall", "memcpy")
DEFAULT_OPS = ("gemm", "attn_prefill", "attn_decode", "allreduce", "memcpy")
COLLECTIVES = ("allreduce", "allgather", "reducescatter", "alltoall")
DTYPES = ("bf16", "fp16", "fp8", "fp32")
DEFAULT_DTYPES = {"cuda": ("bf16", "fp8"), "cpu": ("fp32",)}
CUDA_NEEDS_TORCH = "--device cuda needs torch with a CUDA GPU (pip install -e '.[gpu]')"
META_SCHEMA = "validation.measure/1"
DEFAULT_LLC = 64 * S.MIB

# (warm-up seconds, trial budget seconds per shape, min trials, max trials)
CUDA_TIMING = {False: (0.025, 0.1, 10, 200), True: (0.01, 0.02, 5, 30)}
CPU_TIMING = {False: (0.05, 0.3, 7, 50), True: (0.005, 0.03, 5, 9)}
CPU_SAMPLE_S = {False: 2e-3, True: 5e-4}  # batch small calls so one timed sample lasts this long
VIEW_CAP = 20_000  # at most this many distinct operand sets per CPU shape

COLUMNS = ("op", "dtype", "m", "n", "k", "batch", "seq_len", "kv_len", "heads", "kv_heads", "head_dim", "bytes",
           "world_size", "direction", "time_us", "p10_us", "p90_us", "trials", "calls_per_trial", "graph_calls",
           "pinned", "backend", "gqa", "sm_clock_mhz", "shape_from", "device", "source")


class UsageError(Exception):
    """Bad arguments: printed as one line, exit code 2."""


class Skip(Exception):
    """This shape cannot be measured here; the message (without shape details) becomes a note."""


# --- arguments -----------------------------------------------------------------------------------


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # one line, exit 2, no usage dump
        raise UsageError(message)


def _parser() -> argparse.ArgumentParser:
    p = _Parser(prog="python -m validation.measure",
                description="Time kernels on a GPU (torch) or CPU (numpy) into a measurement CSV "
                            "(its columns: docs/contracts.md, Measurement CSV).")
    p.add_argument("--device", required=True, choices=("cuda", "cpu"), help="what to measure")
    p.add_argument("--out", required=True, type=Path, help="the CSV to write (FILE.meta.yaml goes beside it)")
    p.add_argument("--ops", default=",".join(DEFAULT_OPS),
                   help=f"comma list of {', '.join(OPS)} (default: {','.join(DEFAULT_OPS)})")
    p.add_argument("--dtype", default=None,
                   help="comma list of bf16, fp16, fp8, fp32 (default: bf16,fp8 on cuda, fp32 on cpu)")
    p.add_argument("--quick", action="store_true", help="a small subset of shapes (a smoke test, seconds on a CPU)")
    p.add_argument("--models", default=None, help="comma list of catalogue models to take shapes from (default: all)")
    p.add_argument("--cuda-graph", type=int, default=0, metavar="N",
                   help="time N calls replayed in one CUDA graph with rotating operands (default 0: one call per trial)")
    p.add_argument("--world-sizes", default=None,
                   help="comma list of GPU counts for collectives (default: 2, 4, 8 and all GPUs, as many as there are)")
    p.add_argument("--cpu-max-gflop", type=float, default=200.0,
                   help="CPU path: skip GEMMs above this many GFLOP per call (default 200)")
    return p


def _split(text: str, what: str, allowed: Sequence[str]) -> list[str]:
    items = [x.strip().lower() for x in text.split(",") if x.strip()]
    if not items:
        raise UsageError(f"{what}: empty list (choose from {', '.join(allowed)})")
    for x in items:
        if x not in allowed:
            raise UsageError(f"{what}: unknown {what.lstrip('-').rstrip('s')} {x!r} (choose from {', '.join(allowed)})")
    return list(dict.fromkeys(items))


@dataclass
class Options:
    device: str
    out: Path
    ops: list[str]
    dtypes: list[str]
    quick: bool
    models: list[str]
    cuda_graph: int
    world_sizes: list[int] | None
    cpu_max_gflop: float


def parse_args(argv: Sequence[str] | None) -> Options:
    from simulator.models.config import model_catalogue

    a = _parser().parse_args(argv)
    ops = _split(a.ops, "--ops", OPS)
    dtypes = _split(a.dtype, "--dtype", DTYPES) if a.dtype is not None else list(DEFAULT_DTYPES[a.device])
    catalogue = list(model_catalogue())
    models = _split(a.models, "--models", catalogue) if a.models is not None else catalogue
    if not models:
        raise UsageError("no catalogue models found (workloads/models/*.yaml)")
    if a.cuda_graph < 0 or a.cuda_graph == 1:
        raise UsageError(f"--cuda-graph: {a.cuda_graph} is not 0 (off) or a call count of at least 2")
    world = None
    if a.world_sizes is not None:
        try:
            world = sorted({int(x) for x in a.world_sizes.split(",") if x.strip()})
        except ValueError:
            raise UsageError(f"--world-sizes: {a.world_sizes!r} is not a comma list of integers") from None
        if not world or world[0] < 2:
            raise UsageError(f"--world-sizes: {a.world_sizes!r}: a collective needs at least 2 GPUs")
    if not a.cpu_max_gflop > 0:
        raise UsageError(f"--cpu-max-gflop: {a.cpu_max_gflop} is not a positive number")
    out = a.out
    if out.is_dir():
        raise UsageError(f"--out {out}: is a folder; give a file name such as {out / 'measured.csv'}")
    if not out.parent.exists():
        raise UsageError(f"--out {out}: folder {out.parent} does not exist")
    return Options(a.device, out, ops, dtypes, a.quick, models, a.cuda_graph, world, a.cpu_max_gflop)


# --- statistics and small system facts -----------------------------------------------------------


def summarize(samples_us: Sequence[float]) -> dict[str, float | int]:
    x = np.asarray(samples_us, dtype=float)
    p10, med, p90 = np.percentile(x, [10, 50, 90])
    return {"time_us": _r(med), "p10_us": _r(p10), "p90_us": _r(p90), "trials": int(x.size)}


def _r(x: float) -> float:
    """Six significant digits (a positive time never rounds to zero)."""
    return float(f"{x:.6g}")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0][:160]}" if text else type(exc).__name__


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


def _blas_info() -> dict[str, Any]:
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


# --- CPU path (numpy) ----------------------------------------------------------------------------


class _Pool:
    """A flat float32 buffer handing out consecutive regions and wrapping at the end, so a region
    is used again only after the whole buffer (at least twice the last-level cache) was walked."""

    def __init__(self, min_bytes: int, fill_random: bool, budget: Callable[[int], None]):
        self.min_elems = max(1, min_bytes // 4)
        self.fill_random = fill_random
        self.budget = budget
        self.buf: np.ndarray | None = None
        self.cursor = 0

    def ensure(self, elems: int) -> None:
        need = max(self.min_elems, elems)
        if self.buf is not None and self.buf.size >= need:
            return
        self.budget(need * 4 - (0 if self.buf is None else self.buf.size * 4))
        self.buf = None
        if self.fill_random:  # random values (tiled from 1M of them: the fill costs a copy, not an RNG pass)
            block = np.random.default_rng(0).random(1 << 20, dtype=np.float32) - np.float32(0.5)
            self.buf = np.resize(block, need)
        else:
            self.buf = np.full(need, 0.0, dtype=np.float32)  # touched, so no page faults while timing
        self.cursor = 0

    def slots(self, elems: int) -> int:
        return max(1, self.buf.size // max(1, elems))

    def take(self, elems: int) -> np.ndarray:
        if self.cursor + elems > self.buf.size:
            self.cursor = 0
        view = self.buf[self.cursor:self.cursor + elems]
        self.cursor += elems
        return view


class CpuBackend:
    kind = "cpu"

    def __init__(self, opts: Options, notes: Counter):
        self.opts, self.notes = opts, notes
        self.name = cpu_model_name()
        self.llc, self.llc_source = llc_bytes()
        self.timing = CPU_TIMING[opts.quick]
        self.sample_s = CPU_SAMPLE_S[opts.quick]
        self._held = 0
        self.inp = _Pool(2 * self.llc, True, self._reserve)
        self.out = _Pool(2 * self.llc, False, self._reserve)
        self.load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        self.mhz_start = cpu_mhz()

    def _reserve(self, nbytes: int) -> None:
        avail = mem_available()
        if avail is not None and self._held + nbytes > 0.6 * (avail + self._held):
            raise Skip("operands and rotation buffers do not fit in 60 % of available host memory")
        self._held += nbytes

    # planning
    def plan(self, opts: Options, models) -> list[tuple[str, str, Any]]:
        tasks: list[tuple[str, str, Any]] = []
        for op in opts.ops:
            if op == "gemm":
                others = [d for d in opts.dtypes if d != "fp32"]
                if others:
                    self.notes[f"cpu: numpy has no native {'/'.join(others)} matmul; GEMMs measured and recorded "
                               "as fp32"] += 1
                tasks += [("gemm", "fp32", s) for s in S.gemm_shapes(models, opts.quick)]
            elif op == "memcpy":
                self.notes["cpu: memcpy measured as d2d only (a numpy copy in host memory: its bandwidth); "
                           "h2d/d2h need a GPU"] += 1
                tasks += [("memcpy", "fp32", s) for s in S.memcpy_shapes(("d2d",), opts.quick)]
            else:
                self.notes[f"cpu: {op} skipped (the CPU path measures gemm and memcpy with numpy)"] += 1
        return tasks

    # timing
    def _time(self, call: Callable[[Any], Any], instances: list) -> dict[str, Any]:
        warm_s, budget_s, lo, hi = self.timing
        n_inst, i, n = len(instances), 0, 0
        t0 = time.perf_counter_ns()
        while True:
            call(instances[i % n_inst])
            i += 1
            n += 1
            elapsed = (time.perf_counter_ns() - t0) * 1e-9
            if elapsed >= warm_s and (n >= 2 or elapsed >= 0.2):
                break
        t_call = elapsed / n
        per_trial = max(1, int(self.sample_s / t_call))
        trials = min(hi, max(lo, int(budget_s / (t_call * per_trial))))
        samples = []
        for _ in range(trials):
            batch = [instances[(i + j) % n_inst] for j in range(per_trial)]
            i += per_trial
            t0 = time.perf_counter_ns()
            for inst in batch:
                call(inst)
            samples.append((time.perf_counter_ns() - t0) / per_trial / 1e3)
        return {**summarize(samples), "calls_per_trial": per_trial}

    def measure(self, op: str, dtype: str, shape) -> dict[str, Any]:
        if op == "gemm":
            return self._gemm(shape)
        return self._memcpy(shape)

    def _gemm(self, s: S.Gemm) -> dict[str, Any]:
        if s.flops > self.opts.cpu_max_gflop * 1e9:
            raise Skip(f"cpu: GEMMs above --cpu-max-gflop {self.opts.cpu_max_gflop:g} GFLOP skipped")
        set_in, set_out = (s.m + s.n) * s.k, s.m * s.n
        self.inp.ensure(set_in)
        self.out.ensure(set_out)
        instances = []
        for _ in range(min(VIEW_CAP, self.inp.slots(set_in))):
            region = self.inp.take(set_in)
            a = region[:s.m * s.k].reshape(s.m, s.k)
            w = region[s.m * s.k:].reshape(s.n, s.k)  # nn.Linear's weight layout: y = x @ W.T
            instances.append((a, w.T, self.out.take(set_out).reshape(s.m, s.n)))
        return self._time(lambda t: np.matmul(t[0], t[1], out=t[2]), instances)

    def _memcpy(self, s: S.Memcpy) -> dict[str, Any]:
        elems = s.nbytes // 4
        self.inp.ensure(elems)
        self.out.ensure(elems)
        instances = [(self.inp.take(elems), self.out.take(elems))
                     for _ in range(min(VIEW_CAP, self.inp.slots(elems), self.out.slots(elems)))]
        return self._time(lambda t: np.copyto(t[1], t[0]), instances)

    def meta(self) -> dict[str, Any]:
        load_end = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
        return {
            "cpu": {"model": self.name, "count": os.cpu_count(), "llc_bytes": self.llc, "llc_source": self.llc_source,
                    "rotation_buffer_bytes": 2 * self.llc},
            "clocks": {"cpu_mhz_start": self.mhz_start, "cpu_mhz_end": cpu_mhz()},
            "load_average": {"start": self.load_start, "end": load_end},
            "blas": _blas_info(),
            "timing": {"method": "time.perf_counter_ns around a batch of calls (calls_per_trial), per-call mean "
                                 "per trial; median, p10, p90 over trials",
                       "warmup_s": self.timing[0], "trial_budget_s": self.timing[1],
                       "operands": "rotated through buffers of twice the last-level cache (cold caches)"},
        }

    def close(self) -> None:
        self.inp.buf = self.out.buf = None


# --- CUDA path (torch, imported lazily) ----------------------------------------------------------


class _WallEvent:
    """A CUDA-event stand-in for torch on the CPU (self-tests only): a wall-clock stamp."""

    def __init__(self):
        self.t = 0

    def record(self) -> None:
        self.t = time.perf_counter_ns()

    def elapsed_time(self, end: _WallEvent) -> float:
        return (end.t - self.t) / 1e6  # milliseconds, as torch.cuda.Event.elapsed_time


class _GpuMonitor:
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
            notes[f"SM clocks not recorded: NVML failed ({_first_line(exc)})"] += 1
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


def _nvidia_smi(field: str) -> str | None:
    try:
        out = subprocess.run(["nvidia-smi", f"--query-gpu={field}", "--format=csv,noheader"], capture_output=True,
                             text=True, timeout=15)
        return out.stdout.strip().splitlines()[0].strip() if out.returncode == 0 and out.stdout.strip() else None
    except (OSError, subprocess.SubprocessError, IndexError):
        return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TorchBackend:
    """Kernels through torch. `device="cuda"` is the real path; `device="cpu"` runs the same code on
    torch's CPU kernels with wall-clock stand-ins for CUDA events (for self-tests without a GPU)."""

    kind = "cuda"
    TORCH_DTYPES = {"bf16": "bfloat16", "fp16": "float16", "fp32": "float32"}

    def __init__(self, opts: Options, notes: Counter, device: str = "cuda"):
        import torch

        self.torch, self.F = torch, torch.nn.functional
        self.opts, self.notes = opts, notes
        self.is_cuda = device == "cuda"
        self.timing = CUDA_TIMING[opts.quick]
        self.graph_calls = opts.cuda_graph if self.is_cuda else 0
        self._host: dict[bool, Any] = {}
        self._dev: dict[str, Any] = {}
        self._fp8: str | None | bool = None  # None: not probed; True: works; str: why not
        self._gqa_kwarg: bool | None = None
        if self.is_cuda:
            torch.cuda.set_device(0)
            self.dev = torch.device("cuda", 0)
            props = torch.cuda.get_device_properties(0)
            self.props = props
            self.name = props.name
            self.l2 = int(getattr(props, "L2_cache_size", 0) or 0) or 64 * S.MIB
            self.monitor: _GpuMonitor | None = _GpuMonitor(torch, notes)
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
            torch.backends.cudnn.allow_tf32 = False
        else:
            self.dev = torch.device("cpu")
            self.props = None
            self.name = f"{cpu_model_name()} (torch cpu)"
            self.l2 = llc_bytes()[0]
            self.monitor = None
        # the L2 flush: zeroing a buffer well beyond L2 (256 MiB, as Triton's do_bench) evicts every operand,
        # and takes long enough (~0.1 ms) that the CPU launches the next kernel before the GPU gets to it
        flush = max(2 * self.l2, 256 * S.MIB) if self.is_cuda else 2 * self.l2
        self.flush_buf = torch.empty(flush // 4, dtype=torch.int32, device=self.dev)
        self.flush_s = self._flush_time()
        info = self.monitor.info() if self.monitor is not None else {}
        self.clock_hz = float(info.get("max_sm_clock_mhz") or 1500) * 1e6

    # basic helpers
    def _sync(self) -> None:
        if self.is_cuda:
            self.torch.cuda.synchronize()

    def _event(self):
        return self.torch.cuda.Event(enable_timing=True) if self.is_cuda else _WallEvent()

    def _flush(self) -> None:
        self.flush_buf.zero_()

    def _flush_time(self) -> float:
        self._flush()
        self._sync()
        t0 = time.perf_counter()
        for _ in range(5):
            self._flush()
        self._sync()
        return (time.perf_counter() - t0) / 5

    def healthy(self) -> bool:
        """Whether the device still runs a kernel (a failed kernel can leave the CUDA context unusable)."""
        try:
            self.torch.ones(1, device=self.dev).add_(1)
            self._sync()
            return True
        except Exception:  # noqa: BLE001
            return False

    def _tdtype(self, dtype: str):
        return getattr(self.torch, self.TORCH_DTYPES[dtype])

    def _check_fits(self, nbytes: float) -> None:
        if not self.is_cuda:
            return
        torch = self.torch
        free, _ = torch.cuda.mem_get_info()
        reusable = torch.cuda.memory_reserved() - torch.cuda.memory_allocated()
        if nbytes > 0.8 * (free + reusable):
            raise Skip("operands do not fit in free GPU memory")

    def _sets(self, set_bytes: float) -> int:
        """Operand sets to rotate through in a CUDA graph: enough to span twice the L2."""
        if self.graph_calls < 2:
            return 1
        return int(min(self.graph_calls, max(1, math.ceil(2 * self.l2 / max(set_bytes, 1)))))

    # planning
    def world_sizes(self) -> list[int]:
        count = self.torch.cuda.device_count() if self.is_cuda else 2
        if self.opts.world_sizes is not None:
            too_many = [w for w in self.opts.world_sizes if w > count]
            if too_many:
                self.notes[f"collectives: world sizes {too_many} skipped ({count} GPUs visible)"] += 1
            return [w for w in self.opts.world_sizes if w <= count]
        return sorted({w for w in (2, 4, 8) if w <= count} | ({count} if count >= 2 else set()))

    def plan(self, opts: Options, models) -> list[tuple[str, str, Any]]:
        tasks: list[tuple[str, str, Any]] = []
        copy_dtype = next((d for d in opts.dtypes if d in ("bf16", "fp16", "fp32")), "bf16")
        for op in opts.ops:
            if op == "gemm":
                for dtype in opts.dtypes:
                    if dtype == "fp8":
                        why = self._fp8_support()
                        if why is not True:
                            self.notes[f"fp8 gemm skipped: {why}"] += 1
                            continue
                    tasks += [("gemm", dtype, s) for s in S.gemm_shapes(models, opts.quick)]
            elif op in ("attn_prefill", "attn_decode"):
                for dtype in opts.dtypes:
                    if dtype not in ("bf16", "fp16"):
                        self.notes[f"{op} {dtype} skipped: fused attention kernels take bf16/fp16 inputs"] += 1
                        continue
                    grid = S.attn_prefill_shapes if op == "attn_prefill" else S.attn_decode_shapes
                    tasks += [(op, dtype, s) for s in grid(models, opts.quick)]
            elif op == "memcpy":
                directions = ("h2d", "d2h", "d2d") if self.is_cuda else ("d2d",)
                tasks += [("memcpy", copy_dtype, s) for s in S.memcpy_shapes(directions, opts.quick)]
        wanted = [op for op in opts.ops if op in COLLECTIVES]
        if wanted:
            worlds = self.world_sizes()
            if not worlds:
                self.notes[f"{', '.join(wanted)} skipped: 1 GPU visible (collectives need at least 2)"] += 1
            else:
                tasks += [(c.op, copy_dtype, c) for c in S.collective_shapes(wanted, worlds, opts.quick)]
        return tasks

    def _fp8_support(self) -> str | bool:
        if self._fp8 is not None:
            return self._fp8
        torch = self.torch
        if not hasattr(torch, "_scaled_mm") or not hasattr(torch, "float8_e4m3fn"):
            self._fp8 = f"torch {torch.__version__} has no torch._scaled_mm / float8_e4m3fn"
        elif self.is_cuda and (self.props.major, self.props.minor) < (8, 9):
            self._fp8 = f"needs compute capability 8.9 or newer (this GPU is {self.props.major}.{self.props.minor})"
        else:
            try:
                fn = self._gemm_fns(S.Gemm(32, 32, 32, "probe"), "fp8", 1)[0]
                fn()
                self._sync()
                self._fp8 = True
            except Exception as exc:  # noqa: BLE001 - any failure means "not supported here"
                self._fp8 = f"torch._scaled_mm failed ({_first_line(exc)})"
        return self._fp8

    # timing
    def _time(self, fns: list[Callable[[], Any]], flush: bool = True, graph: bool = False) -> dict[str, Any]:
        warm_s, budget_s, lo, hi = self.timing
        n, t0 = 0, time.perf_counter()
        while True:
            fns[n % len(fns)]()
            n += 1
            self._sync()
            elapsed = time.perf_counter() - t0
            if elapsed >= warm_s and (n >= 2 or elapsed >= 0.5):
                break
        t_call = elapsed / n
        calls, div = fns, 1
        if graph and self.graph_calls >= 2:
            try:
                calls, div = [self._capture(fns, self.graph_calls).replay], self.graph_calls
            except Exception as exc:  # noqa: BLE001 - fall back to one call per trial
                self.notes[f"CUDA graph capture failed, timed eagerly instead ({_first_line(exc)})"] += 1
        trials = min(hi, max(lo, int(budget_s / (t_call * div + self.flush_s))))
        starts = [self._event() for _ in range(trials)]
        ends = [self._event() for _ in range(trials)]
        if self.is_cuda and hasattr(self.torch.cuda, "_sleep"):
            # hold the GPU while the CPU queues the trials, so that no trial waits for its launch
            self.torch.cuda._sleep(int(min(0.05, trials * 50e-6) * self.clock_hz))
        for i in range(trials):
            if flush:
                self._flush()
            starts[i].record()
            calls[i % len(calls)]()
            ends[i].record()
        clock = self.monitor.sample() if self.monitor is not None else None  # while the trials run
        self._sync()
        row = summarize([s.elapsed_time(e) * 1e3 / div for s, e in zip(starts, ends)])
        if div > 1:
            row["graph_calls"] = div
        if clock is not None:
            row["sm_clock_mhz"] = clock
        return row

    def _capture(self, fns: list[Callable[[], Any]], count: int):
        torch = self.torch
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for f in fns:
                f()
        torch.cuda.current_stream().wait_stream(side)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i in range(count):
                fns[i % len(fns)]()
        g.replay()
        self._sync()
        return g

    def measure(self, op: str, dtype: str, shape) -> dict[str, Any]:
        try:
            if op == "gemm":
                return self._time(self._gemm_fns(shape, dtype), graph=True)
            if op in ("attn_prefill", "attn_decode"):
                return self._attention(op, dtype, shape)
            if op == "memcpy":
                return self._memcpy(shape, dtype)
        except Skip:
            raise
        except Exception as exc:
            if "out of memory" in str(exc).lower():
                if self.is_cuda:
                    self.torch.cuda.empty_cache()
                raise Skip("out of GPU memory") from None
            raise
        raise ValueError(f"{op} is not measured one shape at a time")

    # GEMM
    def _gemm_fns(self, s: S.Gemm, dtype: str, sets: int | None = None) -> list[Callable[[], Any]]:
        torch = self.torch
        eb = 1 if dtype == "fp8" else {"bf16": 2, "fp16": 2, "fp32": 4}[dtype]
        set_bytes = (s.m * s.k + s.n * s.k) * eb + s.m * s.n * max(eb, 2)
        sets = self._sets(set_bytes) if sets is None else sets
        self._check_fits(sets * set_bytes + (s.m + s.n) * s.k * 2)
        fns = []
        for _ in range(sets):
            if dtype == "fp8":
                f8 = torch.float8_e4m3fn
                a = torch.randn(s.m, s.k, device=self.dev, dtype=torch.bfloat16).to(f8)
                w = torch.randn(s.n, s.k, device=self.dev, dtype=torch.bfloat16).to(f8)
                one = torch.ones((), device=self.dev, dtype=torch.float32)
                # mat2 column-major (k, n), as _scaled_mm requires; scales as keywords work on torch 2.1..2.x
                fns.append(partial(torch._scaled_mm, a, w.t(), scale_a=one, scale_b=one, out_dtype=torch.bfloat16))
            else:
                td = self._tdtype(dtype)
                a = torch.randn(s.m, s.k, device=self.dev, dtype=td)
                w = torch.randn(s.n, s.k, device=self.dev, dtype=td)
                c = torch.empty(s.m, s.n, device=self.dev, dtype=td)
                fns.append(partial(torch.mm, a, w.t(), out=c))
        return fns

    # attention
    def _sdpa_backends(self) -> list[tuple[str, Callable[[], Any]]]:
        torch = self.torch
        try:
            from torch.nn.attention import SDPBackend, sdpa_kernel

            names = (("flash", "FLASH_ATTENTION"), ("cudnn", "CUDNN_ATTENTION"), ("efficient", "EFFICIENT_ATTENTION"),
                     ("math", "MATH"))
            return [(label, partial(sdpa_kernel, [getattr(SDPBackend, attr)])) for label, attr in names
                    if hasattr(SDPBackend, attr)]
        except ImportError:  # torch < 2.3
            ctx = torch.backends.cuda.sdp_kernel
            return [("flash", partial(ctx, enable_flash=True, enable_math=False, enable_mem_efficient=False)),
                    ("efficient", partial(ctx, enable_flash=False, enable_math=False, enable_mem_efficient=True)),
                    ("math", partial(ctx, enable_flash=False, enable_math=True, enable_mem_efficient=False))]

    def _attention(self, op: str, dtype: str, s) -> dict[str, Any]:
        torch, F = self.torch, self.F
        decode = op == "attn_decode"
        b, hq, hkv, d = s.batch, s.heads, s.kv_heads, s.head_dim
        q_len, kv_len = (1, s.kv_len) if decode else (s.seq_len, s.kv_len)
        mask, causal = None, not decode
        if not decode and kv_len != q_len:
            try:
                from torch.nn.attention.bias import causal_lower_right
            except ImportError:
                raise Skip("chunked attn_prefill (kv_len > seq_len) needs torch.nn.attention.bias."
                           "causal_lower_right (torch 2.3+)") from None
            mask, causal = causal_lower_right(q_len, kv_len), False
        td, eb = self._tdtype(dtype), 2
        group = hq // hkv
        set_bytes = (2 * b * q_len * hq * d + 2 * b * kv_len * hkv * d) * eb
        sets = self._sets(set_bytes)
        self._check_fits(sets * set_bytes * (1 + (group > 1)))

        def tensors():
            # (batch, len, heads, dim) storage seen as (batch, heads, len, dim), as models lay it out
            q = torch.randn(b, q_len, hq, d, device=self.dev, dtype=td).transpose(1, 2)
            k = torch.randn(b, kv_len, hkv, d, device=self.dev, dtype=td).transpose(1, 2)
            v = torch.randn(b, kv_len, hkv, d, device=self.dev, dtype=td).transpose(1, 2)
            return q, k, v

        def make(qkv, ctx, gqa):
            q, k, v = qkv
            kw: dict[str, Any] = {}
            if gqa == "native":
                kw["enable_gqa"] = True
            elif gqa == "repeated":
                k, v = k.repeat_interleave(group, dim=1), v.repeat_interleave(group, dim=1)

            def call():
                with ctx():
                    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, is_causal=causal, **kw)
            return call

        base = tensors()
        scores = b * hq * q_len * kv_len * 4.0
        modes = ["native", "repeated"] if group > 1 else [""]
        if group > 1 and self._gqa_kwarg is False:
            modes = ["repeated"]
        chosen = None
        backends = self._sdpa_backends()
        fused = [x for x in backends if x[0] != "math"]
        math_b = [x for x in backends if x[0] == "math" and scores <= 2 * S.GIB]
        order = [(bk, m) for m in modes for bk in fused] + [(bk, m) for m in modes for bk in math_b]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            for (label, ctx), gqa in order:
                try:
                    make(base, ctx, gqa)()
                    self._sync()
                except TypeError:
                    if gqa == "native" and mask is None:  # this torch has no enable_gqa (before 2.5)
                        self._gqa_kwarg = False
                    continue
                except (RuntimeError, NotImplementedError, ValueError) as exc:
                    if "out of memory" in str(exc).lower():
                        raise
                    continue
                chosen = (label, ctx, gqa)
                break
        if chosen is None:
            raise Skip(f"{op}: no scaled_dot_product_attention backend takes this shape")
        label, ctx, gqa = chosen
        fns = [make(base, ctx, gqa)] + [make(tensors(), ctx, gqa) for _ in range(sets - 1)]
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            row = self._time(fns, graph=True)
        row["backend"] = label
        if gqa:
            row["gqa"] = gqa
        return row

    # copies
    def _buffer(self, store: dict, key, nbytes: int, make: Callable[[int], Any]):
        buf = store.get(key)
        if buf is None or buf.numel() < nbytes:
            store.pop(key, None)
            size = 1 << max(12, (nbytes - 1).bit_length())
            self._check_fits(size if key in ("a", "b") else 0)
            store[key] = buf = make(size)
        return buf[:nbytes]

    def _memcpy(self, s: S.Memcpy, dtype: str) -> dict[str, Any]:
        torch = self.torch
        u8 = torch.uint8

        def dev_buf(key):
            return self._buffer(self._dev, key, s.nbytes, lambda n: torch.zeros(n, dtype=u8, device=self.dev))

        if s.direction == "d2d":
            src, dst = dev_buf("a"), dev_buf("b")
            fns = [partial(dst.copy_, src)]
        else:
            if not self.is_cuda:
                raise Skip("host<->device copies need a GPU")
            pinned = bool(s.pinned)
            host = self._buffer(self._host, pinned, s.nbytes,
                                lambda n: torch.zeros(n, dtype=u8, pin_memory=pinned))
            gpu = dev_buf("a")
            src, dst = (host, gpu) if s.direction == "h2d" else (gpu, host)
            fns = [partial(dst.copy_, src, non_blocking=pinned)]
        row = self._time(fns, graph=False)
        if s.pinned is not None:
            row["pinned"] = bool(s.pinned)
        return row

    # collectives
    def run_collectives(self, tasks: list[tuple[str, str, Any]], advance: Callable[[int], None]) -> list[dict]:
        from torch import multiprocessing as mp

        from validation import measure as module  # the importable name, also when run as __main__

        if self.is_cuda:
            self.torch.cuda.empty_cache()
        rows: list[dict] = []
        by_world: dict[int, list[tuple[str, str, Any]]] = {}
        for t in tasks:
            by_world.setdefault(t[2].world_size, []).append(t)
        for world, group in by_world.items():
            dtype = group[0][1]
            limit_s = 120 + 90 * len({t[0] for t in group})
            with tempfile.TemporaryDirectory(prefix="measure-coll-") as tmp:
                result = Path(tmp) / "rows.json"
                cfg = {"device": "cuda" if self.is_cuda else "cpu", "backend": "nccl" if self.is_cuda else "gloo",
                       "world": world, "port": _free_port(), "dtype": dtype, "quick": self.opts.quick,
                       "work": [(t[0], t[2].nbytes) for t in group], "result": str(result), "timeout_s": limit_s}
                ctx = mp.start_processes(module._collective_worker, args=(cfg,), nprocs=world, join=False,
                                         start_method="spawn")
                t0, failed = time.monotonic(), False
                try:
                    while not ctx.join(timeout=2):
                        if time.monotonic() - t0 > limit_s:
                            for p in ctx.processes:
                                if p.is_alive():
                                    p.terminate()
                            self.notes[f"collectives over {world} GPUs stopped after {limit_s} s (hung?); "
                                       "kept the sizes finished before"] += 1
                            failed = True
                            break
                except Exception as exc:  # noqa: BLE001 - a failed world size is a note, not the end of the run
                    self.notes[f"collectives over {world} GPUs failed ({_first_line(exc)})"] += 1
                    failed = True
                got = json.loads(result.read_text()) if result.exists() else []
                for r in got:
                    rows.append({"op": r.pop("op"), "dtype": dtype, "bytes": r.pop("bytes"), "world_size": world, **r})
                missing = len(group) - len(got)
                if missing and not failed:
                    self.notes[f"collectives over {world} GPUs: {missing} of {len(group)} sizes not measured"] += 1
            advance(len(group))
        return rows

    def meta(self) -> dict[str, Any]:
        torch = self.torch
        info: dict[str, Any] = {"torch": torch.__version__}
        if self.is_cuda:
            p = self.props
            info["cuda"] = torch.version.cuda
            try:
                info["cudnn"] = torch.backends.cudnn.version()
            except Exception:  # noqa: BLE001
                pass
            try:
                info["nccl"] = ".".join(map(str, torch.cuda.nccl.version()))
            except Exception:  # noqa: BLE001
                pass
            gpu = {"name": p.name, "capability": f"{p.major}.{p.minor}", "memory_bytes": int(p.total_memory),
                   "sm_count": int(p.multi_processor_count), "l2_bytes": self.l2, "count": torch.cuda.device_count()}
            nv = self.monitor.info() if self.monitor else {}
            gpu.update({k: v for k, v in nv.items() if v is not None and k != "driver"})
            info["driver"] = nv.get("driver") or _nvidia_smi("driver_version")
            clocks = self.monitor.summary() if self.monitor else {}
            if not clocks:
                smi = _nvidia_smi("clocks.sm,clocks.max.sm")
                clocks = {"nvidia_smi_sm_clock_now_max": smi} if smi else {}
            info["gpu"] = gpu
            info["clocks"] = clocks
        info["timing"] = {
            "method": "CUDA events on the current stream around each call (or each graph replay / graph_calls); "
                      "median, p10, p90 over trials",
            "warmup_s": self.timing[0], "trial_budget_s": self.timing[1], "flush_bytes": int(self.flush_buf.numel() * 4),
            "flush": "the flush buffer is zeroed before every trial (larger than L2)", "cuda_graph_calls": self.graph_calls,
            "tf32": False}
        return info

    def close(self) -> None:
        self._host.clear()
        self._dev.clear()


def _collective_worker(rank: int, cfg: dict) -> None:
    """One rank of a collectives run (spawned by TorchBackend.run_collectives); rank 0 writes the rows."""
    import torch
    import torch.distributed as dist

    world, cuda = cfg["world"], cfg["device"] == "cuda"
    if cuda:
        torch.cuda.set_device(rank)
        dev = torch.device("cuda", rank)
    else:
        dev = torch.device("cpu")
    dist.init_process_group(cfg["backend"], init_method=f"tcp://127.0.0.1:{cfg['port']}", rank=rank,
                            world_size=world, timeout=_dt.timedelta(seconds=cfg["timeout_s"]))
    td = getattr(torch, TorchBackend.TORCH_DTYPES[cfg["dtype"]])
    eb = torch.tensor([], dtype=td).element_size()
    warm, target_s, trials = (3, 2e-3, 5) if cfg["quick"] else (10, 5e-3, 15)

    def sync():
        if cuda:
            torch.cuda.synchronize()

    def event():
        return torch.cuda.Event(enable_timing=True) if cuda else _WallEvent()

    def agree(values: list[float]) -> list[float]:  # the slowest rank's value, on every rank
        t = torch.tensor(values, dtype=torch.float64, device=dev)
        dist.all_reduce(t, op=dist.ReduceOp.MAX)
        return t.tolist()

    rows = []
    try:
        for op, nbytes in cfg["work"]:
            n = nbytes // eb // world * world  # whole elements, divisible over the ranks
            nbytes = n * eb
            if op == "allreduce":
                x = torch.zeros(n, dtype=td, device=dev)
                fn = partial(dist.all_reduce, x)
            elif op == "allgather":  # bytes: the gathered result on each device
                out, inp = torch.zeros(n, dtype=td, device=dev), torch.zeros(n // world, dtype=td, device=dev)
                gather = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor  # renamed in 2.13
                fn = partial(gather, out, inp)
            elif op == "reducescatter":  # bytes: the full input on each device
                out, inp = torch.zeros(n // world, dtype=td, device=dev), torch.zeros(n, dtype=td, device=dev)
                scatter = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
                fn = partial(scatter, out, inp)
            else:  # alltoall, bytes: each device's send buffer
                out, inp = torch.zeros(n, dtype=td, device=dev), torch.zeros(n, dtype=td, device=dev)
                fn = partial(dist.all_to_all_single, out, inp)
            for _ in range(warm):
                fn()
            sync()
            start, end = event(), event()
            start.record()
            for _ in range(3):
                fn()
            end.record()
            sync()
            t_est = agree([start.elapsed_time(end) / 3 * 1e-3])[0]
            iters = int(min(100, max(1, math.ceil(target_s / max(t_est, 1e-7)))))
            samples = []
            for _ in range(trials):
                agree([0.0])  # line the ranks up
                sync()
                start, end = event(), event()
                start.record()
                for _ in range(iters):
                    fn()
                end.record()
                sync()
                samples.append(start.elapsed_time(end) * 1e3 / iters)
            samples = agree(samples)
            if rank == 0:
                rows.append({"op": op, "bytes": nbytes, **summarize(samples), "calls_per_trial": iters})
                tmp = Path(cfg["result"] + ".tmp")
                tmp.write_text(json.dumps(rows))
                os.replace(tmp, cfg["result"])  # what is finished survives a later hang
    finally:
        dist.destroy_process_group()


# --- output --------------------------------------------------------------------------------------


def meta_path(out: Path) -> Path:
    return out.with_name((out.stem if out.suffix.lower() == ".csv" else out.name) + ".meta.yaml")


def _atomic_write(path: Path, write: Callable[[Any], None]) -> None:
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
    _atomic_write(path, write)


def _plain(obj: Any) -> Any:
    """Plain YAML types only (torch's version is a str subclass, NVML returns ctypes-ish values)."""
    if isinstance(obj, dict):
        return {str(k): _plain(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple, set)):
        return [_plain(v) for v in obj]
    if obj is None or type(obj) in (bool, int, float, str):
        return obj
    if isinstance(obj, (bool, np.bool_)):
        return bool(obj)
    if isinstance(obj, (int, np.integer)):
        return int(obj)
    if isinstance(obj, (float, np.floating)):
        return float(obj)
    return str(obj)


def _versions() -> dict[str, Any]:
    return {"python": platform.python_version(), "numpy": np.__version__, "simulator": __version__,
            "platform": platform.platform()}


# --- main ----------------------------------------------------------------------------------------


def _backend(opts: Options, notes: Counter):
    if opts.device == "cpu":
        return CpuBackend(opts, notes)
    if importlib.util.find_spec("torch") is None:
        raise UsageError(CUDA_NEEDS_TORCH)
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is bad input too
        raise UsageError(f"{CUDA_NEEDS_TORCH}; import torch failed: {_first_line(exc)}") from None
    if not torch.cuda.is_available():
        raise UsageError(f"{CUDA_NEEDS_TORCH}; torch {torch.__version__} sees no CUDA GPU")
    return TorchBackend(opts, notes, "cuda")


def _progress():
    from rich.console import Console
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    console = Console(stderr=True)
    return Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                    TimeRemainingColumn(), console=console, disable=not console.is_terminal), console


def _describe(op: str, dtype: str, shape) -> str:
    params = " ".join(f"{k}={v}" for k, v in shape.params().items())
    return f"{op} {dtype} {params}"[:70]


def run(opts: Options, argv: Sequence[str]) -> int:
    from simulator.models.config import load_model

    started = time.monotonic()
    date = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
    notes: Counter = Counter()
    backend = _backend(opts, notes)
    models = {name: load_model(name) for name in opts.models}
    tasks = backend.plan(opts, models)
    if not tasks:
        raise UsageError(f"nothing to measure: {', '.join(opts.ops)} on --device {opts.device} "
                         f"({'; '.join(notes) or 'no shapes'})")
    if backend.kind == "cpu" and backend.load_start is not None and backend.load_start > 0.5 * (os.cpu_count() or 1):
        print(f"warning: load average {backend.load_start:.1f} on {os.cpu_count()} CPUs: other work is running, "
              "CPU timings will be noisy", file=sys.stderr)
    collective = [t for t in tasks if t[0] in COLLECTIVES]
    single = [t for t in tasks if t[0] not in COLLECTIVES]
    rows: list[dict] = []
    interrupted, stopped, failures_in_a_row = False, False, 0
    progress, console = _progress()
    try:
        with progress:
            bar = progress.add_task("measuring", total=len(tasks))
            for op, dtype, shape in single:
                progress.update(bar, description=_describe(op, dtype, shape))
                try:
                    row = backend.measure(op, dtype, shape)
                    failures_in_a_row = 0
                except Skip as exc:
                    notes[str(exc)] += 1
                    row = None
                except Exception as exc:  # noqa: BLE001 - torch/driver errors on one shape: note, go on
                    if backend.kind == "cpu":
                        raise
                    notes[f"{op} {dtype}: {_first_line(exc)}"] += 1
                    row, failures_in_a_row = None, failures_in_a_row + 1
                    if not backend.healthy():
                        notes["stopped: the GPU no longer runs kernels after that error; kept what was measured"] += 1
                        stopped = True
                        break
                    if failures_in_a_row >= 50:
                        notes["stopped after 50 failed shapes in a row"] += 1
                        stopped = True
                        break
                if row is not None:
                    rows.append({"op": op, "dtype": dtype, **shape.params(), **row,
                                 **({"shape_from": shape.label} if hasattr(shape, "label") else {})})
                progress.advance(bar)
            if collective and not stopped:
                progress.update(bar, description=f"collectives ({len(collective)} sizes)")
                rows += backend.run_collectives(collective, lambda n: progress.advance(bar, n))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            backend_meta = backend.meta()
            backend.close()
        except Exception as exc:  # noqa: BLE001 - the rows measured so far still get written
            backend_meta = {}
            notes[f"device details not recorded ({_first_line(exc)})"] += 1
    rows = [r for r in rows if math.isfinite(r["time_us"]) and r["time_us"] > 0]
    if not rows:
        print("error: no kernel could be measured" + ("" if not notes else f" ({'; '.join(notes)})"), file=sys.stderr)
        return 130 if interrupted else 1
    source = f"validation.measure {__version__} on {socket.gethostname()}"
    for r in rows:
        r["device"], r["source"] = backend.name, source
    clocks = backend_meta.get("clocks", {})
    throttled = _throttle_warning(clocks)
    meta = {
        "schema": META_SCHEMA,
        "device": backend.name,
        "device_kind": opts.device,
        "host": socket.gethostname(),
        "date": date,
        "command": "python -m validation.measure " + shlex.join(list(argv)),
        "quick": opts.quick,
        "ops": opts.ops,
        "dtypes": opts.dtypes,
        "models": opts.models,
        "rows": dict(Counter(r["op"] for r in rows)),
        "duration_s": round(time.monotonic() - started, 1),
        "interrupted": interrupted,
        "versions": {**_versions(), **{k: backend_meta.pop(k) for k in ("torch", "cuda", "cudnn", "nccl", "driver")
                                        if k in backend_meta}},
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model_name(),
        **backend_meta,
        "throttle_warning": throttled,
        "notes": [f"{msg} ({n} shapes)" if n > 1 else msg for msg, n in notes.items()],
    }
    meta_text = yaml.safe_dump(_plain(meta), sort_keys=False, width=120)
    write_csv(opts.out, rows)
    _atomic_write(meta_path(opts.out), lambda f: f.write(meta_text))
    for msg in meta["notes"][:20]:
        print(f"note: {msg}", file=sys.stderr)
    if len(meta["notes"]) > 20:
        print(f"note: ... {len(meta['notes']) - 20} more in {meta_path(opts.out)}", file=sys.stderr)
    if throttled:
        print(f"warning: {throttled}", file=sys.stderr)
    counts = ", ".join(f"{op} {n}" for op, n in meta["rows"].items())
    state = "interrupted; " if interrupted else ""
    print(f"{state}wrote {len(rows)} rows ({counts}) to {opts.out} and {meta_path(opts.out).name} "
          f"in {meta['duration_s']} s", file=sys.stderr)
    return 130 if interrupted else 0


def _throttle_warning(clocks: dict) -> str | None:
    sm = clocks.get("sm_clock_mhz")
    reasons = {k: v for k, v in (clocks.get("throttle_reasons_seen") or {}).items() if v}
    parts = []
    if sm and sm["max"] > 0 and sm["min"] < 0.9 * sm["median"]:
        parts.append(f"SM clock varied {sm['min']:.0f}..{sm['max']:.0f} MHz (median {sm['median']:.0f})")
    if reasons:
        parts.append("clock limits seen: " + ", ".join(f"{k} x{v}" for k, v in sorted(reasons.items())))
    return "; ".join(parts) + " - the GPU may have throttled; check cooling/power or lock clocks" if parts else None


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    try:
        opts = parse_args(argv)
        return run(opts, argv)
    except UsageError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
