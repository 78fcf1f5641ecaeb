"""What `simulate plan` shows on the terminal: a progress bar over points, then a table.

The bar counts points (simulated or read from the cache) against the number the searches
still expect, which shrinks or grows as they go, so its ETA is an estimate that firms up
as the bracketing rounds end. It is drawn on stderr, only on a terminal. The table is
printed through simulator/cli/output.py: whole when stdout is not a terminal, or as JSON or
CSV rows (`--format`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

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


PLAN_COLUMNS = ("rank", "candidate", "req/s per replica", "replicas", "devices", "$/hour", "$/M output tok",
                "J/output tok")


def candidate_rows(outcome: PlanOutcome) -> list[dict[str, Any]]:
    """The candidates in the table's order (ranked first, then the infeasible ones), unrounded,
    under candidates.csv's names: what `--format json` prints (`--format csv`: `PLAN_COLUMNS`)."""
    return [{"rank": s.rank, "candidate": s.candidate.name, "max_rate_req_s": s.max_rate, "replicas_needed": s.replicas,
             "devices_needed": s.devices, "cost_per_hour": s.cost_per_hour,
             "cost_per_million_output_tokens": s.cost_per_million_output_tokens,
             "energy_per_output_token_j": s.energy_per_output_token_j, "feasible": s.feasible,
             "recommended": s.recommended, "reason": s.reason}
            for s in sorted(outcome.sizings, key=lambda s: (s.rank is None, s.rank or 0))]


def print_outcome(outcome: PlanOutcome, fmt: str = "table") -> None:
    """The candidates' sizing as a table, the recommendation and where the outputs are; or
    the table's rows as JSON or CSV (`fmt`), and nothing else."""
    from ..cli.output import print_csv, print_json, print_line, print_table

    rows = candidate_rows(outcome)
    if fmt == "json":
        print_json(rows)
        return
    keys = ("rank", "candidate", "max_rate_req_s", "replicas_needed", "devices_needed", "cost_per_hour",
            "cost_per_million_output_tokens", "energy_per_output_token_j")
    if fmt == "csv":
        print_csv(PLAN_COLUMNS, ([row[k] for k in keys] for row in rows))
        return
    from rich.table import Table

    plan = outcome.plan.spec
    table = Table(title=f"{outcome.plan.path.name}: {plan.model} at {plan.target_rate:g} req/s, "
                        f"objective {plan.objective}", title_justify="left")
    longest = max((len(row["candidate"]) for row in rows), default=0)
    for column in PLAN_COLUMNS:  # on a narrow terminal, names stay whole and headers fold (no "…")
        if column == "candidate":
            table.add_column(column, no_wrap=True, min_width=longest)
        else:
            table.add_column(column, justify="right", overflow="fold")
    notes = []
    for row in rows:
        if row["feasible"]:
            energy = row["energy_per_output_token_j"]
            table.add_row("-" if row["rank"] is None else str(row["rank"]), row["candidate"], f"{row['max_rate_req_s']:.4g}",
                          str(row["replicas_needed"]), str(row["devices_needed"]), _number(row["cost_per_hour"], ".2f"),
                          _number(row["cost_per_million_output_tokens"], ".3f"), _number(energy, ".3g"))
        else:
            table.add_row("-", row["candidate"], *[""] * 6)
        if row["reason"]:
            notes.append(f"{row['candidate']}: {'' if row['feasible'] else 'infeasible: '}{row['reason']}")
    print_table(table)
    for note in notes:
        print_line(note, soft_wrap=True)
    best, margin = outcome.recommended, outcome.margin
    if best is None:
        print_line("no candidate meets the SLO")
    else:
        versus = ""
        if margin["runner_up"] is not None and margin["relative"] is not None:
            versus = f", {margin['relative']:.1%} better in {margin['metric']} than {margin['runner_up']}"
        print_line(f"recommended: {best.candidate.name} ({best.replicas} x {best.candidate.devices_per_replica} "
                   f"devices){versus}")
    print_line(f"{len(outcome.points)} points ({outcome.simulated} simulated, {outcome.cached} cached) in "
               f"{outcome.wall_s:.1f} s · outputs in {outcome.out_dir}")


def _number(value: float | None, spec: str) -> str:
    """A table cell: the number, or "—" where there is none (no price, no power)."""
    return "—" if value is None else format(value, spec)
