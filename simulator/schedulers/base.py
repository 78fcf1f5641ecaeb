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

    def outstanding_work_tokens(self) -> int:
        """Tokens still to compute on this replica (prompts and outputs, waiting and running)."""
        t, n = self.running, self.running.n
        running = int((t.num_tokens[:n] - t.num_computed[:n]).sum()
                      + (t.input_tokens[:n] + t.output_tokens[:n] - t.num_tokens[:n]).sum())
        return running + self.waiting_work_tokens

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
        nd = int(decode.sum())
        if nd == len(comp):  # the common all-decode step: every row samples one token
            shape = BatchShape(num_decodes=nd, decode_context=float(ntok.sum()), sampled=nd)
            return ScheduledBatch(rows, shape, 0, nd, self.blocks.used)
        s = t.scheduled[rows]
        pre = ~decode
        c, ctx = s[pre], comp[pre]
        shape = BatchShape(
            prefill_tokens=int(c.sum()),
            prefill_context=float((ctx + c).sum()),
            prefill_pairs=float((c * (ctx + (c + 1) / 2.0)).sum()),
            num_decodes=nd,
            decode_context=float(ntok[decode].sum()),
            sampled=int((comp + s == ntok).sum()),
        )
        return ScheduledBatch(rows, shape, shape.prefill_tokens, nd, self.blocks.used)

    def on_batch_done(self, batch: ScheduledBatch, now_s: float) -> BatchOutcome:
        t, rows = self.running, batch.rows
        self.blocks.tick(now_s)
        t.num_computed[rows] += t.scheduled[rows]
        t.scheduled[rows] = 0
        idx = rows.start + np.flatnonzero(t.num_computed[rows] == t.num_tokens[rows])
        first = np.isnan(t.first_token_s[idx])
        t.first_token_s[idx[first]] = now_s
        gap_values, gap_counts = gaps(now_s, t.last_token_s[idx[~first]])
        t.last_token_s[idx] = now_s
        t.num_tokens[idx] += 1
        return BatchOutcome(self._take_finished(), gap_values, gap_counts, int(first.sum()))

    def _take_finished(self) -> dict[str, np.ndarray] | None:
        t, n = self.running, self.running.n
        done = t.num_tokens[:n] - t.input_tokens[:n] >= t.output_tokens[:n]
        if not done.any():
            return None
        finished = t.take(done)
        self.blocks.release(int(finished["blocks"].sum()))
        return finished

    # -- spans: a step followed by decode steps of the same sequences --------------------
    def span_steps(self, batch: ScheduledBatch, max_steps: int = 4096) -> tuple[int, np.ndarray]:
        """How many steps `batch` and then pure decodes of the same sequences can run unchanged.

        Step 0 is `batch` itself (it may hold prefill chunks). The span continues while
        every running sequence samples a token each step (so `batch` completes every prompt
        it touches), nothing waits, no sequence finishes before the last step, and the KV
        blocks suffice without preemption. Returns (steps, KV blocks in use per step);
        steps == 1 means no span.
        """
        t, n = self.running, self.running.n
        used0 = np.array([self.blocks.used])
        if self.waiting or batch.rows != slice(0, n) or batch.shape.sampled != n:
            return 1, used0
        remaining = t.output_tokens[:n] - (t.num_tokens[:n] - t.input_tokens[:n])
        steps = int(min(remaining.min(), max_steps))
        if steps <= 1:
            return 1, used0
        # After step 0 sequence i has c = computed + scheduled tokens cached; step j >= 1 needs
        # ceil((c + j) / bs) blocks, so it first needs a new one at j0 = blocks*bs - c + 1,
        # then every bs steps.
        bs = self.block_size
        j0 = t.blocks[:n] * bs - (t.num_computed[:n] + t.scheduled[:n]) + 1
        first = np.bincount(j0[j0 < steps], minlength=steps)
        padded = np.zeros(-(-steps // bs) * bs, dtype=np.int64)
        padded[:steps] = first
        new_blocks = padded.reshape(-1, bs).cumsum(axis=0).ravel()[:steps]
        used = self.blocks.used + np.cumsum(new_blocks)
        over = np.flatnonzero(used > self.blocks.num_blocks)
        if over.size:
            steps = int(over[0])
        return max(steps, 1), used[: max(steps, 1)]

    def apply_span(self, used: np.ndarray, ends_s: np.ndarray) -> BatchOutcome:
        """Apply step 0 (the scheduled batch) and k-1 decode steps of all running sequences."""
        t, n, k = self.running, self.running.n, len(ends_s)
        starts = np.concatenate(([self.blocks.since_s], ends_s[:-1]))
        self.blocks.advance(used, ends_s - starts, float(ends_s[-1]))
        t.num_computed[:n] += t.scheduled[:n] + (k - 1)
        t.scheduled[:n] = 0
        first = np.isnan(t.first_token_s[:n])
        t.first_token_s[:n][first] = ends_s[0]
        gap_values, gap_counts = gaps(float(ends_s[0]), t.last_token_s[:n][~first])
        gap_values = np.concatenate((gap_values, np.diff(ends_s)))
        gap_counts = np.concatenate((gap_counts, np.full(k - 1, n, dtype=np.int64)))
        t.num_tokens[:n] += k
        t.last_token_s[:n] = ends_s[-1]
        t.blocks[:n] = np.maximum(t.blocks[:n], ceil_div(t.num_computed[:n], self.block_size))
        return BatchOutcome(self._take_finished(), gap_values, gap_counts, int(first.sum()))


_EMPTY = np.zeros(0)
_EMPTY_I = np.zeros(0, dtype=np.int64)


def gaps(now_s: float, last_token_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Inter-token gaps ending now, as (distinct value, count); usually all share one value."""
    if last_token_s.size == 0:
        return _EMPTY, _EMPTY_I
    lo = last_token_s.min()
    if lo == last_token_s.max():
        return np.array([now_s - lo]), np.array([last_token_s.size], dtype=np.int64)
    return np.unique(now_s - last_token_s, return_counts=True)


def ceil_div(a: np.ndarray, b: int) -> np.ndarray:
    return -(-a // b)
