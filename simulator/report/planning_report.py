"""The capacity-planning report (`simulate plan`): report.md, a self-contained index.html and figures/.

`write_report(out_dir)` reads what the planner wrote into `out_dir` (plan.json, candidates.csv,
results.csv and, when the recommended configuration was re-run with its timeline,
recommended/iterations.csv and recommended/summary.json) and renders the same content twice:
as Markdown and as HTML with every figure embedded as a base64 PNG, so the HTML file can be
mailed or attached on its own. The content is built once as a list of blocks (heading,
paragraph, figure, table, bullets) that each know how to render themselves, which keeps the
two formats in step.

Order, for a reader with one minute: the recommendation (or that none meets the SLO) with
its margin and how far to trust it, then the figures, the table of every candidate, and the
notes on method. The output is deterministic: the same inputs give the same report.md, and
PNGs carry no software or date metadata.
"""
from __future__ import annotations

import base64
import html
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .model_basis import dominant, shares_text, time_shares

FIGURES = "figures"
TIME_BINS = 60  # utilisation-over-time bins: fine enough to show phases, coarse enough to read
LOG_SPREAD = 30.0  # an axis goes logarithmic when its largest value exceeds the smallest this many times
PERCENTILES = (50, 90, 99)  # the latency percentiles results.csv carries
OBJECTIVES = {
    "min_cost": "lowest cost per hour that meets the SLO at the target rate",
    "max_goodput_per_dollar": "most SLO-meeting requests per dollar",
    "min_devices": "fewest devices that meet the SLO at the target rate",
}
UNCALIBRATED = "roofline only — uncalibrated, expect larger error"
_PNG_METADATA = {"Software": None}  # no matplotlib version in the file: same inputs, same bytes


# -- inputs ------------------------------------------------------------------------------

def _flag(value: Any) -> bool:
    return str(value).strip().lower() in ("true", "1", "yes")


def _read_csv(path: Path, text: tuple[str, ...], flags: tuple[str, ...]) -> pd.DataFrame:
    """A CSV with `text` columns kept verbatim (a candidate called "NA" stays "NA"), `flags`
    as booleans and every other column numeric (empty → NaN)."""
    frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    for column in frame.columns:
        if column in flags:
            frame[column] = frame[column].map(_flag).astype(bool)
        elif column not in text:
            frame[column] = pd.to_numeric(frame[column], errors="coerce")
    return frame


@dataclass
class PlanOutput:
    """Everything the planner wrote, as read from its output directory."""

    plan: dict[str, Any]
    candidates: pd.DataFrame  # sorted: rank, then best simulated attainment, then name
    results: pd.DataFrame
    iterations: pd.DataFrame | None  # recommended/iterations.csv, when it was written
    summary: dict[str, Any]  # recommended/summary.json, {} when absent

    @property
    def slo(self) -> dict[str, Any]:
        return self.plan.get("slo") or {}

    def row(self, name: str | None) -> pd.Series | None:
        """The candidates.csv row of `name` (None for no such candidate)."""
        match = self.candidates[self.candidates["candidate"] == name]
        return None if match.empty else match.iloc[0]


def _ranked(candidates: pd.DataFrame, results: pd.DataFrame) -> pd.DataFrame:
    """Candidates by rank; unranked ones after, the closest to meeting the SLO first."""
    best = results.groupby("candidate")["attainment"].max()
    ranked = candidates.assign(_shortfall=-candidates["candidate"].map(best).fillna(-1.0))
    ranked = ranked.sort_values(["rank", "_shortfall", "candidate"], na_position="last", kind="stable")
    return ranked.drop(columns="_shortfall").reset_index(drop=True)


def load(out_dir: Path) -> PlanOutput:
    """Read the planner's files; the recommended run's timeline and summary are optional."""
    results = _read_csv(out_dir / "results.csv", ("candidate", "point_key"), ("slo_met", "cached"))
    candidates = _read_csv(out_dir / "candidates.csv",
                           ("candidate", "hardware", "model", "scheduler", "knobs", "reason", "calibration",
                            "calibration_use", "time_by_source"),
                           ("feasible", "recommended"))
    iterations_path = out_dir / "recommended" / "iterations.csv"
    summary_path = out_dir / "recommended" / "summary.json"
    return PlanOutput(
        plan=json.loads((out_dir / "plan.json").read_text()),
        candidates=_ranked(candidates, results),
        results=results,
        iterations=_read_csv(iterations_path, ("stage", "role"), ()) if iterations_path.exists() else None,
        summary=json.loads(summary_path.read_text()) if summary_path.exists() else {},
    )


