"""The trace index replays the same records whichever way it holds them.

`TraceIndex.requests()` yields from the records cached for a small trace, from numpy columns
for a large trace of plain records (integer or no ids, no optional fields), or by parsing the
file again; `to_record` and `_parse_line` accept a common line through a shortcut. These
tests check that every path gives the records the full validation gives, in arrival order.
"""
from __future__ import annotations

import json

import pytest

from simulator.errors import InputError
from simulator.workloads.trace import TraceIndex, _checked_record, _parse_line, to_record

PLAIN = [  # unsorted, with equal arrivals (replayed in file order), int ids and none
    {"id": 7, "arrival_s": 2.5, "input_tokens": 10, "output_tokens": 3},
    {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1},
    {"id": -3, "arrival_s": 1, "input_tokens": 512, "output_tokens": 64},
    {"id": 8, "arrival_s": 1.0, "input_tokens": 2, "output_tokens": 9},
]
RICH = PLAIN + [  # string ids, integral floats, optional fields: no columns
    {"id": "r9", "arrival_s": 0.5, "input_tokens": 4.0, "output_tokens": 2, "slo_ttft_s": 0.2},
    {"id": 10, "arrival_s": 3.0, "input_tokens": 1024, "output_tokens": 1, "prefix_hashes": [1, 2],
     "prefix_block_tokens": 512},
]


def write(tmp_path, records: list[dict]):
    path = tmp_path / "trace.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in records) + "\n")  # a trailing blank line
    return path


def expected(path) -> list:
    """The records through the full checks, sorted by arrival (stable)."""
    records = []
    for line, raw in enumerate(path.read_bytes().splitlines(keepends=True), start=1):
        if raw.strip():
            records.append(_checked_record(json.loads(raw), f"{path}:{line}", line))
    return sorted(records, key=lambda r: r.arrival_s)


@pytest.mark.parametrize("records, columnar", [(PLAIN, True), (RICH, False)])
def test_every_replay_path_gives_the_validated_records_in_arrival_order(tmp_path, records, columnar):
    path = write(tmp_path, records)
    index = TraceIndex.build(path)
    assert (index.columns is not None) == columnar
    want = expected(path)
    assert list(index.requests()) == want  # from the cache
    index.cached = None  # as for a trace over CACHE_LIMIT
    assert list(index.requests()) == want  # from the columns (plain) or the file
    index.columns = None
    assert list(index.requests()) == want  # from the file


def test_columns_replay_in_chunks(tmp_path, monkeypatch):
    records = [{"id": i, "arrival_s": float(i // 3), "input_tokens": 1 + i, "output_tokens": 2} for i in range(10)]
    index = TraceIndex.build(write(tmp_path, records[::-1]))
    index.cached = None
    monkeypatch.setattr(TraceIndex, "REPLAY_CHUNK", 3)
    assert list(index.requests()) == expected(index.path)


@pytest.mark.parametrize("rec", [
    {"arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1},
    {"id": "x", "arrival_s": 3, "input_tokens": 5, "output_tokens": 7},
    {"id": True, "arrival_s": 0.0, "input_tokens": 1, "output_tokens": 1},
    {"arrival_s": -1.0, "input_tokens": 1, "output_tokens": 1},
    {"arrival_s": float("inf"), "input_tokens": 1, "output_tokens": 1},
    {"arrival_s": float("nan"), "input_tokens": 1, "output_tokens": 1},
    {"arrival_s": 0.0, "input_tokens": 0, "output_tokens": 1},
    {"arrival_s": 0.0, "input_tokens": True, "output_tokens": 1},
    {"arrival_s": 0.0, "input_tokens": 1.5, "output_tokens": 1},
    {"arrival_s": 0.0, "input_tokens": 1},
    {"arrival_s": None, "input_tokens": 1, "output_tokens": 1},
    [1, 2],
])
def test_shortcut_accepts_and_rejects_as_the_full_checks(rec):
    def outcome(check):
        try:
            return check()
        except InputError as exc:
            return str(exc)

    assert outcome(lambda: to_record(rec, "f", 4)) == outcome(lambda: _checked_record(rec, "f:4", 4))


@pytest.mark.parametrize("raw", [
    b'{"a": 1}\n', b'  {"a": [1, 2]}\t\r\n', b'\xef\xbb\xbf{"a": 1}\n', b'{"a": 1} x\n', b'{"a": 1}{}\n',
    b'[1]\n', b'{"a": "\xff"}\n', b'{"a": \n', b'\x0c{"a": 1}\n', b'{"a": "\t"}\n',
])
def test_line_parser_matches_json_loads(raw):
    def outcome():
        try:
            return _parse_line(raw, "f", 1)
        except InputError as exc:
            return str(exc)

    try:
        value = json.loads(raw)
        want = value if isinstance(value, dict) else "f:1: expected a JSON object with arrival_s, input_tokens, output_tokens"
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        want = f"f:1: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})"
    assert outcome() == want
