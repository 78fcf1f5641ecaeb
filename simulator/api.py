"""The Python API: `simulate(hardware, trace, ...)` runs one simulation end to end.

Everything is loaded and validated first (hardware, model, deployment, memory plan, the
whole trace), so bad input fails before the first event and before any output exists.
Outputs are written into a temporary sibling directory and moved into place at the end.
"""
from __future__ import annotations

import contextlib
import gc
import os
import shutil
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Any

import simpy

from .deployment import Deployment, build_deployment, check_disagg_knobs, knob_where, set_in_yaml
from .engine.data_parallel import DataParallelGroup
from .engine.frontend import OUTPUT_S, ApiServer
from .engine.kv_offload import offload_summary
from .engine.kv_transfer import KvTransfer
from .engine.pipeline import Pipeline
from .engine.replica import Replica
from .engine.request import Request
from .engine.router import ROUTERS
from .errors import InputError
from .hardware.loader import System, load_system
from .metrics.recorder import Recorder
from .metrics.slo import SloSpec
from .metrics.summary import build_summary
from .models.config import ModelConfig, load_model
from .paths import shown_path
from .perf.cost_model import CostModel
from .perf.memory_plan import MemoryPlan
from .perf.profile_use import AppliedProfile
from .perf.wafer_cost import MESH_MODEL_NOTE
from .report.run_data import PLOTS
from .schedulers.base import get_scheduler
from .schedulers.disagg import for_role
from .topology.disaggregated import Disaggregation, connect, disaggregated_pools
from .topology.pools import Pool, build_pool, kv_offload, replica_hardware, swap_space
from .workloads.trace import TraceIndex

if TYPE_CHECKING:  # pandas is imported only when frames are asked for (start-up time)
    import pandas as pd


@dataclass
class Setup:
    """A validated deployment of a model on hardware, ready to simulate. The fields
    describe the colocated deployment, or the prefill pool of a disaggregated one."""

    system: System
    model: ModelConfig
    deployment: Deployment
    plan: MemoryPlan
    cost: CostModel
    calibration: AppliedProfile | None = None
    disagg: Disaggregation | None = None

    def pools(self) -> list[Pool]:
        if self.disagg is not None:
            return [self.disagg.prefill, self.disagg.decode]
        return [Pool("mixed", self.system, self.deployment, self.plan, self.cost, self.calibration)]

    @property
    def devices(self) -> int:
        return sum(pool.devices for pool in self.pools())

    @property
    def on_wafers(self) -> bool:
        """Every pool runs on wafers, so its time is the mesh model's, never a profile's."""
        return all(pool.system.accelerator.kind == "wafer" for pool in self.pools())


def prepare(hardware: str | Path, model: str | None = None, scheduler: str | None = None, tp: int | None = None,
            pp: int | None = None, replicas: int | None = None, knobs: dict[str, Any] | None = None,
            calibration: str | None = None) -> Setup:
    """Load and validate everything a run needs. `calibration` is a profile path, "none" for
    the uncalibrated roofline, or None for the profile the hardware spec names (if any);
    it applies to the run's hardware (a disaggregated pool on other hardware uses its own)."""
    system = load_system(hardware)
    flags = {"model": model, "scheduler": scheduler, "tp": tp, "pp": pp, "replicas": replicas}
    layers = (system.deployment, flags, knobs or {})
    dep = build_deployment(*layers, yaml_file=system.source_file)
    try:
        model_cfg = load_model(dep.model)
        dep = checkpoint_precision(dep, model_cfg)
        policy = get_scheduler(dep.scheduler)
        dep = policy.resolve(dep)
        if policy.topology != "disaggregated":
            check_disagg_knobs(dep)
    except InputError as exc:
        raise _named_in_yaml(exc, dep, layers, system.source_file) from None
    if dep.router not in ROUTERS:
        raise InputError(f"router: {dep.router!r} unknown (known: {', '.join(ROUTERS)})")
    if policy.topology != "disaggregated":
        pool = build_pool("mixed", system, dep, model_cfg, calibration)
        return Setup(system, model_cfg, pool.deployment, pool.plan, pool.cost, pool.calibration)
    split = disaggregated_pools(system, dep, model_cfg, calibration)
    prefill = split.prefill
    return Setup(prefill.system, model_cfg, dep, prefill.plan, prefill.cost, prefill.calibration, split)


