"""Tables as users see them: a rich table on a terminal, plain columns anywhere else.

A :class:`Table` is data (a title, column names, rows of strings); :func:`show` picks the
form. On a terminal it is a rich table. When the stream is not a terminal (a pipe, a
file, a captured test) it is nccl-tests-style text that ``awk`` and ``grep -v '^#'`` can
read: the title as a ``#`` comment line, one header line starting with ``#``, then one
row per line, columns separated by spaces, never wrapped, no box drawing. In that form
spaces inside a cell become ``_`` and an empty cell is ``-``, so every row has as many
fields as the header.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass, field

from commsim.errors import CommsimError


@dataclass
class Table:
    """``rows`` are lists of strings, one per column. ``align`` is ``"l"`` or ``"r"`` per
    column (default: the first column left, the others right). ``classes`` optionally
    tags cells for styled output (HTML): a list parallel to ``rows`` of lists of names or
    None. ``notes`` are lines printed after the table."""

    title: str
    columns: list[str]
    rows: list[list[str]] = field(default_factory=list)
    align: list[str] | None = None
    classes: list[list[str | None]] | None = None
    notes: list[str] = field(default_factory=list)

    def alignment(self) -> list[str]:
        if self.align is not None:
            return list(self.align)
        return ["l"] + ["r"] * (len(self.columns) - 1)

    def add(self, cells: list[str], classes: list[str | None] | None = None) -> None:
        if len(cells) != len(self.columns):
            raise ValueError(f"row of {len(cells)} cells for {len(self.columns)} columns")
        self.rows.append([str(c) for c in cells])
        if classes is not None or self.classes is not None:
            if self.classes is None:
                self.classes = [[None] * len(self.columns) for _ in self.rows[:-1]]
            self.classes.append(list(classes) if classes else [None] * len(self.columns))


def _field(text: str) -> str:
    """One whitespace-free field of a plain row."""
    text = "_".join(str(text).split())
    return text or "-"


def plain(table: Table) -> str:
    """nccl-tests-style text: ``# title``, ``#`` header, one row a line (no final newline)."""
    header = [_field(c) for c in table.columns]
    rows = [[_field(c) for c in row] for row in table.rows]
    widths = [max([len(header[i])] + [len(r[i]) for r in rows]) for i in range(len(header))]
    align = table.alignment()

    def line(cells: list[str], lead: str) -> str:
        out = []
        for i, (cell, width) in enumerate(zip(cells, widths)):
            out.append(cell.ljust(width) if align[i] == "l" else cell.rjust(width))
        return (lead + "  ".join(out)).rstrip()

    lines = [f"# {table.title}"] if table.title else []
    lines.append(line(header, "#"))
    lines.extend(line(r, " ") for r in rows)
    lines.extend(f"# {n}" for n in table.notes)
    return "\n".join(lines)


def rich_table(table: Table):
    """The same table as a :class:`rich.table.Table` (for terminals)."""
    from rich import box
    from rich.table import Table as RichTable

    out = RichTable(title=table.title or None, title_justify="left", box=box.SIMPLE_HEAD,
                    pad_edge=False, padding=(0, 1), collapse_padding=True)
    for name, a in zip(table.columns, table.alignment()):
        # headers stack their words ("model\nerr%", "time\n(us)") so that columns are as
        # narrow as their values; numbers never wrap, text columns give way first
        head = re.sub(r"(\w)\(", "\\1\n(", name).replace(" ", "\n")
        out.add_column(head, justify="left" if a == "l" else "right", no_wrap=a == "r")
    for r, row in enumerate(table.rows):
        cells = []
        for c, cell in enumerate(row):
            cls = table.classes[r][c] if table.classes else None
            style = _RICH_STYLE.get(cls or "")
            cells.append(f"[{style}]{_escape(cell)}[/]" if style else _escape(cell))
        out.add_row(*cells)
    return out


_RICH_STYLE = {"good": "green", "fair": "yellow", "bad": "red", "dim": "dim"}


def _escape(text: str) -> str:
    from rich.markup import escape

    return escape(text)


FORMATS = ("auto", "rich", "plain")
_format = "auto"  # every verb's --format: how tables print (set_format)


def set_format(value: str) -> None:
    """``auto`` (rich tables on a terminal, plain columns anywhere else), ``rich`` or
    ``plain``: what :func:`show` and bench's rows print from now on."""
    global _format
    if value not in FORMATS:
        raise CommsimError(f"--format: {value!r} is not one of {', '.join(FORMATS)}")
    _format = value


def is_terminal(stream) -> bool:
    """Whether tables on ``stream`` are rich: ``--format``, else whether it is a tty."""
    if _format != "auto":
        return _format == "rich"
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())


def show(tables: Table | list[Table], stream=None, terminal: bool | None = None,
         lines: list[str] | None = None) -> None:
    """Print tables (and then ``lines``, plain text) on ``stream`` (default stdout):
    rich tables when ``terminal`` (default: :func:`is_terminal`), else :func:`plain`."""
    stream = stream or sys.stdout
    if isinstance(tables, Table):
        tables = [tables]
    if terminal is None:
        terminal = is_terminal(stream)
    if terminal:
        from rich.console import Console

        console = Console(file=stream, highlight=False)
        for i, table in enumerate(tables):
            if i:
                console.print()
            console.print(rich_table(table))
            for note in table.notes:
                console.print(note, markup=False)
        for text in lines or []:
            console.print(text, markup=False)
        return
    blocks = [plain(t) for t in tables]
    text = "\n\n".join(blocks)
    if lines:
        text += ("\n" if text else "") + "\n".join(lines)
    stream.write(text + "\n")
    stream.flush()
