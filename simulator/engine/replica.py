"""A model replica as one SimPy process: schedule a batch, cost it, wait, apply, record.

The replica never computes times itself (the cost model does) and never decides what runs
(its scheduler does); it only drives simulated time and reports to the recorder.
"""
from __future__ import annotations

import math
from typing import TYPE_CHECKING, TypeVar

import numpy as np
import simpy

from ..metrics.recorder import Recorder
from ..perf.cost_model import CostModel, IterationCost, SpanCost
from ..schedulers.base import Scheduler
from .batch import ScheduledBatch, SpanPlan
from .pipeline import Pipeline

if TYPE_CHECKING:
    from .data_parallel import DataParallelGroup

# Longest span planned at once (steps); a longer quiet stretch is simply several spans.
MAX_SPAN_STEPS = 4096

AnyCost = TypeVar("AnyCost", IterationCost, SpanCost)  # a step's cost or a span's


def idle_until_work(env: simpy.Environment, wake: simpy.Event, engines: list[Replica]) -> simpy.Event:
    """What idle `engines` (a replica, or the ranks of a data-parallel group) wait on: `wake`
    (new work), or the first of their KV loads from the offload tier landing. Work that none
    of them can schedule and that no copy in flight will unblock is an engine bug."""
    lands = []
    for engine in engines:
        sched = engine.scheduler
        if sched.has_work() and not sched.waiting_on_transfers():
            raise RuntimeError(f"replica {engine.index}: work waiting but nothing schedulable at t={env.now}")
        engine.busy_until = math.inf
        lands_s = sched.next_wake_s()
        if lands_s is not None:
            lands.append(lands_s)
    return wake | env.timeout(max(min(lands) - env.now, 0.0)) if lands else wake


