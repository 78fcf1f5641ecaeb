"""`simulate plan`: search every candidate's capacity, size and rank them, write the outputs.

Steps: load and validate the plan, the workload and every candidate (a bad plan stops here,
before any simulation); search each feasible candidate's capacity per replica (candidates
side by side, each one's rounds in turn, see search.py), reading finished points from the
cache and simulating the others on the executor; size and rank the candidates; write
results.csv, candidates.csv and plan.json; simulate the recommended candidate once more at
its capacity with full outputs (DIR/recommended/); render the report when the renderer is
installed.
"""
from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import FIRST_COMPLETED, Future, wait
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..api import simulate_setup
from ..errors import InputError
from ..metrics.slo import SloSpec
from .cache import SEED, PointCache, point_key
from .candidates import Candidate, resolve_candidates
from .executors import Executor, check_executor, make_executor
from .outputs import Point, write_outputs
from .plan_file import Plan, load_plan
from .point import PointTask
from .search import CapacitySearch
from .sizing import Sizing, rank, size
from .workload import Workload, load_workload

Progress = Callable[[int, int, int], None]  # (points done, points expected, of them cached)


@dataclass
class PlanOutcome:
    """What a plan found and did: sizings in plan order, every point, and the counts."""

    out_dir: Path
    plan: Plan
    sizings: list[Sizing]
    margin: dict[str, Any]
    points: list[Point]
    wall_s: float

    @property
    def cached(self) -> int:
        return sum(p.cached for p in self.points)

    @property
    def simulated(self) -> int:
        return len(self.points) - self.cached

    @property
    def recommended(self) -> Sizing | None:
        return next((s for s in self.sizings if s.recommended), None)


def run_plan(plan_file: str | Path, out: str | Path | None = None, executor: str = "local",
             workers: int | None = None, ray_address: str | None = None, progress: Progress | None = None,
             report: bool = True, quiet: bool = False) -> PlanOutcome:
    """Run a plan; outputs go to `out` (default: the plan file's directory). `quiet`: the
    executor prints nothing but errors (Ray's start-up lines)."""
    started = time.perf_counter()
    check_executor(executor, ray_address)
    plan = load_plan(plan_file)
    for where, candidate in plan.candidates if not quiet else ():
        ignored = candidate.not_simulated()
        if ignored:  # given, so said, though it changes nothing
            print(f"{plan.path}: {where} ({candidate.name}): vllm flags not simulated (no effect on the timing): "
                  f"{', '.join(ignored)}", file=sys.stderr)
    out_dir = Path(out) if out is not None else plan.path.parent
    if out_dir.exists() and not out_dir.is_dir():
        raise InputError(f"--out {out_dir}: exists and is not a directory")
    workload = load_workload(plan)
    candidates = resolve_candidates(plan)
    low, high = plan.rate_range
    searches = {c.name: CapacitySearch(low, high, plan.spec.tolerance, plan.spec.points_per_round)
                for c in candidates if c.feasible}
    runner = _Runner(searches, workload, plan.slo, PointCache(out_dir / "cache"), progress,
                     lambda: make_executor(executor, workload, workers, ray_address, quiet))
    points = runner.run([c for c in candidates if c.feasible])
    order = {c.name: i for i, c in enumerate(candidates)}
    points.sort(key=lambda p: (order[p.candidate], p.rate))
    by_rate: dict[str, dict[float, dict[str, Any]]] = {}
    for p in points:
        by_rate.setdefault(p.candidate, {})[p.rate] = p.metrics
    sizings = [size(c, searches.get(c.name), by_rate.get(c.name, {}), plan.spec.target_rate,
                    workload.mean_output_tokens, plan.slo) for c in candidates]
    margin = rank(sizings, plan.spec.objective)
    out_dir.mkdir(parents=True, exist_ok=True)
    write_outputs(out_dir, plan, workload, points, sizings, margin)
    outcome = PlanOutcome(out_dir, plan, sizings, margin, points, 0.0)
    _simulate_recommended(out_dir, outcome.recommended, workload, plan.slo)
    if report:
        _render_report(out_dir)
    outcome.wall_s = time.perf_counter() - started
    return outcome