# -- number formatting ---------------------------------------------------------------------

def _missing(x: Any) -> bool:
    return x is None or (isinstance(x, float) and math.isnan(x))


def sig(x: Any, digits: int = 3) -> str:
    """`digits` significant figures, no exponent, no trailing zeros ("12.3", "0.0123", "1,234")."""
    if _missing(x):
        return "—"
    x = float(x)
    if x == 0:
        return "0"
    decimals = max(digits - 1 - math.floor(math.log10(abs(x))), 0)
    text = f"{round(x, decimals):,.{decimals}f}"
    return text.rstrip("0").rstrip(".") if "." in text else text


def money(x: Any) -> str:
    """Dollars with cents; amounts under a cent keep two significant figures ("$0.0042")."""
    if _missing(x):
        return "—"
    return f"${x:,.2f}" if abs(x) >= 0.01 or x == 0 else f"${sig(x, 2)}"


def seconds(x: Any) -> str:
    """A latency target: milliseconds under a second."""
    if _missing(x):
        return "—"
    return f"{sig(x * 1e3)} ms" if x < 1 else f"{sig(x)} s"


def percent(x: Any) -> str:
    return "—" if _missing(x) else f"{sig(100 * x)} %"


def integer(x: Any) -> str:
    return "—" if _missing(x) else f"{int(x):,}"


def count(x: Any, noun: str) -> str:
    """"1 device", "3 devices"."""
    return f"{integer(x)} {noun}{'' if not _missing(x) and int(x) == 1 else 's'}"


# -- document blocks: each renders itself as Markdown and as HTML ---------------------------------

class Block(Protocol):
    """A piece of the report, the same content in both formats."""

    def markdown(self) -> str: ...

    def html(self, out_dir: Path) -> str: ...


@dataclass(frozen=True)
class Link:
    text: str
    href: str  # relative to the report: a file beside it


def _md_text(text: str) -> str:
    """Text from the planner's files in Markdown: no raw HTML and no table-breaking pipes."""
    return text.replace("<", "&lt;").replace(">", "&gt;").replace("|", "\\|")


def _md_inline(parts: tuple[str | Link, ...]) -> str:
    return "".join(f"[{_md_text(p.text)}]({p.href})" if isinstance(p, Link) else _md_text(p) for p in parts)


def _html_inline(parts: tuple[str | Link, ...]) -> str:
    return "".join(f'<a href="{html.escape(p.href)}">{html.escape(p.text)}</a>' if isinstance(p, Link)
                   else html.escape(p) for p in parts)


@dataclass(frozen=True)
class Heading:
    text: str
    level: int = 2

    def markdown(self) -> str:
        return f"{'#' * self.level} {_md_text(self.text)}"

    def html(self, out_dir: Path) -> str:
        return f"<h{self.level}>{html.escape(self.text)}</h{self.level}>"


@dataclass(frozen=True)
class Paragraph:
    parts: tuple[str | Link, ...]
    lead: bool = False  # the recommendation: bold in Markdown, a highlighted box in HTML

    def markdown(self) -> str:
        text = _md_inline(self.parts)
        return f"**{text}**" if self.lead else text

    def html(self, out_dir: Path) -> str:
        tag = '<p class="lead">' if self.lead else "<p>"
        return f"{tag}{_html_inline(self.parts)}</p>"