class Replica:
    def __init__(self, env: simpy.Environment, index: int, scheduler: Scheduler, cost: CostModel,
                 recorder: Recorder, horizon_s, on_progress=None, fast_forward: bool = True,
                 pipeline: Pipeline | None = None):
        """`pipeline`: the stages this replica shares as one of a pipeline-parallel replica's
        virtual engines (engine/pipeline.py); its steps then wait for the stages."""
        self.env, self.index, self.scheduler, self.cost, self.recorder = env, index, scheduler, cost, recorder
        self.on_progress = on_progress
        self.horizon_s = horizon_s  # () -> time of the next arrival not yet submitted
        self.fast_forward = fast_forward  # run unchanged decode steps as one span (same results)
        self.pipeline = pipeline
        if pipeline is not None:
            pipeline.engines.append(self)
        self._wake: simpy.Event | None = None
        self._min_step_s = cost.min_step_s
        self.busy_until = math.inf  # end of the step (or span) running now; inf when idle
        self.steps_started = 0
        self.in_step = False  # a step (or span) is in flight
        self._span: tuple[int, np.ndarray] | None = None  # steps started before it, its steps' ends
        self.group: DataParallelGroup | None = None  # the group that runs this rank's steps, if any

    def submit(self, req) -> None:
        req.replica = self.index
        # An engine that schedules ahead has already scheduled the step after the one in flight.
        started = self.steps_started
        if self._span is not None:  # the steps of the span that have started by now: its first and
            # those after an end (`now` is within the span)
            started = self._span[0] + 1 + int(self._span[1][:-1].searchsorted(self.env.now, side="right"))
        req.ready_step = started + 1 if self.in_step else started
        reason = self.scheduler.admit(req, self.env.now)
        if reason is not None:
            self.recorder.reject(req, reason)
        else:
            self.wake()

    def wake(self) -> None:
        """New work: an idle replica (or its data-parallel group) looks for a batch now."""
        if self.group is not None:
            self.group.wake()
        elif self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def run(self):
        env, sched, rec = self.env, self.scheduler, self.recorder
        while True:
            sched.step_index = self.steps_started
            batch = sched.next_batch(env.now)
            if batch is None:
                self._wake = env.event()
                yield idle_until_work(env, self._wake, [self])
                self._wake = None
                continue
            start = env.now
            cost = self.cost.iteration(batch.shape)
            # A virtual engine's steps have fixed times only while it is alone in its pipeline.
            may_span = self.fast_forward and not batch.transfer_s and (
                self.pipeline is None or self.pipeline.alone(self))
            span = self._plan_span(batch, cost, start) if may_span else None
            self.in_step = True
            if span is not None:
                ends = span[2]
                self._span = (self.steps_started, ends)
                self.steps_started += len(ends)
                yield from self._run_span(batch, cost, start, *span)
                self._span = None
            else:
                self.steps_started += 1
                step_s = cost.time_s + batch.transfer_s
                if self.pipeline is not None:
                    step_s = self.pipeline.run(start, step_s) - start
                self.busy_until = start + step_s
                yield env.timeout(step_s)
                rec.iteration(self.index, start, self._recorded(cost), batch)
                rec.outcome(sched.on_batch_done(batch, env.now))
            self.in_step = False
            self._report()

    def _plan_span(self, batch: ScheduledBatch, first: IterationCost,
                   start: float) -> tuple[SpanPlan, SpanCost, np.ndarray] | None:
        """Plan `batch` and the decode steps after it that start before the next arrival.

        An arrival is seen by the scheduler at the first iteration boundary at or after it,
        so every step that starts before the next arrival runs as planned; an engine that
        schedules ahead (`lags_arrivals`) runs one more step before it can take the arrival.
        Returns the plan, the cost of its decode steps and the end times of the steps to run,
        or None when only the first step fits.
        """
        horizon = self.horizon_s()
        # (not a pipeline's virtual engine: an arrival for a sibling changes its stages' timing)
        ahead = int(self.scheduler.lags_arrivals and self.pipeline is None)
        if not ahead and horizon <= start + first.time_s:  # the next arrival lands during the first step
            return None
        # no step is shorter than min_step_s, so more steps than this cannot start in time
        useful = (horizon - start) / self._min_step_s + 2 + ahead if horizon != float("inf") else MAX_SPAN_STEPS
        plan = self.scheduler.plan_span(batch, int(min(useful, MAX_SPAN_STEPS)))
        if plan is None:
            return None
        rest = self.cost.decode_span(plan.active[1:], plan.decode_context[1:], plan.decode_max_context[1:])
        ends = start + np.concatenate(([first.time_s], rest.time_s)).cumsum()
        k = 1 + int(ends[:-1].searchsorted(horizon, side="left")) + ahead
        if k == 1:
            return None
        return plan, rest, ends[:k]

    def _run_span(self, batch: ScheduledBatch, first: IterationCost, start: float, plan: SpanPlan,
                  rest: SpanCost, ends: np.ndarray):
        """Run a planned span: its k steps end at `ends`; steps 1.. are `rest`'s decode steps."""
        sched, rec = self.scheduler, self.recorder
        sched.span_in_flight = (ends, plan)
        if self.pipeline is not None:  # what a sibling scheduled during the last step waits for
            self.pipeline.run(float(ends[-2]), float(ends[-1] - ends[-2]))
        self.busy_until = float(ends[0])  # only the first step can hand a prompt off
        yield self.env.timeout(float(ends[-1]) - start)
        sched.span_in_flight = None
        outcome = sched.apply_span(plan, ends)
        k = len(ends)
        rec.iteration(self.index, start, self._recorded(first), batch)
        rec.decode_steps(self.index, ends[:-1], self._recorded(rest), plan.active[1:k], plan.used[1:k])
        rec.outcome(outcome)

    def _recorded(self, cost: AnyCost) -> AnyCost:
        """The cost as recorded: a virtual engine counts as one stage group's devices busy
        for its whole step, so its rows carry every stage's work (per device)."""
        if self.pipeline is None:
            return cost
        stages = self.pipeline.stages
        return cost._replace(flops=cost.flops * stages, bytes=cost.bytes * stages)

    def _report(self) -> None:
        if self.on_progress is not None and self.recorder.iteration_count % 64 == 0:
            self.on_progress()
