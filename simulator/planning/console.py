"""What `simulate plan` shows on the terminal: a progress bar over points, then a table.

The bar counts points (simulated or read from the cache) against the number the searches
still expect, which shrinks or grows as they go, so its ETA is an estimate that firms up
as the bracketing rounds end. It is drawn on stderr, only on a terminal.
"""
from __future__ import annotations

from typing import TYPE_CHECKING

from .run_plan import PlanOutcome

if TYPE_CHECKING:  # rich is imported only when a bar is drawn
    from rich.progress import Progress, TaskID


class PointProgress:
    """A rich progress bar with ETA over a plan's points; does nothing when disabled."""

    bar: Progress | None
    task: TaskID | None  # set with `bar`

    def __init__(self, enabled: bool):
        self.enabled, self.bar, self.task = enabled, None, None

    def __call__(self, done: int, expected: int, cached: int) -> None:
        if not self.enabled:
            return
        if self.bar is None:
            from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn

            self.bar = Progress(TextColumn("points"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                                TextColumn("{task.fields[cached]} cached"), TimeRemainingColumn(), transient=True)
            self.bar.start()
            self.task = self.bar.add_task("plan", total=expected, cached=0)
        assert self.task is not None  # added with the bar
        self.bar.update(self.task, completed=done, total=expected, cached=cached)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.stop()


def print_outcome(outcome: PlanOutcome) -> None:
    """The candidates' sizing as a table, the recommendation and where the outputs are."""
    from rich.console import Console
    from rich.table import Table

    plan = outcome.plan.spec
    table = Table(title=f"{outcome.plan.path.name}: {plan.model} at {plan.target_rate:g} req/s, "
                        f"objective {plan.objective}", title_justify="left")
    for column in ("rank", "candidate", "req/s per replica", "replicas", "devices", "$/hour", "$/M output tok",
                   "J/output tok"):
        table.add_column(column, justify="left" if column == "candidate" else "right")
    notes = []
    for s in sorted(outcome.sizings, key=lambda s: (s.rank is None, s.rank or 0)):
        if s.feasible:
            table.add_row(str(s.rank), s.candidate.name, f"{s.max_rate:.4g}", str(s.replicas), str(s.devices),
                          f"{s.cost_per_hour:.2f}", f"{s.cost_per_million_output_tokens:.3f}",
                          "" if s.energy_per_output_token_j is None else f"{s.energy_per_output_token_j:.3g}")
        else:
            table.add_row("-", s.candidate.name, *[""] * 6)
        if s.reason:
            notes.append(f"{s.candidate.name}: {'' if s.feasible else 'infeasible: '}{s.reason}")
    console = Console()
    console.print(table)
    for note in notes:
        console.print(note, soft_wrap=True)
    best, margin = outcome.recommended, outcome.margin
    if best is None:
        console.print("no candidate meets the SLO")
    else:
        versus = ""
        if margin["runner_up"] is not None and margin["relative"] is not None:
            versus = f", {margin['relative']:.1%} better in {margin['metric']} than {margin['runner_up']}"
        console.print(f"recommended: {best.candidate.name} ({best.replicas} x {best.candidate.devices_per_replica} "
                      f"devices){versus}")
    console.print(f"{len(outcome.points)} points ({outcome.simulated} simulated, {outcome.cached} cached) in "
                  f"{outcome.wall_s:.1f} s · outputs in {outcome.out_dir}")
