"""The capacity search: the highest arrival rate at which one replica still meets the SLO.

Meeting the SLO is taken to be monotone in the rate (more load, more queueing), so the
answer is the boundary between rates that pass and rates that fail. The search works in
rounds; the rates of one round are independent and may be simulated side by side:

1. bracket: the first round tries three rates around the geometric middle of the range
   [low, high] (x/2, x, 2x); while every rate tried so far passes (or fails), the next
   round tries 4x and 16x the highest pass (or 1/4 and 1/16 of the lowest failure),
   clipped to the range;
2. bisect: the interval between the highest pass below the lowest failure and that
   failure is cut geometrically, until they are within the relative tolerance. With
   `points_per_round` k a round tries k rates that split the interval into k + 1 equal
   log-parts (no more than it takes to reach the tolerance), so each round narrows it
   (k + 1)-fold. k = 1 (the default) is plain bisection at the geometric mean, the fewest
   points; a larger k takes more points in all but fewer rounds one after another, which is
   what bounds the wall time when there are more workers than candidates.

It ends with the highest passing rate (`max_rate`), `capped` when even `high` passes (the
capacity is at least that), or `infeasible` when even `low` fails. Proposals depend only on
earlier outcomes and the plan, never on timing or the number of workers, so every executor
runs the same points. Rates are rounded to 6 significant digits, which keeps them readable
and their cache keys stable.
"""
from __future__ import annotations

import math

EXPAND = 4.0  # the factor between the rates of a bracketing round


def _round(rate: float) -> float:
    return float(f"{rate:.6g}")


class CapacitySearch:
    def __init__(self, low: float, high: float, tolerance: float, points_per_round: int = 1):
        self.low, self.high, self.tolerance = _round(low), _round(high), tolerance
        self.points_per_round = points_per_round
        self.outcomes: dict[float, bool] = {}  # rate -> met the SLO

    def observe(self, rate: float, met: bool) -> None:
        self.outcomes[rate] = met

    @property
    def bracket(self) -> tuple[float | None, float | None]:
        """(the highest passing rate below the lowest failing one, that failing rate)."""
        fail = min((r for r, met in self.outcomes.items() if not met), default=None)
        passed = max((r for r, met in self.outcomes.items() if met and (fail is None or r < fail)), default=None)
        return passed, fail

    def propose(self) -> list[float]:
        """The next round's rates, none tried before; empty when the search is over."""
        if not self.outcomes:
            middle = math.sqrt(self.low * self.high)
            return self._new([middle / 2, middle, middle * 2])
        passed, fail = self.bracket
        if passed is None:
            assert fail is not None  # outcomes hold a pass or a failure
            return [] if fail <= self.low else self._new([fail / EXPAND, fail / EXPAND**2])
        if fail is None:
            return [] if passed >= self.high else self._new([passed * EXPAND, passed * EXPAND**2])
        if fail / passed <= 1 + self.tolerance:
            return []
        parts = min(self.points_per_round + 1, math.ceil(self._steps(fail / passed)))
        return self._new([passed * (fail / passed) ** (i / parts) for i in range(1, parts)])

    def _new(self, rates: list[float]) -> list[float]:
        clipped = (_round(min(max(r, self.low), self.high)) for r in rates)
        return sorted({r for r in clipped if r not in self.outcomes})

    @property
    def max_rate(self) -> float | None:
        return self.bracket[0]

    @property
    def capped(self) -> bool:
        return self.max_rate == self.high

    @property
    def infeasible(self) -> bool:
        return self.bracket == (None, self.low)

    def remaining(self) -> int:
        """About how many more points the search needs (for the progress bar's ETA)."""
        passed, fail = self.bracket
        if not self.outcomes:
            return 3 + self._bisections(2.0)
        if passed is None or fail is None:
            return 0 if self.capped or self.infeasible else 2 + self._bisections(EXPAND**2)
        return self._bisections(fail / passed)

    def _steps(self, ratio: float) -> float:
        """How many tolerance-wide steps the interval of `ratio` spans."""
        return math.log(ratio) / math.log(1 + self.tolerance)

    def _bisections(self, ratio: float) -> int:
        """Points to narrow an interval of `ratio` to the tolerance."""
        steps = self._steps(ratio)
        if steps <= 1:
            return 0
        rounds = math.ceil(math.log(steps) / math.log(self.points_per_round + 1))
        return rounds * self.points_per_round
