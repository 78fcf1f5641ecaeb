"""Collectives (allreduce, allgather, reducescatter, alltoall) timed over 2..N GPUs, one process per GPU.

torch.distributed wants one process per rank, so each world size gets its own spawned group
(NCCL on GPUs, gloo for torch's CPU self-test path) running collective_worker; rank 0 writes the
rows it finished to a JSON file after each size, so that a group that hangs is killed after a
time limit without losing what it measured, and the run goes on with a note. Each size is
timed in batches of calls long enough for the clock; every rank takes the slowest rank's time,
as a model waits for the slowest GPU.
"""
from __future__ import annotations

import datetime as _dt
import json
import math
import os
import socket
import tempfile
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path
from typing import Any

from validation.measuring.failures import first_line
from validation.measuring.summary import summarize
from validation.measuring.torch_backend import TorchBackend
from validation.measuring.torch_timing import WallEvent


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_collectives(backend: TorchBackend, tasks: list[tuple[str, str, Any]],
                    advance: Callable[[int], None]) -> list[dict]:
    """Time the collective tasks of TorchBackend.plan, one spawned group of processes per world size;
    a group that fails or hangs leaves a note and the sizes it finished."""
    from torch import multiprocessing as mp

    if backend.is_cuda:
        backend.torch.cuda.empty_cache()
    rows: list[dict] = []
    by_world: dict[int, list[tuple[str, str, Any]]] = {}
    for t in tasks:
        by_world.setdefault(t[2].world_size, []).append(t)
    for world, group in by_world.items():
        dtype = group[0][1]
        limit_s = 120 + 90 * len({t[0] for t in group})
        with tempfile.TemporaryDirectory(prefix="measure-coll-") as tmp:
            result = Path(tmp) / "rows.json"
            cfg = {"device": "cuda" if backend.is_cuda else "cpu", "backend": "nccl" if backend.is_cuda else "gloo",
                   "world": world, "port": _free_port(), "dtype": dtype, "quick": backend.opts.quick,
                   "work": [(t[0], t[2].nbytes) for t in group], "result": str(result), "timeout_s": limit_s}
            ctx = mp.start_processes(collective_worker, args=(cfg,), nprocs=world, join=False, start_method="spawn")
            t0, failed = time.monotonic(), False
            try:
                while not ctx.join(timeout=2):
                    if time.monotonic() - t0 > limit_s:
                        for p in ctx.processes:
                            if p.is_alive():
                                p.terminate()
                        backend.notes[f"collectives over {world} GPUs stopped after {limit_s} s (hung?); "
                                      "kept the sizes finished before"] += 1
                        failed = True
                        break
            except Exception as exc:  # noqa: BLE001 - a failed world size is a note, not the end of the run
                backend.notes[f"collectives over {world} GPUs failed ({first_line(exc)})"] += 1
                failed = True
            got = json.loads(result.read_text()) if result.exists() else []
            for r in got:
                rows.append({"op": r.pop("op"), "dtype": dtype, "bytes": r.pop("bytes"), "world_size": world, **r})
            missing = len(group) - len(got)
            if missing and not failed:
                backend.notes[f"collectives over {world} GPUs: {missing} of {len(group)} sizes not measured"] += 1
        advance(len(group))
    return rows


def collective_worker(rank: int, cfg: dict) -> None:
    """One rank of a collectives run (spawned by run_collectives); rank 0 writes the rows."""
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
        return torch.cuda.Event(enable_timing=True) if cuda else WallEvent()

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
