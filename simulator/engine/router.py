"""Routers: which replica gets an arriving request.

- round_robin: replicas in turn, blind to load.
- least_outstanding: the replica with the fewest tokens still to compute (uncomputed prompt
  and context plus outputs still to generate), ties to the lowest index.
A new router is one function registered in ROUTERS.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

from ..schedulers.base import Scheduler


def round_robin() -> Callable[[Sequence[Scheduler], float], int]:
    counter = count()

    def pick(schedulers: Sequence[Scheduler], now_s: float) -> int:
        return next(counter) % len(schedulers)

    return pick


def least_outstanding() -> Callable[[Sequence[Scheduler], float], int]:
    def pick(schedulers: Sequence[Scheduler], now_s: float) -> int:
        loads = [s.outstanding_work_tokens(now_s) for s in schedulers]
        return loads.index(min(loads))

    return pick


ROUTERS = {"round_robin": round_robin, "least_outstanding": least_outstanding}
