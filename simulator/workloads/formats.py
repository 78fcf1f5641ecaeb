"""Streaming readers for published LLM-serving trace formats.

Each reader turns one public trace format into records with the field names of our trace
contract (`arrival_s`, `input_tokens`, `output_tokens`, and for Mooncake `prefix_hashes`
and `prefix_block_tokens`), one line at a time, so a long trace never has to fit in memory.
Every reader yields `(line_number, record)`: the line number lets later validation point
at the line of the original file. Arrivals are made relative to the file's first request,
so it arrives at 0 s whatever clock the source used (a skipped first row still sets that
zero, so skipping never shifts the other arrivals).

Formats:
  azure     Azure LLM inference trace 2023 (Patel et al., Splitwise, ISCA'24): a CSV with
            header `TIMESTAMP,ContextTokens,GeneratedTokens`.
  mooncake  Mooncake traces (Qin et al., FAST'25): JSONL with `timestamp` (ms),
            `input_length`, `output_length`, `hash_ids` (one id per 512-token block).
  burstgpt  BurstGPT (Wang et al., "BurstGPT: A Real-world Workload Dataset to Optimize LLM
            Serving Systems", 2024): ChatGPT and GPT-4 traffic of an Azure OpenAI service, a
            CSV with `Timestamp` (s), `Model`, `Request tokens`, `Response tokens`, `Total
            tokens`, `Log Type` (a later release adds `Session ID`, `Elapsed time`); a failed
            request has 0 response tokens, and is skipped and counted.
  jsonl     our own contract, read by `simulator.workloads.trace.iter_jsonl`.

A request with 0 input or output tokens cannot be simulated (the contract needs >= 1).
Such rows are never dropped silently: with a `skipped` Counter the reader counts them under
a reason and goes on, so the caller can report how many it left out; without one it raises.
"""
from __future__ import annotations

import calendar
import csv
import json
import math
import re
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import IO

from simulator.errors import InputError

from .trace import MAX_TOKENS

FORMATS = ("jsonl", "azure", "mooncake", "burstgpt")
AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")
BURSTGPT_COLUMNS = ("Timestamp", "Request tokens", "Response tokens")
MOONCAKE_BLOCK_TOKENS = 512
_JSON_SUFFIXES = (".jsonl", ".json", ".ndjson")

_NS_PER_S = 1_000_000_000
_NS_DIGITS = 9


