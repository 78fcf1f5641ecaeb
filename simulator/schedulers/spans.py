"""Spans: a scheduled step followed by decode steps of the same sequences, run as one.

While every running sequence samples a token every step, nothing waits and the KV blocks
suffice, the steps after a batch differ only by one token of context per sequence and by the
sequences that finish. `plan_span` lays such steps out as arrays (who is active, the KV
tokens read, the blocks in use), the engine costs them in one call, and `apply_span` applies
the first k of them with exactly the effect of applying each step on its own (the property
test `test_engine_invariants_and_fast_forward_is_exact` holds this to 1e-9). A mixin of
`Scheduler`: it reads the running table and the KV cache manager the policy owns.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Protocol

import numpy as np

from ..engine.batch import BatchOutcome, ScheduledBatch, SpanPlan, gaps

if TYPE_CHECKING:
    from ..engine.kv_cache import KVCacheManager
    from ..engine.request import Request, RequestTable


class _Policy(Protocol):
    """What the mixin reads of the policy it is mixed into (`Scheduler`)."""

    running: RequestTable
    blocks: KVCacheManager
    block_size: int

    def may_start_waiting(self) -> bool: ...

    def _first_tokens(self, completing: list[int], now_s: float) -> int: ...

    def _take_finished(self, give_back: bool = True) -> list[Request] | None: ...


class SpanSteps:
    """`plan_span` and `apply_span` for a policy (see the module docstring)."""

    def plan_span(self: _Policy, batch: ScheduledBatch, max_steps: int) -> SpanPlan | None:
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
            longest = np.maximum.reduce(ntok) + step_index
        else:  # those done by step j: cumulative counts (and ntok sums) by remaining
            active = n - np.bincount(remaining, minlength=steps)[:steps].cumsum()
            ntok_done = np.bincount(remaining, weights=ntok, minlength=steps)[:steps].cumsum()
            context = (np.add.reduce(ntok) - ntok_done) + step_index * active
            # the longest still active at step j: the largest ntok among rows with remaining > j
            by_remaining = np.zeros(steps + 1)
            np.maximum.at(by_remaining, np.minimum(remaining, steps), ntok)
            longest = np.maximum.accumulate(by_remaining[::-1])[::-1][1:] + step_index
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
            gone = t.blocks[:n] + grows
            if self.blocks.cache is not None and self.blocks.cache.refs:
                gone = gone - self.blocks.still_shared(t, remaining, steps)
            freed = np.bincount(remaining, weights=gone, minlength=steps)[:steps]
            used = held - freed.cumsum().astype(np.int64)
        if np.maximum.reduce(used) > self.blocks.num_blocks:
            steps = int((used > self.blocks.num_blocks).nonzero()[0][0])
            if steps < 2:
                return None
        return SpanPlan(batch, steps, active[:steps], context[:steps], longest[:steps], used[:steps], held[:steps],
                        remaining, lo)

    def apply_span(self: _Policy, plan: SpanPlan, ends_s: np.ndarray) -> BatchOutcome:
        """Apply the first k = len(ends_s) steps of `plan`; sequences finish at their own step."""
        t, n, k = self.running, self.running.n, len(ends_s)
        starts = np.concatenate(([self.blocks.since_s], ends_s[:-1]))
        self.blocks.advance(plan.used[:k], ends_s - starts, float(ends_s[-1]), int(plan.held[k - 1]))
        first_end = float(ends_s[0])
        if self.blocks.named_prefixes:
            self.blocks.cache_prompt_blocks(t.requests, plan.batch.completing)
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
        cached = self.blocks.cache is not None
        if cached:
            self.blocks.free_span_finishers(t, plan, k)  # gives back the finished rows' blocks
        finished = self._take_finished(give_back=not cached) if plan.min_remaining <= k else None
        return BatchOutcome(finished, span_gaps)
