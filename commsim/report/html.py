"""A :class:`~commsim.report.document.Document` as one self-contained HTML page.

Inline CSS, images embedded as ``data:image/png;base64,...``; no script, no font or
stylesheet from the network, so the page opens anywhere, offline, and can be mailed.
"""

from __future__ import annotations

import base64
from html import escape
from pathlib import Path

from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph, slug
from commsim.report.files import write_atomic
from commsim.report.tables import Table

CSS = """
body { font-family: -apple-system, "Segoe UI", Helvetica, Arial, sans-serif; color: #222;
       max-width: 1100px; margin: 2em auto; padding: 0 1.5em; line-height: 1.45; }
h1 { font-size: 1.6em; border-bottom: 2px solid #ddd; padding-bottom: .3em; }
h2 { font-size: 1.3em; margin-top: 2em; border-bottom: 1px solid #eee; padding-bottom: .2em; }
h3 { font-size: 1.05em; margin-top: 1.4em; }
p.muted { color: #666; font-size: .92em; }
figure { margin: 1em 0; }
figure img { max-width: 100%; height: auto; border: 1px solid #eee; }
figcaption { color: #666; font-size: .88em; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; font-size: .86em; margin: .6em 0 1.2em; }
caption { text-align: left; font-weight: 600; padding: .3em 0; }
th, td { border: 1px solid #ddd; padding: .25em .6em; white-space: nowrap; }
th { background: #f5f5f5; }
td.r { text-align: right; font-variant-numeric: tabular-nums; }
td.good { background: #dff3df; } td.fair { background: #fbf0cc; }
td.bad { background: #f8d7d7; } td.dim { color: #999; }
ul { padding-left: 1.4em; }
"""


def _table(table: Table) -> str:
    align = table.alignment()
    head = "".join(f"<th>{escape(c)}</th>" for c in table.columns)
    body = []
    for r, row in enumerate(table.rows):
        cells = []
        for c, cell in enumerate(row):
            names = []
            if align[c] == "r":
                names.append("r")
            cls = table.classes[r][c] if table.classes else None
            if cls:
                names.append(cls)
            attr = f' class="{" ".join(names)}"' if names else ""
            cells.append(f"<td{attr}>{escape(cell)}</td>")
        body.append("<tr>" + "".join(cells) + "</tr>")
    caption = f"<caption>{escape(table.title)}</caption>" if table.title else ""
    notes = "".join(f'<p class="muted">{escape(n)}</p>' for n in table.notes)
    return (f'<div class="scroll"><table>{caption}<thead><tr>{head}</tr></thead>'
            f"<tbody>{''.join(body)}</tbody></table></div>{notes}")


def _block(block) -> str:
    if isinstance(block, Heading):
        level = min(max(block.level, 1), 6)
        return f'<h{level} id="{slug(block.text)}">{escape(block.text)}</h{level}>'
    if isinstance(block, Paragraph):
        cls = ' class="muted"' if block.muted else ""
        return f"<p{cls}>{escape(block.text)}</p>"
    if isinstance(block, Bullets):
        return "<ul>" + "".join(f"<li>{escape(i)}</li>" for i in block.items) + "</ul>"
    if isinstance(block, Figure):
        data = base64.b64encode(block.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" alt="{escape(block.caption)}">'
                f"<figcaption>{escape(block.caption)}</figcaption></figure>")
    if isinstance(block, Table):
        return _table(block)
    raise TypeError(f"cannot render {type(block).__name__}")


def render(doc: Document) -> str:
    """The page as a string."""
    body = "\n".join(_block(b) for b in doc.blocks)
    return (f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
            f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
            f"<title>{escape(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n"
            f"<h1>{escape(doc.title)}</h1>\n{body}\n</body>\n</html>\n")


def write(doc: Document, path: str | Path) -> Path:
    """Write the page to ``path`` (its folder is created) atomically: the page is rendered
    first, then written to a temporary file that replaces ``path``
    (:func:`~commsim.report.files.write_atomic`), so a failure leaves no partial page and
    an older one intact. Returns the path."""
    return write_atomic(path, render(doc))
