"""Figures of run folders: one run (`simulate show`, `simulate run --plots`) and several side by
side (`simulate compare`).

`run_figure(run)`: four panels from the run's own files: latency CDFs (TTFT, TPOT, E2E of the
completed requests, requests.csv), requests waiting and in service over time (requests.csv:
waiting from arrival to first scheduled, in service from then to the last token; a preempted
request counts as in service until it finishes), KV-cache blocks in use over time as a share of
the engine's blocks (iterations.csv and summary.json's memory plan), and step time by batch size
(iterations.csv).

`compare_figure(runs)`: TTFT, TPOT and E2E CDFs of every run on the same axes, and their
throughput, one colour per run, the first run the baseline.

Both are drawn with matplotlib's object API on the Agg canvas (no display, no pyplot state),
laid out by matplotlib's constrained layout so no label collides (the tests check it with
`text_layout.text_problems`), and saved without software or date metadata; nothing in them
depends on when they were drawn.
"""
from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from .figures import _COLOURS, _PNG_METADATA, LOG_SPREAD, _plain
from .formatting import sig
from .run_data import PLOTS, RunOutput

if TYPE_CHECKING:
    import pandas as pd

TIME_BINS = 400  # over-time panels: the largest value in each of this many bins of the run
MAX_POINTS = 4000  # steps with a prefill drawn as dots: at most this many (every k-th)
LATENCIES = (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))
_SMALL = 8  # font size of legends, panel notes and bar labels


def _new_figure(width: float, height: float) -> Any:
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=110, layout="constrained")


def save(fig: Any, path: Path) -> Path:
    fig.savefig(path, format="png", metadata=_PNG_METADATA)
    return path


def _note(ax: Any, text: str) -> None:
    """A panel with nothing to draw says why."""
    ax.text(0.5, 0.5, text, transform=ax.transAxes, ha="center", va="center", fontsize=_SMALL, wrap=True)
    ax.set_xticks([])
    ax.set_yticks([])


def _log_when_spread(ax: Any, values: np.ndarray, axis: str = "x") -> None:
    positive = values[values > 0]
    if len(positive) and positive.max() > LOG_SPREAD * positive.min():
        (ax.set_xscale if axis == "x" else ax.set_yscale)("log")


def _cdf(ax: Any, values: np.ndarray, **style: Any) -> bool:
    """An empirical CDF (share of requests at or under x, in %) as a step line; False when empty."""
    values = np.sort(values[np.isfinite(values)])
    if not len(values):
        return False
    shares = 100.0 * np.arange(1, len(values) + 1) / len(values)
    ax.step(values, shares, where="post", linewidth=1.3, **style)
    return True


def _completed(requests: pd.DataFrame) -> pd.DataFrame:
    return requests[requests["status"] == "completed"] if "status" in requests else requests


def _binned_max(times: np.ndarray, levels: np.ndarray, start_levels: np.ndarray, end_s: float) -> tuple:
    """The largest value of a step function in each of TIME_BINS bins of [0, end_s]: it holds
    `levels[i]` from `times[i]` (sorted) on, and `start_levels[k]` at the start of bin k."""
    width = end_s / TIME_BINS if end_s > 0 else 1.0
    peaks = np.array(start_levels, dtype=float)
    if len(times):
        bins = np.minimum((times // width).astype(np.int64), TIME_BINS - 1)
        np.maximum.at(peaks, bins, levels)
    return np.arange(TIME_BINS) * width, peaks


def _occupancy(starts: np.ndarray, ends: np.ndarray, end_s: float) -> tuple:
    """How many intervals [start, end) are open, as its largest value per time bin."""
    keep = np.isfinite(starts) & np.isfinite(ends)
    starts, ends = starts[keep], ends[keep]
    times = np.concatenate((starts, ends))
    deltas = np.concatenate((np.ones(len(starts)), -np.ones(len(ends))))
    order = np.lexsort((deltas, times))  # at equal times the closing interval first
    times, levels = times[order], np.cumsum(deltas[order])
    edges = np.arange(TIME_BINS) * (end_s / TIME_BINS if end_s > 0 else 1.0)
    before = np.searchsorted(times, edges, side="right") - 1
    start_levels = np.where(before >= 0, levels[np.maximum(before, 0)] if len(levels) else 0.0, 0.0)
    return _binned_max(times, levels, start_levels, end_s)


def _end_s(run: RunOutput) -> float:
    requests, iterations = run.requests, run.iterations
    ends = [float(np.nanmax(requests["finish_s"])) if requests["finish_s"].notna().any() else 0.0,
            float((iterations["start_s"] + iterations["duration_s"]).max()) if len(iterations) else 0.0,
            float(run.get("makespan_s") or 0.0)]
    return max(ends)


def _latency_panel(ax: Any, requests: pd.DataFrame) -> None:
    done = _completed(requests)
    drawn = [label for (column, label), colour in zip(LATENCIES, _COLOURS)
             if column in done and _cdf(ax, done[column].to_numpy(float), color=colour, label=label)]
    if not drawn:
        _note(ax, "no completed requests")
        return
    values = np.concatenate([done[c].to_numpy(float) for c, _ in LATENCIES if c in done])
    _log_when_spread(ax, values[np.isfinite(values)])
    ax.set_ylim(0, 101)
    ax.set_xlabel("latency (s)")
    ax.set_ylabel("completed requests at or under (%)")
    ax.set_title("Latency CDFs", fontsize=10)
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=_SMALL, loc="lower right")


def _queue_panel(ax: Any, run: RunOutput, end_s: float) -> None:
    requests = run.requests
    arrival = requests["arrival_s"].to_numpy(float)
    scheduled = arrival + requests["queue_s"].to_numpy(float)
    finish = requests["finish_s"].to_numpy(float)
    if not np.isfinite(scheduled).any():
        _note(ax, "no request was scheduled")
        return
    for (starts, ends, label), colour in zip(((arrival, scheduled, "waiting"), (scheduled, finish, "in service")),
                                             _COLOURS):
        times, peaks = _occupancy(starts, ends, end_s)
        ax.step(times, peaks, where="post", color=colour, linewidth=1.0, label=label)
    ax.set_ylim(bottom=0)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel(f"requests (largest in each of {TIME_BINS} bins)")
    ax.set_title("Queue: waiting for a first step, and in service", fontsize=10)
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=_SMALL, loc="upper left")


