"""Routers: which replica gets an arriving request.

- round_robin: replicas in turn, blind to load.
- least_outstanding: the replica with the fewest tokens still to compute (uncomputed prompt
  and context plus outputs still to generate), ties to the lowest index.
- power_of_two: two distinct replicas drawn uniformly at random, the one with fewer
  outstanding tokens wins (ties to the lower index). Mitzenmacher's "power of two choices":
  nearly the balance of least_outstanding while reading only two replicas' load, as a
  router that polls its replicas would.
- prefix_affinity: the replica whose prefix cache holds the longest prefix of the prompt
  (ties to the least outstanding tokens), unless that replica is overloaded; see
  `prefix_affinity` for the balance rule.

Every entry of ROUTERS is a factory `ROUTERS[name](seed)` returning a
`pick(schedulers, record, now_s) -> replica index`; the factory holds the router's state
(round robin's counter, the random generator). A new router is one such factory.
"""
from __future__ import annotations

from collections.abc import Callable, Sequence
from itertools import count

import numpy as np

from ..schedulers.base import Scheduler
from ..workloads.trace import TraceRecord

Pick = Callable[[Sequence[Scheduler], TraceRecord, float], int]

# power_of_two draws its random numbers this many pairs at a time: one numpy call per
# block instead of two per arrival.
DRAW_BLOCK = 4096


def round_robin(seed: int) -> Pick:
    """Replicas in turn (deterministic: `seed` is unused)."""
    counter = count()

    def pick(schedulers: Sequence[Scheduler], record: TraceRecord, now_s: float) -> int:
        return next(counter) % len(schedulers)

    return pick


def _least_loaded(loads: Sequence[int]) -> int:
    return loads.index(min(loads))


def least_outstanding(seed: int) -> Pick:
    """Fewest outstanding tokens, ties to the lowest index (deterministic: `seed` is unused)."""

    def pick(schedulers: Sequence[Scheduler], record: TraceRecord, now_s: float) -> int:
        return _least_loaded([s.outstanding_work_tokens(now_s) for s in schedulers])

    return pick


def power_of_two(seed: int) -> Pick:
    """Two distinct replicas uniformly at random (numpy Generator seeded with `seed`), the
    one with fewer outstanding tokens; ties to the lower index.

    Each pair comes from two uniform floats u, v: i = floor(u n), then j = floor(v (n-1)),
    moved up by one if j >= i, which makes (i, j) uniform over the ordered distinct pairs
    for any replica count n. One replica has no choice to make.
    """
    rng = np.random.default_rng(seed)
    draws: list[list[float]] = []

    def pick(schedulers: Sequence[Scheduler], record: TraceRecord, now_s: float) -> int:
        n = len(schedulers)
        if n == 1:
            return 0
        if not draws:
            draws.extend(reversed(rng.random((DRAW_BLOCK, 2)).tolist()))
        u, v = draws.pop()
        i = int(u * n)
        j = int(v * (n - 1))
        j += j >= i
        a, b = min(i, j), max(i, j)
        return b if schedulers[b].outstanding_work_tokens(now_s) < schedulers[a].outstanding_work_tokens(now_s) else a

    return pick


def prefix_affinity(seed: int) -> Pick:
    """The replica holding the longest cached prefix of the prompt, unless it is overloaded.

    Candidates are the replicas with the most prompt tokens already cached
    (`Scheduler.prefix_hit_tokens`); among them the one with the fewest outstanding tokens
    (then the lowest index) is the cache's choice `b`. With no hit anywhere every replica
    ties and this is least_outstanding. Affinity alone would pile a popular prefix onto one
    replica, so, as SGLang's cache-aware router does, the request goes to the least loaded
    replica `m` instead when the load is imbalanced, i.e. both
      load_b - load_m > input_tokens + output_tokens   (absolute gap)
      load_b > 2 * load_m                              (relative gap)
    hold. The absolute gap is measured against the work this very request adds: a smaller
    gap is what a single routing decision creates (and the next arrival evens out), not an
    imbalance. The relative gap keeps affinity on busy replicas while b holds at most twice
    m's work, since then the work queued ahead of the request on b is at most double what
    it would be on m, and the cached prefix is not recomputed. SGLang applies the same pair
    of conditions to counts of requests with tunable thresholds; here both are fixed and in
    tokens, the unit of the other routers. Deterministic: `seed` is unused.
    """

    def pick(schedulers: Sequence[Scheduler], record: TraceRecord, now_s: float) -> int:
        loads = [s.outstanding_work_tokens(now_s) for s in schedulers]
        hits = [s.prefix_hit_tokens(record) for s in schedulers]
        most = max(hits)
        b = min((i for i, h in enumerate(hits) if h == most), key=loads.__getitem__)
        m = _least_loaded(loads)
        gap = loads[b] - loads[m]
        if gap > record.input_tokens + record.output_tokens and loads[b] > 2 * loads[m]:
            return m
        return b

    return pick


ROUTERS: dict[str, Callable[[int], Pick]] = {
    "round_robin": round_robin,
    "least_outstanding": least_outstanding,
    "power_of_two": power_of_two,
    "prefix_affinity": prefix_affinity,
}
