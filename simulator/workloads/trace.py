"""Streaming reader of the trace contract (JSONL, one request a line) and of any trace format.

A trace is read twice, never held whole:
1. `TraceIndex.build` validates every record before the simulation starts (a bad line stops
   the run with `FILE:LINE: reason`) and keeps only compact numpy columns: arrival times and
   byte offsets (JSONL) so that an unsorted file can be replayed in arrival order.
2. `TraceIndex.requests()` streams `TraceRecord`s in arrival order, parsing each line again.
"""
from __future__ import annotations

import json
import math
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError

FIELDS = ("arrival_s", "input_tokens", "output_tokens", "id", "prefix_hashes", "prefix_block_tokens",
          "slo_ttft_s", "slo_tpot_s")


@dataclass(slots=True)
class TraceRecord:
    """One request as the trace gives it."""

    id: str
    arrival_s: float
    input_tokens: int
    output_tokens: int
    prefix_hashes: tuple[int, ...] | None = None
    prefix_block_tokens: int = 512
    slo_ttft_s: float | None = None
    slo_tpot_s: float | None = None


def _int(rec: dict[str, Any], key: str, where: str, minimum: int) -> int:
    value = rec.get(key)
    if value is None:
        raise InputError(f"{where}: {key}: required field is missing")
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value != int(value):
        raise InputError(f"{where}: {key}: {value!r} is not an integer (expected a token count >= {minimum})")
    if value < minimum:
        raise InputError(f"{where}: {key}: {value!r} must be >= {minimum}")
    return int(value)


def _float(rec: dict[str, Any], key: str, where: str, required: bool, positive: bool = False) -> float | None:
    value = rec.get(key)
    if value is None:
        if required:
            raise InputError(f"{where}: {key}: required field is missing")
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise InputError(f"{where}: {key}: {value!r} is not a number")
    if value < 0 or (positive and value == 0):
        raise InputError(f"{where}: {key}: {value!r} must be {'> 0' if positive else '>= 0'}")
    return float(value)


def to_record(rec: Any, where: str, line: int) -> TraceRecord:
    """Validate one parsed record against the trace contract."""
    if not isinstance(rec, dict):
        raise InputError(f"{where}: expected a JSON object with arrival_s, input_tokens, output_tokens")
    hashes = rec.get("prefix_hashes")
    if hashes is not None:
        if not isinstance(hashes, list) or not all(isinstance(h, int) and not isinstance(h, bool) for h in hashes):
            raise InputError(f"{where}: prefix_hashes: expected a list of integers")
        hashes = tuple(hashes)
    rid = rec.get("id", line)
    if not isinstance(rid, (str, int)) or isinstance(rid, bool):
        raise InputError(f"{where}: id: {rid!r} must be a string or an integer")
    return TraceRecord(
        id=str(rid),
        arrival_s=_float(rec, "arrival_s", where, required=True),  # type: ignore[arg-type]
        input_tokens=_int(rec, "input_tokens", where, 1),
        output_tokens=_int(rec, "output_tokens", where, 1),
        prefix_hashes=hashes,
        prefix_block_tokens=_int(rec, "prefix_block_tokens", where, 1) if "prefix_block_tokens" in rec else 512,
        slo_ttft_s=_float(rec, "slo_ttft_s", where, required=False, positive=True),
        slo_tpot_s=_float(rec, "slo_tpot_s", where, required=False, positive=True),
    )


def trusted_record(rec: dict[str, Any], line: int) -> TraceRecord:
    """Rebuild a record that `to_record` already accepted (replay pass: no checks to repeat)."""
    hashes = rec.get("prefix_hashes")
    ttft, tpot = rec.get("slo_ttft_s"), rec.get("slo_tpot_s")
    return TraceRecord(
        str(rec.get("id", line)), float(rec["arrival_s"]), int(rec["input_tokens"]), int(rec["output_tokens"]),
        tuple(hashes) if hashes is not None else None, int(rec.get("prefix_block_tokens", 512)),
        float(ttft) if ttft is not None else None, float(tpot) if tpot is not None else None,
    )


def _parse_line(raw: bytes, path: Path, line: int) -> dict[str, Any]:
    try:
        rec = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}:{line}: not valid JSON ({exc.msg if hasattr(exc, 'msg') else exc})") from None
    if not isinstance(rec, dict):
        raise InputError(f"{path}:{line}: expected a JSON object with arrival_s, input_tokens, output_tokens")
    return rec


