"""Text that collides in a drawn figure: `text_problems(fig)`.

A figure is drawn with its own renderer (Agg) and every piece of text a reader must be able to
read is collected with its box on the canvas: titles, axis labels, the tick labels that are
drawn, offset texts, annotations (their text, not their arrows) and other texts, and legends (a legend counts as one box: its
frame when it has one, else its entries and title). A problem is two such boxes that overlap,
or one that runs off the canvas (savefig would clip it).

This is a test of the figures, not a layout engine: the figure functions place their text, and
the tests run this check on what they drew (tests/test_run_figures.py, the report figures).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

TOLERANCE_PX = 1.0  # boxes may touch or overlap by this much (text boxes include some leading)


@dataclass(frozen=True)
class TextBox:
    """One piece of text as drawn: what it is, its artist, its box in display pixels."""

    name: str
    artist: Any
    box: Any  # matplotlib.transforms.Bbox


@dataclass(frozen=True)
class TextProblem:
    """Two boxes that overlap (`other` set) or one that leaves the canvas (`other` None)."""

    box: TextBox
    other: TextBox | None = None

    @property
    def kind(self) -> str:
        return "outside" if self.other is None else "overlap"

    def __str__(self) -> str:
        if self.other is None:
            return f"{self.box.name} runs off the figure"
        return f"{self.box.name} overlaps {self.other.name}"


def _renderer(fig: Any) -> Any:
    """The figure drawn once on an Agg canvas (attached if it has another), and its renderer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()
    return canvas.get_renderer()


def _shown(text: Any) -> bool:
    return bool(text.get_visible() and text.get_text().strip())


def _label(text: Any) -> str:
    content = " ".join(text.get_text().split())
    return repr(content if len(content) <= 40 else content[:37] + "...")


def _in_view(axis: Any, loc: float) -> bool:
    """Whether a tick at `loc` is drawn (matplotlib draws only those within the view)."""
    lo, hi = sorted(axis.get_view_interval())
    slack = 1e-10 * max(abs(hi - lo), abs(hi), 1e-300)
    return lo - slack <= loc <= hi + slack


def _tick_labels(axis: Any, where: str) -> list[tuple[str, Any]]:
    labels = []
    for which, ticks in (("major", axis.get_major_ticks()), ("minor", axis.get_minor_ticks())):
        for tick in ticks:
            if not tick.get_visible() or not _in_view(axis, tick.get_loc()):
                continue
            for text in (tick.label1, tick.label2):
                if _shown(text):
                    labels.append((f"{where} {which} tick label {_label(text)}", text))
    return labels


def _legend_box(legend: Any, renderer: Any) -> Any:
    """The legend's frame when it is drawn, else the box around its entries and title."""
    from matplotlib.transforms import Bbox

    if legend.get_frame_on():
        return legend.get_frame().get_window_extent(renderer)
    parts = [t for t in legend.get_texts() if _shown(t)]
    if _shown(legend.get_title()):
        parts.append(legend.get_title())
    handles = getattr(legend, "legend_handles", None) or getattr(legend, "legendHandles", [])
    boxes = [p.get_window_extent(renderer) for p in parts + [h for h in handles if h is not None]]
    return Bbox.union(boxes) if boxes else legend.get_window_extent(renderer)


def text_boxes(fig: Any, renderer: Any | None = None) -> list[TextBox]:
    """Every piece of text the figure draws, with its box on the canvas (drawing it first
    unless a renderer of a drawn figure is given)."""
    from matplotlib.text import Text

    renderer = renderer if renderer is not None else _renderer(fig)
    found: list[tuple[str, Any]] = []
    legends: list[tuple[str, Any]] = []
    if getattr(fig, "_suptitle", None) is not None and _shown(fig._suptitle):
        found.append((f"figure title {_label(fig._suptitle)}", fig._suptitle))
    found += [(f"figure text {_label(t)}", t) for t in fig.texts if _shown(t)]
    legends += [(f"figure legend {i}", legend) for i, legend in enumerate(fig.legends) if legend.get_visible()]
    for n, ax in enumerate(fig.axes):
        if not ax.get_visible():
            continue
        where = f"axes {n}"
        found += [(f"{where} title {_label(t)}", t) for t in (ax.title, ax._left_title, ax._right_title)
                  if _shown(t)]
        for axis, letter in ((ax.xaxis, "x"), (ax.yaxis, "y")):
            if not axis.get_visible():
                continue
            if _shown(axis.label):
                found.append((f"{where} {letter} label {_label(axis.label)}", axis.label))
            if _shown(axis.get_offset_text()):
                found.append((f"{where} {letter} offset text", axis.get_offset_text()))
            found += _tick_labels(axis, f"{where} {letter}")
        found += [(f"{where} text {_label(t)}", t) for t in ax.texts if _shown(t)]
        legend = ax.get_legend()
        if legend is not None and legend.get_visible():
            legends.append((f"{where} legend", legend))
    unique = {id(artist): (name, artist) for name, artist in reversed(found)}  # a suptitle is in fig.texts too
    # an annotation's own extent includes its arrow; a leader line crossing text is not a collision
    boxes = [TextBox(name, artist, Text.get_window_extent(artist, renderer)) for name, artist in reversed(unique.values())]
    boxes += [TextBox(name, legend, _legend_box(legend, renderer)) for name, legend in legends]
    return boxes


def _overlap(a: Any, b: Any, tolerance: float) -> bool:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width > tolerance and height > tolerance


def text_problems(fig: Any, tolerance_px: float = TOLERANCE_PX) -> list[TextProblem]:
    """The text boxes of `fig` that overlap one another or run off its canvas (by more than
    `tolerance_px` pixels), in drawing order; an empty list means every text is readable."""
    renderer = _renderer(fig)
    boxes = text_boxes(fig, renderer)
    canvas = fig.bbox
    problems = [TextProblem(b) for b in boxes
                if b.box.x0 < canvas.x0 - tolerance_px or b.box.y0 < canvas.y0 - tolerance_px
                or b.box.x1 > canvas.x1 + tolerance_px or b.box.y1 > canvas.y1 + tolerance_px]
    for i, first in enumerate(boxes):
        for second in boxes[i + 1:]:
            if _overlap(first.box, second.box, tolerance_px):
                problems.append(TextProblem(first, second))
    return problems