@dataclass(frozen=True)
class Figure:
    path: str  # relative to the report directory
    title: str
    caption: str

    def markdown(self) -> str:
        return f"![{_md_text(self.title)}]({self.path})\n\n*{_md_text(self.title)}.* {_md_text(self.caption)}"

    def html(self, out_dir: Path) -> str:
        data = base64.b64encode((out_dir / self.path).read_bytes()).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{html.escape(self.title)}">'
                f"<figcaption><strong>{html.escape(self.title)}.</strong> {html.escape(self.caption)}"
                "</figcaption></figure>")


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    row_classes: tuple[str, ...]  # per row, for the HTML ("recommended", "infeasible", "")

    def markdown(self) -> str:
        lines = ["| " + " | ".join(_md_text(h) for h in self.header) + " |",
                 "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(_md_text(cell) for cell in row) + " |" for row in self.rows]
        return "\n".join(lines)

    def html(self, out_dir: Path) -> str:
        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join(f'<tr class="{cls}">' + "".join(f"<td>{html.escape(cell)}</td>" for cell in row) + "</tr>"
                       for row, cls in zip(self.rows, self.row_classes))
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


@dataclass(frozen=True)
class Bullets:
    items: tuple[tuple[str | Link, ...], ...]

    def markdown(self) -> str:
        return "\n".join(f"- {_md_inline(item)}" for item in self.items)

    def html(self, out_dir: Path) -> str:
        return "<ul>" + "".join(f"<li>{_html_inline(item)}</li>" for item in self.items) + "</ul>"


_CSS = """
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; max-width: 1100px; margin: 2em auto;
       padding: 0 1em; color: #1a1a1a; line-height: 1.45; }
h1 { font-size: 1.5em; margin-bottom: 0.3em; }
h2 { font-size: 1.2em; margin-top: 1.8em; border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
p.lead { font-size: 1.1em; font-weight: 600; background: #eef5ec; border-left: 4px solid #3a7d2c;
         padding: 0.7em 1em; }
figure { margin: 1.5em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { font-size: 0.9em; color: #555; margin-top: 0.4em; }
table { border-collapse: collapse; font-size: 0.85em; width: 100%; }
th, td { border: 1px solid #ddd; padding: 0.3em 0.5em; text-align: left; vertical-align: top; }
th { background: #f4f4f4; }
tr.recommended td { background: #eef5ec; font-weight: 600; }
tr.infeasible td { color: #777; }
"""


def render_markdown(blocks: list[Block]) -> str:
    return "\n\n".join(block.markdown() for block in blocks) + "\n"


def render_html(blocks: list[Block], out_dir: Path, title: str) -> str:
    """One HTML file with inline CSS and the figures as data URIs: nothing is fetched."""
    body = "\n".join(block.html(out_dir) for block in blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n</body>\n</html>\n")


# -- the recommendation ------------------------------------------------------------------------

_METRICS = {  # plan.json margin metric → (label, formatter)
    "cost_per_hour": ("cost per hour", lambda v: f"{money(v)}/hour"),
    "cost_per_million_output_tokens": ("cost per million output tokens", money),
    "devices_needed": ("devices", integer),
    "goodput_requests_per_dollar": ("SLO-meeting requests per dollar", sig),
}


def _targets_text(slo: dict[str, Any]) -> str:
    """"TTFT ≤ 500 ms, TPOT ≤ 50 ms": the per-request targets that are set."""
    targets = [f"{name} ≤ {seconds(slo.get(key))}"
               for key, name in (("ttft_s", "TTFT"), ("tpot_s", "TPOT"), ("e2e_s", "E2E"))
               if not _missing(slo.get(key))]
    return ", ".join(targets) or "no latency target"


def _slo_text(slo: dict[str, Any]) -> str:
    """"TTFT ≤ 500 ms, TPOT ≤ 50 ms for ≥ 90 % of requests" (DistServe's attainment)."""
    attainment = slo.get("attainment")
    text = _targets_text(slo)
    return text if _missing(attainment) else f"{text} for ≥ {percent(attainment)} of requests"


def _setup(row: pd.Series) -> str:
    """"H100 (Llama-3.1-8B, TP 2, vllm)": what one replica is."""
    parallel = f"TP {integer(row['tp'])}" + (f", PP {integer(row['pp'])}" if row["pp"] > 1 else "")
    return f"{row['hardware']} ({row['model']}, {parallel}, {row['scheduler']})"


def _goal(data: PlanOutput) -> str:
    workload = (data.plan.get("workload") or {}).get("description") or "the workload"
    return f"{workload} at {sig(data.plan.get('target_rate_req_s'))} req/s within {_slo_text(data.slo)}"


def _calibrated(row: pd.Series) -> bool:
    """Whether a profile gave the candidate kernels (directly, scaled or transferred)."""
    return row["calibration"].strip().lower() not in ("", "none")


def _margin_text(data: PlanOutput) -> str:
    margin = data.plan.get("margin") or {}
    if margin.get("runner_up") is None:
        return "No other candidate meets the SLO, so there is no runner-up to compare with."
    label, fmt = _METRICS.get(margin.get("metric"), (str(margin.get("metric")).replace("_", " "), sig))
    value = margin.get("value")
    relative = margin.get("relative")
    amount = fmt(abs(value)) if not _missing(value) else "—"
    share = f" ({percent(abs(relative))})" if not _missing(relative) else ""
    return f"Runner-up: “{margin.get('runner_up')}”, {amount}{share} behind on {label}."


def _trust_text(data: PlanOutput, row: pd.Series) -> str:
    """How far to trust the pick: its calibration, and whether the margin exceeds model error."""
    basis = f"Performance model of the recommended configuration: {calibration_text(row)}."
    if row["reason"]:
        basis += f" Planner's note on it: {row['reason']}."
    margin = data.plan.get("margin") or {}
    relative = margin.get("relative")
    runner = data.row(margin.get("runner_up"))
    if _missing(relative) or runner is None:
        return basis
    pair = (row, runner)
    unknown = [r["candidate"] for r in pair if not _calibrated(r) or _missing(r["calibration_error_p90"])]
    if unknown:
        names = " and ".join(f"“{name}”" for name in unknown)
        return (f"{basis} The margin also carries the model error of {names}, which is not quantified "
                "(no calibration error in candidates.csv).")
    error = max(float(r["calibration_error_p90"]) for r in pair)
    if abs(relative) <= error:
        return (f"{basis} The {percent(abs(relative))} margin is within the p90 kernel error ({percent(error)}): "
                "treat the two as a tie and check both.")
    return f"{basis} The {percent(abs(relative))} margin exceeds the p90 kernel error ({percent(error)})."


def _cautions(data: PlanOutput, row: pd.Series) -> list[Block]:
    """A flag for each way the recommendation is within the model's measured error
    (plan.json's margin: `margin_within_uncertainty`, `headroom_within_uncertainty`)."""
    margin = data.plan.get("margin") or {}
    flags = []
    if margin.get("margin_within_uncertainty"):
        flags.append(f"the {percent(abs(margin['relative']))} margin over “{margin.get('runner_up')}” is smaller "
                     f"than the model's p90 kernel error ({percent(margin.get('uncertainty'))}): the simulation "
                     "does not settle which of the two is better")
    headroom, error = margin.get("headroom_over_target"), row["calibration_error_p90"]
    if margin.get("headroom_within_uncertainty") and not _missing(headroom) and not _missing(error):
        flags.append(f"its capacity exceeds the target rate by {percent(headroom)}, less than its p90 kernel error "
                     f"({percent(error)}): a service that much slower would miss the target; consider one more "
                     "replica")
    return [Paragraph((f"Caution: {flag}.",)) for flag in flags]


def _best_point(results: pd.DataFrame, name: str) -> pd.Series | None:
    """A candidate's simulated point with the highest attainment (the highest rate among ties)."""
    points = results[results["candidate"] == name].sort_values(["attainment", "rate_req_s"], kind="stable")
    return None if points.empty else points.iloc[-1]


def _no_recommendation(data: PlanOutput) -> list[Block]:
    blocks: list[Block] = [Paragraph((f"No candidate meets the SLO: none of the {len(data.candidates)} candidates "
                                      f"serves {_goal(data)}.",), lead=True)]
    if data.candidates.empty:
        return blocks
    closest = data.candidates.iloc[0]
    text = f"Closest: “{closest['candidate']}”, {_setup(closest)}"
    if closest["reason"]:
        text += f": {closest['reason']}"
    best = _best_point(data.results, closest["candidate"])
    if best is not None:
        text += (f". Its best simulated attainment is {percent(best['attainment'])} "
                 f"at {sig(best['rate_req_s'])} req/s")
    return blocks + [Paragraph((text + ".",))]


def recommendation(data: PlanOutput) -> list[Block]:
    """The answer first: what to deploy and what it costs, its margin, and how far to trust it."""
    row = data.row(data.plan.get("recommended"))
    if row is None:
        return _no_recommendation(data)
    headline = (f"Serve {_goal(data)} with {integer(row['replicas_needed'])} × {_setup(row)}: "
                f"{money(row['cost_per_hour'])}/hour, {money(row['cost_per_million_output_tokens'])} per million "
                f"output tokens, {count(row['devices_needed'], 'device')} (candidate “{row['candidate']}”).")
    return [Paragraph((headline,), lead=True),
            Paragraph((_margin_text(data), " ", _trust_text(data, row))), *_cautions(data, row)]


# -- figures ---------------------------------------------------------------------------------

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
_LEGEND_ROW_IN = 0.2  # one row of 8-point legend entries (inches)


def _legend(fig: Any, axes: Any) -> None:
    """One legend under the panels, without repeats; the figure grows by its rows so it never covers the x label."""
    labels: dict[str, Any] = {}
    for ax in axes.flat:
        for handle, label in zip(*ax.get_legend_handles_labels()):
            labels.setdefault(label, handle)
    columns = min(len(labels), 5)
    legend_in = _LEGEND_ROW_IN * -(-len(labels) // max(columns, 1)) + 0.1
    width_in, height_in = fig.get_size_inches()
    top_in = height_in * (1 - fig.subplotpars.top)
    fig.set_size_inches(width_in, height_in + legend_in)
    fig.subplots_adjust(bottom=(_XLABEL_IN + legend_in) / (height_in + legend_in),
                        top=1 - top_in / (height_in + legend_in))
    fig.legend(labels.values(), labels.keys(), loc="lower center", bbox_to_anchor=(0.5, 0.01), ncol=columns,
               fontsize=8, frameon=False)


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
    if _missing(attainment):
        return 90
    return next((p for p in PERCENTILES if p >= 100 * attainment - 1e-9), PERCENTILES[-1])


def latency_figure(data: PlanOutput, out_dir: Path) -> Figure:
    q = _percentile(data.slo.get("attainment"))
    fig, axes = _new_figure(1, 2, 4.0)
    for ax, metric, key in zip(axes[0], ("TTFT", "TPOT"), ("ttft", "tpot")):
        column = f"{key}_p{q}_s"
        _per_candidate(ax, data, column)
        target = data.slo.get(f"{key}_s")
        if not _missing(target):
            ax.axhline(target, color="red", linestyle="--", linewidth=1.0, label="SLO target")
        _scale(ax, data.results[column])
        ax.set_xlabel("offered load per replica (req/s)")
        ax.set_ylabel(f"{metric} p{q} (s)")
        ax.grid(True, which="major", linewidth=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95, wspace=0.25)
    _legend(fig, axes)
    return Figure(_save(fig, out_dir, "latency_vs_load"), "Latency versus load",
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


def attainment_figure(data: PlanOutput, out_dir: Path) -> Figure:
    fig, axes = _new_figure(1, 1, 3.8)
    ax = axes[0, 0]
    _per_candidate(ax, data, "attainment", scale=100.0)
    required = data.slo.get("attainment")
    if not _missing(required):
        ax.axhline(100 * required, color="red", linestyle="--", linewidth=1.0, label="required attainment")
        _capacity_ticks(ax, data, 100 * required)
    ax.set_ylim(0, 102)
    ax.set_xlabel("offered load per replica (req/s)")
    ax.set_ylabel("requests meeting the SLO (%)")
    ax.grid(True, which="major", linewidth=0.3)
    fig.subplots_adjust(left=0.08, right=0.98, top=0.95)
    _legend(fig, axes)
    return Figure(_save(fig, out_dir, "attainment_vs_rate"), "SLO attainment versus load",
                  "Share of requests meeting every SLO target at each simulated rate; a rate passes when its "
                  "point is on or above the dashed line. The ticks on that line mark each candidate's capacity "
                  "(max rate/replica in the table): the highest passing rate the search found.")


def pareto_mask(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Points no other point beats on both more capacity (x) and lower cost (y)."""
    dominated = [bool(np.any((x >= xi) & (y <= yi) & ((x > xi) | (y < yi)))) for xi, yi in zip(x, y)]
    return ~np.array(dominated, dtype=bool)


def _label_points(ax: Any, x: np.ndarray, y: np.ndarray, names: Any) -> None:
    """Name each point, on its left in the right third of the axes so no label runs off the figure."""
    ax.autoscale_view()  # the limits the labels are placed against
    to_axes = ax.transData + ax.transAxes.inverted()
    for xi, yi, name in zip(x, y, names):
        right_side = to_axes.transform((xi, yi))[0] > 2 / 3
        ax.annotate(_plain(name), (xi, yi), textcoords="offset points", xytext=(-6 if right_side else 6, 5),
                    ha="right" if right_side else "left", fontsize=8)


def pareto_figure(data: PlanOutput, out_dir: Path, points: pd.DataFrame) -> Figure:
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
    _label_points(ax, x[best], y[best], points["candidate"][best])
    ax.set_xlabel("capacity per replica: max rate meeting the SLO (req/s)")
    ax.set_ylabel("cost to serve the target rate ($/hour)")
    ax.grid(True, which="major", linewidth=0.3)
    ax.legend(fontsize=8)
    fig.subplots_adjust(left=0.09, right=0.98, top=0.95, bottom=0.12)
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


def utilisation_figure(data: PlanOutput, out_dir: Path) -> Figure:
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


def figures(data: PlanOutput, out_dir: Path) -> list[Block]:
    """The four figures, or a note in place of each one the inputs cannot support."""
    blocks: list[Block] = []
    if data.results.empty:
        blocks.append(Paragraph(("No simulated points in results.csv: no latency or attainment figures.",)))
    else:
        blocks += [latency_figure(data, out_dir), attainment_figure(data, out_dir)]
    feasible = data.candidates[data.candidates["feasible"]].dropna(subset=["max_rate_req_s", "cost_per_hour"])
    if feasible.empty:
        blocks.append(Paragraph(("No feasible candidate has a capacity and a cost: no cost-versus-capacity figure.",)))
    else:
        blocks.append(pareto_figure(data, out_dir, feasible.reset_index(drop=True)))
    if data.iterations is None or data.iterations.empty:
        blocks.append(Paragraph(("recommended/iterations.csv is absent: no utilisation-over-time figure for the "
                                 "recommended configuration.",)))
    else:
        blocks.append(utilisation_figure(data, out_dir))
    return blocks


# -- the candidate table and the notes -----------------------------------------------------------

TABLE_HEADER = ("Rank", "Candidate", "Replica", "Knobs", "Feasible", "Devices", "Max rate/replica (req/s)",
                "$/hour", "$/M output tokens", "J/output token", "Calibration", "Reason")


def _knobs(text: str) -> str:
    """Scheduler knobs as "key=value, …" from their JSON (verbatim when it is not JSON)."""
    try:
        knobs = json.loads(text) if text.strip() else {}
    except json.JSONDecodeError:
        return text
    if not isinstance(knobs, dict):
        return text
    return ", ".join(f"{key}={value}" for key, value in sorted(knobs.items())) or "—"


def calibration_text(row: pd.Series) -> str:
    """How the candidate was modelled: headlined by where most of its kernel time came from
    (model_basis.py; "calibrated" only for a profile measured on its own device), with the
    share of time by source of its capacity run and its measured p90 kernel error."""
    profile = Path(row["calibration"]).name if _calibrated(row) else None
    error = row["calibration_error_p90"]
    detail = "error not reported" if _missing(error) else f"±{percent(error)} p90 kernel error"
    shares = time_shares(row.get("time_by_source"))
    if shares is None:  # no simulated point (infeasible), or a plan written before time_by_source
        if profile is None:
            return UNCALIBRATED
        transferred = str(row.get("calibration_use") or "").startswith("transferred")
        return f"transferred from {profile}, {detail}" if transferred else f"calibrated ({profile}), {detail}"
    kind = dominant(shares)
    if profile is None or kind == "roofline":
        head = UNCALIBRATED if profile is None else f"mostly roofline ({profile} covers little of it)"
    else:
        head = {"calibrated": f"calibrated ({profile})", "transferred": f"transferred from {profile}",
                "scaled": f"scaled from another dtype of {profile}"}[kind]
    return f"{head}; time: {shares_text(shares)}" + ("" if profile is None else f"; {detail}")


def _devices(row: pd.Series) -> str:
    """"6 (3 × 2)": devices needed, as replicas × devices per replica."""
    if _missing(row["devices_needed"]):
        return "—"
    return (f"{integer(row['devices_needed'])} ({integer(row['replicas_needed'])} × "
            f"{integer(row['devices_per_replica'])})")


def candidate_table(data: PlanOutput) -> Table:
    """Every candidate, feasible or not, in rank order."""
    rows, classes = [], []
    for _, row in data.candidates.iterrows():
        recommended = row["candidate"] == data.plan.get("recommended")
        rows.append((
            integer(row["rank"]), row["candidate"] + (" (recommended)" if recommended else ""), _setup(row),
            _knobs(row["knobs"]), "yes" if row["feasible"] else "no", _devices(row), sig(row["max_rate_req_s"]),
            money(row["cost_per_hour"]), money(row["cost_per_million_output_tokens"]),
            sig(row["energy_per_output_token_j"]), calibration_text(row), row["reason"] or "—",
        ))
        classes.append("recommended" if recommended else "" if row["feasible"] else "infeasible")
    return Table(TABLE_HEADER, tuple(rows), tuple(classes))


def notes(data: PlanOutput) -> Bullets:
    plan = data.plan
    objective = plan.get("objective")
    workload = plan.get("workload") or {}
    cached = int(data.results["cached"].sum())
    return Bullets((
        (f"Ranking objective: {objective} — {OBJECTIVES.get(objective, 'as set in the plan')}.",),
        ("Capacity search: each candidate was simulated at a series of request rates and its capacity bracketed "
         "between the highest rate that met the SLO and the lowest that did not, the bracket narrowed to the "
         f"plan's relative tolerance ({percent(plan.get('tolerance'))}). A max rate is the highest passing rate "
         "found: a lower bound on the capacity, the lowest failing rate being at most that much higher.",),
        (f"The SLO: a request meets it when it completes with {_targets_text(data.slo)}; a rate passes when "
         f"the share of requests meeting it (the attainment) is at least {percent(data.slo.get('attainment'))}. "
         "Goodput counts only those requests.",),
        ("Every number here is simulated, not measured: all ", str(len(data.results)), " points are in ",
         Link("results.csv", "results.csv"), f" ({cached} reused from cache), the candidates in ",
         Link("candidates.csv", "candidates.csv"), ". Workload: ", str(workload.get("description") or "—"), ", ",
         integer(workload.get("requests")), " requests, trace rate ", sig(workload.get("trace_rate_req_s")),
         f" req/s; plan: {plan.get('plan_file') or '—'}."),
    ))


# -- the report ------------------------------------------------------------------------------

TITLE = "Capacity plan"


def write_report(out_dir: Path) -> None:
    """Render report.md, index.html and figures/*.png into the planner's output directory
    (figures/*.png from an earlier rendering are removed first: none outlives its inputs)."""
    out_dir = Path(out_dir)
    data = load(out_dir)
    for stale in sorted((out_dir / FIGURES).glob("*.png")):
        stale.unlink()
    blocks: list[Block] = [
        Heading(f"{TITLE}: {(data.plan.get('workload') or {}).get('description') or 'workload'}", level=1),
        *recommendation(data),
        Heading("Figures"),
        *figures(data, out_dir),
        Heading("Candidates"),
        candidate_table(data),
        Heading("Notes"),
        notes(data),
    ]
    (out_dir / "report.md").write_text(render_markdown(blocks), encoding="utf-8")
    (out_dir / "index.html").write_text(render_html(blocks, out_dir, TITLE), encoding="utf-8")
