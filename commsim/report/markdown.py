"""A :class:`~commsim.report.document.Document` as Markdown, with its figures as PNG files.

The figures of ``out/report.md`` are written next to it as ``out/report-<name>.png`` and
linked by that relative name, so the folder can be moved, committed or rendered by any
Markdown viewer (GitHub pipe tables for tables).
"""

from __future__ import annotations

from pathlib import Path
from urllib.parse import quote

from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph
from commsim.report.files import Staged
from commsim.report.tables import Table


def _cell(text: str) -> str:
    return str(text).replace("\\", "\\\\").replace("|", "\\|").replace("\n", " ") or " "


def _table(table: Table) -> str:
    align = table.alignment()
    lines = []
    if table.title:
        lines += [f"**{_cell(table.title)}**", ""]
    lines.append("| " + " | ".join(_cell(c) for c in table.columns) + " |")
    lines.append("| " + " | ".join("---:" if a == "r" else ":---" for a in align) + " |")
    lines += ["| " + " | ".join(_cell(c) for c in row) + " |" for row in table.rows]
    if table.notes:
        lines += [""] + [f"*{_cell(n)}*  " for n in table.notes]
    return "\n".join(lines)


def figure_names(doc: Document, stem: str) -> dict[int, str]:
    """``id(figure) -> file name`` for every figure: ``<stem>-<name>.png``, made unique."""
    names: dict[int, str] = {}
    used: set[str] = set()
    for fig in doc.figures():
        base = f"{stem}-{fig.name}"
        name, n = f"{base}.png", 2
        while name in used:
            name, n = f"{base}-{n}.png", n + 1
        used.add(name)
        names[id(fig)] = name
    return names


def render(doc: Document, names: dict[int, str]) -> str:
    """The Markdown text; ``names`` maps each figure to its relative file name."""
    parts = [f"# {doc.title}"]
    for block in doc.blocks:
        if isinstance(block, Heading):
            parts.append("#" * min(max(block.level, 1), 6) + " " + block.text)
        elif isinstance(block, Paragraph):
            parts.append(f"*{block.text}*" if block.muted else block.text)
        elif isinstance(block, Bullets):
            parts.append("\n".join(f"- {item}" for item in block.items))
        elif isinstance(block, Figure):
            parts.append(f"![{block.caption}]({quote(names[id(block)])})")
        elif isinstance(block, Table):
            parts.append(_table(block))
        else:
            raise TypeError(f"cannot render {type(block).__name__}")
    return "\n\n".join(parts) + "\n"


def write(doc: Document, path: str | Path) -> list[Path]:
    """Write ``path`` and its PNGs beside it (the folder is created); returns every path
    written, the Markdown file last. The text is rendered before anything is written and
    every file is staged under a temporary name, then moved into place
    (:class:`~commsim.report.files.Staged`): a failure leaves no partial file and older
    files intact."""
    path = Path(path)
    names = figure_names(doc, path.stem)
    text = render(doc, names)
    with Staged() as staged:
        for fig in doc.figures():
            staged.path(path.parent / names[id(fig)]).write_bytes(fig.png)
        staged.path(path).write_text(text, encoding="utf-8")
        return staged.commit()
