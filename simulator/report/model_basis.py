"""What a plan's candidate was modelled with: where its simulated time came from.

candidates.csv carries, per feasible candidate, the share of its capacity point's time by
source (`time_by_source`, perf/kernel_times.SOURCES). A candidate is headlined by what most
of its kernel time was: "calibrated" only when that is a profile measured on its own device,
otherwise "transferred" (another device's profile), "scaled" (another dtype of its own
profile) or "roofline". The report states the shares beside that word, so a headline never
claims more than the run it describes.
"""
from __future__ import annotations

import json
import math
from typing import Any

# what the report calls each group of kernel-time sources, in the order it lists them
KERNEL_GROUPS = {"calibrated": ("calibrated-interpolation", "calibrated-fit"), "transferred": ("transferred",),
                 "scaled": ("scaled",), "roofline": ("roofline",)}
HOST = "host-overhead"


def time_shares(text: Any) -> dict[str, float] | None:
    """The time-by-source JSON of a candidates.csv cell, grouped as the report names them
    (calibrated, transferred, scaled, roofline, host); None when the cell is empty."""
    if not isinstance(text, str) or not text.strip():
        return None
    shares = json.loads(text)
    grouped = {name: sum(float(shares.get(s, 0.0)) for s in sources) for name, sources in KERNEL_GROUPS.items()}
    grouped["host"] = float(shares.get(HOST, 0.0))
    return grouped


def dominant(shares: dict[str, float]) -> str:
    """The kernel-source group with the most time (ties: the first in KERNEL_GROUPS' order)."""
    return max(KERNEL_GROUPS, key=lambda name: (shares[name], -list(KERNEL_GROUPS).index(name)))


def shares_text(shares: dict[str, float]) -> str:
    """"calibrated 86 % · roofline 2 % · host 12 %": the groups with any time, in percent."""
    return " · ".join(f"{name} {_percent(share)}" for name, share in shares.items() if share >= 0.005)


def _percent(share: float) -> str:
    value = 100.0 * share
    return f"{value:.0f} %" if value >= 9.5 or math.isclose(value, round(value)) else f"{value:.1f} %"
