"""Record what the simulation produced: per request, per iteration, and running totals.

Rows are buffered and appended to `requests.csv` and `iterations.csv` in chunks, so a
million-request run never holds a million rows; the summary keeps only compact numpy-able
columns of the latencies it needs percentiles of. The run loop only hands over what it
already has (a tuple per iteration, arrays per span, finished Request objects); columns are
built once per chunk, vectorised, when the chunk is flushed.
"""
from __future__ import annotations

from array import array
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..engine.batch import BatchOutcome, ScheduledBatch
from ..engine.request import Request
from ..perf.cost_model import IterationCost, SpanCost
from ..perf.kernel_times import SOURCES
from .distribution import WeightedSamples
from .slo import SloSpec, judge

REQUEST_SCHEMA = pa.schema([
    ("id", pa.string()), ("arrival_s", pa.float64()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("first_token_s", pa.float64()), ("finish_s", pa.float64()), ("ttft_s", pa.float64()), ("tpot_s", pa.float64()),
    ("e2e_s", pa.float64()), ("queue_s", pa.float64()), ("preemptions", pa.int64()), ("replica", pa.int64()),
    ("status", pa.string()), ("reason", pa.string()),
])
ITERATION_SCHEMA = pa.schema([
    ("replica", pa.int64()), ("stage", pa.string()), ("start_s", pa.float64()), ("duration_s", pa.float64()),
    ("prefill_tokens", pa.int64()), ("decode_tokens", pa.int64()), ("batch_size", pa.int64()),
    ("kv_blocks_used", pa.int64()), ("mfu", pa.float64()), ("mbu", pa.float64()), ("role", pa.string()),
])
FLUSH_ROWS = 65536
# What the recorder buffers per iteration, in this order (utilisation, power and energy are
# derived from it when a chunk is recorded): name -> dtype.
STEP_COLUMNS = {
    "replica": np.int64, "start_s": np.float64, "duration_s": np.float64, "flops": np.float64, "bytes": np.float64,
    "prefill_tokens": np.int64, "decode_tokens": np.int64, "batch_size": np.int64, "kv_blocks_used": np.int64,
    **{f"{source}_s": np.float64 for source in SOURCES},
}

if TYPE_CHECKING:  # pandas is imported only when frames are asked for (start-up time)
    import pandas as pd


class _CsvSink:
    """Column chunks appended to a CSV file, and/or kept for a frame.

    pyarrow's CSV writer formats floats in C (shortest round-trip repr), an order of
    magnitude faster than pandas for the hundreds of thousands of iteration rows of a run,
    and it releases the GIL: each chunk is written on a helper thread while the simulation
    goes on (one chunk in flight at a time; a write error surfaces at the next write or close).
    """

    def __init__(self, path: Path | None, schema: pa.Schema, keep: bool):
        self.schema, self.keep = schema, keep
        self.enabled = path is not None or keep
        self.tables: list[pa.Table] = []
        self.writer = None
        self._thread: ThreadPoolExecutor | None = None
        self._in_flight: Future | None = None
        if path is not None:
            self.writer = pacsv.CSVWriter(str(path), schema, write_options=pacsv.WriteOptions(quoting_style="needed"))
            self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix="csv-writer")

    def write(self, columns: list) -> None:
        """Append rows given as one array (or list) per schema column."""
        if not self.enabled:
            return
        arrays = [pa.array(col, type=field.type) for col, field in zip(columns, self.schema)]
        table = pa.Table.from_arrays(arrays, schema=self.schema)
        if self.writer is not None:
            self._wait()
            assert self._thread is not None  # started with the writer
            self._in_flight = self._thread.submit(self.writer.write_table, table)
        if self.keep:
            self.tables.append(table)

    def _wait(self) -> None:
        if self._in_flight is not None:
            self._in_flight.result()
            self._in_flight = None

    def close(self) -> None:
        if self.writer is not None:
            self._wait()
            assert self._thread is not None  # started with the writer
            self._thread.shutdown()
            self.writer.close()
            self.writer = None

    def frame(self) -> pd.DataFrame:
        return pa.concat_tables(self.tables or [self.schema.empty_table()]).to_pandas()


