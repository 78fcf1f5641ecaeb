"""The scheduler interface every serving policy implements, and the registry of policies.

A policy owns one replica's waiting queue, running set (`RequestTable`) and KV blocks
(`BlockManager`), and answers three calls from the engine:
- `admit(req, now)`: accept a new request (or return the reason it can never be served);
- `next_batch(now)`: pick the next iteration's work, allocating KV blocks, or None if idle;
- `on_batch_done(batch, now)`: apply the iteration's progress (tokens computed, tokens
  sampled) and hand finished requests and inter-token gaps to the engine.
Policies never compute times: the engine asks the cost model for the batch's `shape`.
A new policy is one new module that subclasses `Scheduler` and calls `register`.
"""
from __future__ import annotations

from collections import deque
from dataclasses import dataclass

import numpy as np

from ..deployment import Deployment
from ..engine.kv_cache import BlockManager
from ..engine.request import Request, RequestTable
from ..errors import InputError
from ..models.config import ModelConfig
from ..perf.cost_model import BatchShape
from ..perf.memory_plan import MemoryPlan

REGISTRY: dict[str, type[Scheduler]] = {}


def register(name: str):
    def wrap(cls: type[Scheduler]) -> type[Scheduler]:
        cls.name = name
        REGISTRY[name] = cls
        return cls

    return wrap


