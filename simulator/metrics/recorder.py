"""Record what the simulation produced: per request, per iteration, and running totals.

Rows are buffered and appended to `requests.csv` and `iterations.csv` in chunks, so a
million-request run never holds a million rows; the summary keeps only compact numpy-able
columns of the latencies it needs percentiles of.
"""
from __future__ import annotations

from array import array
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd

from ..engine.request import Request
from ..perf.cost_model import IterationCost
from ..schedulers.base import BatchOutcome, ScheduledBatch
from .distribution import WeightedSamples

REQUEST_COLUMNS = ["id", "arrival_s", "input_tokens", "output_tokens", "first_token_s", "finish_s", "ttft_s",
                   "tpot_s", "e2e_s", "queue_s", "preemptions", "replica", "status", "reason"]
ITERATION_COLUMNS = ["replica", "stage", "start_s", "duration_s", "prefill_tokens", "decode_tokens", "batch_size",
                     "kv_blocks_used", "mfu", "mbu"]
FLUSH_ROWS = 65536
FLOAT_FORMAT = "%.10g"


class _CsvSink:
    """Column buffers appended to a CSV file every FLUSH_ROWS rows (or kept, without a file)."""

    def __init__(self, path: Path | None, columns: list[str], keep: bool):
        self.path, self.columns, self.keep = path, columns, keep
        self.buffers: dict[str, list] = {c: [] for c in columns}
        self.frames: list[pd.DataFrame] = []
        self.rows = 0
        self._header = True
        if path is not None:
            path.write_text(",".join(columns) + "\n")
            self._header = False

    def add(self, **cols) -> None:
        for name, values in cols.items():
            self.buffers[name].extend(values)
        self.rows += len(next(iter(cols.values())))
        if len(self.buffers[self.columns[0]]) >= FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if not self.buffers[self.columns[0]]:
            return
        frame = pd.DataFrame(self.buffers, columns=self.columns)
        if self.path is not None:
            frame.to_csv(self.path, mode="a", header=False, index=False, float_format=FLOAT_FORMAT)
        if self.keep:
            self.frames.append(frame)
        self.buffers = {c: [] for c in self.columns}

    def frame(self) -> pd.DataFrame:
        self.flush()
        return pd.concat(self.frames, ignore_index=True) if self.frames else pd.DataFrame(columns=self.columns)


class Recorder:
    def __init__(self, out_dir: Path | None, keep_frames: bool, peak_flops: float, bandwidth: float,
                 devices_per_replica: int):
        self.requests = _CsvSink(out_dir / "requests.csv" if out_dir else None, REQUEST_COLUMNS, keep_frames)
        self.iterations = _CsvSink(out_dir / "iterations.csv" if out_dir else None, ITERATION_COLUMNS, keep_frames)
        self.peak_flops, self.bandwidth, self.devices = peak_flops, bandwidth, devices_per_replica
        self.ttft, self.tpot, self.e2e, self.queue = array("d"), array("d"), array("d"), array("d")
        self.tbt = WeightedSamples()
        self.slo_met = 0
        self.slo_judged = 0
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

    def iteration(self, replica: int, start_s: float, cost: IterationCost, batch: ScheduledBatch,
                  mfu: float, mbu: float, power_w: float) -> None:
        d = cost.time_s
        self._account(1, cost.flops, cost.bytes, d, power_w * d)
        self.iterations.add(replica=[replica], stage=["mixed"], start_s=[start_s], duration_s=[d],
                            prefill_tokens=[batch.prefill_tokens], decode_tokens=[batch.decode_tokens],
                            batch_size=[batch.batch_size], kv_blocks_used=[batch.kv_blocks_used],
                            mfu=[mfu], mbu=[mbu])

    def span(self, replica: int, starts_s: np.ndarray, cost: IterationCost, batch_size: int, kv_used: np.ndarray,
             mfu: np.ndarray, mbu: np.ndarray, power_w: np.ndarray) -> None:
        """k identical-composition decode iterations at once (arrays of length k)."""
        k = len(starts_s)
        d = cost.time_s[:k]
        self._account(k, float(cost.flops[:k].sum()), float(cost.bytes[:k].sum()), float(d.sum()),
                      float((power_w * d).sum()))
        zeros, sizes = [0] * k, [batch_size] * k
        self.iterations.add(replica=[replica] * k, stage=["mixed"] * k, start_s=starts_s.tolist(),
                            duration_s=d.tolist(), prefill_tokens=zeros, decode_tokens=sizes, batch_size=sizes,
                            kv_blocks_used=kv_used.tolist(), mfu=mfu.tolist(), mbu=mbu.tolist())

    def _account(self, iterations: int, flops: float, nbytes: float, busy_s: float, energy_j: float) -> None:
        self.iteration_count += iterations
        self.flops += flops * self.devices
        self.bytes += nbytes * self.devices
        self.busy_device_s += busy_s * self.devices
        self.active_energy_j += energy_j * self.devices

    def outcome(self, replica: int, outcome: BatchOutcome, now_s: float) -> None:
        if outcome.gap_values_s.size:
            self.tbt.extend(outcome.gap_values_s, outcome.gap_counts)
        f = outcome.finished
        if f is None:
            return
        k = len(f["requests"])
        arrival, first = f["arrival_s"], f["first_token_s"]
        out = f["output_tokens"]
        ttft = first - arrival
        e2e = now_s - arrival
        with np.errstate(invalid="ignore", divide="ignore"):
            tpot = np.where(out > 1, (now_s - first) / np.maximum(out - 1, 1), np.nan)
        queue = f["first_scheduled_s"] - arrival
        self.ttft.extend(ttft.tolist())
        self.e2e.extend(e2e.tolist())
        self.queue.extend(queue.tolist())
        self.tpot.extend(tpot[out > 1].tolist())
        self.completed += k
        self.input_tokens += int(f["input_tokens"].sum())
        self.output_tokens += int(out.sum())
        self.last_finish_s = max(self.last_finish_s, now_s)
        records = [r.record for r in f["requests"]]
        self._judge_slo(records, ttft, tpot)
        self.requests.add(
            id=[r.id for r in records], arrival_s=arrival.tolist(), input_tokens=f["input_tokens"].tolist(),
            output_tokens=out.tolist(), first_token_s=first.tolist(), finish_s=[now_s] * k, ttft_s=ttft.tolist(),
            tpot_s=tpot.tolist(), e2e_s=e2e.tolist(), queue_s=queue.tolist(), preemptions=f["preemptions"].tolist(),
            replica=[replica] * k, status=["completed"] * k, reason=[""] * k,
        )

    def _judge_slo(self, records, ttft: np.ndarray, tpot: np.ndarray) -> None:
        for rec, t1, t2 in zip(records, ttft.tolist(), tpot.tolist()):
            if rec.slo_ttft_s is None and rec.slo_tpot_s is None:
                continue
            self.slo_judged += 1
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

    def close(self) -> None:
        self.requests.flush()
        self.iterations.flush()


def _reason_key(reason: str) -> str:
    """Group rejection messages by their kind (the text before the numbers)."""
    if "max_model_len" in reason:
        return "exceeds max_model_len"
    if "max_num_batched_tokens" in reason:
        return "prompt exceeds max_num_batched_tokens (chunked prefill off)"
    return reason
