"""Where a plan's points are simulated: local worker processes, or a Ray cluster.

Points are independent simulations, so any pool of workers will do. Both executors have
one small interface: `submit(task)` returns a `concurrent.futures.Future` of the point's
metrics, and the planner waits on those futures, whichever executor made them. The
workload is handed to every worker once (a process initializer, a Ray object), not with
each task. Results do not depend on the executor or the number of workers: every point is
a deterministic function of its task.

Ray is optional (`pip install 'simulator[cluster]'`) and imported only by `RayExecutor`.
"""
from __future__ import annotations

import importlib.util
import logging
import multiprocessing
import os
from concurrent.futures import Future, ProcessPoolExecutor
from typing import Any

from ..errors import InputError
from .point import PointTask, evaluate
from .workload import Workload

EXECUTORS = ("local", "ray")


class Executor:
    """Runs point tasks; `close` stops the workers (and cancels what has not started)."""

    def submit(self, task: PointTask) -> Future[dict[str, Any]]:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError


_workload: Workload | None = None  # the workload of this worker process (LocalExecutor)


def _install(workload: Workload) -> None:
    global _workload
    _workload = workload


def _evaluate_installed(task: PointTask) -> dict[str, Any]:
    assert _workload is not None, "worker started without its workload"
    return evaluate(task, _workload)


class LocalExecutor(Executor):
    """Worker processes on this machine (default: one per CPU). They are started by a fork
    server, not forked from the planner, which may be running threads (the progress bar)."""

    def __init__(self, workload: Workload, workers: int | None = None):
        context = multiprocessing.get_context("forkserver")
        self.pool = ProcessPoolExecutor(workers or os.cpu_count() or 1, mp_context=context, initializer=_install,
                                        initargs=(workload,))

    def submit(self, task: PointTask) -> Future[dict[str, Any]]:
        return self.pool.submit(_evaluate_installed, task)

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def ray_init_args(address: str | None, workers: int | None, quiet: bool) -> dict[str, Any]:
    """What `RayExecutor` passes to `ray.init`: no dashboard, the workers' output kept in
    Ray's log files rather than copied to this terminal, and the driver's "ray" logger at
    WARNING, or at ERROR when `quiet` (Ray's start-up notes, such as the one on token
    authentication, are warnings; its errors still reach stderr)."""
    return {"address": address, "num_cpus": workers if address is None else None, "include_dashboard": False,
            "log_to_driver": False, "configure_logging": True,
            "logging_level": logging.ERROR if quiet else logging.WARNING}


class RayExecutor(Executor):
    """Ray tasks, one CPU each, on the cluster at `address` (`ray.init(address=...)`; None
    starts a local Ray with `workers` CPUs, or joins the Ray this process already runs).
    The cluster's nodes need this project installed, as they import `simulator`. `quiet`:
    nothing from Ray but its errors (`ray_init_args`)."""

    def __init__(self, workload: Workload, workers: int | None = None, address: str | None = None,
                 quiet: bool = False):
        import ray

        self.ray = ray
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(**ray_init_args(address, workers, quiet))
        self.workload = ray.put(workload)
        self.remote = ray.remote(num_cpus=1)(evaluate)

    def submit(self, task: PointTask) -> Future[dict[str, Any]]:
        return self.remote.remote(task, self.workload).future()

    def close(self) -> None:
        if self.owned:
            self.ray.shutdown()


def check_executor(kind: str, address: str | None) -> None:
    """Fail before any work when the executor cannot be made (executors start lazily)."""
    if kind not in EXECUTORS:
        raise InputError(f"--executor {kind}: unknown (known: {', '.join(EXECUTORS)})")
    if kind != "ray" and address is not None:
        raise InputError("--ray-address: only with --executor ray")
    if kind == "ray" and importlib.util.find_spec("ray") is None:
        raise InputError("--executor ray: Ray is not installed; pip install 'simulator[cluster]' "
                         "(or use --executor local)")


def make_executor(kind: str, workload: Workload, workers: int | None = None,
                  address: str | None = None, quiet: bool = False) -> Executor:
    """A checked (`check_executor`) kind of executor, started (`quiet`: see `RayExecutor`)."""
    return RayExecutor(workload, workers, address, quiet) if kind == "ray" else LocalExecutor(workload, workers)
