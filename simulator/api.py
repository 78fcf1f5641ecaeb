"""The Python API: `simulate(hardware, trace, ...)` runs one simulation end to end.

Everything is loaded and validated first (hardware, model, deployment, memory plan, the
whole trace), so bad input fails before the first event and before any output exists.
Outputs are written into a temporary sibling directory and moved into place at the end.
"""
from __future__ import annotations

import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import simpy

from .deployment import Deployment, build_deployment
from .engine.replica import Replica
from .engine.request import Request
from .engine.router import ROUTERS
from .errors import InputError
from .hardware.loader import System, load_system
from .metrics.recorder import Recorder
from .metrics.summary import build_summary
from .models.config import ModelConfig, load_model
from .perf.calibration import Calibration, resolve_calibration
from .perf.cost_model import CostModel
from .perf.memory_plan import MemoryPlan, plan_memory
from .schedulers.base import get_scheduler
from .workloads.trace import TraceIndex

if TYPE_CHECKING:  # pandas is imported only when frames are asked for (start-up time)
    import pandas as pd


@dataclass
class Setup:
    """A validated deployment of a model on hardware, ready to simulate."""

    system: System
    model: ModelConfig
    deployment: Deployment
    plan: MemoryPlan
    cost: CostModel
    calibration: Calibration | None = None

    @property
    def devices(self) -> int:
        return self.deployment.devices_per_replica * self.deployment.replicas


def prepare(hardware: str | Path, model: str | None = None, scheduler: str | None = None, tp: int | None = None,
            pp: int | None = None, replicas: int | None = None, knobs: dict[str, Any] | None = None,
            calibration: str | None = None) -> Setup:
    """Load and validate everything a run needs. `calibration` is a profile path, "none" for
    the uncalibrated roofline, or None for the profile the hardware spec names (if any)."""
    system = load_system(hardware)
    flags = {"model": model, "scheduler": scheduler, "tp": tp, "pp": pp, "replicas": replicas}
    dep = build_deployment(system.deployment, flags, knobs or {})
    model_cfg = load_model(dep.model)
    get_scheduler(dep.scheduler)
    if model_cfg.num_heads % dep.tp:
        raise InputError(f"--tp {dep.tp}: must divide {model_cfg.name}'s {model_cfg.num_heads} attention heads")
    needed = dep.devices_per_replica * dep.replicas
    system = system.sized_for(needed)
    if needed > system.total_devices:
        raise InputError(
            f"{system.source_file}: {system.name} has {system.total_devices} devices but tp={dep.tp} x "
            f"pp={dep.pp} x replicas={dep.replicas} needs {needed}; lower them or add nodes"
        )
    if dep.devices_per_replica > 1 and system.fabric is None and system.network is None:
        raise InputError(f"{system.source_file}: links: {system.name} has no link for tp/pp; add nvlink or pcie")
    if dep.router not in ROUTERS:
        raise InputError(f"router: {dep.router!r} unknown (known: {', '.join(ROUTERS)})")
    # vLLM profiles activations with a forward pass of max_num_batched_tokens tokens, whose
    # default without chunked prefill is room for the longest prompt
    longest = dep.max_model_len or model_cfg.max_position_embeddings
    batched = dep.max_num_batched_tokens or (2048 if dep.enable_chunked_prefill else max(longest, 2048))
    plan = plan_memory(system.accelerator, model_cfg, dep, batched)
    calib = resolve_calibration(system, calibration)
    return Setup(system, model_cfg, dep, plan, CostModel(system, model_cfg, dep, calib), calib)


@dataclass
class Result:
    summary: dict[str, Any]
    requests: pd.DataFrame | None
    iterations: pd.DataFrame | None
    out_dir: Path | None


class Arrivals:
    """The SimPy process that feeds the trace to the router, one arrival at a time.

    `next_s` is the arrival time of the next request not yet submitted (inf at the end):
    replicas may run ahead with unchanged decode batches until then.
    """

    def __init__(self, records):
        self.records = records
        self.next_s = 0.0

    def horizon_s(self) -> float:
        return self.next_s

    def process(self, env: simpy.Environment, replicas: list[Replica], route: Callable):
        schedulers = [r.scheduler for r in replicas]
        for record in self.records:
            self.next_s = record.arrival_s
            delay = record.arrival_s - env.now
            if delay > 0:
                yield env.timeout(delay)
            replicas[route(schedulers, env.now)].submit(Request(record))
        self.next_s = float("inf")


