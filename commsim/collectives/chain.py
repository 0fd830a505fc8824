"""Pipelined chain broadcast and reduce.

The ranks form a chain starting at the root (``root, root+1, ...`` modulo ``p``) and
the buffer moves through it in ``k = nchunks`` pieces: chunk ``j`` crosses link ``i``
of the chain in step ``j + i``, so the whole takes ``p - 1 + k - 1`` steps of
``S/k`` bytes each (the reduce runs the same chain backwards, adding as it goes).
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.schedule import Schedule, ScheduleBuilder


def _chain(nranks: int, nchunks: int | None, root: int) -> tuple[np.ndarray, int]:
    if not 0 <= root < nranks:
        raise ValueError(f"root {root} is out of range for {nranks} ranks")
    return (root + np.arange(nranks)) % nranks, nchunks or 1


def broadcast(nranks: int, nchunks: int | None = None, root: int = 0) -> Schedule:
    """Chunk ``j`` goes from chain position ``i`` to ``i + 1`` in step ``j + i``."""
    order, k = _chain(nranks, nchunks, root)
    b = ScheduleBuilder()
    pos, j = np.meshgrid(np.arange(nranks - 1), np.arange(k), indexing="ij")
    b.add(j + pos, order[pos], order[pos + 1], j, False)
    return b.build("broadcast", "chain", nranks, k, root=root, options={"root": root})


def reduce(nranks: int, nchunks: int | None = None, root: int = 0) -> Schedule:
    """Chunk ``j`` goes from chain position ``i`` to ``i - 1`` in step ``j + p - 1 - i``."""
    order, k = _chain(nranks, nchunks, root)
    b = ScheduleBuilder()
    pos, j = np.meshgrid(np.arange(1, nranks), np.arange(k), indexing="ij")
    b.add(j + nranks - 1 - pos, order[pos], order[pos - 1], j, True)
    return b.build("reduce", "chain", nranks, k, root=root, options={"root": root})
