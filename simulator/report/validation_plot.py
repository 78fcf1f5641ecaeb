"""Predicted versus measured kernel times, log-log, one colour per op (`simulate validate`)."""
from __future__ import annotations

from pathlib import Path

import pandas as pd


def plot_predictions(frame: pd.DataFrame, path: Path, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 6.0), dpi=120)
    for op, rows in frame.groupby("op"):
        ax.scatter(rows["time_us"], rows["predicted_us"], s=6, alpha=0.5, label=f"{op} ({len(rows)})")
    lo = float(min(frame["time_us"].min(), frame["predicted_us"].min()))
    hi = float(max(frame["time_us"].max(), frame["predicted_us"].max()))
    ax.plot([lo, hi], [lo, hi], color="black", linewidth=0.8, label="exact")
    for factor, label in ((1.1, "±10 %"), (1 / 1.1, None)):
        ax.plot([lo, hi], [lo * factor, hi * factor], color="grey", linewidth=0.6, linestyle=":", label=label)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("measured time (us)")
    ax.set_ylabel("predicted time (us)")
    ax.set_title(title, fontsize=10)
    ax.legend(fontsize=8, loc="upper left")
    ax.grid(True, which="major", linewidth=0.3)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