def checkpoint_precision(dep: Deployment, model: ModelConfig) -> Deployment:
    """The deployment with the checkpoint's own weight type where weight_dtype was not set, as
    vLLM loads a checkpoint (an fp8 or AWQ one serves fp8 or int4 weights without a flag)."""
    if "weight_dtype" in dep.model_fields_set:
        return dep
    if model.checkpoint_weight_dtype is None:
        raise InputError(f"--model {dep.model}: its quantization_config ({model.quantization}) is not one the "
                         "simulator reads (fp8; GPTQ or AWQ at 4 or 8 bits; compressed-tensors of one fp8, "
                         "int4 or int8 scheme); set weight_dtype to the weights' storage type")
    return dep.model_copy(update={"weight_dtype": model.checkpoint_weight_dtype})


def _named_in_yaml(exc: InputError, dep: Deployment, layers: tuple[dict[str, Any], ...], yaml_file: str) -> InputError:
    """An error about a knob, worded for where the knob was set: when the system YAML's
    `deployment:` block set it, `FILE: deployment.KEY: ...` (`deployment.knob_where`) instead
    of a flag the user did not give (`--model X: ...`, or `deployment: KEY: ...` from
    `Scheduler.check_knobs`); anything else unchanged."""
    message = str(exc)
    for key in dep.model_fields_set:
        for given in (f"--{key} ", f"deployment: {key}: "):
            if message.startswith(given) and set_in_yaml(key, layers):
                return InputError(f"{knob_where(key, layers, yaml_file=yaml_file)}: {message.removeprefix(given)}")
    return exc


@dataclass
class Result:
    summary: dict[str, Any]
    requests: pd.DataFrame | None
    iterations: pd.DataFrame | None
    out_dir: Path | None


class Arrivals:
    """The SimPy process that feeds the trace to the router, one arrival at a time, each when
    it reaches the engine: at its arrival, or after the API server's front-end leg
    (engine/frontend.py) when the deployment models it.

    `next_s` is when the next request not yet submitted reaches the engine (inf at the end):
    replicas may run ahead with unchanged decode batches until then.
    """

    def __init__(self, records, frontend: ApiServer | None = None):
        self.records = records
        self.frontend = frontend
        self.next_s = 0.0

    def horizon_s(self) -> float:
        return self.next_s

    def process(self, env: simpy.Environment, replicas: list[Replica], route: Callable):
        schedulers = [r.scheduler for r in replicas]
        frontend = self.frontend
        for record in self.records:
            at = record.arrival_s
            if frontend is not None:
                at = max(frontend.engine_arrival_s(at, record.input_tokens), self.next_s)
            self.next_s = at
            delay = at - env.now
            if delay > 0:
                yield env.timeout(delay)
            replicas[route(schedulers, record, env.now)].submit(Request(record))
        self.next_s = float("inf")


@contextlib.contextmanager
def _rare_cycle_collection():
    """The event loop allocates many short-lived objects and few reference cycles; Python's
    cycle collector, run every 700 net allocations by default, then costs several percent of
    a run while finding almost nothing. Run it 30 times less often while simulating, as
    before afterwards (the cycles a run does leave are still collected)."""
    saved = gc.get_threshold()
    gc.set_threshold(20_000, *saved[1:])
    try:
        yield
    finally:
        gc.set_threshold(*saved)


