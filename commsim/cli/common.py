"""Flag parsing shared by the verbs: collectives, algorithm lists, sizes and chunking."""

from __future__ import annotations

from commsim import collectives
from commsim.errors import CommsimError
from commsim.units import parse_size_range


def algorithm_list(collective: str, text: str) -> list[str]:
    """Canonical algorithm names from ``ring,tree`` or ``all`` (every one of the collective)."""
    collective = collectives.resolve_collective(collective)
    if text.strip().lower() == "all":
        return [a.name for a in collectives.algorithms(collective)]
    names = [collectives.resolve(collective, part.strip()).name
             for part in text.split(",") if part.strip()]
    if not names:
        raise CommsimError("--algorithm: give at least one name, e.g. ring,tree, or all")
    return list(dict.fromkeys(names))


def sizes(text: str, field: str = "--size") -> list[int]:
    """Sizes in bytes from ``256M``, ``1K:1G`` (doubling) or ``1K,64K``."""
    return parse_size_range(text, field)


def chunks(text: str | None) -> int | str | None:
    """``--chunks``: a whole number >= 1, ``auto`` (best pipeline depth), or absent."""
    if text is None or str(text).lower() == "auto":
        return "auto" if text is not None else None
    try:
        value = int(text)
    except ValueError:
        raise CommsimError(f"--chunks: {text!r} is not a whole number or 'auto'") from None
    if value < 1:
        raise CommsimError(f"--chunks: {text!r} must be at least 1")
    return value
