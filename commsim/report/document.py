"""A report as data: a title and a list of blocks that the HTML and Markdown writers render.

Blocks: :class:`Heading`, :class:`Paragraph`, :class:`Bullets`, :class:`Figure` (PNG
bytes) and :class:`~commsim.report.tables.Table`. Text is plain (writers escape it).
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from commsim.report.tables import Table


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Paragraph:
    text: str
    muted: bool = False


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Figure:
    """A PNG image; ``name`` is a short slug (the Markdown writer's file name part)."""

    png: bytes
    caption: str
    name: str


Block = Heading | Paragraph | Bullets | Figure | Table


@dataclass
class Document:
    title: str
    blocks: list = field(default_factory=list)

    def add(self, *blocks) -> None:
        self.blocks.extend(blocks)

    def figures(self) -> list[Figure]:
        return [b for b in self.blocks if isinstance(b, Figure)]


def slug(text: str) -> str:
    """``allreduce / ring`` -> ``allreduce-ring``: safe in file names and anchors."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "x"
