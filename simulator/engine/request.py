"""Requests as plain records: one object while waiting, one table row while running.

A waiting request is a `Request` (a slotted record). Once admitted to a replica's running
set it becomes a row of a `RequestTable`, a structure of numpy columns, so each iteration's
per-token work (tokens to schedule, blocks to allocate, tokens sampled) is a handful of
vectorised operations over the batch instead of a Python loop per sequence.

State follows vLLM: `num_tokens` is prompt + tokens generated so far, `num_computed` the
tokens whose KV is in the cache. A step schedules `num_tokens - num_computed` tokens (the
rest of the prompt, possibly chunked, or 1 for a decode); when a step brings num_computed
up to num_tokens, a token is sampled and num_tokens grows by one. A request is done when
num_tokens reaches `final_tokens`, its prompt plus all its output tokens.
"""
from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

from ..workloads.trace import TraceRecord


class Request:
    """A request outside the running set (waiting, preempted and waiting again, or finished).

    While it runs, the fields the table does not hold stay current here: `first_token_s`
    (set when the first token is sampled), `first_scheduled_s` and `preemptions`.
    """

    __slots__ = ("record", "num_tokens", "num_computed", "first_token_s", "first_scheduled_s",
                 "last_token_s", "preemptions", "replica", "prefix_keys", "held_keys", "swapped_blocks",
                 "ready_step")

    def __init__(self, record: TraceRecord):
        self.record = record
        self.num_tokens = record.input_tokens
        self.num_computed = 0
        self.first_token_s = math.nan
        self.first_scheduled_s = math.nan
        self.last_token_s = math.nan
        self.preemptions = 0
        self.replica = -1
        self.prefix_keys: list[tuple] | None = None  # named prompt blocks, with prefix caching
        self.held_keys: list[tuple] = []  # of those, the ones this request holds a reference on
        self.swapped_blocks = 0  # KV blocks in host memory while swapped out
        self.ready_step = 0  # the replica's steps started before it may be scheduled (async engines)

    @property
    def remaining_work_tokens(self) -> int:
        """Tokens still to compute: the uncomputed prompt (and context) plus outputs to come."""
        rec = self.record
        return rec.input_tokens + rec.output_tokens - self.num_computed


# Column name -> dtype of the running table: only what the per-step vector operations read.
COLUMNS = {
    "input_tokens": "i8",
    "final_tokens": "i8",  # input + output tokens: num_tokens when the request is done
    "num_tokens": "i8",
    "num_computed": "i8",
    "blocks": "i8",
    "scheduled": "i8",  # tokens scheduled in the batch in flight
    "last_token_s": "f8",  # NaN until the first token
}


class RequestTable:
    """The running set of one replica as numpy columns, in scheduling-priority order.

    Each column of COLUMNS is an attribute (a numpy array with spare capacity); rows
    [0, n) are live. `requests` lists the rows' Request objects.
    """

    # the columns of COLUMNS, set by __init__ and _grow through setattr
    input_tokens: npt.NDArray[np.int64]
    final_tokens: npt.NDArray[np.int64]
    num_tokens: npt.NDArray[np.int64]
    num_computed: npt.NDArray[np.int64]
    blocks: npt.NDArray[np.int64]
    scheduled: npt.NDArray[np.int64]
    last_token_s: npt.NDArray[np.float64]

    def __init__(self, capacity: int):
        self.n = 0
        for name, dt in COLUMNS.items():
            setattr(self, name, np.zeros(capacity, dtype=dt))
        self.requests: list[Request] = []

    def _grow(self) -> None:
        size = 2 * len(self.num_tokens)
        for name in COLUMNS:
            setattr(self, name, np.resize(getattr(self, name), size))

    def append(self, req: Request, blocks: int, scheduled: int, final_tokens: int | None = None) -> int:
        """Add `req` as the last row; `final_tokens` stops it early (default: all its output)."""
        if self.n == len(self.num_tokens):
            self._grow()
        i, rec = self.n, req.record
        self.input_tokens[i] = rec.input_tokens
        self.final_tokens[i] = rec.input_tokens + rec.output_tokens if final_tokens is None else final_tokens
        self.num_tokens[i] = req.num_tokens
        self.num_computed[i] = req.num_computed
        self.blocks[i] = blocks
        self.scheduled[i] = scheduled
        self.last_token_s[i] = req.last_token_s
        self.requests.append(req)
        self.n += 1
        return i

    def pop_last(self) -> Request:
        """Remove the lowest-priority row and return it as a Request carrying its state."""
        self.n -= 1
        i = self.n
        req = self.requests.pop()
        req.num_tokens = int(self.num_tokens[i])
        req.num_computed = int(self.num_computed[i])
        req.last_token_s = float(self.last_token_s[i])
        return req

    def take(self, gone: np.ndarray, keep: np.ndarray) -> list[Request]:
        """Remove the finished rows `gone` (sorted indices; `keep` are the other rows, sorted) and
        return their Requests, each with `last_token_s` (when it sampled its last token) set.

        Rows before the first removed one stay where they are; integer index arrays move the
        rest (cheaper than boolean masks for the few rows a step finishes).
        """
        rows = gone.tolist()
        first, m = rows[0], len(keep)
        tail = keep[first:]
        taken = [self.requests[i] for i in rows]
        for req, finish_s in zip(taken, self.last_token_s[gone].tolist()):
            req.last_token_s = finish_s
        for name in COLUMNS:
            col = getattr(self, name)
            col[first:m] = col[tail]
        for i in reversed(rows):
            del self.requests[i]
        self.n = m
        return taken
