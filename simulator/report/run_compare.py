"""Run summaries side by side (`simulate compare`): the key metrics of each run, their
differences from the first run, and the notes a reader needs before trusting a difference
(different traces, different summary schemas, calibrations not equally sure, rejections).

Everything here reads `RunOutput`s (run_data.py); the terminal output is the CLI's.
"""
from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .formatting import sig
from .run_data import RunOutput

CALIBRATED_SOURCES = ("calibrated-interpolation", "calibrated-fit")
SURENESS_GAP = 0.2  # calibrated (or off-grid) shares further apart than this: runs not equally sure


@dataclass(frozen=True)
class Metric:
    """One row: its label (with its unit), how to read it from a summary, how to show it."""

    label: str
    read: Callable[[RunOutput], Any]
    integer: bool = False

    def value(self, run: RunOutput) -> float | None:
        value = self.read(run)
        if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value):
            return None
        return float(value)

    def show(self, value: float | None) -> str:
        if value is None:
            return "—"
        return f"{int(round(value)):,}" if self.integer else sig(value, 4)


def _key(*keys: str, scale: float = 1.0) -> Callable[[RunOutput], Any]:
    def read(run: RunOutput) -> Any:
        value = run.get(*keys)
        return value * scale if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    return read


def calibrated_share(run: RunOutput) -> float | None:
    """The share of busy time whose kernel times came from a profile measured on this device."""
    shares = run.get("provenance", "share_of_time_by_source")
    if not isinstance(shares, dict):
        return None
    return sum(float(shares.get(source) or 0.0) for source in CALIBRATED_SOURCES)


def _percent(read: Callable[[RunOutput], Any]) -> Callable[[RunOutput], Any]:
    def scaled(run: RunOutput) -> Any:
        value = read(run)
        return None if value is None else 100.0 * value
    return scaled


SECTIONS: tuple[tuple[str, tuple[Metric, ...]], ...] = (
    ("requests", (
        Metric("total", _key("requests", "total"), integer=True),
        Metric("completed", _key("requests", "completed"), integer=True),
        Metric("rejected", _key("requests", "rejected"), integer=True),
    )),
    ("latency", tuple(
        Metric(f"{name} {q} (s)", _key(key, q)) for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"),
                                                                  ("e2e_s", "E2E"))
        for q in ("p50", "p90", "p99"))),
    ("throughput", (
        Metric("requests/s", _key("throughput", "requests_per_s")),
        Metric("output tokens/s", _key("throughput", "output_tokens_per_s")),
        Metric("makespan (s)", _key("makespan_s")),
        Metric("preemptions", _key("preemptions"), integer=True),
        Metric("KV blocks (memory plan)", _key("memory", "kv_blocks"), integer=True),
        Metric("KV cache peak (%)", _key("utilization", "kv_cache_peak", scale=100.0)),
        Metric("energy (kWh)", _key("energy_j", scale=1 / 3.6e6)),
        Metric("cost ($)", _key("cost_usd")),
    )),
    ("calibration", (
        Metric("busy time calibrated (%)", _percent(calibrated_share)),
        Metric("kernel time off the profile grid (%)", _key("provenance", "outside_calibrated_range", scale=100.0)),
    )),
)


def difference(base: float | None, value: float | None) -> tuple[float | None, float | None]:
    """value - base, and that as a percentage of base (None when base is 0 and value is not)."""
    if base is None or value is None:
        return None, None
    delta = value - base
    if base == 0:
        return delta, 0.0 if delta == 0 else None
    return delta, 100.0 * delta / abs(base)


def show_delta(metric: Metric, delta: float | None) -> str:
    if delta is None:
        return "—"
    if delta == 0:
        return "0"
    return ("+" if delta > 0 else "-") + metric.show(abs(delta))


def show_percent(percent: float | None) -> str:
    if percent is None:
        return "—"
    return "0%" if percent == 0 else f"{percent:+.1f}%"


def deployment(run: RunOutput) -> str:
    """What ran: model, hardware, policy, parallelism, and how its kernel times were known."""
    par = run.get("parallelism") or {}
    shape = f"tp={par.get('tp')} pp={par.get('pp')} replicas={par.get('replicas')}" if par else "?"
    return (f"{run.get('model') or '?'} on {run.get('hardware') or '?'} · {run.get('scheduler') or '?'} · "
            f"{shape}")


def calibration(run: RunOutput) -> str:
    """How sure the run's times are, in the summary's own words."""
    note = run.get("provenance", "note")
    if not note:
        return "no provenance in this summary"
    band = run.get("uncertainty")
    if isinstance(band, dict) and band.get("calibrated") and isinstance(band.get("kernel_error_p90"), (int, float)):
        note += f"; p90 kernel error ±{100 * band['kernel_error_p90']:.0f} %"
    return str(note)


def _sureness(run: RunOutput) -> str:
    """The kind of calibration a run used: measured on this device, transferred, or none."""
    use = run.get("provenance", "calibration_use")
    if not use:
        return "uncalibrated roofline"
    kind = str(use).split(" (")[0]  # "measured on this device", "transferred from X", as profile_use words them
    return "transferred profile" if kind.startswith("transferred") else kind


def _trace_key(run: RunOutput) -> Any:
    """The requests the run replayed (id, arrival, lengths), sorted, or None without requests.csv."""
    if not (run.path / "requests.csv").is_file():
        return None
    requests = run.requests
    columns = ["id", "arrival_s", "input_tokens", "output_tokens"]
    if not set(columns) <= set(requests.columns):
        return None
    return requests[columns].sort_values(columns, kind="stable").reset_index(drop=True)


def notes(runs: list[RunOutput], labels: list[str]) -> list[str]:
    """What a reader must know before trusting the differences."""
    base, base_label = runs[0], labels[0]
    out: list[str] = []
    base_schema = base.get("schema")
    for run, label in zip(runs[1:], labels[1:]):
        if run.get("schema") != base_schema:
            out.append(f"{label} has summary schema {run.get('schema')}, {base_label} {base_schema}: "
                       "metrics one of them lacks show as —")
    base_trace = _trace_key(base)
    for run, label in zip(runs[1:], labels[1:]):
        total, base_total = run.get("requests", "total"), base.get("requests", "total")
        if total != base_total:
            out.append(f"the traces differ: {label} replayed {total} requests, {base_label} {base_total}; "
                       "latencies and throughput are of different work")
            continue
        trace = _trace_key(run)
        if base_trace is not None and trace is not None and not trace.equals(base_trace):
            out.append(f"the traces differ: {label} and {base_label} replayed {total} requests each, but with other "
                       "ids, arrivals or lengths")
    for run, label in zip(runs, labels):
        rejected = run.get("requests", "rejected")
        if rejected:
            out.append(f"{label} rejected {rejected} requests: its latencies are of the completed ones only")
    kinds = [_sureness(run) for run in runs]
    calibrated = [calibrated_share(run) for run in runs]
    off_grid = [run.get("provenance", "outside_calibrated_range") for run in runs]
    if len(set(kinds)) > 1 or _spread(calibrated) > SURENESS_GAP or _spread(off_grid) > SURENESS_GAP:
        out.append("the runs are not equally sure of their times (see each run's calibration): a "
                   "difference within the model's error may not be real")
    return out


def _spread(values: list[Any]) -> float:
    known = [float(v) for v in values if isinstance(v, (int, float))]
    return max(known) - min(known) if known else 0.0
