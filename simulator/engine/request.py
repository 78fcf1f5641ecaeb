"""Requests as plain records: one object while waiting, one table row while running.

A waiting request is a `Request` (a slotted record). Once admitted to a replica's running
set it becomes a row of a `RequestTable`, a structure of numpy columns, so each iteration's
per-token work (tokens to schedule, blocks to allocate, tokens sampled) is a handful of
vectorised operations over the batch instead of a Python loop per sequence.

State follows vLLM: `num_tokens` is prompt + tokens generated so far, `num_computed` the
tokens whose KV is in the cache. A step schedules `num_tokens - num_computed` tokens (the
rest of the prompt, possibly chunked, or 1 for a decode); when a step brings num_computed
up to num_tokens, a token is sampled and num_tokens grows by one.
"""
from __future__ import annotations

import math

import numpy as np

from ..workloads.trace import TraceRecord


class Request:
    """A request outside the running set (waiting, or preempted and waiting again)."""

    __slots__ = ("record", "num_tokens", "num_computed", "first_token_s", "first_scheduled_s",
                 "last_token_s", "preemptions", "replica")

    def __init__(self, record: TraceRecord):
        self.record = record
        self.num_tokens = record.input_tokens
        self.num_computed = 0
        self.first_token_s = math.nan
        self.first_scheduled_s = math.nan
        self.last_token_s = math.nan
        self.preemptions = 0
        self.replica = -1

    @property
    def remaining_work_tokens(self) -> int:
        """Tokens still to compute: the uncomputed prompt (and context) plus outputs to come."""
        rec = self.record
        return self.num_tokens - self.num_computed + rec.input_tokens + rec.output_tokens - self.num_tokens


# Column name -> dtype of the running table.
COLUMNS = {
    "arrival_s": "f8",
    "input_tokens": "i8",
    "output_tokens": "i8",
    "num_tokens": "i8",
    "num_computed": "i8",
    "blocks": "i8",
    "first_token_s": "f8",
    "first_scheduled_s": "f8",
    "last_token_s": "f8",
    "preemptions": "i8",
    "scheduled": "i8",  # tokens scheduled in the batch in flight
}


class RequestTable:
    """The running set of one replica as numpy columns, in scheduling-priority order.

    Each column of COLUMNS is an attribute (a numpy array with spare capacity); rows
    [0, n) are live.
    """

    def __init__(self, capacity: int):
        self.n = 0
        for name, dt in COLUMNS.items():
            setattr(self, name, np.zeros(capacity, dtype=dt))
        self.requests = np.empty(capacity, dtype=object)

    def _grow(self) -> None:
        size = 2 * len(self.requests)
        for name in COLUMNS:
            setattr(self, name, np.resize(getattr(self, name), size))
        self.requests = np.resize(self.requests, size)

    def append(self, req: Request, blocks: int, scheduled: int) -> int:
        if self.n == len(self.requests):
            self._grow()
        i, rec = self.n, req.record
        self.arrival_s[i] = rec.arrival_s
        self.input_tokens[i] = rec.input_tokens
        self.output_tokens[i] = rec.output_tokens
        self.num_tokens[i] = req.num_tokens
        self.num_computed[i] = req.num_computed
        self.blocks[i] = blocks
        self.first_token_s[i] = req.first_token_s
        self.first_scheduled_s[i] = req.first_scheduled_s
        self.last_token_s[i] = req.last_token_s
        self.preemptions[i] = req.preemptions
        self.scheduled[i] = scheduled
        self.requests[i] = req
        self.n += 1
        return i

    def pop_last(self) -> Request:
        """Remove the lowest-priority row and return it as a Request carrying its state."""
        self.n -= 1
        i = self.n
        req: Request = self.requests[i]
        self.requests[i] = None
        req.num_tokens = int(self.num_tokens[i])
        req.num_computed = int(self.num_computed[i])
        req.first_token_s = float(self.first_token_s[i])
        req.first_scheduled_s = float(self.first_scheduled_s[i])
        req.last_token_s = float(self.last_token_s[i])
        req.preemptions = int(self.preemptions[i])
        return req

    def take(self, mask: np.ndarray) -> dict[str, np.ndarray]:
        """Remove the rows where `mask` (length n) is true; return them as columns (+ 'requests').

        Rows before the first removed one stay where they are; integer index arrays move the
        rest (cheaper than boolean masks for the few rows a step finishes).
        """
        n = self.n
        gone = mask.nonzero()[0]
        keep = (~mask).nonzero()[0]
        first, m = int(gone[0]), len(keep)
        tail = keep[first:]
        taken: dict[str, np.ndarray] = {}
        for name in COLUMNS:
            col = getattr(self, name)
            taken[name] = col[gone]
            col[first:m] = col[tail]
        taken["requests"] = self.requests[gone]
        self.requests[first:m] = self.requests[tail]
        self.requests[m:n] = None
        self.n = m
        return taken
