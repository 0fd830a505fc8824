"""Which collectives and algorithms a comma list names: the parsing of ``--collective``
and ``--algorithm`` that ``bench``, ``simulate``, ``predict`` and sweeps share."""

from __future__ import annotations

from commsim import collectives
from commsim.errors import CommsimError, unknown


def names(text) -> list[str]:
    """The names of a comma list (``ring, tree`` -> ``["ring", "tree"]``); a list of such
    texts (bench's configuration) is split item by item."""
    parts = [text] if isinstance(text, str) else list(text or ())
    return [n.strip() for part in parts for n in str(part).split(",") if n.strip()]


def collective_list(text) -> list[str]:
    """Canonical collective names from ``allreduce,allgather`` or ``all`` (every one
    commsim has, in :data:`commsim.collectives.COLLECTIVES` order), without repeats."""
    wanted = names(text)
    if not wanted:
        raise CommsimError("--collective: give at least one name, e.g. allreduce,allgather, "
                           "or all")
    if any(n.lower() == "all" for n in wanted):
        return list(collectives.COLLECTIVES)
    out = []
    for name in wanted:
        try:
            out.append(collectives.resolve_collective(name))
        except CommsimError:
            raise unknown("collective", name, (*collectives.COLLECTIVES, "all")) from None
    return list(dict.fromkeys(out))


def collective_algorithms(collective_text, algorithm_text,
                          extra: tuple[str, ...] = ()) -> list[tuple[str, list[str]]]:
    """``[(collective, [algorithm, ...]), ...]`` from ``--collective`` and ``--algorithm``
    (comma texts or lists of names): the parsing ``bench``, ``simulate`` and ``predict``
    share.

    Canonical names, no repeats. ``all`` is every registered algorithm of each collective
    (after ``extra``, names kept as they are, such as bench's ``native``). With several
    collectives a name applies to those that have it, and must exist for one of them (else
    an error with the closest names of all of them); a collective that has none of the
    names asked for gets an empty list."""
    wanted = collective_list(collective_text)
    asked = names(algorithm_text)
    if not asked:
        raise CommsimError("--algorithm: give at least one name, e.g. ring,tree, or all")
    chosen: dict[str, list[str]] = {c: [] for c in wanted}
    for text in asked:
        key = text.lower()
        if key == "all":
            for c in wanted:
                chosen[c] += [*extra] + [a.name for a in collectives.algorithms(c)]
            continue
        if key in extra:
            for c in wanted:
                chosen[c].append(key)
            continue
        found = False
        for c in wanted:
            try:
                chosen[c].append(collectives.resolve(c, text).name)
                found = True
            except CommsimError:
                pass
        if not found:
            known = {a.name for c in wanted for a in collectives.algorithms(c)}
            every = len(wanted) == len(collectives.COLLECTIVES)
            kind = "algorithm" if every else f"{'/'.join(wanted)} algorithm"
            raise unknown(kind, text, known | set(extra) | {"all"})
    return [(c, list(dict.fromkeys(chosen[c]))) for c in wanted]
