"""The routers, driven directly with stand-in schedulers (fixed loads and prefix hits), so
each rule is checked against hand-worked choices without running a simulation."""
from __future__ import annotations

from collections import Counter

import pytest

from simulator.engine.router import ROUTERS, least_outstanding, power_of_two, prefix_affinity, round_robin
from simulator.workloads.trace import TraceRecord


class FakeScheduler:
    """What a router reads from a replica: outstanding tokens and prefix-cache hits."""

    def __init__(self, load: int, hit: int = 0):
        self.load, self.hit = load, hit

    def outstanding_work_tokens(self, now_s: float) -> int:
        return self.load

    def prefix_hit_tokens(self, record: TraceRecord) -> int:
        return self.hit


def fleet(loads, hits=None):
    return [FakeScheduler(load, hit) for load, hit in zip(loads, hits or [0] * len(loads))]


REQ = TraceRecord("r", 0.0, input_tokens=600, output_tokens=100)  # adds 700 tokens of work


def test_registry_names_and_common_signature():
    assert list(ROUTERS) == ["round_robin", "least_outstanding", "power_of_two", "prefix_affinity"]
    schedulers = fleet([5, 3, 9])
    for factory in ROUTERS.values():
        pick = factory(7)
        assert pick(schedulers, REQ, 0.0) in range(3)


def test_round_robin_cycles():
    pick = round_robin(0)
    assert [pick(fleet([0, 0, 0]), REQ, 0.0) for _ in range(7)] == [0, 1, 2, 0, 1, 2, 0]


def test_least_outstanding_ties_to_lowest_index():
    pick = least_outstanding(0)
    assert pick(fleet([5, 3, 9]), REQ, 0.0) == 1
    assert pick(fleet([4, 2, 2]), REQ, 0.0) == 1


def test_power_of_two_single_replica():
    assert power_of_two(3)(fleet([10]), REQ, 0.0) == 0


def test_power_of_two_is_seeded():
    schedulers = fleet([3, 1, 4, 1, 5, 9, 2, 6])
    a, b, c = power_of_two(11), power_of_two(11), power_of_two(12)
    seq_a = [a(schedulers, REQ, 0.0) for _ in range(200)]
    assert seq_a == [b(schedulers, REQ, 0.0) for _ in range(200)]
    assert seq_a != [c(schedulers, REQ, 0.0) for _ in range(200)]


def test_power_of_two_pairs_are_uniform_distinct_and_ties_go_low():
    """Equal loads: the pick is the lower index of a uniform distinct pair of 4, so index k
    wins in the (3 - k) of the 6 pairs whose lower member it is: 1/2, 1/3, 1/6, 0."""
    pick = power_of_two(0)
    n = 60_000
    schedulers = fleet([7, 7, 7, 7])
    counts = Counter(pick(schedulers, REQ, 0.0) for _ in range(n))
    assert counts[3] == 0
    for k, share in ((0, 3 / 6), (1, 2 / 6), (2, 1 / 6)):
        assert counts[k] / n == pytest.approx(share, abs=0.01)


def test_power_of_two_prefers_the_lighter_of_its_pair():
    """Distinct loads: the most loaded replica never wins; the least loaded wins whenever it
    is drawn, in 2 of 3 distinct pairs of 3 replicas (the pair is unordered)."""
    pick = power_of_two(5)
    n = 30_000
    schedulers = fleet([50, 10, 90])
    counts = Counter(pick(schedulers, REQ, 0.0) for _ in range(n))
    assert counts[2] == 0
    assert counts[1] / n == pytest.approx(2 / 3, abs=0.01)


@pytest.mark.parametrize("loads, hits, expected, why", [
    ([100, 0, 50], [0, 512, 0], 1, "longest cached prefix, and the least loaded anyway"),
    ([300, 100, 900], [512, 0, 0], 0, "longest cached prefix; gap 200 is under the request's 700 tokens"),
    ([900, 300, 200], [256, 256, 0], 1, "hit tie between 0 and 1: the less loaded of the two"),
    ([300, 300, 900], [256, 256, 0], 0, "hit and load tie: the lower index"),
    ([40, 20, 30], [0, 0, 0], 1, "no hits anywhere: least outstanding"),
    ([500, 0], [512, 0], 0, "idle replica but gap 500 <= 700: stay with the cache"),
    ([700, 0], [512, 0], 0, "gap exactly the request's 700 tokens is not an imbalance"),
    ([701, 0], [512, 0], 1, "gap 701 > 700 and 701 > 2 x 0: go to the least loaded"),
    ([10_000, 100], [512, 0], 1, "gap 9900 > 700 and 10000 > 2 x 100: go to the least loaded"),
    ([6_000, 3_000], [512, 0], 0, "gap 3000 > 700 but 6000 = 2 x 3000 is not more than twice"),
    ([6_001, 3_000], [512, 0], 1, "gap 3001 > 700 and 6001 > 2 x 3000"),
])
def test_prefix_affinity(loads, hits, expected, why):
    assert prefix_affinity(0)(fleet(loads, hits), REQ, 0.0) == expected, why


def test_prefix_affinity_reads_the_record():
    """The hit count comes from the request's own prompt, passed to every replica."""
    seen = []

    class Recording(FakeScheduler):
        def prefix_hit_tokens(self, record):
            seen.append(record)
            return super().prefix_hit_tokens(record)

    prefix_affinity(0)([Recording(0), Recording(0)], REQ, 1.5)
    assert seen == [REQ, REQ]
