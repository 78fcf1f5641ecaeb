"""A run's engine iterations as a Chrome/Perfetto trace (open it in ui.perfetto.dev).

The file is the trace-event JSON format ({"traceEvents": [...]}): one complete event
(`ph: "X"`) per row of iterations.csv on the track of its replica (`pid` = replica,
`tid` = 0), named by its work ("prefill 512 + decode 31", "decode 64") with the row's
numbers as `args`; a counter track (`ph: "C"`) of the KV blocks each replica uses; and
metadata naming each replica with its role ("replica 0 (prefill)"). Times are microseconds
from the start of the run.

iterations.csv is streamed in blocks and the JSON written as it goes, so a run of half a
million iterations never holds them as Python objects.
"""
from __future__ import annotations

import csv
import json
from itertools import repeat
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

COLUMNS = {
    "replica": pa.int64(), "start_s": pa.float64(), "duration_s": pa.float64(), "prefill_tokens": pa.int64(),
    "decode_tokens": pa.int64(), "batch_size": pa.int64(), "kv_blocks_used": pa.int64(), "mfu": pa.float64(),
    "mbu": pa.float64(),
}
# A counter sample is written only when the value moved by at least this share of the last
# sample, and by at least one block: the plotted KV usage is then everywhere within one block
# or 1 % of the truth, while a busy replica, whose usage changes by a block or two nearly
# every step, writes a small fraction of its steps.
COUNTER_RESOLUTION = 0.01


def write_timeline(iterations_csv: Path, out_json: Path, replica_names: dict[int, str] | None = None) -> int:
    """Write the trace of `iterations_csv` to `out_json`; returns the number of events.

    `replica_names` replaces the default "replica N" of a replica's track; its role, from
    the CSV's `role` column when there is one, is appended either way.
    """
    iterations_csv, out_json = Path(iterations_csv), Path(out_json)
    with iterations_csv.open(newline="") as f:
        has_role = "role" in next(csv.reader(f))
    types = {**COLUMNS, "role": pa.string()} if has_role else COLUMNS
    reader = pacsv.open_csv(iterations_csv, convert_options=pacsv.ConvertOptions(
        column_types=types, include_columns=list(types)))
    roles: dict[int, set[str | None]] = {}  # per replica seen, the roles its rows name
    last_kv: dict[int, int] = {}  # the last counter sample written, per replica
    written = 0
    with out_json.open("w") as out:
        out.write('{"displayTimeUnit": "ms", "traceEvents": [\n')
        for batch in reader:
            replica = batch.column("replica").to_numpy()
            labels = batch.column("role").to_pylist() if has_role else repeat(None)
            for r, role in set(zip(replica.tolist(), labels)):
                roles.setdefault(r, set()).add(role)
            lines = _step_events(batch) + _counter_events(
                replica, batch.column("start_s").to_numpy(), batch.column("kv_blocks_used").to_numpy(), last_kv)
            if lines:
                out.write((",\n" if written else "") + ",\n".join(lines))
                written += len(lines)
        names = replica_names or {}
        meta = []
        for r in sorted(roles):
            known = sorted(role for role in roles[r] if role)
            name = names.get(r, f"replica {r}") + (f" ({'/'.join(known)})" if known else "")
            meta += [{"name": "process_name", "ph": "M", "pid": r, "tid": 0, "args": {"name": name}},
                     {"name": "process_sort_index", "ph": "M", "pid": r, "tid": 0, "args": {"sort_index": r}},
                     {"name": "thread_name", "ph": "M", "pid": r, "tid": 0, "args": {"name": "engine steps"}}]
        if meta:
            out.write((",\n" if written else "") + ",\n".join(json.dumps(m) for m in meta))
        out.write("\n]}\n")
    return written + len(meta)


def _step_events(batch: pa.RecordBatch) -> list[str]:
    """One complete event per iteration row, formatted column-wise by Arrow (several times
    faster than formatting each row in Python)."""
    col = batch.column
    prefill, decode = _text(col("prefill_tokens")), _text(col("decode_tokens"))
    name = pc.if_else(pc.equal(col("prefill_tokens"), 0), _join("decode ", decode),
                      pc.if_else(pc.equal(col("decode_tokens"), 0), _join("prefill ", prefill),
                                 _join("prefill ", prefill, " + decode ", decode)))
    return _join(
        '{"name": "', name, '", "ph": "X", "ts": ', _microseconds(col("start_s")),
        ', "dur": ', _microseconds(col("duration_s")), ', "pid": ', _text(col("replica")),
        ', "tid": 0, "args": {"prefill_tokens": ', prefill, ', "decode_tokens": ', decode,
        ', "batch_size": ', _text(col("batch_size")), ', "kv_blocks_used": ', _text(col("kv_blocks_used")),
        ', "mfu": ', _text(col("mfu")), ', "mbu": ', _text(col("mbu")), "}}",
    ).to_pylist()


def _text(values: pa.Array) -> pa.Array:
    return pc.cast(values, pa.string())


def _join(*parts: pa.Array | str) -> pa.Array:
    return pc.binary_join_element_wise(*parts, "")


def _microseconds(seconds: pa.Array) -> pa.Array:
    """Seconds as microseconds in fixed point with three decimals (whole nanoseconds): Arrow's
    float-to-text cast would write large timestamps with exponents."""
    ns = pc.cast(pc.round(pc.multiply(seconds, 1e9)), pa.int64())
    whole = pc.divide(ns, 1000)  # integer division: times are >= 0
    frac = pc.utf8_lpad(_text(pc.subtract(ns, pc.multiply(whole, 1000))), 3, "0")
    return _join(_text(whole), ".", frac)


def _counter_events(replica: np.ndarray, start_s: np.ndarray, kv: np.ndarray, last_kv: dict[int, int]) -> list[str]:
    """KV-blocks counter samples of a block of rows, thinned to COUNTER_RESOLUTION;
    `last_kv` carries each replica's last sample across blocks."""
    ts = start_s * 1e6
    lines = []
    for r in np.unique(replica).tolist():
        rows = np.flatnonzero(replica == r)
        values = kv[rows]
        last = last_kv.get(r, -1)  # -1: no sample yet, so the first row is one (blocks are >= 0)
        changed = values != np.concatenate(([last], values[:-1]))  # a vectorised first cut
        step = max(1.0, COUNTER_RESOLUTION * last)  # the move that makes a new sample
        for t, v in zip(ts[rows[changed]].tolist(), values[changed].tolist()):
            if abs(v - last) >= step:
                lines.append(f'{{"name": "KV blocks used", "ph": "C", "ts": {t:.3f}, "pid": {r}, '
                             f'"args": {{"blocks": {v}}}}}')
                last, step = v, max(1.0, COUNTER_RESOLUTION * v)
        last_kv[r] = last
    return lines
