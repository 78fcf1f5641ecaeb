"""Strict unit parsing (simulator/hardware/units.py, docs/contracts.md, section 1).

Expected values are written out by hand: decimal prefixes are powers of ten (GB = 1e9 B),
binary prefixes powers of two (GiB = 2**30 B), and a bit is an eighth of a byte.
"""
from __future__ import annotations

import math

import pytest
from hypothesis import given
from hypothesis import strategies as st

from simulator.hardware.units import UnitError, parse_quantity

# --- decimal versus binary prefixes ------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "dimension", "expected"),
    [
        ("80 GB", "bytes", 80e9),
        ("80 GiB", "bytes", 80 * 2**30),
        ("50 MB", "bytes", 50e6),
        ("48 KB", "bytes", 48e3),
        ("48 KiB", "bytes", 48 * 1024),
        ("1 TiB", "bytes", 2**40),
        ("3.35 TB/s", "bandwidth", 3.35e12),
        ("450 GB/s", "bandwidth", 450e9),
        ("1 GiB/s", "bandwidth", 2**30),
        ("400 Gb/s", "bandwidth", 50e9),  # 400e9 bits / 8 = 50e9 bytes
        ("400 Gbps", "bandwidth", 50e9),
        ("989 TFLOPS", "flops", 989e12),
        ("1979 TOPS", "flops", 1979e12),
        ("1.83 GHz", "frequency", 1.83e9),
        ("700 W", "power", 700.0),
        ("2 us", "time", 2e-6),
        ("5 ms", "time", 5e-3),
        ("2.5 USD", "money_per_hour", 2.5),
    ],
)
def test_known_quantities(text, dimension, expected):
    assert parse_quantity(text, dimension) == pytest.approx(expected, rel=1e-12)


def test_decimal_and_binary_gigabytes_differ_by_the_documented_ratio():
    # 80 GiB / 80 GB = 2**30 / 1e9 = 1.073741824
    ratio = parse_quantity("80 GiB", "bytes") / parse_quantity("80 GB", "bytes")
    assert ratio == pytest.approx(1.073741824, rel=1e-12)


def test_bits_and_bytes_per_second_differ_by_eight():
    assert parse_quantity("100 GB/s", "bandwidth") == pytest.approx(8 * parse_quantity("100 Gb/s", "bandwidth"))


def test_whitespace_and_exponents():
    assert parse_quantity("  80GB ", "bytes") == 80e9
    assert parse_quantity("1.5e3 GB", "bytes") == pytest.approx(1.5e12)
    assert parse_quantity(".5 TB/s", "bandwidth") == pytest.approx(0.5e12)


# --- rejections ----------------------------------------------------------------------------------


@pytest.mark.parametrize("value", [3.35, 80, "3.35", "80", " 2 "])
def test_bare_numbers_are_rejected(value):
    with pytest.raises(UnitError, match="no unit"):
        parse_quantity(value, "bandwidth")


@pytest.mark.parametrize("value", [None, True, False, ["80 GB"], {"v": 1}])
def test_non_quantities_are_rejected(value):
    with pytest.raises(UnitError):
        parse_quantity(value, "bytes")


@pytest.mark.parametrize(
    ("text", "dimension", "other"),
    [
        ("80 GB/s", "bytes", "bandwidth"),  # a bandwidth where a capacity is needed
        ("80 GB", "bandwidth", "bytes"),  # a capacity where a bandwidth is needed
        ("700 W", "time", "power"),
        ("2 us", "power", "time"),
        ("989 TFLOPS", "bandwidth", "flops"),
        ("1.83 GHz", "flops", "frequency"),
    ],
)
def test_wrong_dimension_is_rejected_and_named(text, dimension, other):
    with pytest.raises(UnitError, match=f"is a {other} but a {dimension} is needed"):
        parse_quantity(text, dimension)


@pytest.mark.parametrize("text", ["80 XB", "3 furlongs", "80 gigabytes", "80 G B", "3.35 TB/h", "80 gb"])
def test_unknown_units_are_rejected(text):
    with pytest.raises(UnitError):
        parse_quantity(text, "bytes")


@pytest.mark.parametrize("text", ["GB", "fast", "", "1.2.3 GB", "--1 GB"])
def test_malformed_strings_are_rejected(text):
    with pytest.raises(UnitError):
        parse_quantity(text, "bytes")


def test_error_message_gives_an_example():
    with pytest.raises(UnitError, match=r'expected e\.g\. "3\.35 TB/s"'):
        parse_quantity("3.35", "bandwidth")


# --- property: parse(format(x, unit)) == x * factor ------------------------------------------------

# Factors written out by hand (not taken from the module under test).
PREFIXES = {
    "": 1.0, "k": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, "P": 1e15,
    "Ki": 2.0**10, "Mi": 2.0**20, "Gi": 2.0**30, "Ti": 2.0**40, "Pi": 2.0**50,
}
DECIMAL_ONLY = {p: f for p, f in PREFIXES.items() if "i" not in p}

positive = st.floats(min_value=1e-9, max_value=1e9, allow_nan=False, allow_infinity=False)
separator = st.sampled_from(["", " ", "  "])


@given(x=positive, prefix=st.sampled_from(sorted(PREFIXES)), sep=separator)
def test_bytes_round_trip(x, prefix, sep):
    assert parse_quantity(f"{x!r}{sep}{prefix}B", "bytes") == x * PREFIXES[prefix]


@given(x=positive, prefix=st.sampled_from(sorted(PREFIXES)), sep=separator)
def test_bandwidth_round_trip_bytes_and_bits(x, prefix, sep):
    factor = PREFIXES[prefix]
    assert parse_quantity(f"{x!r}{sep}{prefix}B/s", "bandwidth") == x * factor
    bits = parse_quantity(f"{x!r}{sep}{prefix}b/s", "bandwidth")
    assert math.isclose(bits, x * factor / 8, rel_tol=1e-14)


@given(x=positive, prefix=st.sampled_from(sorted(DECIMAL_ONLY)))
def test_flops_power_frequency_round_trip(x, prefix):
    factor = DECIMAL_ONLY[prefix]
    assert parse_quantity(f"{x!r} {prefix}FLOPS", "flops") == x * factor
    assert parse_quantity(f"{x!r} {prefix}Hz", "frequency") == x * factor
    assert parse_quantity(f"{x!r} {prefix}W", "power") == x * factor


@given(x=positive, unit=st.sampled_from(["s", "ms", "us", "ns"]))
def test_time_round_trip(x, unit):
    factor = {"s": 1.0, "ms": 1e-3, "us": 1e-6, "ns": 1e-9}[unit]
    assert parse_quantity(f"{x!r} {unit}", "time") == x * factor


@given(x=positive, prefix=st.sampled_from(sorted(PREFIXES)))
def test_bare_formatted_numbers_never_parse(x, prefix):
    with pytest.raises(UnitError):
        parse_quantity(repr(x), "bytes")
    with pytest.raises(UnitError):  # a capacity is never a bandwidth
        parse_quantity(f"{x!r} {prefix}B/s", "bytes")
