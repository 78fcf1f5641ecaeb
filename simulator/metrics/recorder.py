"""Record what the simulation produced: per request, per iteration, and running totals.

Rows are buffered and appended to `requests.csv` and `iterations.csv` in chunks, so a
million-request run never holds a million rows; the summary keeps only compact numpy-able
columns of the latencies it needs percentiles of.
"""
from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv

from ..engine.request import Request
from ..perf.cost_model import IterationCost
from ..schedulers.base import BatchOutcome, ScheduledBatch
from .distribution import WeightedSamples

REQUEST_SCHEMA = pa.schema([
    ("id", pa.string()), ("arrival_s", pa.float64()), ("input_tokens", pa.int64()), ("output_tokens", pa.int64()),
    ("first_token_s", pa.float64()), ("finish_s", pa.float64()), ("ttft_s", pa.float64()), ("tpot_s", pa.float64()),
    ("e2e_s", pa.float64()), ("queue_s", pa.float64()), ("preemptions", pa.int64()), ("replica", pa.int64()),
    ("status", pa.string()), ("reason", pa.string()),
])
ITERATION_SCHEMA = pa.schema([
    ("replica", pa.int64()), ("stage", pa.string()), ("start_s", pa.float64()), ("duration_s", pa.float64()),
    ("prefill_tokens", pa.int64()), ("decode_tokens", pa.int64()), ("batch_size", pa.int64()),
    ("kv_blocks_used", pa.int64()), ("mfu", pa.float64()), ("mbu", pa.float64()),
])
FLUSH_ROWS = 65536

if TYPE_CHECKING:  # pandas is imported only when frames are asked for (start-up time)
    import pandas as pd


class _CsvSink:
    """Column buffers streamed to a CSV file every FLUSH_ROWS rows, and/or kept for a frame.

    pyarrow's CSV writer formats floats in C (shortest round-trip repr), an order of
    magnitude faster than pandas for the hundreds of thousands of iteration rows of a run.
    """

    def __init__(self, path: Path | None, schema: pa.Schema, keep: bool):
        self.schema, self.keep = schema, keep
        self.enabled = path is not None or keep
        self.columns = schema.names
        self.buffers: dict[str, list] = {c: [] for c in self.columns}
        self.tables: list[pa.Table] = []
        self.writer = None
        if path is not None:
            self.writer = pacsv.CSVWriter(str(path), schema, write_options=pacsv.WriteOptions(quoting_style="needed"))

    def add(self, **cols) -> None:
        if not self.enabled:
            return
        for name, values in cols.items():
            self.buffers[name].extend(values)
        if len(self.buffers[self.columns[0]]) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.enabled or not self.buffers[self.columns[0]]:
            return
        table = pa.table(self.buffers, schema=self.schema)
        if self.writer is not None:
            self.writer.write_table(table)
        if self.keep:
            self.tables.append(table)
        self.buffers = {c: [] for c in self.columns}

    def close(self) -> None:
        self.flush()
        if self.writer is not None:
            self.writer.close()
            self.writer = None

    def frame(self) -> pd.DataFrame:
        self.flush()
        return pa.concat_tables(self.tables or [self.schema.empty_table()]).to_pandas()


