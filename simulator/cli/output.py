"""How the commands print a result on stdout, in the format `--format` picks.

- `table` (the default): on a terminal, rich's table and lines, fitted to its width; on
  anything else (a pipe, a file, a CI log) the same table at the width its cells need, so
  nothing is cut short (no `…`) or wrapped at 80 columns, its title on a line of its own and
  no line ending in spaces; the lines below it are printed whole.
- `json`: the command's machine-readable result, and nothing else, so `| jq` works.
- `csv`: the table's columns and rows, numbers unrounded.

Progress bars and notes go to stderr, whatever the format.
"""
from __future__ import annotations

import csv
import io
import json
import sys
from collections.abc import Iterable, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # rich is imported only when a table is printed
    from rich.table import Table

FORMATS = ("table", "json", "csv")
WIDE = 100_000  # a console this wide never cuts or wraps a table


def on_terminal() -> bool:
    """Whether stdout is a terminal (rich then lays tables out to its width)."""
    return sys.stdout.isatty()


def print_table(table: Table) -> None:
    """A rich table on stdout: as rich draws it on a terminal; elsewhere whole (`render_whole`)."""
    if on_terminal():
        from rich.console import Console

        Console().print(table)
    else:
        sys.stdout.write(render_whole(table))


def render_whole(table: Table) -> str:
    """A rich table as text at the width its cells need, without colour: its title (if any) on
    its own line, and no trailing spaces (rich pads a title to the table's width, and would
    wrap one longer than the table)."""
    from rich.console import Console

    title, table.title = table.title, None
    console = Console(file=io.StringIO(), width=WIDE, color_system=None, force_terminal=False, highlight=False,
                      emoji=False, markup=False)
    with console.capture() as capture:
        console.print(table)
    table.title = title
    lines = [] if title is None else [str(title)]
    lines += capture.get().splitlines()
    return "".join(line.rstrip() + "\n" for line in lines)


def print_line(text: str, soft_wrap: bool = False) -> None:
    """A line below a table: through rich on a terminal (wrapped to it unless `soft_wrap`),
    else whole."""
    if on_terminal():
        from rich.console import Console

        Console().print(text, soft_wrap=soft_wrap)
    else:
        print(text)


def print_json(value: Any) -> None:
    print(json.dumps(value, indent=2))


def print_csv(columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    """A CSV with a header row; None is an empty cell, booleans are true/false."""
    writer = csv.writer(sys.stdout, lineterminator="\n")
    writer.writerow(columns)
    writer.writerows([_cell(value) for value in row] for row in rows)


def _cell(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (list, dict)):
        return json.dumps(value)
    return value
