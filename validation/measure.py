"""Time kernels on a real GPU or CPU and write them as a measurement CSV (docs/contracts.md, section 6).

    python -m validation.measure --device cuda --out h100.csv
    python -m validation.measure --device cpu --quick --out cpu.csv     # torch if installed, else numpy
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

CPU paths (`--cpu-kernels`): torch where it is installed, the kernels vLLM's CPU backend runs
through (oneDNN/MKL): GEMMs `torch.mm` in bf16 (the default) or fp16/fp32, attention
`scaled_dot_product_attention` (its CPU flash kernel), and a `d2d` copy (host memory
bandwidth); each call timed with perf_counter_ns after the last-level cache was flushed. Or
numpy: matmul in fp32 only (numpy has no fast bf16/fp16/fp8 matmul, so those are measured and
recorded as fp32) and a numpy copy as `d2d`, operands rotated through buffers twice the
last-level cache. Both: a time-based warm-up, median over trials.

The pieces live in `validation/measuring/`: `cli` (the flags and their checks), `cpu_backend`
(numpy), `torch_timing` and `torch_backend` (torch on a GPU or a CPU: how a kernel is timed, and which
kernels),
`collectives` (NCCL over spawned processes), `gpu_monitor` (clocks through NVML), `host` (CPU
facts), `summary` (median, p10, p90), `failures` (skipped shapes, one-line errors) and `output`
(the CSV and its metadata); `validation/shapes.py` says what is timed. This module is the run:
it picks the backend, times each planned shape with a progress bar, and writes what it got.
"""
from __future__ import annotations

import datetime as _dt
import importlib.util
import math
import os
import shlex
import socket
import sys
import time
from collections import Counter
from collections.abc import Sequence

import yaml

from simulator import __version__
from validation.measuring.cli import COLLECTIVES, CPU_TORCH_NEEDED, Options, UsageError, parse_args
from validation.measuring.collectives import run_collectives
from validation.measuring.cpu_backend import CpuBackend
from validation.measuring.failures import Skip, first_line
from validation.measuring.host import cpu_model_name
from validation.measuring.output import META_SCHEMA, atomic_write, meta_path, plain, versions, write_csv
from validation.measuring.torch_backend import TorchBackend

CUDA_NEEDS_TORCH = "--device cuda needs torch with a CUDA GPU (pip install -e '.[gpu]')"


def _backend(opts: Options, notes: Counter):
    if opts.device == "cpu" and opts.cpu_kernels == "numpy":
        return CpuBackend(opts, notes)
    needs = CPU_TORCH_NEEDED if opts.device == "cpu" else CUDA_NEEDS_TORCH
    if importlib.util.find_spec("torch") is None:
        raise UsageError(needs)
    try:
        import torch
    except Exception as exc:  # noqa: BLE001 - a broken torch install is bad input too
        raise UsageError(f"{needs}; import torch failed: {first_line(exc)}") from None
    if opts.device == "cpu":
        return TorchBackend(opts, notes, "cpu")
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
                    notes[f"{op} {dtype}: {first_line(exc)}"] += 1
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
                rows += run_collectives(backend, collective, lambda n: progress.advance(bar, n))
    except KeyboardInterrupt:
        interrupted = True
    finally:
        try:
            backend_meta = backend.meta()
            backend.close()
        except Exception as exc:  # noqa: BLE001 - the rows measured so far still get written
            backend_meta = {}
            notes[f"device details not recorded ({first_line(exc)})"] += 1
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
        "versions": {**versions(), **{k: backend_meta.pop(k) for k in ("torch", "cuda", "cudnn", "nccl", "driver")
                                        if k in backend_meta}},
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model_name(),
        **backend_meta,
        "throttle_warning": throttled,
        "notes": [f"{msg} ({n} shapes)" if n > 1 else msg for msg, n in notes.items()],
    }
    meta_text = yaml.safe_dump(plain(meta), sort_keys=False, width=120)
    write_csv(opts.out, rows)
    atomic_write(meta_path(opts.out), lambda f: f.write(meta_text))
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