def kv_capacity(run: RunOutput, role: str) -> int | None:
    """KV blocks of one engine of the pool of `role` (the memory plan's blocks; vLLM v0 splits
    a replica's blocks over its pipeline-overlap engines), None when the summary lacks them."""
    pools = run.get("pools") or {}
    memory = (pools.get(role) or {}).get("memory") if role in pools else run.get("memory")
    blocks = (memory or {}).get("kv_blocks")
    if not blocks:
        return None
    engines = 1 if role in pools else int(run.get("parallelism", "engines_per_replica") or 1)
    return max(int(blocks) // engines, 1)


def _kv_panel(ax: Any, run: RunOutput, end_s: float) -> None:
    iterations = run.iterations
    if not len(iterations):
        _note(ax, "no engine steps")
        return
    roles = iterations["role"].replace("", "mixed") if "role" in iterations else None
    series = ["mixed"] if roles is None else sorted(set(roles))
    width = end_s / TIME_BINS if end_s > 0 else 1.0
    normalised = True
    for role, colour in zip(series, _COLOURS):
        rows = iterations if roles is None else iterations[roles == role]
        capacity = kv_capacity(run, role)
        normalised = normalised and capacity is not None
        scale = capacity or max(int(iterations["kv_blocks_used"].max()), 1)
        share = 100.0 * rows["kv_blocks_used"].to_numpy(float) / scale
        bins = np.minimum((rows["start_s"].to_numpy(float) // width).astype(np.int64), TIME_BINS - 1)
        peaks = np.full(TIME_BINS, np.nan)
        np.fmax.at(peaks, bins, share)
        suffix = "" if len(series) == 1 else f" ({_plain(role)})"
        pooled = " over replicas" if int(rows["replica"].nunique()) > 1 else ""
        ax.plot(np.arange(TIME_BINS) * width, peaks, color=colour, linewidth=1.0, marker=".", markersize=2,
                label=f"largest in each of {TIME_BINS} bins{pooled}{suffix}")
    ax.set_ylim(bottom=0)
    ax.set_xlabel("simulated time (s)")
    ax.set_ylabel("KV blocks in use (% of an engine's)" if normalised else "KV blocks in use (% of run max)")
    ax.set_title("KV cache", fontsize=10)
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=_SMALL, loc="upper left")


def _step_panel(ax: Any, iterations: pd.DataFrame) -> None:
    if not len(iterations):
        _note(ax, "no engine steps")
        return
    ms = 1e3 * iterations["duration_s"].to_numpy(float)
    size = iterations["batch_size"].to_numpy(np.int64)
    decode_only = iterations["prefill_tokens"].to_numpy(np.int64) == 0
    mixed = np.flatnonzero(~decode_only)
    if len(mixed):
        every = mixed[:: -(-len(mixed) // MAX_POINTS)]
        ax.scatter(size[every], ms[every], s=4, color=_COLOURS[1], alpha=0.5, linewidths=0,
                   label="steps with prompt tokens" + ("" if len(every) == len(mixed) else f" (1 in {len(mixed) // len(every)})"))
    if decode_only.any():
        import pandas as pd

        grouped = pd.Series(ms[decode_only]).groupby(size[decode_only])
        quantiles = grouped.quantile([0.1, 0.5, 0.9]).unstack()
        ax.fill_between(quantiles.index, quantiles[0.1], quantiles[0.9], color=_COLOURS[0], alpha=0.25,
                        linewidth=0, label="decode-only steps, p10-p90")
        ax.plot(quantiles.index, quantiles[0.5], color=_COLOURS[0], linewidth=1.3, label="decode-only steps, median")
    _log_when_spread(ax, ms, "y")
    ax.set_xlabel("batch size (sequences in the step)")
    ax.set_ylabel("step time (ms)")
    ax.set_title("Step time by batch size", fontsize=10)
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=_SMALL, loc="upper left")


def title(run: RunOutput) -> str:
    """The deployment of a run, as its summary names it."""
    par = run.get("parallelism") or {}
    parts = [f"{run.get('model') or '?'} on {run.get('hardware') or '?'}", str(run.get("scheduler") or "?")]
    if par:
        parts.append(f"tp={par.get('tp')} pp={par.get('pp')} replicas={par.get('replicas')}")
    return _plain(" · ".join(parts))


def run_figure(run: RunOutput) -> Any:
    """The four panels of one run (module docstring)."""
    fig = _new_figure(11.0, 8.0)
    axes = fig.subplots(2, 2)
    end_s = _end_s(run)
    _latency_panel(axes[0, 0], run.requests)
    _queue_panel(axes[0, 1], run, end_s)
    _kv_panel(axes[1, 0], run, end_s)
    _step_panel(axes[1, 1], run.iterations)
    fig.suptitle(title(run), fontsize=11)
    return fig


def write_run_plots(run: RunOutput) -> list[Path]:
    """Draw `run_figure` into the run folder (plots.png); the paths written."""
    return [save(run_figure(run), run.path / PLOTS)]


def run_names(runs: list[RunOutput]) -> list[str]:
    """Each run numbered, by its folder's name (with its parent's where names repeat): "1: a"."""
    names = [run.path.name for run in runs]
    return [f"{i + 1}: " + (f"{run.path.parent.name}/{run.path.name}" if names.count(run.path.name) > 1
                            else run.path.name) for i, run in enumerate(runs)]


def compare_figure(runs: list[RunOutput]) -> Any:
    """Latency CDFs of every run (one panel per latency) and their throughput."""
    fig = _new_figure(11.0, 8.0)
    axes = fig.subplots(2, 2)
    labels = [_plain(name) + (" (baseline)" if i == 0 else "") for i, name in enumerate(run_names(runs))]
    colours = [_COLOURS[i % len(_COLOURS)] for i in range(len(runs))]
    for ax, (column, name) in zip(axes.flat, LATENCIES):
        drawn = False
        values = []
        for run, label, colour in zip(runs, labels, colours):
            done = _completed(run.requests)
            if column in done:
                sample = done[column].to_numpy(float)
                drawn = _cdf(ax, sample, color=colour, label=label) or drawn
                values.append(sample[np.isfinite(sample)])
        if not drawn:
            _note(ax, f"no {name} in any run")
            continue
        _log_when_spread(ax, np.concatenate(values))
        ax.set_ylim(0, 101)
        ax.set_xlabel(f"{name} (s)")
        ax.set_ylabel("completed requests at or under (%)")
        ax.set_title(f"{name} CDF", fontsize=10)
        ax.grid(True, which="major", linewidth=0.3)
    _throughput_panel(axes[1, 1], runs, colours)
    fig.suptitle(f"{len(runs)} runs compared", fontsize=11)
    handles: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            handles.setdefault(label, handle)
    if handles:
        fig.legend(handles.values(), handles.keys(), loc="outside lower center", fontsize=_SMALL, frameon=False,
                   ncols=1 if max(len(label) for label in handles) > 40 else min(len(handles), 3))
    return fig


def _throughput_panel(ax: Any, runs: list[RunOutput], colours: list[str]) -> None:
    tokens = [run.get("throughput", "output_tokens_per_s") for run in runs]
    rates = [run.get("throughput", "requests_per_s") for run in runs]
    heights = [float(t) if t is not None else 0.0 for t in tokens]
    positions = np.arange(len(runs))
    ax.bar(positions, heights, color=colours, width=0.6)
    for x, height, tok, rate in zip(positions, heights, tokens, rates):
        text = "—" if tok is None else f"{sig(tok)} tok/s" + ("" if rate is None else f"\n{sig(rate)} req/s")
        ax.annotate(text, (x, height), textcoords="offset points", xytext=(0, 3), ha="center", va="bottom",
                    fontsize=_SMALL)
    ax.set_xticks(positions, [str(i + 1) for i in positions])
    ax.set_xlabel("run (in the order given)")
    ax.set_ylabel("output tokens per second")
    ax.set_ylim(0, max(heights + [1.0]) * 1.25)  # room for the labels over the bars
    ax.set_title("Throughput (completed work over the makespan)", fontsize=10)
    ax.grid(True, axis="y", which="major", linewidth=0.3)