def run_setup(setup: Setup, trace: TraceIndex, out_dir: Path | None = None, keep_frames: bool = True,
              progress: Callable[[int, int], None] | None = None, fast_forward: bool = True,
              slo: SloSpec | None = None, seed: int = 0) -> Result:
    """Simulate `trace` on `setup`; write CSVs into out_dir (which must exist) if given.

    fast_forward=False simulates every decode iteration on its own instead of spans of
    identical ones; results are the same (to float rounding), only slower. Tests use it.
    `seed` drives the only randomness, the power-of-two router's choices.
    """
    started = time.perf_counter()
    dep = setup.deployment
    pools = setup.pools()
    hardware = [replica_hardware(pool) for pool in pools
                for _ in range(pool.deployment.replicas * pool.ranks * pool.engines)]
    recorder = Recorder(out_dir, keep_frames, hardware, slo, output_delay_s=OUTPUT_S if dep.api_server else 0.0)
    env = simpy.Environment()

    def report() -> None:
        if progress is not None:
            progress(recorder.completed + recorder.rejected, trace.count)

    arrivals = Arrivals(trace.requests(), ApiServer() if dep.api_server else None)
    by_role: dict[str, list[Replica]] = {}
    groups: list[DataParallelGroup] = []
    for pool in pools:
        # a class is hashable; mypy misreads type[X] against Hashable (python/mypy#20409)
        cls = for_role(get_scheduler(pool.deployment.scheduler), pool.role)  # type: ignore[arg-type]
        plan = replace(pool.plan, num_blocks=pool.plan.num_blocks // pool.engines)  # vLLM v0 splits the blocks
        for _ in range(pool.deployment.replicas * pool.ranks):
            pipeline = Pipeline(pool.deployment.pp) if pool.engines > 1 else None
            for _ in range(pool.engines):
                sched = cls(pool.deployment, plan, setup.model)
                sched.swap = swap_space(pool)
                sched.offload = kv_offload(pool)  # with it, every step is its own (each step's stores are costed)
                index = sum(len(r) for r in by_role.values())
                by_role.setdefault(pool.role, []).append(Replica(
                    env, index, sched, pool.cost, recorder, arrivals.horizon_s, report,
                    fast_forward and sched.offload is None, pipeline))
        if pool.ranks > 1 and setup.model.is_moe:  # a dense model's ranks are independent engines
            engines = by_role[pool.role]
            groups += [DataParallelGroup(env, engines[i:i + pool.ranks], pool.cost, recorder, report)
                       for i in range(0, len(engines), pool.ranks)]
    replicas = [r for group in by_role.values() for r in group]
    transfer = None
    if setup.disagg is not None:
        transfer = connect(env, setup.disagg, by_role["prefill"], by_role["decode"], recorder, arrivals.horizon_s)
    entry = by_role.get("prefill") or by_role["mixed"]  # where arriving requests go
    env.process(arrivals.process(env, entry, ROUTERS[dep.router](seed)))
    for replica in replicas:
        if replica.group is None:
            env.process(replica.run())
    for group in groups:
        env.process(group.run())
    with _rare_cycle_collection():
        env.run()
    recorder.close()
    report()
    lost = trace.count - recorder.completed - recorder.rejected
    if lost:
        raise RuntimeError(f"{lost} requests neither completed nor rejected")
    makespan = recorder.last_finish_s
    schedulers = [r.scheduler for r in replicas]
    blocks = [s.blocks for s in schedulers]
    first = pools[0].deployment
    profile_file = None
    if setup.calibration is not None:
        assert setup.calibration.path is not None  # a run's profile is read from its file
        profile_file = shown_path(setup.calibration.path)
    summary = build_summary(
        rec=recorder, total=trace.count, hardware=setup.system.name, model=setup.model.name,
        scheduler=dep.scheduler,
        parallelism={"tp": first.tp, "pp": first.pp, "dp": first.data_parallel_size,
                     "ep": first.tp * first.data_parallel_size if first.enable_expert_parallel else 1,
                     "replicas": sum(p.deployment.replicas for p in pools), "engines_per_replica": pools[0].engines},
        kv_peak=max(b.peak / b.num_blocks for b in blocks),
        kv_mean=sum(b.mean_utilization(makespan) for b in blocks) / len(blocks),
        preemptions=sum(s.preemptions for s in schedulers),
        skipped=dict(trace.skipped), wall_s=time.perf_counter() - started,
        events=recorder.iteration_count + trace.count,
        calibration=profile_file,
        calibration_use=setup.calibration.use if setup.calibration is not None else None,
        model_note=MESH_MODEL_NOTE if setup.on_wafers else None,
        extra={"batch_limits": schedulers[0].batch_limits(), "memory": pools[0].plan.summary(),
               "precision": {"weights": first.weight_dtype, "kv_cache": first.kv_cache_dtype,
                             "activations": first.activation_dtype,
                             "checkpoint_quantization": setup.model.quantization or None},
               **_policy_blocks(setup, schedulers, transfer)},
    )
    requests, iterations = (recorder.requests.frame(), recorder.iterations.frame()) if keep_frames else (None, None)
    return Result(summary, requests, iterations, out_dir)


def _policy_blocks(setup: Setup, schedulers: list, transfer: KvTransfer | None) -> dict[str, Any]:
    """summary.json blocks of the optional mechanisms that this run used."""
    blocks: dict[str, Any] = {}
    caches = [s.blocks.cache for s in schedulers if s.blocks.cache is not None]
    if caches:
        looked = sum(c.lookup_tokens for c in caches)
        hit = sum(c.hit_tokens for c in caches)
        blocks["prefix_cache"] = {"hit_rate": hit / looked if looked else 0.0, "hit_tokens": hit,
                                  "lookup_tokens": looked, "evicted_blocks": sum(c.evicted for c in caches),
                                  "resumed_tokens": sum(c.resumed_tokens for c in caches)}
    swaps = [s.swap for s in schedulers if s.swap is not None]
    if swaps:
        blocks["swaps"] = {"count": sum(w.out_count for w in swaps), "bytes": sum(w.out_bytes + w.in_bytes for w in swaps),
                           "swap_ins": sum(w.in_count for w in swaps), "time_s": sum(w.time_s for w in swaps),
                           "recomputed_for_lack_of_space": sum(w.full for w in swaps)}
    offloads = [s.offload for s in schedulers if s.offload is not None]
    if offloads:
        blocks["kv_offload"] = offload_summary(offloads, OUTPUT_S if setup.deployment.api_server else 0.0)
    if transfer is not None:
        blocks["kv_transfer"] = transfer.summary()
        blocks["pools"] = {pool.role: {"hardware": pool.system.name, "scheduler": pool.deployment.scheduler,
                                       "tp": pool.deployment.tp,
                                       "replicas": pool.deployment.replicas,
                                       "batch_limits": next(s for s in schedulers if s.role == pool.role).batch_limits(),
                                       "memory": pool.plan.summary()}
                           for pool in setup.pools()}
    return blocks


def simulate(hardware: str | Path, trace: str | Path, *, model: str | None = None, scheduler: str | None = None,
             tp: int | None = None, pp: int | None = None, replicas: int | None = None,
             knobs: dict[str, Any] | None = None, out: str | Path | None = None, keep_frames: bool = True,
             progress: Callable[[int, int], None] | None = None, calibration: str | None = None,
             uncertainty: bool = False, slo: SloSpec | None = None, seed: int = 0) -> Result:
    """Simulate serving `trace` on `hardware`; returns the summary and per-request/iteration frames.

    With `out`, summary.json, requests.csv and iterations.csv are written there atomically.
    Raises InputError (one clear line) for any bad input, before simulating.
    """
    setup = prepare(hardware, model, scheduler, tp, pp, replicas, knobs, calibration)
    return simulate_setup(setup, trace, out=out, keep_frames=keep_frames, progress=progress, uncertainty=uncertainty,
                          slo=slo, seed=seed)


def simulate_setup(setup: Setup, trace: str | Path, *, out: str | Path | None = None, keep_frames: bool = True,
                   progress: Callable[[int, int], None] | None = None, uncertainty: bool = False,
                   slo: SloSpec | None = None, seed: int = 0, extra_outputs: tuple[str, ...] = ()) -> Result:
    """`simulate` for a prepared Setup: validate the trace, run, write outputs atomically.

    With `uncertainty`, two more runs scale the kernel times by their measured p90 error
    and the summary gains low/high bands (see `uncertainty.uncertainty_bands`).
    """
    from .uncertainty import uncertainty_bands  # it runs setups itself (imports this module)

    index = TraceIndex.build(trace)
    if out is None:
        result = run_setup(setup, index, None, keep_frames, progress, slo=slo, seed=seed)
        if uncertainty:
            result.summary["uncertainty"] = uncertainty_bands(setup, index, result.summary)
        return result
    final = Path(out)
    check_out_dir(final, OUTPUT_FILES + extra_outputs)
    final.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{final.name}.", dir=final.parent))
    umask = os.umask(0)
    os.umask(umask)
    staging.chmod(0o777 & ~umask)  # mkdtemp makes it private; outputs get the user's usual mode
    try:
        result = run_setup(setup, index, staging, keep_frames, progress, slo=slo, seed=seed)
        if uncertainty:
            result.summary["uncertainty"] = uncertainty_bands(setup, index, result.summary)
        write_json(staging / "summary.json", result.summary)
        if final.exists():  # a previous run's outputs: replace them file by file
            for name in OUTPUT_FILES:
                os.replace(staging / name, final / name)
            for name in DRAWN_FILES:  # drawn from the outputs just replaced
                (final / name).unlink(missing_ok=True)
            staging.rmdir()
        else:
            os.replace(staging, final)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    result.out_dir = final
    return result


OUTPUT_FILES = ("summary.json", "requests.csv", "iterations.csv")
# drawn from a run's outputs afterwards (`simulate show`, `run --plots`): a run folder may hold
# them, and a run written over the folder removes them with the outputs they were drawn from
DRAWN_FILES = (PLOTS,)


def check_out_dir(path: Path, outputs: tuple[str, ...] = OUTPUT_FILES) -> None:
    """An output directory must be new, empty, or hold only a previous run's outputs (and what
    was drawn from them)."""
    if not path.exists():
        return
    if not path.is_dir():
        raise InputError(f"--out {path}: exists and is not a directory")
    allowed = outputs + DRAWN_FILES if set(OUTPUT_FILES) <= set(outputs) else outputs
    others = sorted(p.name for p in path.iterdir() if p.name not in allowed)
    if others:
        raise InputError(f"--out {path}: directory holds other files ({', '.join(others[:3])}); choose a new one")


def write_json(path: Path, data: dict[str, Any]) -> None:
    import json

    path.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n")
