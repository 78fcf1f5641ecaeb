"""A model replica as one SimPy process: schedule a batch, cost it, wait, apply, record.

The replica never computes times itself (the cost model does) and never decides what runs
(its scheduler does); it only drives simulated time and reports to the recorder.
Power while busy follows a linear utilisation model: idle + (tdp - idle) * activity, with
activity = max(MFU / compute_max, MBU / memory_max) capped at 1, i.e. how close the
iteration runs to the best the device achieves on its binding resource (POLCA reports
inference power rising with utilisation from idle towards TDP).
"""
from __future__ import annotations

import simpy

from ..hardware.spec import DeviceSpec
from ..metrics.recorder import Recorder
from ..perf.cost_model import CostModel
from ..schedulers.base import Scheduler


class Replica:
    def __init__(self, env: simpy.Environment, index: int, scheduler: Scheduler, cost: CostModel,
                 recorder: Recorder, on_progress=None):
        self.env, self.index, self.scheduler, self.cost, self.recorder = env, index, scheduler, cost, recorder
        self.on_progress = on_progress
        self._wake: simpy.Event | None = None
        self.device: DeviceSpec = cost.device

    def submit(self, req) -> None:
        req.replica = self.index
        reason = self.scheduler.admit(req, self.env.now)
        if reason is not None:
            self.recorder.reject(req, reason, self.index)
        elif self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def power_w(self, mfu: float, mbu: float) -> float:
        power = self.device.power
        if power is None:
            return 0.0
        eff = self.device.efficiency
        activity = min(1.0, max(mfu / eff.compute_max, mbu / eff.memory_max))
        return power.idle + (power.tdp - power.idle) * activity

    def run(self):
        env, sched, rec = self.env, self.scheduler, self.recorder
        while True:
            batch = sched.next_batch(env.now)
            if batch is None:
                if sched.has_work():
                    raise RuntimeError(f"replica {self.index}: work waiting but nothing schedulable at t={env.now}")
                self._wake = env.event()
                yield self._wake
                self._wake = None
                continue
            cost = self.cost.iteration(batch.shape)
            start = env.now
            yield env.timeout(cost.time_s)
            outcome = sched.on_batch_done(batch, env.now)
            mfu = cost.flops / (cost.time_s * rec.peak_flops)
            mbu = cost.bytes / (cost.time_s * rec.bandwidth)
            rec.iteration(self.index, start, cost, batch, mfu, mbu, self.power_w(mfu, mbu))
            rec.outcome(self.index, outcome, env.now)
            if self.on_progress is not None and rec.iteration_count % 512 == 0:
                self.on_progress()