def _open(path: Path) -> IO[str]:
    """Open a trace for reading as text; a missing or unreadable file is the user's error."""
    try:
        # utf-8-sig drops a byte-order mark, which spreadsheet tools put before the header.
        return open(path, encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise InputError(f"{path}: cannot read the trace ({exc.strerror or exc})") from None


def _token_count(value: object, where: str, field: str) -> int:
    """Parse a token count (a CSV cell or a JSON value), allowing 0: the caller decides about 0."""
    if isinstance(value, int) and not isinstance(value, bool):
        count = value
    elif isinstance(value, str) and re.fullmatch(r"\s*-?[0-9]+\s*", value):
        count = int(value)
    else:
        shown = value.strip() if isinstance(value, str) else json.dumps(value)
        raise InputError(f'{where}: {field}: "{shown}" is not an integer (expected a token count >= 1)')
    if count < 0:
        raise InputError(f"{where}: {field}: {count} is negative (expected a token count >= 1)")
    if count > MAX_TOKENS:
        raise InputError(f"{where}: {field}: {count} is larger than any context window "
                         f"(expected a token count <= {MAX_TOKENS})")
    return count


def _skip_zero(counts: dict[str, int], where: str, skipped: Counter | None) -> bool:
    """True when a row has a 0 token count and is to be skipped (counted in `skipped`).

    `counts` maps the source's column name to its value. Without a counter there is no way
    to tell the caller about the skip, so the row is an error instead.
    """
    for column, value in counts.items():
        if value == 0:
            if skipped is None:
                raise InputError(
                    f"{where}: {column}: 0 tokens (the trace contract needs >= 1; "
                    "remove the row or read the trace with skipping enabled)"
                )
            skipped[f"{column} is 0"] += 1
            return True
    return False


def _azure_timestamp_ns(text: str, where: str) -> int:
    """Parse an Azure timestamp like `2023-11-16 18:15:46.6805900` to integer nanoseconds.

    The trace has 7 fractional digits, which `datetime.fromisoformat` rejects before Python
    3.11, so the fraction is split off and parsed by hand. Integer nanoseconds keep the
    arrival differences exact (a float of seconds since 1970 would only resolve ~0.2 us).
    The timestamps carry no zone; they are read as UTC so no local clock change can shift them.
    """
    whole, dot, fraction = text.strip().partition(".")
    try:
        moment = datetime.fromisoformat(whole)
        if dot and not (fraction.isdigit() and fraction.isascii()):
            raise ValueError
    except ValueError:
        raise InputError(
            f'{where}: TIMESTAMP: "{text}" is not a timestamp (expected e.g. 2023-11-16 18:15:46.6805900)'
        ) from None
    if moment.tzinfo is not None:
        raise InputError(f'{where}: TIMESTAMP: "{text}" has a time zone; the Azure format has none')
    seconds = calendar.timegm(moment.timetuple())
    nanos = int(fraction[:_NS_DIGITS].ljust(_NS_DIGITS, "0")) if fraction else 0
    return seconds * _NS_PER_S + nanos


def _csv_rows(path: Path, columns: tuple[str, ...]) -> Iterator[tuple[int, str, dict[str, str]]]:
    """The non-blank rows of a CSV trace as (line, "FILE:LINE", {column: cell}) for `columns`,
    found by name in the first non-blank line (the header), so their order does not matter."""
    expected = ",".join(columns)
    with _open(path) as stream:
        rows = csv.reader(stream)
        header = next(rows, None)
        while header is not None and not any(cell.strip() for cell in header):
            header = next(rows, None)
        if header is None:
            raise InputError(f"{path}: the file is empty (expected a header with {expected})")
        names = [cell.strip() for cell in header]
        missing = [column for column in columns if column not in names]
        if missing:
            raise InputError(f"{path}:{rows.line_num}: header: no column {', '.join(missing)} "
                             f"(expected a header with {expected})")
        at = {column: names.index(column) for column in columns}
        for row in rows:
            if not any(cell.strip() for cell in row):
                continue
            where = f"{path}:{rows.line_num}"
            if len(row) != len(names):
                raise InputError(f"{where}: row has {len(row)} fields, the header {len(names)} (expected {expected})")
            yield rows.line_num, where, {column: row[i] for column, i in at.items()}


def iter_azure(path: str | Path, skipped: Counter | None = None) -> Iterator[tuple[int, dict]]:
    """Read an Azure LLM inference trace 2023 CSV (`TIMESTAMP,ContextTokens,GeneratedTokens`).

    ContextTokens becomes `input_tokens`, GeneratedTokens `output_tokens`, and TIMESTAMP
    `arrival_s` relative to the first row, from integer nanoseconds (`_azure_timestamp_ns`).
    """
    return _csv_requests(Path(path), AZURE_COLUMNS, _azure_timestamp_ns, _NS_PER_S, skipped)


def iter_burstgpt(path: str | Path, skipped: Counter | None = None) -> Iterator[tuple[int, dict]]:
    """Read a BurstGPT CSV (`Timestamp` in seconds, `Request tokens`, `Response tokens`; the
    other columns, `Model` and `Log Type` among them, are not read: filter the file first to
    replay one model's traffic). Request tokens become `input_tokens`, Response tokens
    `output_tokens`, Timestamp `arrival_s` relative to the first row; a failed request (0
    response tokens) is skipped and counted, as a 0 of the other formats is."""
    return _csv_requests(Path(path), BURSTGPT_COLUMNS, _burstgpt_seconds, 1, skipped)


def _burstgpt_seconds(text: str, where: str) -> float:
    try:
        stamp_s = float(text)
    except ValueError:
        stamp_s = math.nan
    if not math.isfinite(stamp_s):
        raise InputError(f'{where}: Timestamp: "{text.strip()}" is not a number of seconds')
    return stamp_s


def _csv_requests(path: Path, columns: tuple[str, str, str], stamp: Callable[[str, str], float],
                  per_second: float, skipped: Counter | None) -> Iterator[tuple[int, dict]]:
    """The requests of a CSV trace whose `columns` are (time stamp, input tokens, output
    tokens), found by name: arrivals relative to the first row, in the units `stamp` returns
    (`per_second` of them a second). Rows must not go back before the first row's time."""
    stamp_column, input_column, output_column = columns
    first: float | None = None
    for line, where, row in _csv_rows(path, columns):
        at = stamp(row[stamp_column], where)
        counts = {column: _token_count(row[column], where, column) for column in (input_column, output_column)}
        if first is None:
            first = at
        elif at < first:
            raise InputError(f'{where}: {stamp_column}: "{row[stamp_column].strip()}" is before the first '
                             f"request's time (sort the trace by {stamp_column})")
        # Checked after the first time stamp is fixed: a skipped first row still defines time
        # zero, so skipping never shifts the other arrivals.
        if _skip_zero(counts, where, skipped):
            continue
        yield line, {"arrival_s": (at - first) / per_second, "input_tokens": counts[input_column],
                     "output_tokens": counts[output_column]}


def _json_object(text: str, where: str) -> dict:
    """Parse one JSONL line that must hold a JSON object."""
    try:
        value = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InputError(f"{where}: not valid JSON ({exc.msg} at column {exc.colno})") from None
    if not isinstance(value, dict):
        raise InputError(f"{where}: expected a JSON object {{...}} per line, got {type(value).__name__}")
    return value


def _required(record: dict, field: str, where: str, expected: str) -> object:
    if field not in record:
        raise InputError(f"{where}: {field}: missing (expected {expected})")
    return record[field]


def iter_mooncake(path: str | Path, skipped: Counter | None = None) -> Iterator[tuple[int, dict]]:
    """Read a Mooncake trace (JSONL: `timestamp` ms, `input_length`, `output_length`, `hash_ids`).

    `hash_ids` become `prefix_hashes` with `prefix_block_tokens` = 512, Mooncake's block
    size: two requests that share the first k ids share their first k*512 prompt tokens.
    """
    path = Path(path)
    first_ms: float | None = None
    with _open(path) as stream:
        for line, text in enumerate(stream, start=1):
            if not text.strip():
                continue
            where = f"{path}:{line}"
            raw = _json_object(text, where)
            stamp_ms = _required(raw, "timestamp", where, "milliseconds as a number")
            if isinstance(stamp_ms, bool) or not isinstance(stamp_ms, (int, float)):
                raise InputError(f"{where}: timestamp: {json.dumps(stamp_ms)} is not a number of milliseconds")
            counts = {
                field: _token_count(_required(raw, field, where, "a token count >= 1"), where, field)
                for field in ("input_length", "output_length")
            }
            hashes = _required(raw, "hash_ids", where, "a list of integer block hashes")
            if not isinstance(hashes, list) or any(
                isinstance(h, bool) or not isinstance(h, int) for h in hashes
            ):
                raise InputError(f"{where}: hash_ids: expected a list of integers, got {json.dumps(hashes)[:60]}")
            if first_ms is None:
                first_ms = stamp_ms
            elif stamp_ms < first_ms:
                raise InputError(
                    f"{where}: timestamp: {stamp_ms} is before the first request's "
                    f"({first_ms}); sort the trace by timestamp"
                )
            if _skip_zero(counts, where, skipped):
                continue
            yield line, {
                "arrival_s": (stamp_ms - first_ms) / 1000.0,
                "input_tokens": counts["input_length"],
                "output_tokens": counts["output_length"],
                "prefix_hashes": hashes,
                "prefix_block_tokens": MOONCAKE_BLOCK_TOKENS,
            }


def _first_line(path: Path) -> str:
    """The first non-blank line of a file, stripped; an empty file is an error."""
    with _open(path) as stream:
        for text in stream:
            if text.strip():
                return text.strip()
    raise InputError(f"{path}: the file is empty (expected a trace)")


def detect_format(path: str | Path) -> str:
    """Tell which trace format a file holds: "jsonl" (ours), "azure", "mooncake" or "burstgpt".

    The first non-blank line decides: a CSV header naming the Azure or BurstGPT columns, or a JSON
    object whose keys are Mooncake's or ours. The extension only decides how to read that
    line (`.csv` as CSV, `.jsonl`/`.json` as JSON, any other by whether it starts with `{`).
    """
    path = Path(path)
    first = _first_line(path)
    suffix = path.suffix.lower()
    is_csv = suffix == ".csv" or (suffix not in _JSON_SUFFIXES and not first.startswith("{"))
    if is_csv:
        names = {cell.strip() for cell in next(csv.reader([first]))}
        if set(AZURE_COLUMNS) <= names:
            return "azure"
        if set(BURSTGPT_COLUMNS) <= names:
            return "burstgpt"
        raise InputError(
            f"{path}:1: header: unknown CSV trace (expected the Azure 2023 header "
            f"{','.join(AZURE_COLUMNS)}, BurstGPT's {','.join(BURSTGPT_COLUMNS)}, or a JSONL trace)"
        )
    try:
        record = json.loads(first)
    except json.JSONDecodeError:
        record = None
    if not isinstance(record, dict):
        raise InputError(f"{path}: first line is not a JSON object (expected a JSONL trace)")
    keys = set(record)
    if "arrival_s" in keys:
        return "jsonl"
    if {"timestamp", "input_length", "output_length"} <= keys:
        return "mooncake"
    raise InputError(
        f"{path}: unknown JSONL trace: first record has keys {', '.join(sorted(keys)) or 'none'} "
        "(expected arrival_s, input_tokens, output_tokens; or Mooncake's timestamp, "
        "input_length, output_length, hash_ids)"
    )


def iter_records(
    path: str | Path, fmt: str | None = None, skipped: Counter | None = None
) -> Iterator[tuple[int, dict]]:
    """Read any supported trace as `(line_number, record)` pairs in the contract's fields.

    `fmt` is one of FORMATS, or None to detect it from the file. `skipped` counts rows left
    out (see the module docstring); pass None to make such rows an error.
    """
    fmt = detect_format(path) if fmt is None else fmt
    if fmt == "azure":
        return iter_azure(path, skipped)
    if fmt == "mooncake":
        return iter_mooncake(path, skipped)
    if fmt == "burstgpt":
        return iter_burstgpt(path, skipped)
    if fmt == "jsonl":
        # Imported here: trace.py is the contract's own reader and imports from this package.
        from simulator.workloads.trace import iter_jsonl

        return iter_jsonl(path, skipped)
    raise InputError(f'{path}: trace format "{fmt}" is unknown (expected one of {", ".join(FORMATS)})')
