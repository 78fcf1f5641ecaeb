"""The report as a list of blocks that each render themselves as Markdown and as HTML.

The content is built once as blocks (heading, paragraph, figure, table, bullets) and rendered
twice, which keeps report.md and index.html in step. `render_html` gives one self-contained
page: inline CSS and every figure embedded as a base64 PNG, so the file can be mailed or
attached on its own. Text from the planner's files is escaped for each format here.
"""
from __future__ import annotations

import base64
import html
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol


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