class _Runner:
    """Drives every candidate's search. Cached points are read at once; the others go to
    the executor, which is started only when a point needs simulating (a fully cached plan
    starts no workers). A candidate's next round is proposed as soon as its round is
    complete, so candidates proceed side by side, and every finished point is cached at
    once, so an interrupted plan loses nothing finished."""

    def __init__(self, searches: dict[str, CapacitySearch], workload: Workload, slo: SloSpec, cache: PointCache,
                 progress: Progress | None, open_executor: Callable[[], Executor]):
        self.searches, self.workload, self.slo, self.cache = searches, workload, slo, cache
        self.progress, self.open_executor = progress, open_executor
        self.executor: Executor | None = None
        self.pending: dict[Future, tuple[Candidate, float, str]] = {}
        self.in_flight: Counter[str] = Counter()
        self.points: list[Point] = []

    def run(self, candidates: list[Candidate]) -> list[Point]:
        try:
            for candidate in candidates:
                self._advance(candidate)
            while self.pending:
                done, _ = wait(self.pending, return_when=FIRST_COMPLETED)
                for future in done:
                    candidate, rate, key = self.pending.pop(future)
                    metrics = future.result()
                    self.cache.put(key, metrics, {"candidate": candidate.name, "rate_req_s": rate})
                    self.in_flight[candidate.name] -= 1
                    self._record(candidate, rate, metrics, False, key)
                    self._advance(candidate)
        finally:
            if self.executor is not None:
                self.executor.close()
        return self.points

    def _advance(self, candidate: Candidate) -> None:
        """Propose the candidate's rounds until one needs simulating or the search ends."""
        search = self.searches[candidate.name]
        while not self.in_flight[candidate.name]:
            rates = search.propose()
            if not rates:
                return
            for rate in rates:
                assert candidate.setup is not None  # only feasible candidates are searched
                key = point_key(candidate.setup, self.workload.sha256, rate, self.slo)
                metrics = self.cache.get(key)
                if metrics is not None:
                    self._record(candidate, rate, metrics, True, key)
                    continue
                if self.executor is None:
                    self.executor = self.open_executor()
                future = self.executor.submit(PointTask(candidate.args_key, rate, self.slo))
                self.pending[future] = (candidate, rate, key)
                self.in_flight[candidate.name] += 1
        self._report()

    def _record(self, candidate: Candidate, rate: float, metrics: dict[str, Any], cached: bool, key: str) -> None:
        self.searches[candidate.name].observe(rate, metrics["slo_met"])
        self.points.append(Point(candidate.name, rate, metrics, cached, key))
        self._report()

    def _report(self) -> None:
        if self.progress is not None:
            done = len(self.points)
            expected = done + len(self.pending) + sum(s.remaining() for s in self.searches.values())
            self.progress(done, expected, sum(p.cached for p in self.points))


def _simulate_recommended(out_dir: Path, sizing: Sizing | None, workload: Workload, slo: SloSpec) -> None:
    """Simulate the recommended candidate at its capacity with summary.json, requests.csv
    and iterations.csv in DIR/recommended/ (a stale one goes when nothing is recommended)."""
    target = out_dir / "recommended"
    if sizing is None:
        shutil.rmtree(target, ignore_errors=True)
        return
    assert sizing.max_rate is not None and sizing.candidate.setup is not None
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".trace.") as scratch:
        trace = workload.write(sizing.max_rate, Path(scratch) / "trace.jsonl")
        simulate_setup(sizing.candidate.setup, trace, out=target, keep_frames=False, slo=slo, seed=SEED)


def _render_report(out_dir: Path) -> None:
    """The report (simulator/report/planning_report.py), when that renderer is installed."""
    try:
        from ..report.planning_report import write_report
    except ImportError:
        return
    write_report(out_dir)
