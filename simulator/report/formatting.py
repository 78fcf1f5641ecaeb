"""Numbers as the report prints them: significant figures, dollars, latencies, percentages, counts.

Every figure caption, table cell and sentence of the report goes through these, so the same
quantity reads the same way everywhere, and a missing value (None or NaN) is always "—".
"""
from __future__ import annotations

import math
from typing import Any


def missing(x: Any) -> bool:
    """None or NaN: a value the planner's files left empty."""
    return x is None or (isinstance(x, float) and math.isnan(x))


def sig(x: Any, digits: int = 3) -> str:
    """`digits` significant figures, no exponent, no trailing zeros ("12.3", "0.0123", "1,234")."""
    if missing(x):
        return "—"
    x = float(x)
    if x == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    text = f"{round(x, decimals):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(x: Any) -> str:
    """Dollars with cents; amounts under a cent keep two significant figures ("$0.0042")."""
    if missing(x):
        return "—"
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${sig(x, 2)}"


def seconds(x: Any) -> str:
    """A latency target: milliseconds under a second."""
    if missing(x):
        return "—"
    return f"{sig(x * 1e3)} ms" if x < 1 else f"{sig(x)} s"


def percent(x: Any) -> str:
    return "—" if missing(x) else f"{sig(100 * x)} %"


def integer(x: Any) -> str:
    return "—" if missing(x) else f"{int(x):,}"


def count(x: Any, noun: str) -> str:
    """"1 device", "3 devices"."""
    return f"{integer(x)} {noun}{'' if not missing(x) and int(x) == 1 else 's'}"
