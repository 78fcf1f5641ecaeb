"""One figure per replayed run: latency CDFs and the running/waiting curves, simulated against real."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd


def occupancy(starts: np.ndarray, ends: np.ndarray, times: np.ndarray) -> np.ndarray:
    """How many [start, end) intervals hold each of `times`."""
    starts, ends = np.sort(starts), np.sort(ends)
    return np.searchsorted(starts, times, side="right") - np.searchsorted(ends, times, side="right")


def plot_run(run, real: dict[str, Any], sim: pd.DataFrame, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    sim = sim[sim["status"] == "completed"]
    fig, axes = plt.subplots(2, 2, figsize=(11, 7.5), dpi=110)
    for ax, metric, label in zip(axes.flat, ("ttft_s", "tpot_s", "e2e_s"), ("TTFT (s)", "TPOT (s)", "E2E (s)")):
        for values, name, style in ((real["per_request"][metric], "real vLLM", "-"), (sim[metric], "simulated", "--")):
            x = np.sort(np.asarray(values.dropna(), dtype=float))
            ax.step(x, np.arange(1, len(x) + 1) / len(x), where="post", linestyle=style, label=name)
        ax.set_xlabel(label)
        ax.set_ylabel("share of requests")
        ax.grid(True, linewidth=0.3)
        ax.legend(fontsize=8, loc="lower right")
    ax = axes.flat[3]
    r = run.requests
    scheduled = (sim["arrival_s"] + sim["queue_s"]).to_numpy()
    ticks = np.arange(0.0, max(float(r["last_token_ts"].max()), float(sim["finish_s"].max())) + 1.0, 1.0)
    ax.plot(ticks, occupancy(scheduled, sim["finish_s"].to_numpy(), ticks), "--", color="C1", label="running (sim)")
    ax.plot(ticks, occupancy(sim["arrival_s"].to_numpy(), scheduled, ticks), "--", color="C3", label="waiting (sim)")
    if run.timeseries is not None:
        ts = run.timeseries
        ax.plot(ts["t"], ts["running"], color="C1", label="running (real)")
        ax.plot(ts["t"], ts["waiting"], color="C3", label="waiting (real)")
    ax.set_xlabel("time since the first request (s)")
    ax.set_ylabel("requests")
    ax.grid(True, linewidth=0.3)
    ax.legend(fontsize=8, loc="upper right")
    fig.suptitle(f"{run.name}: {run.model} on {run.hardware} ({run.role})", fontsize=10)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
