"""Strict parsing of quantities with units ("3.35 TB/s", "80 GB", "989 TFLOPS").

Hardware numbers are only trustworthy with their unit attached: a bare number, or bits where
bytes were meant (Gb/s versus GB/s), is the classic bug of this field. So every dimensional
field is a string with a unit, and this module turns it into SI base units (bytes, bytes/s,
FLOP/s, Hz, W, s, USD) or raises `UnitError` with a message that says what was expected.

Decimal prefixes are decimal (GB = 1e9 B) and binary prefixes binary (GiB = 2**30 B).
A tiny table-driven parser is used instead of a general units library so that `simulate`
starts in well under a second.
"""
from __future__ import annotations

import math
import re

_DECIMAL = {"": 1.0, "k": 1e3, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15, "E": 1e18}
_BINARY = {"Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50}
_SMALL = {"": 1.0, "m": 1e-3, "u": 1e-6, "µ": 1e-6, "n": 1e-9, "p": 1e-12}


class UnitError(ValueError):
    """A quantity string that is malformed or has the wrong kind of unit."""


def _table() -> dict[str, dict[str, float]]:
    """Map each dimension to the unit spellings it accepts and their SI factors."""
    tables: dict[str, dict[str, float]] = {
        "bytes": {},
        "bandwidth": {},
        "flops": {},
        "frequency": {},
        "power": {},
        "time": {},
        "money_per_hour": {"USD": 1.0, "USD/h": 1.0, "USD/hour": 1.0, "$/h": 1.0},
        "money": {"USD": 1.0, "$": 1.0},
        "energy": {},
    }
    for prefixes in (_DECIMAL, _BINARY):
        for p, f in prefixes.items():
            tables["bytes"][f"{p}B"] = f
            tables["bandwidth"][f"{p}B/s"] = f
            # bits per second, for network links quoted that way (1 B = 8 b)
            tables["bandwidth"][f"{p}b/s"] = f / 8.0
            tables["bandwidth"][f"{p}bps"] = f / 8.0
    for p, f in _DECIMAL.items():
        tables["flops"][f"{p}FLOPS"] = f
        tables["flops"][f"{p}FLOP/s"] = f
        tables["flops"][f"{p}OPS"] = f  # integer ops (TOPS for int8)
        tables["frequency"][f"{p}Hz"] = f
        tables["power"][f"{p}W"] = f
        tables["energy"][f"{p}J"] = f
    for p, f in _SMALL.items():
        tables["time"][f"{p}s"] = f
    tables["time"].update({"min": 60.0, "h": 3600.0})
    tables["power"].update({"mW": 1e-3})
    return tables


_UNITS = _table()
_EXAMPLES = {
    "bytes": '"80 GB"',
    "bandwidth": '"3.35 TB/s"',
    "flops": '"989 TFLOPS"',
    "frequency": '"1.83 GHz"',
    "power": '"700 W"',
    "time": '"2 us"',
    "money_per_hour": '"2.5 USD"',
    "money": '"2.5 USD"',
    "energy": '"1 J"',
}
_PATTERN = re.compile(r"^\s*([+-]?(?:\d+\.?\d*|\.\d+)(?:[eE][+-]?\d+)?)\s*([^\s\d].*?)?\s*$")


def example(dimension: str) -> str:
    """An example quantity string for error messages."""
    return _EXAMPLES[dimension]


def parse_quantity(value: object, dimension: str) -> float:
    """Parse `value` ("3.35 TB/s") as `dimension` and return it in SI base units.

    Raises UnitError for a bare number, an unknown unit, a unit of another dimension or a
    quantity too large for a float.
    """
    if isinstance(value, bool) or value is None:
        raise UnitError(f"{value!r} is not a quantity (expected e.g. {example(dimension)})")
    if isinstance(value, (int, float)):
        raise UnitError(f'"{value}" has no unit (expected e.g. {example(dimension)})')
    if not isinstance(value, str):
        raise UnitError(f"{value!r} is not a quantity string (expected e.g. {example(dimension)})")
    match = _PATTERN.match(value)
    if not match:
        raise UnitError(f'"{value}" is not a number with a unit (expected e.g. {example(dimension)})')
    number, unit = float(match.group(1)), (match.group(2) or "")
    if not unit:
        raise UnitError(f'"{value}" has no unit (expected e.g. {example(dimension)})')
    factor = _UNITS[dimension].get(unit)
    if factor is None:
        for other, units in _UNITS.items():
            if unit in units and other != dimension:
                raise UnitError(
                    f'"{value}" is a {other} but a {dimension} is needed (e.g. {example(dimension)})'
                )
        raise UnitError(f'"{value}" has unknown unit "{unit}" (expected e.g. {example(dimension)})')
    if not math.isfinite(number * factor):  # "1e400 GB/s" overflows to infinity, which poisons every cost
        raise UnitError(f'"{value}" is too large to be a {dimension}')
    return number * factor
