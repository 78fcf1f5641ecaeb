"""How the torch path times one kernel: the device it runs on, and CUDA events around flushed trials.

TorchTimer picks the device (GPU 0, or torch's CPU for self-tests), turns TF32 off so that fp32
rows are true fp32, and times a list of calls: a time-based warm-up, an L2 flush (a buffer
larger than L2 is zeroed) before every trial, CUDA events on the kernel's stream around each
call or, with `--cuda-graph N`, around one replay of N calls captured in a CUDA graph with
rotating operands (per-call time = replay / N); median with p10/p90, and the SM clock read while
the trials run (`validation.measuring.gpu_monitor`). What is timed, the kernels and their
operands, is TorchBackend's (`validation.measuring.torch_backend`), built on this class.

On torch's CPU (`--device cpu --cpu-kernels torch`), WallEvent stands in for CUDA events: each
call is timed by the wall clock after the flush of twice the last-level cache, with the CPU
path's warm-up and trial budget (validation.measuring.cpu_backend.CPU_TIMING).
"""
from __future__ import annotations

import math
import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

from validation import shapes as S
from validation.measuring.cli import Options
from validation.measuring.cpu_backend import CPU_TIMING
from validation.measuring.failures import first_line
from validation.measuring.gpu_monitor import GpuMonitor
from validation.measuring.host import cpu_mhz, cpu_model_name, llc_bytes
from validation.measuring.summary import summarize

# (warm-up seconds, trial budget seconds per shape, min trials, max trials)
CUDA_TIMING = {False: (0.025, 0.1, 10, 200), True: (0.01, 0.02, 5, 30)}


class WallEvent:
    """A CUDA-event stand-in for torch on the CPU: a wall-clock stamp."""

    def __init__(self):
        self.t = 0

    def record(self) -> None:
        self.t = time.perf_counter_ns()

    def elapsed_time(self, end: WallEvent) -> float:
        return (end.t - self.t) / 1e6  # milliseconds, as torch.cuda.Event.elapsed_time


class TorchTimer:
    """The device and the timing of calls on it: GPU 0 (`device="cuda"`), or the host CPU
    (`device="cpu"`), the same code with wall-clock stand-ins for CUDA events."""

    def __init__(self, opts: Options, notes: Counter, device: str = "cuda"):
        import torch

        self.torch = torch
        self.opts, self.notes = opts, notes
        self.is_cuda = device == "cuda"
        self.kind = "cuda" if self.is_cuda else "cpu"
        self.timing = (CUDA_TIMING if self.is_cuda else CPU_TIMING)[opts.quick]
        self.graph_calls = opts.cuda_graph if self.is_cuda else 0
        if self.is_cuda:
            torch.cuda.set_device(0)
            self.dev = torch.device("cuda", 0)
            props = torch.cuda.get_device_properties(0)
            self.props = props
            self.name = props.name
            self.l2 = int(getattr(props, "L2_cache_size", 0) or 0) or 64 * S.MIB
            self.monitor: GpuMonitor | None = GpuMonitor(torch, notes)
            torch.backends.cuda.matmul.allow_tf32 = False  # fp32 rows are true fp32
            torch.backends.cudnn.allow_tf32 = False
        else:
            self.dev = torch.device("cpu")
            self.props = None
            self.name = cpu_model_name()
            self.l2, self.llc_source = llc_bytes()  # the last-level cache, flushed before every trial
            self.monitor = None
            self.load_start = os.getloadavg()[0] if hasattr(os, "getloadavg") else None
            self.mhz_start = cpu_mhz()
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
        return self.torch.cuda.Event(enable_timing=True) if self.is_cuda else WallEvent()

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

    def _sets(self, set_bytes: float) -> int:
        """Operand sets to rotate through in a CUDA graph: enough to span twice the L2."""
        if self.graph_calls < 2:
            return 1
        return int(min(self.graph_calls, max(1, math.ceil(2 * self.l2 / max(set_bytes, 1)))))

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
                self.notes[f"CUDA graph capture failed, timed eagerly instead ({first_line(exc)})"] += 1
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
