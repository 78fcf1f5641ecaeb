"""What a row records of a list of trial times: the median as time_us, with p10, p90 and the trial count.

One function for every path (numpy, torch, the collectives' ranks), so that a measurement CSV
means the same whichever device wrote it. Times keep six significant digits.
"""
from __future__ import annotations

from collections.abc import Sequence

import numpy as np


def summarize(samples_us: Sequence[float]) -> dict[str, float | int]:
    x = np.asarray(samples_us, dtype=float)
    p10, med, p90 = np.percentile(x, [10, 50, 90])
    return {"time_us": _r(med), "p10_us": _r(p10), "p90_us": _r(p90), "trials": int(x.size)}


def _r(x: float) -> float:
    """Six significant digits (a positive time never rounds to zero)."""
    return float(f"{x:.6g}")
