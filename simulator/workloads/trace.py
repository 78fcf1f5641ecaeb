"""Streaming reader of the trace contract (JSONL, one request a line) and of any trace format.

A trace is read twice, never held whole:
1. `TraceIndex.build` validates every record before the simulation starts (a bad line stops
   the run with `FILE:LINE: reason`) and keeps only compact numpy columns: arrival times and
   byte offsets (JSONL) so that an unsorted file can be replayed in arrival order.
2. `TraceIndex.requests()` streams `TraceRecord`s in arrival order: from the records kept
   in memory for a small trace, from numpy columns (id, arrival, token counts) for a trace
   of plain records with integer ids (or none), else by parsing each line again.
Parsing and validating take a shortcut for the common line (see `_parse_line` and
`to_record`), which matters for million-line traces; anything unusual gets the full checks.
A trace is a path or the catalogue name of a shipped trace (`trace_catalogue`, `simulate traces`).
"""
from __future__ import annotations

import json
import math
from array import array
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import InputError
from ..paths import TRACES_DIR, shipped

# The largest token count a trace may give: far beyond any model's context window, and within
# the 64-bit integer columns the trace index keeps.
MAX_TOKENS = 2**31 - 1

FIELDS = ("arrival_s", "input_tokens", "output_tokens", "id", "prefix_hashes", "prefix_block_tokens",
          "slo_ttft_s", "slo_tpot_s")


TRACE_SUFFIXES = (".jsonl", ".json", ".csv")  # of the shipped traces; their README and licences are not traces


def trace_catalogue() -> dict[str, Path]:
    """Shipped traces by catalogue name (the file stem), e.g. `example-chat`."""
    return {p.stem: p for p in sorted(shipped(TRACES_DIR).iterdir()) if p.suffix in TRACE_SUFFIXES}


def resolve_trace(name_or_path: str | Path) -> Path:
    """A trace file from a path, or else from a catalogue name: a path that exists wins."""
    path = Path(name_or_path)
    if path.exists():
        return path
    found = trace_catalogue().get(str(name_or_path))
    if found is None:
        known = ", ".join(trace_catalogue())
        raise InputError(f"{name_or_path}: no such trace file or catalogue name (known: {known})")
    return found


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
    if (isinstance(value, bool) or not isinstance(value, (int, float))
            or (isinstance(value, float) and (not math.isfinite(value) or value != int(value)))):
        raise InputError(f"{where}: {key}: {value!r} is not an integer (expected a token count >= {minimum})")
    if value < minimum:
        raise InputError(f"{where}: {key}: {value!r} must be >= {minimum}")
    if value > MAX_TOKENS:
        raise InputError(f"{where}: {key}: {value!r} is larger than any context window "
                         f"(expected a token count <= {MAX_TOKENS})")
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


_PLAIN_KEYS = frozenset(("id", "arrival_s", "input_tokens", "output_tokens"))


def to_record(rec: Any, path: str | Path, line: int) -> TraceRecord:
    """Validate one parsed record (line `line` of `path`) against the trace contract.

    A plain record (only id, a numeric arrival and integer counts, all in range) is accepted
    with a few type tests; any other goes through `_checked_record`, which words the errors.
    """
    if type(rec) is dict and rec.keys() <= _PLAIN_KEYS:
        arrival, inp, out, rid = rec.get("arrival_s"), rec.get("input_tokens"), rec.get("output_tokens"), rec.get("id", line)
        if ((type(arrival) is float or type(arrival) is int) and 0 <= arrival < math.inf
                and type(inp) is int and 1 <= inp <= MAX_TOKENS and type(out) is int and 1 <= out <= MAX_TOKENS
                and (type(rid) is str or type(rid) is int)):
            return TraceRecord(str(rid), float(arrival), inp, out)
    return _checked_record(rec, f"{path}:{line}", line)


def _checked_record(rec: Any, where: str, line: int) -> TraceRecord:
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


# the C scanner under json.loads (set by JSONDecoder.__init__; the stubs omit it)
_scan: Callable[[str, int], tuple[Any, int]] = json.JSONDecoder().scan_once  # type: ignore[attr-defined]