@dataclass(frozen=True)
class ReplicaHardware:
    """What the recorder needs of a replica's devices to turn work into utilisation,
    energy and cost (all per device, `devices` of them)."""

    role: str  # "mixed", "prefill" or "decode"
    devices: int
    peak_flops: float
    bandwidth: float  # main memory, bytes/s
    idle_w: float = 0.0  # 0 and 0 when the spec gives no power (then `powered` is False)
    tdp_w: float = 0.0
    compute_max: float = 1.0  # the device's best reachable fractions of peak and bandwidth
    memory_max: float = 1.0
    price_per_hour: float | None = None  # USD per device-hour; None: the spec states no price
    powered: bool = True  # whether the spec states the device's power


class Recorder:
    """Power while busy follows a linear utilisation model: idle + (tdp - idle) * activity,
    with activity = max(MFU / compute_max, MBU / memory_max) capped at 1, i.e. how close the
    iteration runs to the best the device achieves on its binding resource (POLCA reports
    inference power rising with utilisation from idle towards TDP)."""

    def __init__(self, out_dir: Path | None, keep_frames: bool, replicas: list[ReplicaHardware],
                 slo: SloSpec | None = None, output_delay_s: float = 0.0):
        """output_delay_s: how long after the engine a token reaches the client (the API
        server's leg back): a request's first-token and finish times are the client's."""
        self.output_delay_s = output_delay_s
        self.requests = _CsvSink(out_dir / "requests.csv" if out_dir else None, REQUEST_SCHEMA, keep_frames)
        self.iterations = _CsvSink(out_dir / "iterations.csv" if out_dir else None, ITERATION_SCHEMA, keep_frames)
        self.replicas = replicas
        self._hw = {name: np.array([getattr(r, name) for r in replicas], dtype=float)
                    for name in ("devices", "peak_flops", "bandwidth", "idle_w", "tdp_w", "compute_max", "memory_max")}
        self._roles = np.array([r.role for r in replicas], dtype=object)
        self.ttft, self.tpot, self.e2e, self.queue = array("d"), array("d"), array("d"), array("d")
        self.tbt = WeightedSamples()
        self.slo = slo
        self.slo_met = 0
        self.slo_judged = 0
        self.slo_targets: dict[str, set] = {"ttft_s": set(), "tpot_s": set()}  # distinct targets seen (capped)
        self.completed = 0
        self.rejected = 0
        self.reject_reasons: Counter = Counter()
        self.input_tokens = 0
        self.output_tokens = 0
        self.last_finish_s = 0.0
        self.iteration_count = 0
        self.flops = 0.0  # summed over devices
        self.bytes = 0.0
        self.busy_device_s = 0.0
        self.busy_idle_j = 0.0  # idle power over busy device time (not idle energy, see idle_energy_j)
        self.active_energy_j = 0.0
        self.provenance_s = np.zeros(len(SOURCES))  # busy time by kernel_times.SOURCES
        self._steps: list[tuple] = []  # single iterations not yet recorded, as STEP_COLUMNS tuples
        self._spans: list[tuple] = []  # decode steps of spans not yet recorded (see decode_steps)
        self._pending_steps = 0
        self._done: list[Request] = []  # finished (completed or rejected) requests not yet recorded
        self._reasons: dict[int, str] = {}  # index in _done -> rejection reason

    def iteration(self, replica: int, start_s: float, cost: IterationCost, batch: ScheduledBatch) -> None:
        """One iteration of `batch` (a single step, or the first step of a span)."""
        self.iteration_count += 1
        self._steps.append((replica, start_s, cost.time_s, cost.flops, cost.bytes, batch.prefill_tokens,
                            batch.decode_tokens, batch.batch_size, batch.kv_blocks_used, *cost.sources_s))
        self._pending_steps += 1
        if self._pending_steps >= FLUSH_ROWS:
            self._record_steps()

    def decode_steps(self, replica: int, starts_s: np.ndarray, cost: SpanCost, active: np.ndarray,
                     kv_used: np.ndarray) -> None:
        """The decode steps of a span after its first: step j starts at starts_s[j] and decodes
        active[j] sequences holding kv_used[j] blocks; `cost` covers them (and maybe more)."""
        k = len(starts_s)
        self.iteration_count += k
        self._spans.append((len(self._steps), replica, starts_s, cost.time_s[:k], cost.flops[:k], cost.bytes[:k],
                            active, kv_used, cost.sources_s[:, :k]))
        self._pending_steps += k
        if self._pending_steps >= FLUSH_ROWS:
            self._record_steps()

    def _record_steps(self) -> None:
        """Totals and CSV rows of the buffered iterations: utilisation, power and energy are
        derived here, vectorised over the chunk, rather than once per step."""
        if not self._pending_steps:
            return
        replica, start, d, flops, nbytes, prefill, decode, size, kv, *sources = _step_columns(self._steps, self._spans)
        self._steps, self._spans, self._pending_steps = [], [], 0
        hw = {name: col[replica] for name, col in self._hw.items()} if len(self.replicas) > 1 else self._hw
        mfu = flops / (d * hw["peak_flops"])
        mbu = nbytes / (d * hw["bandwidth"])
        dev = hw["devices"]
        activity = np.minimum(1.0, np.maximum(mfu / hw["compute_max"], mbu / hw["memory_max"]))
        power_w = hw["idle_w"] + (hw["tdp_w"] - hw["idle_w"]) * activity
        self.flops += float(np.add.reduce(flops * dev))
        self.bytes += float(np.add.reduce(nbytes * dev))
        self.busy_device_s += float(np.add.reduce(d * dev))
        self.busy_idle_j += float(np.add.reduce(d * dev * hw["idle_w"]))
        self.active_energy_j += float(np.add.reduce(power_w * d * dev))
        self.provenance_s += [float(np.add.reduce(col)) for col in sources]
        stage = np.full(len(d), "all", dtype=object)  # every pipeline stage of the replica
        self.iterations.write([replica, stage, start, d, prefill, decode, size, kv, mfu, mbu, self._roles[replica]])

    def capacity(self, name: str) -> float:
        """A per-device quantity summed over every device of every replica."""
        return float(np.add.reduce(self._hw["devices"] * np.array([getattr(r, name) for r in self.replicas])))

    def idle_energy_j(self, makespan_s: float) -> float:
        """Idle power of every device over the time it was not busy."""
        return self.capacity("idle_w") * makespan_s - self.busy_idle_j

    def outcome(self, outcome: BatchOutcome) -> None:
        for values, counts in outcome.gaps:
            self.tbt.extend(values, counts)
        if outcome.finished is not None:
            self.completed += len(outcome.finished)
            self._buffer(outcome.finished)

    def reject(self, req: Request, reason: str) -> None:
        self.rejected += 1
        self.reject_reasons[_reason_key(reason)] += 1
        self._reasons[len(self._done)] = reason
        self._buffer([req])

    def _buffer(self, requests: list[Request]) -> None:
        self._done.extend(requests)
        if len(self._done) >= FLUSH_ROWS:
            self._record_done()

    def _record_done(self) -> None:
        """Latency samples, totals, SLO verdicts and CSV rows of the buffered finished requests.

        A Request carries all it needs: its record, replica, first_scheduled_s, preemptions,
        first_token_s and last_token_s (its finish time); a rejected one never ran, so those
        times are NaN and its preemptions 0.
        """
        done, reasons = self._done, self._reasons
        if not done:
            return
        self._done, self._reasons = [], {}
        k = len(done)
        records = [r.record for r in done]
        arrival = np.array([r.arrival_s for r in records])
        inp = np.array([r.input_tokens for r in records], dtype=np.int64)
        out = np.array([r.output_tokens for r in records], dtype=np.int64)
        first = np.array([r.first_token_s for r in done]) + self.output_delay_s
        finish = np.array([r.last_token_s for r in done]) + self.output_delay_s
        ttft = first - arrival
        e2e = finish - arrival
        # SimPy reaches an arrival as now + (arrival - now), which can round one ulp below it
        queue = np.maximum(np.array([r.first_scheduled_s for r in done]) - arrival, 0.0)
        tpot = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
        status, reason = ["completed"] * k, [""] * k
        completed = np.ones(k, dtype=bool)
        for i, why in reasons.items():
            status[i], reason[i], completed[i] = "rejected", why, False
        self.ttft.frombytes(ttft[completed].tobytes())
        self.e2e.frombytes(e2e[completed].tobytes())
        self.queue.frombytes(queue[completed].tobytes())
        self.tpot.frombytes(tpot[completed & (out > 1)].tobytes())
        self.input_tokens += int(np.add.reduce(inp, where=completed))
        self.output_tokens += int(np.add.reduce(out, where=completed))
        if completed.any():
            self.last_finish_s = max(self.last_finish_s, float(np.maximum.reduce(finish[completed])))
        self._judge_slo(records, completed, ttft, tpot, e2e)
        self.requests.write([
            [r.id for r in records], arrival, inp, out, first, finish, ttft, tpot, e2e, queue,
            np.array([r.preemptions for r in done], dtype=np.int64), np.array([r.replica for r in done], dtype=np.int64),
            status, reason,
        ])

    def _judge_slo(self, records, completed: np.ndarray, ttft: np.ndarray, tpot: np.ndarray,
                   e2e: np.ndarray) -> None:
        """With `--slo` every request is judged; without, those the trace gives targets.
        A request meets its SLO if it completed within its targets (see metrics/slo.py)."""
        own = [i for i, rec in enumerate(records) if rec.slo_ttft_s is not None or rec.slo_tpot_s is not None]
        for i in own:
            self._note_targets(records[i])
        idx = np.arange(len(records)) if self.slo is not None else np.array(own, dtype=np.int64)
        if not idx.size:
            return
        nan = float("nan")
        own_ttft = np.array([nan if records[i].slo_ttft_s is None else records[i].slo_ttft_s for i in idx.tolist()])
        own_tpot = np.array([nan if records[i].slo_tpot_s is None else records[i].slo_tpot_s for i in idx.tolist()])
        finished_e2e = np.where(completed[idx], e2e[idx], nan)  # a rejected request never meets it
        met = judge(ttft[idx], tpot[idx], finished_e2e, self.slo, own_ttft, own_tpot)
        self.slo_judged += len(idx)
        self.slo_met += int(np.count_nonzero(met))

    def _note_targets(self, rec) -> None:
        for key, value in (("ttft_s", rec.slo_ttft_s), ("tpot_s", rec.slo_tpot_s)):
            if len(self.slo_targets[key]) < 2:
                self.slo_targets[key].add(value)

    def slo_target(self, key: str) -> float | str | None:
        """The SLO target all judged requests share, "per-request" if they differ, None if unset."""
        values = self.slo_targets[key]
        if len(values) > 1:
            return "per-request"
        return next(iter(values), None)

    def close(self) -> None:
        self._record_done()
        self._record_steps()
        self.requests.close()
        self.iterations.close()


