"""The one error type users see.

A :class:`CommsimError` carries a one-line message that names the bad field and the
fix; the CLI prints it without a traceback and exits with code 2.
"""

from __future__ import annotations

import difflib
from collections.abc import Iterable


class CommsimError(ValueError):
    """Bad input: the message is one line, names the field, and says how to fix it.

    A message that would span lines (a file name or a flag value holding a newline, a
    library's multi-line text) is folded onto one: the CLI's promise is one line."""

    def __init__(self, message: object = "") -> None:
        text = str(message)
        if len(text.splitlines()) > 1 or text != text.strip("\n\r"):
            text = " ".join(part.strip() for part in text.splitlines() if part.strip())
        super().__init__(text)


def unknown(kind: str, name: str, known: Iterable[str]) -> CommsimError:
    """An error for an unknown name, with close matches as suggestions."""
    known = sorted(set(known))
    close = difflib.get_close_matches(str(name), known, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(repr(c) for c in close)}?" if close else ""
    choices = f" (known: {', '.join(known)})" if len(known) <= 12 else ""
    return CommsimError(f"unknown {kind} {name!r}{hint}{choices}")
