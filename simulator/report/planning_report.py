"""The capacity-planning report (`simulate plan`): report.md, a self-contained index.html and figures/.

`write_report(out_dir)` reads what the planner wrote into `out_dir` (plan_data.py) and
assembles the report from its sections: the recommendation (recommendation.py), the figures
(figures.py), the table of every candidate (candidate_table.py) and the notes on method
(notes.py). The content is built once as a list of blocks (blocks.py) and rendered twice: as
Markdown and as HTML with every figure embedded as a base64 PNG, so the HTML file can be mailed
or attached on its own.

Order, for a reader with one minute: the recommendation (or that none meets the SLO) with
its margin and how far to trust it, then the figures, the table of every candidate, and the
notes on method. The output is deterministic: the same inputs give the same report.md, and
PNGs carry no software or date metadata.
"""
from __future__ import annotations

from pathlib import Path

from .blocks import Block, Heading, render_html, render_markdown
from .candidate_table import candidate_table
from .figures import FIGURES, figures
from .notes import notes
from .plan_data import load
from .recommendation import recommendation

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
