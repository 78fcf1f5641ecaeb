"""The report's four figures (figures/*.png) and their captions.

Latency and SLO attainment against load, cost against capacity (with the Pareto front), and
the recommended configuration's utilisation and KV-cache occupancy over time.

Each `draw_*` function draws one with matplotlib's object API (no pyplot global state) and
returns the matplotlib figure (the tests check its text with `text_layout.text_problems`: no
label overlaps another or leaves the canvas); each `*_figure` function saves it as a PNG
without software or date metadata, so the same inputs give the same bytes, and returns a
`Figure` block with its title and caption. Every candidate keeps one colour and marker in
every figure. `figures` puts a note in place of a figure the inputs cannot support.
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .blocks import Block, Figure, Paragraph
from .formatting import missing, percent, sig
from .plan_data import PlanOutput

FIGURES = "figures"
TIME_BINS = 60  # utilisation-over-time bins: fine enough to show phases, coarse enough to read
LOG_SPREAD = 30.0  # an axis goes logarithmic when its largest value exceeds the smallest this many times
PERCENTILES = (50, 90, 99)  # the latency percentiles results.csv carries
_PNG_METADATA = {"Software": None}  # no matplotlib version in the file: same inputs, same bytes

_COLOURS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd",
            "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")  # matplotlib's tab10
_MARKERS = ("o", "s", "^", "D", "v", "P")


def _styles(data: PlanOutput) -> dict[str, dict[str, str]]:
    """One colour and marker per candidate, in rank order, the same in every figure."""
    return {name: {"color": _COLOURS[i % len(_COLOURS)], "marker": _MARKERS[i // len(_COLOURS) % len(_MARKERS)]}
            for i, name in enumerate(data.candidates["candidate"])}


def _plain(text: Any) -> str:
    """Text for matplotlib: a "$" would start mathtext."""
    return str(text).replace("$", r"\$")


def _new_figure(rows: int, cols: int, height: float) -> tuple[Any, np.ndarray]:
    """A 10-inch-wide figure and its grid of axes."""
    from matplotlib.figure import Figure as MplFigure  # the Agg canvas; no pyplot global state

    fig = MplFigure(figsize=(10.0, height), dpi=110)
    return fig, fig.subplots(rows, cols, squeeze=False)


def _save(fig: Any, out_dir: Path, name: str) -> str:
    """Write figures/<name>.png and return its path relative to the report."""
    relative = f"{FIGURES}/{name}.png"
    (out_dir / FIGURES).mkdir(parents=True, exist_ok=True)
    fig.savefig(out_dir / relative, format="png", metadata=_PNG_METADATA)
    return relative


def _scale(ax: Any, values: pd.Series, axis: str = "y") -> None:
    """Logarithmic when the positive values span more than LOG_SPREAD×."""
    positive = values[values > 0]
    if len(positive) and positive.max() > LOG_SPREAD * positive.min():
        (ax.set_yscale if axis == "y" else ax.set_xscale)("log")


_XLABEL_IN = 0.62  # room under the panels for the tick labels and the axis label (inches)


def _renderer(fig: Any) -> Any:
    """The renderer of an Agg canvas attached to `fig`, to measure text before saving."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    return canvas.get_renderer()


def _legend(fig: Any, axes: Any) -> None:
    """One legend under the panels, without repeats, in as many columns (up to 5) as fit the
    figure's width; the figure grows by its height so it never covers the x label."""
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    renderer = _renderer(fig)
    width_in, height_in = fig.get_size_inches()
    for columns in range(min(len(labels), 5), 0, -1):
        legend = fig.legend(labels.values(), labels.keys(), loc="lower center", bbox_to_anchor=(0.5, 0.01),
                            ncol=columns, fontsize=8, frameon=False)
        box = legend.get_window_extent(renderer)
        if columns == 1 or box.width <= 0.98 * fig.bbox.width:
            break
        legend.remove()
    legend_in = box.height / fig.dpi + 0.1
    top_in = height_in * (1 - fig.subplotpars.top)
    fig.set_size_inches(width_in, height_in + legend_in)
    fig.subplots_adjust(bottom=(_XLABEL_IN + legend_in) / (height_in + legend_in),
                        top=1 - top_in / (height_in + legend_in))


def _per_candidate(ax: Any, data: PlanOutput, column: str, scale: float = 1.0) -> None:
    """One line per candidate with simulated points, `column` against the offered rate."""
    results = data.results.sort_values("rate_req_s", kind="stable")
    for name, style in _styles(data).items():
        points = results[results["candidate"] == name]
        if len(points):
            ax.plot(points["rate_req_s"], points[column] * scale, label=_plain(name), markersize=4, linewidth=1.2,
                    **style)