def _reason_key(reason: str) -> str:
    """Group rejection messages by their kind (the text before the numbers)."""
    if "max_model_len" in reason:
        return "exceeds max_model_len"
    if "whole-prompt step" in reason:
        return "exceeds one whole-prompt step"
    if "admission watermark" in reason:
        return "exceeds the KV blocks above the admission watermark"
    for knob in ("max_seq_len", "max_num_tokens"):  # TensorRT-LLM's limits (schedulers/trtllm.py)
        if f"exceed {knob}" in reason:
            return f"exceeds {knob}"
    return reason


def _step_columns(steps: list[tuple], spans: list[tuple]) -> list[np.ndarray]:
    """The buffered iterations as STEP_COLUMNS columns, in the order they were recorded.

    `steps` are single rows (STEP_COLUMNS tuples); each of `spans` holds a span's decode steps
    as arrays (see Recorder.decode_steps), recorded after the first `before` rows of
    `steps`. Rows and span steps are each gathered at once and then put at their positions,
    rather than concatenated piece by piece in order.
    """
    dtypes = STEP_COLUMNS.values()
    if steps:
        rows = [np.array(col, dtype=dt) for col, dt in zip(zip(*steps), dtypes)]
    else:
        rows = [np.zeros(0, dtype=dt) for dt in dtypes]
    if not spans:
        return rows
    before, replicas, starts, d, flops, nbytes, active, kv, sources = zip(*spans)
    lengths = np.array([len(a) for a in starts])
    active_all = np.concatenate(active)
    span_cols = [np.repeat(replicas, lengths), np.concatenate(starts), np.concatenate(d), np.concatenate(flops),
                 np.concatenate(nbytes), 0, active_all, active_all, np.concatenate(kv),
                 *np.concatenate(sources, axis=1)]
    offset = np.concatenate(([0], lengths.cumsum()))  # span steps recorded before each span
    n_rows = len(steps)
    row_at = np.arange(n_rows) + offset[np.searchsorted(before, np.arange(n_rows), side="right")]
    span_at = np.repeat(before, lengths) + np.arange(offset[-1])
    columns = []
    for row_values, span_values, dt in zip(rows, span_cols, dtypes):
        col = np.empty(n_rows + int(offset[-1]), dtype=dt)
        col[row_at] = row_values
        col[span_at] = span_values
        columns.append(col)
    return columns
