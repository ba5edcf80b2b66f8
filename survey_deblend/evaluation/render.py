"""Rendering report sections as Markdown, a self-contained HTML page (PNGs inlined as base64) and terminal text."""

from __future__ import annotations

import base64
import html
import math
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["Section", "Table", "fmt", "fmt_pm", "to_html", "to_markdown", "to_text"]


@dataclass
class Table:
    """A titled table of already formatted cells."""

    title: str
    columns: list[str]
    rows: list[list[str]]
    note: str = ""


@dataclass
class Section:
    """A report section: paragraphs, tables, figures (caption, PNG path) and an optional preformatted block."""

    title: str
    paragraphs: list[str] = field(default_factory=list)
    tables: list[Table] = field(default_factory=list)
    figures: list[tuple[str, Path]] = field(default_factory=list)
    code: str | None = None


def fmt(value, digits: int = 4) -> str:
    """A number for a table: integers as is, floats to ``digits`` significant places, NaN/None as 'n/a'."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        return str(value)
    try:
        v = float(value)
    except (TypeError, ValueError):
        return str(value)
    if not math.isfinite(v):
        return "n/a"
    return f"{v:.{digits}g}" if abs(v) >= 1e-3 or v == 0 else f"{v:.2e}"


def fmt_pm(value, err, digits: int = 4) -> str:
    """``value ± err`` (error omitted when not finite)."""
    if err is None or not math.isfinite(float(err)):
        return fmt(value, digits)
    return f"{fmt(value, digits)} ± {fmt(err, 2)}"


def _md_cell(text: str) -> str:
    return str(text).replace("|", "\\|").replace("\n", " ")


def to_markdown(title: str, sections: list[Section], figure_dir: Path | None = None) -> str:
    """Markdown with figures linked by file name (they sit next to ``report.md``)."""
    lines = [f"# {title}", ""]
    for sec in sections:
        lines += [f"## {sec.title}", ""]
        for p in sec.paragraphs:
            lines += [p, ""]
        for t in sec.tables:
            lines += [f"**{t.title}**", "", "| " + " | ".join(_md_cell(c) for c in t.columns) + " |",
                      "| " + " | ".join("---" for _ in t.columns) + " |"]
            lines += ["| " + " | ".join(_md_cell(c) for c in row) + " |" for row in t.rows]
            lines += ([""] + [t.note] if t.note else []) + [""]
        for caption, path in sec.figures:
            lines += [f"![{caption}]({Path(path).name})", "", f"*{caption}*", ""]
        if sec.code:
            lines += ["```", sec.code, "```", ""]
    return "\n".join(lines)


CSS = """
body { font-family: system-ui, sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 0.9em; }
th, td { border: 1px solid #bbb; padding: 0.25em 0.6em; text-align: right; }
th { background: #eee; } td:first-child, th:first-child { text-align: left; }
figure { margin: 1em 0; } figure img { max-width: 100%; }
figcaption { font-style: italic; color: #555; }
pre { background: #f6f6f6; padding: 0.8em; overflow-x: auto; font-size: 0.85em; }
"""


def _png_data_uri(path: Path) -> str:
    return "data:image/png;base64," + base64.b64encode(Path(path).read_bytes()).decode("ascii")


def to_html(title: str, sections: list[Section]) -> str:
    """One self-contained HTML5 page: inline CSS, PNGs as data URIs, no external reference of any kind."""
    esc = html.escape
    out = ["<!DOCTYPE html>", '<html lang="en">', "<head>", '<meta charset="utf-8">',
           f"<title>{esc(title)}</title>", f"<style>{CSS}</style>", "</head>", "<body>", f"<h1>{esc(title)}</h1>"]
    for sec in sections:
        out.append(f"<section><h2>{esc(sec.title)}</h2>")
        out += [f"<p>{esc(p)}</p>" for p in sec.paragraphs]
        for t in sec.tables:
            out.append(f"<table><caption>{esc(t.title)}</caption><thead><tr>")
            out.append("".join(f"<th>{esc(str(c))}</th>" for c in t.columns) + "</tr></thead><tbody>")
            out += ["<tr>" + "".join(f"<td>{esc(str(c))}</td>" for c in row) + "</tr>" for row in t.rows]
            out.append("</tbody></table>")
            if t.note:
                out.append(f"<p>{esc(t.note)}</p>")
        for caption, path in sec.figures:
            out.append(f'<figure><img src="{_png_data_uri(path)}" alt="{esc(caption)}">'
                       f"<figcaption>{esc(caption)}</figcaption></figure>")
        if sec.code:
            out.append(f"<pre>{esc(sec.code)}</pre>")
        out.append("</section>")
    out += ["</body>", "</html>", ""]
    return "\n".join(out)


def to_text(table: Table) -> str:
    """A fixed-width table for the terminal."""
    widths = [max(len(str(c)), *(len(str(r[i])) for r in table.rows)) if table.rows else len(str(c))
              for i, c in enumerate(table.columns)]
    line = "  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(
        zip(table.columns, widths, strict=True)))
    rows = ["  ".join(str(c).ljust(w) if i == 0 else str(c).rjust(w) for i, (c, w) in enumerate(
        zip(r, widths, strict=True))) for r in table.rows]
    return "\n".join([table.title, line, "-" * len(line), *rows])