def run_setup(setup: Setup, trace: TraceIndex, out_dir: Path | None = None, keep_frames: bool = True,
              progress: Callable[[int, int], None] | None = None, fast_forward: bool = True) -> Result:
    """Simulate `trace` on `setup`; write CSVs into out_dir (which must exist) if given.

    fast_forward=False simulates every decode iteration on its own instead of spans of
    identical ones; results are the same (to float rounding), only slower. Tests use it.
    """
    started = time.perf_counter()
    dep, device = setup.deployment, setup.system.accelerator
    sched_cls = get_scheduler(dep.scheduler)
    recorder = Recorder(out_dir, keep_frames, device.peak_flops(setup.cost.prec.gemm_compute),
                        device.main_memory.bandwidth, dep.devices_per_replica)
    env = simpy.Environment()

    def report() -> None:
        if progress is not None:
            progress(recorder.completed + recorder.rejected, trace.count)

    arrivals = Arrivals(trace.requests())
    replicas = [Replica(env, i, sched_cls(dep, setup.plan, setup.model), setup.cost, recorder, arrivals.horizon_s,
                        report, fast_forward) for i in range(dep.replicas)]
    env.process(arrivals.process(env, replicas, ROUTERS[dep.router]()))
    for replica in replicas:
        env.process(replica.run())
    env.run()
    recorder.close()
    report()
    lost = trace.count - recorder.completed - recorder.rejected
    if lost:
        raise RuntimeError(f"{lost} requests neither completed nor rejected")
    makespan = recorder.last_finish_s
    blocks = [r.scheduler.blocks for r in replicas]
    power = device.power
    summary = build_summary(
        rec=recorder, total=trace.count, hardware=setup.system.name, model=setup.model.name,
        scheduler=dep.scheduler,
        parallelism={"tp": dep.tp, "pp": dep.pp, "ep": 1, "replicas": dep.replicas},
        devices=setup.devices, idle_w=power.idle if power else 0.0,
        price_per_hour=device.price.per_hour if device.price else 0.0,
        kv_peak=max(b.peak / b.num_blocks for b in blocks),
        kv_mean=sum(b.mean_utilization(makespan) for b in blocks) / len(blocks),
        preemptions=sum(r.scheduler.preemptions for r in replicas),
        skipped=dict(trace.skipped), wall_s=time.perf_counter() - started,
        events=recorder.iteration_count + trace.count,
        calibration=str(setup.calibration.path) if setup.calibration is not None else None,
    )
    frames = (recorder.requests.frame(), recorder.iterations.frame()) if keep_frames else (None, None)
    return Result(summary, *frames, out_dir)


def simulate(hardware: str | Path, trace: str | Path, *, model: str | None = None, scheduler: str | None = None,
             tp: int | None = None, pp: int | None = None, replicas: int | None = None,
             knobs: dict[str, Any] | None = None, out: str | Path | None = None, keep_frames: bool = True,
             progress: Callable[[int, int], None] | None = None, calibration: str | None = None,
             uncertainty: bool = False) -> Result:
    """Simulate serving `trace` on `hardware`; returns the summary and per-request/iteration frames.

    With `out`, summary.json, requests.csv and iterations.csv are written there atomically.
    Raises InputError (one clear line) for any bad input, before simulating.
    """
    setup = prepare(hardware, model, scheduler, tp, pp, replicas, knobs, calibration)
    return simulate_setup(setup, trace, out=out, keep_frames=keep_frames, progress=progress, uncertainty=uncertainty)


def simulate_setup(setup: Setup, trace: str | Path, *, out: str | Path | None = None, keep_frames: bool = True,
                   progress: Callable[[int, int], None] | None = None, uncertainty: bool = False) -> Result:
    """`simulate` for a prepared Setup: validate the trace, run, write outputs atomically.

    With `uncertainty`, two more runs scale every kernel time by (1 -/+ the calibration's
    held-out p90 error) and the summary gains low/high bands (see `uncertainty_bands`).
    """
    index = TraceIndex.build(trace)
    if out is None:
        result = run_setup(setup, index, None, keep_frames, progress)
        if uncertainty:
            result.summary["uncertainty"] = uncertainty_bands(setup, index)
        return result
    final = Path(out)
    check_out_dir(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; outputs get the user's usual mode
    try:
        result = run_setup(setup, index, staging, keep_frames, progress)
        if uncertainty:
            result.summary["uncertainty"] = uncertainty_bands(setup, index)
        write_json(staging / "summary.json", result.summary)
        if final.exists():  # a previous run's outputs: replace them file by file
            for name in OUTPUT_FILES:
                os.replace(staging / name, final / name)
            staging.rmdir()
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out_dir = final
    return result


BAND_METRICS = (("ttft_s", "mean"), ("ttft_s", "p90"), ("tpot_s", "mean"), ("tpot_s", "p90"), ("e2e_s", "mean"),
                ("e2e_s", "p90"), ("throughput", "output_tokens_per_s"), ("throughput", "requests_per_s"))


def uncertainty_bands(setup: Setup, index: TraceIndex) -> dict[str, Any]:
    """Low/high values of the headline metrics when every kernel runs (1 -/+ e) times as long,
    e being the calibration profile's largest held-out p90 error: a deliberately pessimistic,
    fully correlated error. Without a profile there is no measured error to propagate."""
    if setup.calibration is None:
        return {"calibrated": False, "note": "uncalibrated roofline: no measured error band; calibrate the device"}
    band = setup.calibration.error_band_pct("p90") / 100.0
    bands: dict[str, Any] = {"calibrated": True, "kernel_error_p90": band, "method": "kernel times scaled by 1 -/+ "
                             "the profile's largest held-out p90 error, all kernels together"}
    runs = []
    for scale in (1.0 - band, 1.0 + band):
        cost = CostModel(setup.system, setup.model, setup.deployment, setup.calibration, kernel_scale=scale)
        runs.append(run_setup(replace(setup, cost=cost), index, None, keep_frames=False).summary)
    for block, key in BAND_METRICS:
        values = sorted(r[block][key] for r in runs)
        bands.setdefault(block, {})[key] = {"low": values[0], "high": values[1]}
    return bands


OUTPUT_FILES = ("summary.json", "requests.csv", "iterations.csv")


def check_out_dir(path: Path, outputs: tuple[str, ...] = OUTPUT_FILES) -> None:
    """An output directory must be new, empty, or hold only a previous run's outputs."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a directory")
    others = sorted(p.name for p in path.iterdir() if p.name not in outputs)
    if others:
        raise InputError(f"--out {path}: directory holds other files ({', '.join(others[:3])}); choose a new one")


def write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