def _percentile(attainment: Any) -> int:
    """The latency percentile matching the required attainment (p90 when none is set)."""
    if missing(attainment):
        return 90
    return next((p for p in PERCENTILES if p >= 100 * attainment - 1e-9), PERCENTILES[-1])


def draw_latency(data: PlanOutput) -> Any:
    """TTFT and TPOT at the percentile of the required attainment against load, per candidate."""
    q = _percentile(data.slo.get("attainment"))
    fig, axes = _new_figure(1, 2, 4.0)
    for ax, metric, key in zip(axes[0], ("TTFT", "TPOT"), ("ttft", "tpot")):
        column = f"{key}_p{q}_s"
        _per_candidate(ax, data, column)
        target = data.slo.get(f"{key}_s")
        if not missing(target):
            ax.axhline(target, color="red", linestyle="--", linewidth=1.0, label="SLO target")
        _scale(ax, data.results[column])
        ax.set_xlabel("offered load per replica (req/s)")
        ax.set_ylabel(f"{metric} p{q} (s)")
        ax.grid(True, which="major", linewidth=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, wspace=0.25)
    _legend(fig, axes)
    return fig


def latency_figure(data: PlanOutput, out_dir: Path) -> Figure:
    q = _percentile(data.slo.get("attainment"))
    return Figure(_save(draw_latency(data), out_dir, "latency_vs_load"), "Latency versus load",
                  f"TTFT and TPOT p{q} per candidate against the request rate offered to one replica; "
                  f"dashed red: the SLO targets. p{q} is the first percentile at or above the required attainment, "
                  "but the SLO is judged "
                  "per request on all targets jointly, so a point under both lines can still fail it (figure 2 "
                  "has the verdict).")


def _capacity_ticks(ax: Any, data: PlanOutput, level: float) -> None:
    """Each candidate's capacity (max_rate_req_s) as a tick in its colour on the required line."""
    styles = _styles(data)
    for _, row in data.candidates.dropna(subset=["max_rate_req_s"]).iterrows():
        ax.plot(row["max_rate_req_s"], level, marker="|", markersize=16, markeredgewidth=2.5,
                color=styles[row["candidate"]]["color"])


def draw_attainment(data: PlanOutput) -> Any:
    """The share of requests meeting the SLO against load, per candidate, with their capacities."""
    fig, axes = _new_figure(1, 1, 3.8)
    ax = axes[0, 0]
    _per_candidate(ax, data, "attainment", scale=100.0)
    required: Any = data.slo.get("attainment")  # a fraction, or None/NaN when unset
    if not missing(required):
        ax.axhline(100 * required, color="red", linestyle="--", linewidth=1.0, label="required attainment")
        _capacity_ticks(ax, data, 100 * required)
    ax.set_ylim(0, 102)
    ax.set_xlabel("offered load per replica (req/s)")
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.grid(True, which="major", linewidth=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95)
    _legend(fig, axes)
    return fig