def iter_jsonl(path: str | Path, skipped: Counter | None = None) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, parsed object) for every non-blank line of a contract JSONL file."""
    path = Path(path)
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise InputError(f"{path}: cannot read trace ({exc.strerror})") from None
    with handle:
        for line, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line, _parse_line(raw, path, line)


def _iter_offsets(path: Path) -> Iterator[tuple[int, int, dict[str, Any]]]:
    """(line, byte offset, parsed object) for a JSONL file, for seeking back later."""
    with open(path, "rb") as handle:
        offset = 0
        for line, raw in enumerate(handle, start=1):
            if raw.strip():
                yield line, offset, _parse_line(raw, path, line)
            offset += len(raw)


@dataclass
class TraceIndex:
    """A validated trace: its size, its arrival times, and how to replay it in order."""

    path: Path
    fmt: str
    count: int
    arrivals_s: np.ndarray  # in file order
    offsets: np.ndarray | None  # JSONL byte offsets, file order
    lines: np.ndarray | None  # JSONL line numbers, file order (the default id)
    is_sorted: bool
    skipped: Counter
    cached: list[TraceRecord] | None = None  # the records themselves, for traces up to CACHE_LIMIT

    CACHE_LIMIT = 200_000  # records (~20 MB); larger traces are streamed from the file again

    @classmethod
    def build(cls, path: str | Path, fmt: str | None = None) -> TraceIndex:
        from .formats import detect_format, iter_records

        path = Path(path)
        if not path.exists():
            raise InputError(f"{path}: no such trace file")
        fmt = fmt or detect_format(path)
        skipped: Counter = Counter()
        arrivals = _Growable("f8")
        offsets = _Growable("i8") if fmt == "jsonl" else None
        lines = _Growable("i8") if fmt == "jsonl" else None
        if fmt == "jsonl":
            source = ((line, off, rec) for line, off, rec in _iter_offsets(path))
        else:
            source = ((line, -1, rec) for line, rec in iter_records(path, fmt, skipped))
        cached: list[TraceRecord] | None = []
        for line, off, rec in source:
            record = to_record(rec, f"{path}:{line}", line)
            arrivals.append(record.arrival_s)
            if cached is not None:
                cached.append(record)
                if len(cached) > cls.CACHE_LIMIT:
                    cached = None
            if offsets is not None and lines is not None:
                offsets.append(off)
                lines.append(line)
        if len(arrivals) == 0:
            raise InputError(f"{path}: the trace has no requests")
        arr = arrivals.array()
        return cls(path, fmt, len(arr), arr, offsets.array() if offsets is not None else None,
                   lines.array() if lines is not None else None, bool(np.all(arr[1:] >= arr[:-1])), skipped,
                   cached)

    def requests(self) -> Iterator[TraceRecord]:
        """Records in arrival order (stable for equal arrivals), streamed."""
        if self.cached is not None:
            if self.is_sorted:
                yield from self.cached
            else:
                yield from (self.cached[i] for i in np.argsort(self.arrivals_s, kind="stable"))
            return
        if self.fmt == "jsonl":
            yield from self._jsonl_in_order()
            return
        from .formats import iter_records

        records = (trusted_record(rec, line) for line, rec in iter_records(self.path, self.fmt, Counter()))
        if self.is_sorted:
            yield from records
        else:  # real-format traces are time-ordered; an unsorted one is sorted in memory
            yield from sorted(records, key=lambda r: r.arrival_s)

    def _jsonl_in_order(self) -> Iterator[TraceRecord]:
        assert self.offsets is not None and self.lines is not None
        order = np.argsort(self.arrivals_s, kind="stable") if not self.is_sorted else None
        with open(self.path, "rb") as handle:
            if order is None:
                line = 0
                for line, raw in enumerate(handle, start=1):
                    if raw.strip():
                        yield trusted_record(json.loads(raw), line)
                return
            for idx in order:
                handle.seek(int(self.offsets[idx]))
                raw = handle.readline()
                yield trusted_record(json.loads(raw), int(self.lines[idx]))

    @property
    def duration_s(self) -> float:
        return float(self.arrivals_s.max() - self.arrivals_s.min())


class _Growable:
    """An append-only numpy column that doubles its capacity (no per-item Python objects)."""

    def __init__(self, dtype: str):
        self._data = np.empty(1024, dtype=dtype)
        self._n = 0

    def append(self, value: float) -> None:
        if self._n == len(self._data):
            self._data = np.resize(self._data, 2 * len(self._data))
        self._data[self._n] = value
        self._n += 1

    def __len__(self) -> int:
        return self._n

    def array(self) -> np.ndarray:
        return self._data[: self._n].copy()
