"""What a scheduler hands the engine for one iteration, and what the iteration gives back.

Both sides read these: a policy builds a `ScheduledBatch` (its rows and their aggregate
`BatchShape`, all the cost model sees), the engine costs and runs it, and the policy turns
its progress into a `BatchOutcome` (finished requests, inter-token gaps). A `SpanPlan` is a
batch followed by decode steps of the same sequences, run as one (engine/replica.py).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np

from .request import Request


class BatchShape(NamedTuple):
    """What the cost model needs to know about a mixed batch, aggregated.

    prefill_tokens: new prompt tokens over all chunks; prefill_context: KV tokens the chunks
    attend to (cached context + the chunk itself); prefill_pairs: causal query-key pairs;
    decode_context: KV tokens read by all decodes; sampled: sequences producing a token;
    decode_max_context: KV tokens read by the longest decode (0: not known, costed as if all
    decodes read the mean: perf/context_skew.py).
    A NamedTuple: schedulers build one per step, and it is cheaper than a frozen dataclass.
    """

    prefill_tokens: int = 0
    prefill_context: float = 0.0
    prefill_pairs: float = 0.0
    num_decodes: int = 0
    decode_context: float = 0.0
    sampled: int = 0
    decode_max_context: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prefill_tokens + self.num_decodes


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
    transfer_s: float = 0.0  # host-link copies (swap out/in) on the step's critical path

    @property
    def batch_size(self) -> int:
        return self.rows.stop - self.rows.start


@dataclass(slots=True)
class BatchOutcome:
    """What an iteration (or a span) produced: finished requests and inter-token gaps."""

    finished: list[Request] | None  # each with last_token_s = its finish time
    gaps: list[tuple]  # (gap values in s, how many tokens saw each) pairs, see `gaps`


@dataclass(slots=True)
class SpanPlan:
    """Per-step arrays (index j = step j, step 0 being the scheduled batch) of a span."""

    batch: ScheduledBatch  # step 0
    steps: int
    active: np.ndarray  # sequences in step j
    decode_context: np.ndarray  # KV tokens read by step j's decodes (j >= 1)
    decode_max_context: np.ndarray  # KV tokens read by step j's longest decode (j >= 1)
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