def get_scheduler(name: str) -> type[Scheduler]:
    from . import vllm  # noqa: F401  (policies register themselves on import)

    if name not in REGISTRY:
        raise InputError(f"--scheduler {name}: unknown policy (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


@dataclass(slots=True)
class ScheduledBatch:
    """One iteration's work: the running-table rows `rows` with their `scheduled` tokens."""

    rows: slice
    shape: BatchShape
    prefill_tokens: int
    decode_tokens: int
    kv_blocks_used: int

    @property
    def batch_size(self) -> int:
        return self.rows.stop - self.rows.start


@dataclass(slots=True)
class BatchOutcome:
    """What an iteration produced: finished requests (as columns) and inter-token gaps."""

    finished: dict[str, np.ndarray] | None
    gap_values_s: np.ndarray
    gap_counts: np.ndarray
    first_tokens: int


class Scheduler:
    name = "base"

    def __init__(self, dep: Deployment, plan: MemoryPlan, model: ModelConfig):
        self.dep = dep
        self.block_size = dep.block_size
        self.blocks = BlockManager(plan.num_blocks, dep.block_size)
        self.running = RequestTable(capacity=min(dep.max_num_seqs, 1024))
        self.waiting: deque[Request] = deque()
        self.waiting_work_tokens = 0
        self.max_model_len = min(dep.max_model_len or model.max_position_embeddings, plan.kv_tokens)
        self.preemptions = 0
        self.span_in_flight: tuple[np.ndarray, np.ndarray] | None = None  # (step ends, work done by each)

    # -- admission -------------------------------------------------------------------
    def rejection_reason(self, req: Request) -> str | None:
        total = req.record.input_tokens + req.record.output_tokens
        if total > self.max_model_len:
            return f"input+output {total} tokens exceed max_model_len {self.max_model_len}"
        return None

    def admit(self, req: Request, now_s: float) -> str | None:
        reason = self.rejection_reason(req)
        if reason is None:
            self._push_waiting(req)
        return reason

    def _push_waiting(self, req: Request, front: bool = False) -> None:
        (self.waiting.appendleft if front else self.waiting.append)(req)
        self.waiting_work_tokens += req.remaining_work_tokens

    def _pop_waiting(self) -> Request:
        req = self.waiting.popleft()
        self.waiting_work_tokens -= req.remaining_work_tokens
        return req

    # -- state the engine and routers read --------------------------------------------
    def has_work(self) -> bool:
        return bool(self.waiting) or self.running.n > 0

    def outstanding_work_tokens(self, now_s: float) -> int:
        """Tokens still to compute on this replica (prompts and outputs, waiting and running).

        While a span runs, its steps that have ended by `now_s` count as done, exactly as if
        each had been applied at its own end.
        """
        t, n = self.running, self.running.n
        running = int(np.add.reduce(t.num_tokens[:n] - t.num_computed[:n])
                      + np.add.reduce(t.input_tokens[:n] + t.output_tokens[:n] - t.num_tokens[:n]))
        done = 0
        if self.span_in_flight is not None:
            ends, cum_work = self.span_in_flight
            steps_done = int(ends.searchsorted(now_s, side="right"))
            done = int(cum_work[steps_done - 1]) if steps_done else 0
        return running + self.waiting_work_tokens - done

    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        raise NotImplementedError

    # -- shared mechanics -------------------------------------------------------------
    def _preempt_last(self, now_s: float) -> None:
        """Recompute-mode preemption of the lowest-priority running request (vLLM's policy)."""
        blocks = int(self.running.blocks[self.running.n - 1])
        req = self.running.pop_last()
        self.blocks.release(blocks)
        req.num_computed = 0
        req.preemptions += 1
        self.preemptions += 1
        self._push_waiting(req, front=True)

    def _make_batch(self, rows: slice) -> ScheduledBatch:
        """Aggregate the scheduled rows into the cost model's BatchShape.

        A row decodes when all but its newest token are computed and it is past its prompt;
        any other row runs a prefill chunk of `scheduled` tokens after `num_computed` cached.
        """
        t = self.running
        comp = t.num_computed[rows]
        ntok = t.num_tokens[rows]
        decode = (ntok - comp == 1) & (ntok > t.input_tokens[rows])
        nd = int(np.add.reduce(decode))
        if nd == len(comp):  # the common all-decode step: every row samples one token
            shape = BatchShape(num_decodes=nd, decode_context=float(np.add.reduce(ntok)), sampled=nd)
            return ScheduledBatch(rows, shape, 0, nd, self.blocks.used)
        s = t.scheduled[rows]
        pre = ~decode
        c, ctx = s[pre], comp[pre]
        shape = BatchShape(
            prefill_tokens=int(np.add.reduce(c)),
            prefill_context=float(np.add.reduce(ctx + c)),
            prefill_pairs=float((c * (ctx + (c + 1) / 2.0)).sum()),
            num_decodes=nd,
            decode_context=float(np.add.reduce(ntok[decode])),
            sampled=int(np.add.reduce(comp + s == ntok)),
        )
        return ScheduledBatch(rows, shape, shape.prefill_tokens, nd, self.blocks.used)

    def on_batch_done(self, batch: ScheduledBatch, now_s: float) -> BatchOutcome:
        t, rows = self.running, batch.rows
        self.blocks.tick(now_s)
        t.num_computed[rows] += t.scheduled[rows]
        t.scheduled[rows] = 0
        idx = rows.start + (t.num_computed[rows] == t.num_tokens[rows]).nonzero()[0]
        first = np.isnan(t.first_token_s[idx])
        t.first_token_s[idx[first]] = now_s
        gap_values, gap_counts = gaps(now_s, t.last_token_s[idx[~first]])
        t.last_token_s[idx] = now_s
        t.num_tokens[idx] += 1
        return BatchOutcome(self._take_finished(), gap_values, gap_counts, int(np.add.reduce(first)))

    def _take_finished(self) -> dict[str, np.ndarray] | None:
        t, n = self.running, self.running.n
        done = t.num_tokens[:n] - t.input_tokens[:n] >= t.output_tokens[:n]
        if not done.any():
            return None
        finished = t.take(done)
        self.blocks.release(int(np.add.reduce(finished["blocks"])))
        return finished

    # -- spans: a step, then decode steps of the same sequences until they finish --------
    def plan_span(self, batch: ScheduledBatch, max_steps: int) -> SpanPlan | None:
        """Plan `batch` followed by up to max_steps-1 pure-decode steps of its sequences.

        Valid while every running sequence samples a token every step (so `batch` completes
        each prompt it touches), nothing waits, and KV blocks suffice without preemption;
        sequences drop out as they finish. Returns None when no second step qualifies.
        """
        t, n = self.running, self.running.n
        if max_steps < 2 or self.waiting or batch.rows != slice(0, n) or batch.shape.sampled != n:
            return None
        ntok = t.num_tokens[:n]
        remaining = t.output_tokens[:n] - (ntok - t.input_tokens[:n])  # steps each samples in, >= 1
        steps = int(min(np.maximum.reduce(remaining), max_steps))
        if steps < 2:
            return None
        # Sequences still decoding at step j >= 1 are those with remaining > j.
        step_index = np.arange(steps)
        if np.minimum.reduce(remaining) >= steps:  # nobody finishes inside the span: the common short span
            active = np.full(steps, n)
            context = np.add.reduce(ntok) + step_index * n
        else:
            order = remaining.argsort(kind="stable")
            done_by = remaining[order].searchsorted(step_index, side="right")  # finished before step j
            active = n - done_by
            ntok_suffix = np.concatenate(((ntok[order][::-1]).cumsum()[::-1], [0]))
            context = ntok_suffix[done_by] + step_index * active  # step j reads ntok + j per sequence
        # KV blocks: after step 0 sequence i holds c_i = computed + scheduled tokens; step j needs
        # ceil((c_i + j) / bs) blocks, a new one first at j0 = blocks*bs - c_i + 1, then every bs
        # steps, while it is active (j < remaining). A finished sequence frees all its blocks.
        bs = self.block_size
        j0 = t.blocks[:n] * bs - (t.num_computed[:n] + t.scheduled[:n]) + 1
        end = np.minimum(remaining, steps)
        grows = np.maximum(-(-(end - j0) // bs), 0)  # new blocks each takes within the span
        width = -(-(steps + bs) // bs) * bs
        growing = grows > 0
        comb = (np.bincount(j0[growing], minlength=width)
                - np.bincount((j0 + grows * bs)[growing], minlength=width))[:width]
        new_per_step = comb.reshape(-1, bs).cumsum(axis=0).ravel()[:steps]
        held = self.blocks.used + new_per_step.cumsum()  # before releases
        fin = remaining < steps
        used = held
        if fin.any():
            freed = np.bincount(remaining[fin], weights=t.blocks[:n][fin] + grows[fin], minlength=steps)[:steps]
            used = held - freed.cumsum().astype(np.int64)
        over = (used > self.blocks.num_blocks).nonzero()[0]
        if over.size:
            steps = int(over[0])
            if steps < 2:
                return None
        # Work done by step j (see outstanding_work_tokens): its scheduled tokens, plus the one
        # token of context a sequence leaves behind when it finishes.
        work = np.empty(steps, dtype=np.int64)
        work[0] = int(np.add.reduce(t.scheduled[:n]))
        work[1:] = active[1:steps]
        finishing = remaining <= steps
        if finishing.any():
            work += np.bincount(remaining[finishing] - 1, minlength=steps)
        return SpanPlan(steps, active[:steps], context[:steps].astype(np.float64), used[:steps], held[:steps],
                        remaining, int(np.minimum.reduce(remaining)), work.cumsum())

    def apply_span(self, plan: SpanPlan, ends_s: np.ndarray) -> BatchOutcome:
        """Apply the first k = len(ends_s) steps of `plan`; sequences finish at their own step."""
        t, n, k = self.running, self.running.n, len(ends_s)
        starts = np.concatenate(([self.blocks.since_s], ends_s[:-1]))
        self.blocks.advance(plan.used[:k], ends_s - starts, float(ends_s[-1]), int(plan.held[k - 1]))
        first = np.isnan(t.first_token_s[:n])
        gap_values, gap_counts = gaps(float(ends_s[0]), t.last_token_s[:n][~first])
        t.first_token_s[:n][first] = ends_s[0]
        gap_values = np.concatenate((gap_values, ends_s[1:] - ends_s[:-1]))
        gap_counts = np.concatenate((gap_counts, plan.active[1:k]))
        finishes = plan.min_remaining <= k
        steps_in = np.minimum(plan.remaining, k) if finishes else k  # steps each sequence sampled in
        t.num_computed[:n] += t.scheduled[:n] + (steps_in - 1)
        t.scheduled[:n] = 0
        t.num_tokens[:n] += steps_in
        t.last_token_s[:n] = ends_s[steps_in - 1] if finishes else ends_s[-1]
        t.blocks[:n] = np.maximum(t.blocks[:n], ceil_div(t.num_computed[:n], self.block_size))
        finished = self._take_finished() if finishes else None
        return BatchOutcome(finished, gap_values, gap_counts, int(np.add.reduce(first)))


@dataclass(slots=True)
class SpanPlan:
    """Per-step arrays (index j = step j, step 0 being the scheduled batch) of a span."""

    steps: int
    active: np.ndarray  # sequences in step j
    decode_context: np.ndarray  # KV tokens read by step j's decodes (j >= 1)
    used: np.ndarray  # KV blocks in use during step j
    held: np.ndarray  # KV blocks held by the span's sequences at step j, before any is freed
    remaining: np.ndarray  # per running row: steps it samples in before it finishes
    min_remaining: int
    cum_work: np.ndarray  # tokens of outstanding work done by the end of step j


_EMPTY = np.zeros(0)
_EMPTY_I = np.zeros(0, dtype=np.int64)


def gaps(now_s: float, last_token_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token gaps ending now, as (distinct value, count); usually all share one value."""
    if last_token_s.size == 0:
        return _EMPTY, _EMPTY_I
    lo = np.minimum.reduce(last_token_s)
    if lo == np.maximum.reduce(last_token_s):
        return np.array([now_s - lo]), np.array([last_token_s.size], dtype=np.int64)
    return np.unique(now_s - last_token_s, return_counts=True)


def ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)
