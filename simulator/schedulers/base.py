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

import math
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
    _import_policies()

    if name not in REGISTRY:
        raise InputError(f"--scheduler {name}: unknown policy (known: {', '.join(sorted(REGISTRY))})")
    return REGISTRY[name]


def _import_policies() -> None:
    """Import every module of this package: policies register themselves on import."""
    import importlib
    import pkgutil
    from pathlib import Path

    for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
        if info.name != "base":
            importlib.import_module(f"{__package__}.{info.name}")


@dataclass(slots=True)
class ScheduledBatch:
    """One iteration's work: the running-table rows `rows` with their `scheduled` tokens.

    Every row decodes one token except the prefill rows, listed by table index (a few per
    step): `completing` finish their prompt and sample a token, `partial` run a chunk that
    stops short of it and sample nothing.
    """

    rows: slice
    shape: BatchShape
    prefill_tokens: int
    decode_tokens: int
    kv_blocks_used: int
    completing: list[int]
    partial: list[int]

    @property
    def batch_size(self) -> int:
        return self.rows.stop - self.rows.start


@dataclass(slots=True)
class BatchOutcome:
    """What an iteration (or a span) produced: finished requests and inter-token gaps."""

    finished: list[Request] | None  # each with last_token_s = its finish time
    gaps: list[tuple]  # (gap values in s, how many tokens saw each) pairs, see `gaps`


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
        self.span_in_flight: tuple[np.ndarray, SpanPlan] | None = None  # (step ends, the span's plan)

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
        running = int(np.add.reduce(t.final_tokens[:n] - t.num_computed[:n]))
        done = 0
        if self.span_in_flight is not None:
            ends, plan = self.span_in_flight
            done = plan.work_done(int(ends.searchsorted(now_s, side="right")))
        return running + self.waiting_work_tokens - done

    def next_batch(self, now_s: float) -> ScheduledBatch | None:
        raise NotImplementedError

    def may_start_waiting(self) -> bool:
        """Whether a waiting request could join the running set at the next step; while
        none can, the running sequences decode on unchanged and may run as one span."""
        return bool(self.waiting)

    # -- shared mechanics -------------------------------------------------------------
    def _try_start(self, budget: int, now_s: float, whole: bool = False, watermark: int = 0,
                   reserve_tokens: int = 0) -> int:
        """Start the request at the head of the waiting queue with up to `budget` tokens
        scheduled (all of its uncomputed tokens if `whole`); returns the tokens scheduled,
        or 0 (and changes nothing) when it does not fit the budget or the KV blocks above
        `watermark`. `reserve_tokens` > 0 allocates blocks for that many tokens up front
        (policies that reserve a request's whole length, like Orca and static batching).
        """
        req = self.waiting[0]
        remaining = req.num_tokens - req.num_computed
        if remaining > budget and whole:
            return 0
        take = min(remaining, budget)
        need = self.blocks.blocks_for(max(req.num_computed + take, reserve_tokens))
        if not self.blocks.can_allocate(need, watermark):
            return 0
        self._pop_waiting()
        self.blocks.allocate(need)
        if math.isnan(req.first_scheduled_s):
            req.first_scheduled_s = now_s
        self.running.append(req, blocks=need, scheduled=take)
        return take

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
        Prefill rows are few, so their sums run in Python over exact integers (and
        half-integers for the pairs): the same values as summing arrays in any order.
        """
        t = self.running
        ntok, comp = t.num_tokens[rows], t.num_computed[rows]
        prefill = ((ntok - comp) != 1) | (ntok <= t.input_tokens[rows])
        idx = prefill.nonzero()[0]
        size = rows.stop - rows.start
        decode_context = int(np.add.reduce(ntok))
        prefill_tokens = prefill_context = 0
        pairs = 0.0
        completing: list[int] = []
        partial: list[int] = []
        if idx.size:
            sched, computed, tokens = t.scheduled, t.num_computed, t.num_tokens
            for i in idx.tolist():
                i += rows.start
                c, ctx, total = sched.item(i), computed.item(i), tokens.item(i)
                prefill_tokens += c
                prefill_context += ctx + c
                pairs += c * (ctx + (c + 1) / 2.0)
                decode_context -= total
                (completing if ctx + c == total else partial).append(i)
        nd = size - len(idx)
        shape = BatchShape(prefill_tokens, float(prefill_context), pairs, nd, float(decode_context), size - len(partial))
        return ScheduledBatch(rows, shape, prefill_tokens, nd, self.blocks.used, completing, partial)

    def on_batch_done(self, batch: ScheduledBatch, now_s: float) -> BatchOutcome:
        """Apply a step: every row computes its scheduled tokens and all but `partial` sample one."""
        t, rows, partial = self.running, batch.rows, batch.partial
        self.blocks.tick(now_s)
        t.num_computed[rows] += t.scheduled[rows]
        t.scheduled[rows] = 0
        first = self._first_tokens(batch.completing, now_s)
        last = t.last_token_s
        kept = [last.item(i) for i in partial]  # partial rows sample nothing: no gap, no new time
        for i in partial:
            last[i] = math.nan
        step_gaps = gaps(now_s, last[rows], batch.shape.sampled - first)
        last[rows] = now_s
        t.num_tokens[rows] += 1
        for i, held in zip(partial, kept):
            last[i] = held
            t.num_tokens[i] -= 1
        return BatchOutcome(self._take_finished(), [step_gaps])

    def _first_tokens(self, completing: list[int], now_s: float) -> int:
        """Stamp the first token of the `completing` rows that had none; returns how many."""
        requests, count = self.running.requests, 0
        for i in completing:
            req = requests[i]
            if math.isnan(req.first_token_s):
                req.first_token_s = now_s
                count += 1
        return count

    def _take_finished(self) -> list[Request] | None:
        t, n = self.running, self.running.n
        done = t.num_tokens[:n] >= t.final_tokens[:n]
        gone = done.nonzero()[0]
        if not gone.size:
            return None
        self.blocks.release(sum(map(t.blocks.item, gone.tolist())))
        return t.take(gone, (~done).nonzero()[0])

    # -- spans: a step, then decode steps of the same sequences until they finish --------
    def plan_span(self, batch: ScheduledBatch, max_steps: int) -> SpanPlan | None:
        """Plan `batch` followed by up to max_steps-1 pure-decode steps of its sequences.

        Valid while every running sequence samples a token every step (so `batch` completes
        each prompt it touches), nothing waits, and KV blocks suffice without preemption;
        sequences drop out as they finish. Returns None when no second step qualifies.
        """
        t, n = self.running, self.running.n
        if max_steps < 2 or self.may_start_waiting() or batch.rows != slice(0, n) or batch.shape.sampled != n:
            return None
        ntok = t.num_tokens[:n]  # all sampled at step 0, so computed + scheduled = ntok
        remaining = t.final_tokens[:n] - ntok  # steps each samples in, >= 1
        steps = int(min(np.maximum.reduce(remaining), max_steps))
        if steps < 2:
            return None
        lo = int(np.minimum.reduce(remaining))
        # Step j >= 1 decodes the sequences with remaining > j, each reading ntok + j tokens.
        step_index = np.arange(steps, dtype=np.float64)  # float: the contexts are float sums
        if lo >= steps:  # nobody finishes inside the span: the common short span
            active = np.full(steps, n)
            context = np.add.reduce(ntok) + step_index * n
        else:  # those done by step j: cumulative counts (and ntok sums) by remaining
            active = n - np.bincount(remaining, minlength=steps)[:steps].cumsum()
            ntok_done = np.bincount(remaining, weights=ntok, minlength=steps)[:steps].cumsum()
            context = (np.add.reduce(ntok) - ntok_done) + step_index * active
        # KV blocks: after step 0 sequence i holds ntok_i tokens; step j needs ceil((ntok_i + j) / bs)
        # blocks, a new one first at j0 = blocks*bs - ntok_i + 1, then every bs steps, while it is
        # active (j < remaining). A finished sequence frees all its blocks.
        bs = self.block_size
        j0 = t.blocks[:n] * bs - ntok + 1
        grows = np.maximum((np.minimum(remaining, steps) - j0 + (bs - 1)) // bs, 0)  # new blocks within the span
        # +1 at j0 and -1 at j0 + grows*bs on every bs-th step (a row that never grows cancels out)
        width = -(-(steps + bs) // bs) * bs
        comb = (np.bincount(j0, minlength=width) - np.bincount(j0 + grows * bs, minlength=width))[:width]
        new_per_step = comb.reshape(-1, bs).cumsum(axis=0).ravel()[:steps]
        held = self.blocks.used + new_per_step.cumsum()  # before releases
        used = held
        if lo < steps:
            freed = np.bincount(remaining, weights=t.blocks[:n] + grows, minlength=steps)[:steps]
            used = held - freed.cumsum().astype(np.int64)
        if np.maximum.reduce(used) > self.blocks.num_blocks:
            steps = int((used > self.blocks.num_blocks).nonzero()[0][0])
            if steps < 2:
                return None
        return SpanPlan(batch, steps, active[:steps], context[:steps], used[:steps], held[:steps], remaining, lo)

    def apply_span(self, plan: SpanPlan, ends_s: np.ndarray) -> BatchOutcome:
        """Apply the first k = len(ends_s) steps of `plan`; sequences finish at their own step."""
        t, n, k = self.running, self.running.n, len(ends_s)
        starts = np.concatenate(([self.blocks.since_s], ends_s[:-1]))
        self.blocks.advance(plan.used[:k], ends_s - starts, float(ends_s[-1]), int(plan.held[k - 1]))
        first_end = float(ends_s[0])
        first = self._first_tokens(plan.batch.completing, first_end)  # every row samples at step 0
        # gaps: at step 0 since each row's last token, then one step long for each active row
        span_gaps = [gaps(first_end, t.last_token_s[:n], n - first), (ends_s[1:] - ends_s[:-1], plan.active[1:k])]
        if plan.min_remaining <= k:  # some finish: each row samples in min(remaining, k) steps
            steps_in = np.minimum(plan.remaining, k)
            t.num_tokens[:n] += steps_in
            t.last_token_s[:n] = ends_s[steps_in - 1]
        else:
            t.num_tokens[:n] += k
            t.last_token_s[:n] = ends_s[-1]
        comp = t.num_computed[:n]
        np.subtract(t.num_tokens[:n], 1, out=comp)  # each row sampled at its last step
        t.scheduled[:n] = 0
        np.maximum(t.blocks[:n], (comp + (self.block_size - 1)) // self.block_size, out=t.blocks[:n])
        finished = self._take_finished() if plan.min_remaining <= k else None
        return BatchOutcome(finished, span_gaps)


@dataclass(slots=True)
class SpanPlan:
    """Per-step arrays (index j = step j, step 0 being the scheduled batch) of a span."""

    batch: ScheduledBatch  # step 0
    steps: int
    active: np.ndarray  # sequences in step j
    decode_context: np.ndarray  # KV tokens read by step j's decodes (j >= 1)
    used: np.ndarray  # KV blocks in use during step j
    held: np.ndarray  # KV blocks held by the span's sequences at step j, before any is freed
    remaining: np.ndarray  # per running row: steps it samples in before it finishes
    min_remaining: int

    def work_done(self, steps: int) -> int:
        """Tokens of outstanding work (see outstanding_work_tokens) done by the first `steps`
        steps: step 0's scheduled tokens, one per active sequence in each later step, and the
        one token of context a sequence leaves behind when it finishes."""
        if steps == 0:
            return 0
        return (self.batch.shape.tokens + int(np.add.reduce(self.active[1:steps]))
                + int(np.count_nonzero(self.remaining <= steps)))


def gaps(now_s: float, last_token_s: np.ndarray, count: int) -> tuple:
    """Inter-token gaps ending now, as (distinct values, counts), from the `count` entries of
    last_token_s that are not NaN (NaN: no earlier token). Usually all share one value, and
    then the pair is of 1-tuples (cheaper than arrays for one step's single gap)."""
    if count == 0:
        return (), ()
    lo = np.fmin.reduce(last_token_s)
    if lo == np.fmax.reduce(last_token_s):
        return (float(now_s - lo),), (count,)
    return np.unique(now_s - last_token_s[~np.isnan(last_token_s)], return_counts=True)