class Recorder:
    def __init__(self, out_dir: Path | None, keep_frames: bool, peak_flops: float, bandwidth: float,
                 devices_per_replica: int):
        self.requests = _CsvSink(out_dir / "requests.csv" if out_dir else None, REQUEST_SCHEMA, keep_frames)
        self.iterations = _CsvSink(out_dir / "iterations.csv" if out_dir else None, ITERATION_SCHEMA, keep_frames)
        self.peak_flops, self.bandwidth, self.devices = peak_flops, bandwidth, devices_per_replica
        self.ttft, self.tpot, self.e2e, self.queue = array("d"), array("d"), array("d"), array("d")
        self.tbt = WeightedSamples()
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
        self.active_energy_j = 0.0
        self.provenance_s = np.zeros(4)  # busy time by kernel_times.SOURCES

    def iteration(self, replica: int, start_s: float, cost: IterationCost, batch: ScheduledBatch,
                  mfu: float, mbu: float, power_w: float) -> None:
        d = cost.time_s
        self._account(1, cost.flops, cost.bytes, d, power_w * d)
        self.provenance_s += cost.sources_s
        self.iterations.add(replica=[replica], stage=["mixed"], start_s=[start_s], duration_s=[d],
                            prefill_tokens=[batch.prefill_tokens], decode_tokens=[batch.decode_tokens],
                            batch_size=[batch.batch_size], kv_blocks_used=[batch.kv_blocks_used],
                            mfu=[mfu], mbu=[mbu])

    def span(self, replica: int, starts_s: np.ndarray, cost: IterationCost, first: ScheduledBatch,
             active: np.ndarray, kv_used: np.ndarray, mfu: np.ndarray, mbu: np.ndarray, power_w: np.ndarray) -> None:
        """A span: the batch `first`, then k-1 decode steps of `active[j]` sequences (arrays of length k)."""
        k = len(starts_s)
        d = cost.time_s
        self._account(k, float(np.add.reduce(cost.flops)), float(np.add.reduce(cost.bytes)), float(np.add.reduce(d)), float(np.add.reduce(power_w * d)))
        self.provenance_s += cost.sources_s.sum(axis=1)
        sizes = active.tolist()
        self.iterations.add(replica=[replica] * k, stage=["mixed"] * k, start_s=starts_s.tolist(),
                            duration_s=d.tolist(), prefill_tokens=[first.prefill_tokens] + [0] * (k - 1),
                            decode_tokens=[first.decode_tokens] + sizes[1:], batch_size=sizes,
                            kv_blocks_used=kv_used.tolist(), mfu=mfu.tolist(), mbu=mbu.tolist())

    def _account(self, iterations: int, flops: float, nbytes: float, busy_s: float, energy_j: float) -> None:
        self.iteration_count += iterations
        self.flops += flops * self.devices
        self.bytes += nbytes * self.devices
        self.busy_device_s += busy_s * self.devices
        self.active_energy_j += energy_j * self.devices

    def outcome(self, replica: int, outcome: BatchOutcome) -> None:
        if outcome.gap_values_s.size:
            self.tbt.extend(outcome.gap_values_s, outcome.gap_counts)
        f = outcome.finished
        if f is None:
            return
        k = len(f["requests"])
        arrival, first = f["arrival_s"], f["first_token_s"]
        finish = f["last_token_s"]  # a request finishes when it samples its last token
        out = f["output_tokens"]
        ttft = first - arrival
        e2e = finish - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (finish - first) / np.maximum(out - 1, 1), np.nan)
        queue = f["first_scheduled_s"] - arrival
        self.ttft.extend(ttft.tolist())
        self.e2e.extend(e2e.tolist())
        self.queue.extend(queue.tolist())
        self.tpot.extend(tpot[out > 1].tolist())
        self.completed += k
        self.input_tokens += int(np.add.reduce(f["input_tokens"]))
        self.output_tokens += int(np.add.reduce(out))
        self.last_finish_s = max(self.last_finish_s, float(np.maximum.reduce(finish)))
        records = [r.record for r in f["requests"]]
        self._judge_slo(records, ttft, tpot)
        self.requests.add(
            id=[r.id for r in records], arrival_s=arrival.tolist(), input_tokens=f["input_tokens"].tolist(),
            output_tokens=out.tolist(), first_token_s=first.tolist(), finish_s=finish.tolist(), ttft_s=ttft.tolist(),
            tpot_s=tpot.tolist(), e2e_s=e2e.tolist(), queue_s=queue.tolist(), preemptions=f["preemptions"].tolist(),
            replica=[replica] * k, status=["completed"] * k, reason=[""] * k,
        )

    def _judge_slo(self, records, ttft: np.ndarray, tpot: np.ndarray) -> None:
        for rec, t1, t2 in zip(records, ttft.tolist(), tpot.tolist()):
            if rec.slo_ttft_s is None and rec.slo_tpot_s is None:
                continue
            self.slo_judged += 1
            self._note_targets(rec)
            ok = (rec.slo_ttft_s is None or t1 <= rec.slo_ttft_s) and (
                rec.slo_tpot_s is None or t2 != t2 or t2 <= rec.slo_tpot_s)  # t2 != t2: one-token output
            self.slo_met += ok

    def reject(self, req: Request, reason: str, replica: int) -> None:
        self.rejected += 1
        self.reject_reasons[_reason_key(reason)] += 1
        rec = req.record
        nan = float("nan")
        self.requests.add(
            id=[rec.id], arrival_s=[rec.arrival_s], input_tokens=[rec.input_tokens], output_tokens=[rec.output_tokens],
            first_token_s=[nan], finish_s=[nan], ttft_s=[nan], tpot_s=[nan], e2e_s=[nan], queue_s=[nan],
            preemptions=[0], replica=[replica], status=["rejected"], reason=[reason],
        )
        if rec.slo_ttft_s is not None or rec.slo_tpot_s is not None:
            self.slo_judged += 1
            self._note_targets(rec)

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
        self.requests.close()
        self.iterations.close()


def _reason_key(reason: str) -> str:
    """Group rejection messages by their kind (the text before the numbers)."""
    if "max_model_len" in reason:
        return "exceeds max_model_len"
    if "whole-prompt step" in reason:
        return "exceeds one whole-prompt step (chunked prefill off)"
    return reason
