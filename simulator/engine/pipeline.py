"""Pipeline parallelism with micro-batches in flight: the stages of one replica, shared by
its virtual engines.

With pp > 1 a batch that ran through every stage before the next one started would leave
pp - 1 of the pp stage groups idle at any time (GPipe's bubble, all of it). Serving engines
keep the stages busy with micro-batches instead: vLLM (v0) gives a pipeline-parallel replica
pp "virtual engines", each with its own scheduler, its own running batch and 1/pp of the KV
blocks, and has up to pp of their batches in flight, one per stage (Orca's distributed
engine pipelines its iterations the same way). Here each virtual engine is a `Replica`
(numbered consecutively) and they share one `Pipeline`. vLLM v1 instead keeps up to pp
batches in flight from one scheduler and one KV pool: the same overlap of the stages, but
requests are not tied to an engine at arrival and the KV blocks are not split, so under
memory pressure v1 preempts less than this model does.

Timing (the "balanced stages" model): the cost model gives a micro-batch's time through
all stages, sends included, t; each stage takes t / pp of it. A micro-batch enters the
stages in the order it was scheduled, and enters stage k when it has left stage k - 1 and
the micro-batch before it has left stage k:
    leave[k] = max(leave[k - 1], stage_free[k]) + t / pp.
Alone in the pipeline it takes exactly t; with pp engines of equal batches in steady state
the pipeline finishes one batch every t / pp, pp times the throughput of one engine, and
each engine still sees steps of t. With unequal micro-batches (a prefill next to decodes)
the shorter ones wait behind the longer one at each stage, as on the real pipeline.
"""
from __future__ import annotations

import math


class Pipeline:
    """The stage groups of one replica: when each is free again."""

    def __init__(self, stages: int):
        self.stages = stages
        self.free_s = [0.0] * stages
        self.engines: list = []  # the virtual engines (Replicas) sharing the stages

    def alone(self, engine) -> bool:
        """Every other engine is idle with nothing to do (one woken by a request that
        arrived now has not run yet, but has work). Such an engine gets work only from a
        later arrival or a KV copy landing, which `engine`'s span horizon already stops
        at; until then `engine`'s steps find the stages free and take their own time, so a
        span of them is exact (its last step is then `run` to leave the stages as it does)."""
        return all(other is engine or (other.busy_until == math.inf and not other.scheduler.has_work())
                   for other in self.engines)

    def run(self, start_s: float, time_s: float) -> float:
        """A micro-batch scheduled at `start_s` that takes `time_s` through all the stages
        when alone: the time it leaves the last stage (and the stages are busy until then)."""
        stage_s = time_s / self.stages
        leave = start_s
        for k, free in enumerate(self.free_s):
            leave = max(leave, free) + stage_s
            self.free_s[k] = leave
        return leave
