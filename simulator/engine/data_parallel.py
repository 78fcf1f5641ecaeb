"""Data-parallel ranks of an MoE model stepping together: one SimPy process drives them all.

vLLM's `--data-parallel-size` gives each rank its own engine (scheduler, KV cache, requests)
on its own tp devices, while the MoE layers span every rank's devices: the experts see the
tokens of all ranks at once, so the ranks must run each forward pass together. vLLM keeps
them in lockstep: a rank with nothing to do runs a dummy batch, and every rank pads its
batch to the largest token count of the step so that the collectives match. Here the ranks
are `Replica`s (each routed to, each with its scheduler) whose steps this group runs: every
step asks each rank's scheduler for its batch, costs them together (`CostModel.lockstep`:
the token-parallel layers at the largest count, the experts on all ranks' tokens, each
rank's own attention), and lasts as long as the slowest rank's. Each rank records its own
work; its devices wait at the collectives for the rest of the step.

Steps run one at a time (no decode spans): a rank's step time depends on every other rank's
batch, so one rank's unchanged decodes do not make the group's steps predictable.
"""
from __future__ import annotations

import simpy

from ..metrics.recorder import Recorder
from ..perf.cost_model import CostModel
from .replica import Replica, idle_until_work


class DataParallelGroup:
    def __init__(self, env: simpy.Environment, ranks: list[Replica], cost: CostModel, recorder: Recorder,
                 on_progress=None):
        self.env, self.ranks, self.cost, self.recorder = env, ranks, cost, recorder
        self.on_progress = on_progress
        self._wake: simpy.Event | None = None
        for rank in ranks:
            rank.group = self

    def wake(self) -> None:
        """New work on a rank: an idle group looks for batches now."""
        if self._wake is not None and not self._wake.triggered:
            self._wake.succeed()

    def run(self):
        env, rec = self.env, self.recorder
        while True:
            batches = []
            for rank in self.ranks:
                rank.scheduler.step_index = rank.steps_started
                batches.append(rank.scheduler.next_batch(env.now))
            busy = [(rank, batch) for rank, batch in zip(self.ranks, batches) if batch is not None]
            if not busy:
                self._wake = env.event()
                yield idle_until_work(env, self._wake, self.ranks)
                self._wake = None
                continue
            start = env.now
            costs = self.cost.lockstep([batch.shape for _, batch in busy])
            step_s = max(cost.time_s + batch.transfer_s for cost, (_, batch) in zip(costs, busy))
            for rank in self.ranks:  # idle ranks run the step too (a dummy batch)
                rank.steps_started += 1
                rank.in_step = True
                rank.busy_until = start + step_s
            yield env.timeout(step_s)
            for cost, (rank, batch) in zip(costs, busy):
                rec.iteration(rank.index, start, cost, batch)
                rec.outcome(rank.scheduler.on_batch_done(batch, env.now))
            for rank in self.ranks:
                rank.in_step = False
            if self.on_progress is not None and rec.iteration_count % 64 < len(busy):
                self.on_progress()
