"""The CPU path of the measuring harness: numpy kernels timed with perf_counter_ns.

GEMMs are numpy matmul in fp32 (numpy has no fast bf16/fp16/fp8 matmul, so those are measured as
fp32 and recorded as fp32); the `d2d` memcpy is a numpy copy of a buffer (host memory bandwidth);
other ops are skipped with a note. After a time-based warm-up, calls are timed in batches long
enough for the clock (calls_per_trial), median over trials. Operands are views into buffers of
twice the last-level cache, handed out in turn, so that no call finds its operands in cache, as
a kernel inside a model would not. Needs numpy only, so the harness runs on any machine.
"""
from __future__ import annotations

import os
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from validation import shapes as S
from validation.measuring.cli import Options
from validation.measuring.failures import Skip
from validation.measuring.host import blas_info, cpu_mhz, cpu_model_name, llc_bytes, mem_available
from validation.measuring.summary import summarize

# (warm-up seconds, trial budget seconds per shape, min trials, max trials)
CPU_TIMING = {False: (0.05, 0.3, 7, 50), True: (0.005, 0.03, 5, 9)}
CPU_SAMPLE_S = {False: 2e-3, True: 5e-4}  # batch small calls so one timed sample lasts this long
VIEW_CAP = 20_000  # at most this many distinct operand sets per CPU shape


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
            "blas": blas_info(),
            "timing": {"method": "time.perf_counter_ns around a batch of calls (calls_per_trial), per-call mean "
                                 "per trial; median, p10, p90 over trials",
                       "warmup_s": self.timing[0], "trial_budget_s": self.timing[1],
                       "operands": "rotated through buffers of twice the last-level cache (cold caches)"},
        }

    def close(self) -> None:
        self.inp.buf = self.out.buf = None