def _parse_line(raw: bytes, path: Path, line: int) -> dict[str, Any]:
    """Parse one JSONL line that must hold a JSON object.

    A UTF-8 line is handed to json's C scanner directly, skipping the Python layers of
    json.loads (half the time of a short line); json.loads parses anything else the scanner
    does not take whole, and words the error.
    """
    try:
        text = raw.decode().strip(" \t\n\r")  # the whitespace JSON allows around a value
        rec, end = _scan(text, 0)
        if end == len(text) and type(rec) is dict:
            return rec
    except (UnicodeDecodeError, StopIteration, ValueError):
        pass
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
    columns: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None  # ids, input and output tokens (plain traces)

    CACHE_LIMIT = 200_000  # records (~20 MB); larger traces are streamed from columns or the file
    REPLAY_CHUNK = 65536  # records rebuilt from the columns at a time

    @classmethod
    def build(cls, path: str | Path, fmt: str | None = None) -> TraceIndex:
        from .formats import detect_format, iter_records

        path = resolve_trace(path)
        fmt = fmt or detect_format(path)
        skipped: Counter = Counter()
        arrivals, offsets, lines = array("d"), array("q"), array("q")
        ids, inputs, outputs = array("q"), array("q"), array("q")
        plain = True  # every record so far can be rebuilt from the columns
        jsonl = fmt == "jsonl"
        if jsonl:
            source = _iter_offsets(path)
        else:
            source = ((line, -1, rec) for line, rec in iter_records(path, fmt, skipped))
        cached: list[TraceRecord] | None = []
        for line, off, rec in source:
            record = to_record(rec, path, line)
            arrivals.append(record.arrival_s)
            if jsonl:
                offsets.append(off)
                lines.append(line)
            if plain:
                rid = rec.get("id", line)
                plain = (type(rid) is int and -2**63 <= rid < 2**63 and record.prefix_hashes is None
                         and record.prefix_block_tokens == 512 and record.slo_ttft_s is None and record.slo_tpot_s is None)
                if plain:
                    ids.append(rid)
                    inputs.append(record.input_tokens)
                    outputs.append(record.output_tokens)
            if cached is not None:
                cached.append(record)
                if len(cached) > cls.CACHE_LIMIT:
                    cached = None
        if len(arrivals) == 0:
            raise InputError(f"{path}: the trace has no requests")
        arr = np.frombuffer(arrivals, dtype=np.float64)
        columns = None
        if plain:
            columns = (np.frombuffer(ids, dtype=np.int64), np.frombuffer(inputs, dtype=np.int64),
                       np.frombuffer(outputs, dtype=np.int64))
        return cls(path, fmt, len(arr), arr, np.frombuffer(offsets, dtype=np.int64) if jsonl else None,
                   np.frombuffer(lines, dtype=np.int64) if jsonl else None, bool(np.all(arr[1:] >= arr[:-1])),
                   skipped, cached, columns)

    def requests(self) -> Iterator[TraceRecord]:
        """Records in arrival order (stable for equal arrivals), streamed."""
        if self.cached is not None:
            if self.is_sorted:
                yield from self.cached
            else:
                yield from (self.cached[i] for i in np.argsort(self.arrivals_s, kind="stable"))
            return
        if self.columns is not None:
            yield from self._from_columns()
            return
        if self.fmt == "jsonl":
            yield from self._jsonl_in_order()
            return
        from .formats import iter_records

        records = (to_record(rec, self.path, line) for line, rec in iter_records(self.path, self.fmt, Counter()))
        if self.is_sorted:
            yield from records
        else:  # real-format traces are time-ordered; an unsorted one is sorted in memory
            yield from sorted(records, key=lambda r: r.arrival_s)

    def _from_columns(self) -> Iterator[TraceRecord]:
        assert self.columns is not None
        arrivals, (ids, inputs, outputs) = self.arrivals_s, self.columns
        if not self.is_sorted:
            order = np.argsort(arrivals, kind="stable")
            arrivals, ids, inputs, outputs = arrivals[order], ids[order], inputs[order], outputs[order]
        for lo in range(0, self.count, self.REPLAY_CHUNK):
            chunk = slice(lo, lo + self.REPLAY_CHUNK)
            yield from map(TraceRecord, map(str, ids[chunk].tolist()), arrivals[chunk].tolist(),
                           inputs[chunk].tolist(), outputs[chunk].tolist())

    def _jsonl_in_order(self) -> Iterator[TraceRecord]:
        assert self.offsets is not None and self.lines is not None
        order = np.argsort(self.arrivals_s, kind="stable") if not self.is_sorted else None
        with open(self.path, "rb") as handle:
            if order is None:
                line = 0
                for line, raw in enumerate(handle, start=1):
                    if raw.strip():
                        yield to_record(_parse_line(raw, self.path, line), self.path, line)
                return
            for idx in order:
                handle.seek(int(self.offsets[idx]))
                raw = handle.readline()
                line = int(self.lines[idx])
                yield to_record(_parse_line(raw, self.path, line), self.path, line)

    @property
    def duration_s(self) -> float:
        return float(self.arrivals_s.max() - self.arrivals_s.min())
