"""KV-cache transfer from the prefill pool to the decode pool of a disaggregated deployment.

When a prefill replica samples a request's first token it hands the request here. The
request waits (FCFS) until a decode replica, at one of its step boundaries, can reserve
its KV blocks and a sequence slot and pulls it (back-pressure: meanwhile its blocks stay
allocated on the prefill replica; an idle decode replica pulls at once). Then its
KV crosses the link: latency + bytes / bandwidth, one transfer at a time per prefill
replica (a replica's copies share its link; the next starts when the previous ends). The
bytes are the whole model's KV for the prompt and first token; with tensor parallelism
each of min(prefill tp, decode tp) device pairs moves its share in parallel, so the
link's bandwidth counts that many times. When the copy lands, the prefill replica frees
the blocks and the request joins the decode replica: its first token reaches the user
then (TTFT includes the transfer) and its next token follows one decode step later.

Link timings are known when a transfer starts, so a decode replica can tell how long it
may run unchanged decode steps as one span (`horizon_s`).
"""
from __future__ import annotations

import functools
import heapq
from collections import deque
from dataclasses import dataclass

from ..schedulers.disagg import PrefillRole
from .batch import BatchOutcome


@dataclass(frozen=True)
class TransferLink:
    """The link KV copies take: its name, bandwidth per device pair and latency."""

    name: str
    bandwidth: float  # bytes/s, per direction
    latency_s: float


class KvTransfer:
    def __init__(self, env, link: TransferLink, kv_bytes_per_token: float, parallel_pairs: int,
                 prefill: list, decode: list, recorder, arrivals_horizon_s):
        """`prefill` and `decode` are the pools' Replicas (their schedulers play the prefill
        and decode roles of schedulers/disagg.py)."""
        self.env, self.link, self.kv_bytes_per_token = env, link, kv_bytes_per_token
        self.bandwidth = link.bandwidth * parallel_pairs
        self.prefill, self.decode = prefill, decode
        self.recorder, self.arrivals_horizon_s = recorder, arrivals_horizon_s
        self.pending: deque = deque()  # (prefill replica index, request, its blocks, since) waiting for room
        self.link_free_s = [0.0] * len(prefill)
        self.landings: list[float] = []  # heap of the landing times of copies in flight
        self.count = 0
        self.bytes = 0.0
        self.time_s = 0.0  # summed transfer durations
        self.wait_s = 0.0  # summed time requests waited for room in the decode pool
        for index, replica in enumerate(prefill):
            replica.scheduler.handoff = self._handoff_from(index)
        for target, replica in enumerate(decode):
            replica.scheduler.pull = functools.partial(self.pull, target)

    def _handoff_from(self, index: int):
        def handoff(sched: PrefillRole, req, blocks: int) -> None:
            if req.record.output_tokens == 1:  # nothing to decode: done with its first token
                sched.release_sent(req, blocks, self.env.now)
                self.recorder.outcome(BatchOutcome([req], []))
                return
            self.pending.append((index, req, blocks, self.env.now))
            for replica in self.decode:  # an idle decode replica pulls it at once
                replica.wake()

        return handoff

    def pull(self, target: int, now_s: float) -> None:
        """Decode replica `target`, at a step boundary, reserves room for waiting requests
        in order (DistServe's decode instances pull KV when they have memory) and starts
        their copies; it stops at the first that does not fit."""
        sched = self.decode[target].scheduler
        while self.pending:
            source, req, blocks, since = self.pending[0]
            reserved = sched.reserve(req, now_s)
            if not reserved:
                return
            self.pending.popleft()
            self.wait_s += now_s - since
            nbytes = (req.record.input_tokens + 1) * self.kv_bytes_per_token
            start = max(now_s, self.link_free_s[source])
            end = start + self.link.latency_s + nbytes / self.bandwidth
            self.link_free_s[source] = end
            heapq.heappush(self.landings, end)
            self.count += 1
            self.bytes += nbytes
            self.time_s += end - start
            self.env.process(self._land(end, source, req, blocks, target, reserved))

    def _land(self, end_s: float, source: int, req, blocks: int, target: int, reserved: int):
        yield self.env.timeout(end_s - self.env.now)
        # Copies land in time order, so the earliest landing left is this one's (or an equal one's).
        heapq.heappop(self.landings)
        self.prefill[source].scheduler.release_sent(req, blocks, end_s)
        self.prefill[source].wake()
        req.first_token_s = req.last_token_s = end_s
        req.replica = self.decode[target].index
        self.decode[target].scheduler.accept(req, reserved)
        self.decode[target].wake()

    def horizon_s(self, target: int) -> float:
        """Nothing can change decode replica `target`'s running set before this time: it
        pulls waiting requests at every step boundary (so none may wait for a span to end),
        a new request waits only after a prefill step's end (at the earliest the end of a
        step now running, or of one that starts at the next arrival or when a landing copy
        frees prefill blocks), and copies land when they land."""
        if self.pending:
            return self.env.now
        return min(min(r.busy_until for r in self.prefill), self.arrivals_horizon_s(),
                   self.landings[0] if self.landings else float("inf"))

    def summary(self) -> dict:
        return {"link": self.link.name, "bandwidth_bytes_per_s": self.bandwidth, "latency_s": self.link.latency_s,
                "transfers": self.count, "bytes": self.bytes, "time_s": self.time_s,
                "mean_time_s": self.time_s / self.count if self.count else 0.0,
                "wait_for_decode_room_s": self.wait_s}