def attainment_figure(data: PlanOutput, out_dir: Path) -> Figure:
    return Figure(_save(draw_attainment(data), out_dir, "attainment_vs_rate"), "SLO attainment versus load",
                  "Share of requests meeting every SLO target at each simulated rate; a rate passes when its "
                  "point is on or above the dashed line. The ticks on that line mark each candidate's capacity "
                  "(max rate/replica in the table): the highest passing rate the search found.")


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both more capacity (x) and lower cost (y)."""
    dominated = [bool(np.any((x >= xi) & (y <= yi) & ((x > xi) | (y < yi)))) for xi, yi in zip(x, y)]
    return ~np.array(dominated, dtype=bool)


# Where a point's name may go, in points from the point: beside it (right or left, above or
# below), then above or below it; tried in turn, then further out with a leader line.
_LABEL_PLACES = ((6, 5), (6, -5), (-6, 5), (-6, -5), (0, 9), (0, -9))
_LABEL_REACH = (1.0, 2.5, 4.0)
_MARKER_PX = 6.0  # half the side of the box a plotted point covers


def _label_points(ax: Any, x: np.ndarray, y: np.ndarray, names: Any, others: np.ndarray | None = None) -> None:
    """Name each point at the first place that keeps the name inside the axes and clear of
    the names already placed and of every plotted point (`others` too, in data coordinates):
    beside it, on its left first in the right third of the axes, then further out with a
    leader line. Where no place is clear, the one with the fewest collisions."""
    from matplotlib.text import Text
    from matplotlib.transforms import Bbox

    renderer = _renderer(ax.figure)
    ax.autoscale_view()  # the limits the labels are placed against
    area = ax.get_window_extent(renderer)
    everything = np.column_stack([x, y]) if others is None else np.vstack([np.column_stack([x, y]), others])
    markers = [Bbox.from_bounds(px - _MARKER_PX, py - _MARKER_PX, 2 * _MARKER_PX, 2 * _MARKER_PX)
               for px, py in ax.transData.transform(everything)]
    placed: list[Any] = []
    to_axes = ax.transData + ax.transAxes.inverted()
    for i, (xi, yi, name) in enumerate(zip(x, y, names)):
        places = list(_LABEL_PLACES)
        if to_axes.transform((xi, yi))[0] > 2 / 3:  # near the right edge: the left side first
            places.sort(key=lambda place: place[0] >= 0)
        best: tuple[int, Any] | None = None
        for reach in _LABEL_REACH:
            for dx, dy in places:
                leader = {"arrowstyle": "-", "color": "#777777", "linewidth": 0.6, "shrinkA": 0, "shrinkB": 4}
                label = ax.annotate(_plain(name), (xi, yi), textcoords="offset points",
                                    xytext=(dx * reach, dy * reach), fontsize=8,
                                    ha="left" if dx > 0 else "right" if dx < 0 else "center",
                                    va="bottom" if dy > 0 else "top",
                                    arrowprops=leader if reach > 1 else None)
                label.update_positions(renderer)  # an annotation is placed when drawn; measured now
                box = Text.get_window_extent(label, renderer)
                clashes = (not (area.x0 <= box.x0 and box.x1 <= area.x1 and area.y0 <= box.y0 and box.y1 <= area.y1)) \
                    * len(markers) + sum(box.overlaps(other) for other in placed) \
                    + sum(box.overlaps(marker) for j, marker in enumerate(markers) if j != i)
                if best is None or clashes < best[0]:
                    if best is not None:
                        best[1].remove()
                    best = (clashes, label)
                else:
                    label.remove()
                if clashes == 0:
                    break
            if best is not None and best[0] == 0:
                break
        assert best is not None  # at least one place was tried
        placed.append(Text.get_window_extent(best[1], renderer))


def draw_pareto(data: PlanOutput, points: pd.DataFrame) -> Any:
    """Cost against capacity of the feasible candidates (`points`), the Pareto-optimal ones named."""
    x, y = points["max_rate_req_s"].to_numpy(float), points["cost_per_hour"].to_numpy(float)
    best = pareto_mask(x, y)
    fig, axes = _new_figure(1, 1, 4.8)
    ax = axes[0, 0]
    ax.scatter(x[~best], y[~best], color="#999999", s=25, label="dominated")
    order = np.argsort(x[best])
    ax.plot(x[best][order], y[best][order], color="#3a7d2c", marker="o", linewidth=1.0, label="Pareto-optimal")
    chosen = points["candidate"] == data.plan.get("recommended")
    ax.scatter(x[chosen], y[chosen], marker="*", s=220, color="#d62728", zorder=3, label="recommended")
    _scale(ax, points["max_rate_req_s"], "x")
    _scale(ax, points["cost_per_hour"], "y")
    ax.set_xlabel("capacity per replica: max rate meeting the SLO (req/s)")
    ax.set_ylabel("cost to serve the target rate ($/hour)")
    ax.grid(True, which="major", linewidth=0.3)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.95, bottom=0.12)  # before the labels are placed
    _label_points(ax, x[best], y[best], points["candidate"][best], np.column_stack([x[~best], y[~best]]))
    ax.legend(fontsize=8)  # placed where it covers the fewest points and names
    return fig


def pareto_figure(data: PlanOutput, out_dir: Path, points: pd.DataFrame) -> Figure:
    fig = draw_pareto(data, points)
    left_out = len(data.candidates) - len(points)
    omitted = f" {left_out} candidate{'s' if left_out > 1 else ''} without a feasible capacity not shown." \
        if left_out else ""
    return Figure(_save(fig, out_dir, "cost_vs_capacity"), "Cost versus capacity",
                  "Each feasible candidate's cost per hour at the target rate (whole replicas) against what one "
                  "replica sustains within the SLO; labelled points are Pareto-optimal (no other candidate is "
                  f"both cheaper and larger).{omitted}")


def _binned(iterations: pd.DataFrame) -> pd.DataFrame:
    """Duration-weighted means of MFU, MBU and KV occupancy per time bin (and role, when the
    run has prefill and decode pools), pooled over replicas; bins without iterations are NaN.
    KV occupancy is kv_blocks_used over its largest value in the run (the capacity is not in the file)."""
    end = float((iterations["start_s"] + iterations["duration_s"]).max())
    width = end / TIME_BINS if end > 0 else 1.0
    roles = iterations["role"].replace("", "all") if "role" in iterations else "all"
    frame = iterations.assign(series=roles, bin=np.minimum(iterations["start_s"] // width, TIME_BINS - 1))
    frame["kv"] = frame["kv_blocks_used"] / frame.groupby("series")["kv_blocks_used"].transform("max").replace(0, np.nan)
    weighted = frame[["mfu", "mbu", "kv"]].mul(frame["duration_s"], axis=0)
    weighted[["series", "bin", "weight"]] = frame[["series", "bin", "duration_s"]]
    sums = weighted.groupby(["series", "bin"]).sum()
    means = sums[["mfu", "mbu", "kv"]].div(sums["weight"].replace(0, np.nan), axis=0)
    means["kv_peak"] = frame.groupby(["series", "bin"])["kv"].max()
    full = pd.MultiIndex.from_product([means.index.levels[0], range(TIME_BINS)], names=["series", "bin"])
    means = means.reindex(full).reset_index()
    return means.assign(time_s=(means["bin"] + 0.5) * width)


def draw_utilisation(data: PlanOutput) -> Any:
    """MFU, MBU and KV occupancy of the recommended run over time."""
    assert data.iterations is not None  # `figures` draws it only when the file was read
    binned = _binned(data.iterations)
    fig, axes = _new_figure(2, 1, 6.0)
    util_ax, kv_ax = axes[:, 0]
    several = binned["series"].nunique() > 1
    for i, (series, rows) in enumerate(binned.groupby("series")):
        suffix = f" ({_plain(series)})" if several else ""
        colour = _COLOURS[i % len(_COLOURS)]
        dots = {"color": colour, "marker": ".", "markersize": 3}  # a busy bin between idle ones still shows
        util_ax.plot(rows["time_s"], 100 * rows["mfu"], label=f"MFU{suffix}", **dots)
        util_ax.plot(rows["time_s"], 100 * rows["mbu"], linestyle="--", label=f"MBU{suffix}", **dots)
        kv_ax.plot(rows["time_s"], 100 * rows["kv"], label=f"mean{suffix}", **dots)
        kv_ax.fill_between(rows["time_s"], 100 * rows["kv"], 100 * rows["kv_peak"], color=colour, alpha=0.2,
                           label=f"up to peak{suffix}")
    util_ax.set_ylabel("utilisation (%)")
    kv_ax.set_ylabel("KV blocks (% of run max)")
    kv_ax.set_xlabel("simulated time (s)")
    for ax in (util_ax, kv_ax):
        ax.set_ylim(0, 105)
        ax.grid(True, which="major", linewidth=0.3)
        ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    fig.subplots_adjust(left=0.08, right=0.84, top=0.97, bottom=0.09, hspace=0.15)
    return fig


def utilisation_figure(data: PlanOutput, out_dir: Path) -> Figure:
    fig = draw_utilisation(data)
    util = data.summary.get("utilization") or {}
    served = (data.summary.get("throughput") or {}).get("requests_per_s")
    overall = (f" Over the whole run (summary.json, {sig(served)} req/s completed): MFU {percent(util.get('mfu'))}, "
               f"MBU {percent(util.get('mbu'))}, KV cache peak {percent(util.get('kv_cache_peak'))} of capacity."
               ) if util else ""
    return Figure(_save(fig, out_dir, "recommended_utilisation"), "Recommended configuration over time",
                  f"MFU and MBU (duration-weighted means over {TIME_BINS} time bins, pooled over replicas and "
                  "pipeline stages; gaps "
                  "are idle) and KV-cache occupancy from the planner's run of the recommended configuration "
                  "(recommended/iterations.csv). The block capacity is not "
                  "in that file, so occupancy is normalised by the largest value seen in the run, not by the "
                  f"cache size.{overall}")


def feasible_points(data: PlanOutput) -> pd.DataFrame:
    """The candidates the cost-versus-capacity figure shows: feasible, with a capacity and a cost."""
    feasible = data.candidates[data.candidates["feasible"]].dropna(subset=["max_rate_req_s", "cost_per_hour"])
    return feasible.reset_index(drop=True)


def figures(data: PlanOutput, out_dir: Path) -> list[Block]:
    """The four figures, or a note in place of each one the inputs cannot support."""
    blocks: list[Block] = []
    if data.results.empty:
        blocks.append(Paragraph(("No simulated points in results.csv: no latency or attainment figures.",)))
    else:
        blocks += [latency_figure(data, out_dir), attainment_figure(data, out_dir)]
    feasible = feasible_points(data)
    if feasible.empty:
        blocks.append(Paragraph(("No feasible candidate has a capacity and a cost: no cost-versus-capacity figure.",)))
    else:
        blocks.append(pareto_figure(data, out_dir, feasible))
    if data.iterations is None or data.iterations.empty:
        blocks.append(Paragraph(("recommended/iterations.csv is absent: no utilisation-over-time figure for the "
                                 "recommended configuration.",)))
    else:
        blocks.append(utilisation_figure(data, out_dir))
    return blocks
