"""The commands that read finished runs: `simulate compare` (run summaries side by side, the
differences from the first run, and a figure of their latency CDFs and throughput) and
`simulate show` (one run's figure; `simulate run --plots` draws the same after the run).

Only argument handling and output are here; reading run folders, the comparison and the
figures are `report`'s (run_data.py, run_compare.py, run_figures.py).
"""
from __future__ import annotations

import argparse
import io
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from ..errors import InputError

if TYPE_CHECKING:
    from ..report.run_data import RunOutput


def cmd_show(args: argparse.Namespace) -> int:
    from ..report.run_data import load_run

    for path in show_run(load_run(args.run)):
        print(f"wrote {path}")
    return 0


def show_run(run: RunOutput) -> list[Path]:
    """Draw a run's figure into its folder (also `simulate run --plots`); the paths written."""
    from ..report.run_figures import write_run_plots

    return write_run_plots(run)


def compare_path(runs: list[RunOutput], out: str | None) -> Path:
    """Where the comparison figure goes: --out (a PNG file, or a folder to put it in), else
    beside the first run, named after the runs."""
    names = [run.path.name for run in runs]
    default = f"compare-{names[0]}-vs-{names[1]}" + (f"-and-{len(names) - 2}-more" if len(names) > 2 else "") + ".png"
    if out is None:
        return runs[0].path.parent / default
    path = Path(out)
    if path.is_dir():
        return path / default
    if not path.parent.is_dir():
        raise InputError(f"--out {out}: directory {path.parent} does not exist; create it first")
    if path.suffix.lower() != ".png":
        raise InputError(f"--out {out}: the figure is a PNG; name a .png file or an existing folder")
    return path


def cmd_compare(args: argparse.Namespace) -> int:
    from rich.console import Console
    from rich.markup import escape
    from rich.table import Table

    from ..report import run_compare as compare
    from ..report.run_data import load_run
    from ..report.run_figures import compare_figure, run_names, save

    if len(args.runs) < 2:
        raise InputError("compare needs two run folders or more (the first is the baseline)")
    runs = [load_run(path) for path in args.runs]
    target = compare_path(runs, args.out)
    for run in runs:  # the figure needs them: a missing one stops the command before any output
        run.requests  # noqa: B018
    labels = run_names(runs)
    if args.format != "table":
        _compare_data(runs, labels, args.format)
        save(compare_figure(runs), target)
        print(f"wrote {target}", file=sys.stderr)  # stdout holds only the JSON or CSV
        return 0
    terminal = Console().is_terminal
    # off a terminal (a pipe, a file) whole rows: no wrapping at 80 columns, no trailing spaces
    console = Console(width=None if terminal else 100_000, record=not terminal, file=io.StringIO() if not terminal
                      else None)
    for run, label in zip(runs, labels):
        console.print(f"{label}: {compare.deployment(run)} ({run.path})", markup=False, highlight=False)
    table = Table(title=escape(f"differences from {labels[0]}"), title_justify="left")
    table.add_column("metric")
    table.add_column(labels[0].split(":")[0], justify="right")
    for label in labels[1:]:
        number = label.split(":")[0]
        table.add_column(number, justify="right")
        table.add_column(f"Δ {number}", justify="right")
        table.add_column(f"Δ% {number}", justify="right")
    for section, metrics in compare.SECTIONS:
        table.add_section()
        table.add_row(f"[bold]{section}[/bold]")
        for metric in metrics:
            base = metric.value(runs[0])
            cells = [metric.show(base)]
            for run in runs[1:]:
                value = metric.value(run)
                delta, percent = compare.difference(base, value)
                cells += [metric.show(value), compare.show_delta(metric, delta), compare.show_percent(percent)]
            table.add_row(metric.label, *cells)
    console.print(table)
    for run, label in zip(runs, labels):
        console.print(f"calibration of {label}: {compare.calibration(run)}", markup=False, highlight=False)
    for note in compare.notes(runs, labels):
        console.print(f"note: {note}", markup=False, highlight=False)
    if not terminal:
        sys.stdout.write("".join(line.rstrip() + "\n" for line in console.export_text().splitlines()))
    save(compare_figure(runs), target)
    print(f"wrote {target}")
    return 0


def _compare_data(runs: list[RunOutput], labels: list[str], fmt: str) -> None:
    """`compare --format json|csv`: the table's numbers unrounded, one row per metric with each
    run's value and, for the runs after the first, the difference and its percentage."""
    from ..report import run_compare as compare
    from .output import print_csv, print_json

    rows = []
    for section, metrics in compare.SECTIONS:
        for metric in metrics:
            base = metric.value(runs[0])
            cells: dict = {"section": section, "metric": metric.label, "values": [metric.value(run) for run in runs]}
            diffs = [compare.difference(base, metric.value(run)) for run in runs[1:]]
            cells["deltas"] = [delta for delta, _ in diffs]
            cells["percents"] = [percent for _, percent in diffs]
            rows.append(cells)
    if fmt == "json":
        print_json({"runs": [{"label": label, "path": str(run.path), "deployment": compare.deployment(run),
                              "calibration": compare.calibration(run)} for run, label in zip(runs, labels)],
                    "metrics": rows, "notes": compare.notes(runs, labels)})
        return
    numbers = [label.split(":")[0] for label in labels]
    columns = ["section", "metric", numbers[0]]
    for number in numbers[1:]:
        columns += [number, f"delta {number}", f"delta% {number}"]
    print_csv(columns, [[row["section"], row["metric"], row["values"][0],
                         *[x for i in range(1, len(runs))
                           for x in (row["values"][i], row["deltas"][i - 1], row["percents"][i - 1])]]
                        for row in rows])
