"""alltoall: pairwise exchange, Bruck, and a two-level (hierarchical) exchange.

Chunk space (see :mod:`commsim.collectives.schedule`): the logical buffer holds ``p``
segments, one a rank; chunk ``(o p + d) m + q`` is piece ``q`` of the block rank ``o``
sends to rank ``d`` (``m = nchunks / p**2`` pieces a block, default 1). Every transfer
is a copy to the same position on its receiver; rank ``d``'s result is block ``d`` of
every segment.

- ``pairwise``: ``p - 1`` steps; in step ``s - 1`` rank ``i`` sends its block for
  ``i + s`` to ``i + s`` and receives from ``i - s`` (indices mod ``p``).
- ``bruck``: ``ceil(log2 p)`` steps; the block from ``o`` to ``d`` travels the offset
  ``x = (d - o) mod p`` in hops of ``2**k`` for each set bit ``k`` of ``x``, lowest bit
  first, so in step ``k`` every rank sends the blocks it holds whose offset has bit
  ``k`` set to the rank ``2**k`` ahead (no local rotations: positions are fixed).
- ``hierarchical``: ranks in groups of ``g`` consecutive ranks (``N = p / g`` groups,
  default ``g = gcd(p, 8)``). Phase 1 (``g - 1`` steps, pairwise in the group): rank
  ``(n, l)`` sends local rank ``l'`` every block bound for local rank ``l'`` of any
  group. Phase 2 (``N - 1`` steps, pairwise across groups): local rank ``l`` of group
  ``n`` sends local rank ``l`` of group ``n'`` the ``g`` blocks of group ``n`` bound for
  it, so cross-group traffic goes once per group pair between same-index ranks.
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.hierarchical import default_group_size
from commsim.collectives.schedule import Schedule, ScheduleBuilder


def _pieces(p: int, nchunks: int | None) -> tuple[int, int]:
    """``(nchunks, m)``: the chunk count (default ``p**2``) and the pieces per block."""
    nchunks = nchunks or p * p
    if nchunks % (p * p):
        raise ValueError(f"nchunks={nchunks} must be a multiple of nranks**2={p * p}")
    return nchunks, nchunks // (p * p)


def _add_blocks(b: ScheduleBuilder, step, src, dst, origin, dest, p: int, m: int) -> None:
    """Transfers of whole blocks (``origin -> dest``) from ``src`` to ``dst``, ``m`` chunks each."""
    step, src, dst, origin, dest = (np.repeat(a.ravel(), m) for a in np.broadcast_arrays(
        *(np.asarray(x, dtype=np.int64) for x in (step, src, dst, origin, dest))))
    piece = np.tile(np.arange(m), len(origin) // m)
    b.add(step, src, dst, (origin * p + dest) * m + piece, False)


def _build(b: ScheduleBuilder, algorithm: str, p: int, nchunks: int, **options) -> Schedule:
    return b.build("alltoall", algorithm, p, nchunks, segments=p, blocks=p, options=options)


def pairwise(nranks: int, nchunks: int | None = None) -> Schedule:
    """Pairwise exchange: ``p - 1`` steps of one block (``S/p`` bytes) to one peer."""
    p = nranks
    nchunks, m = _pieces(p, nchunks)
    b = ScheduleBuilder()
    ranks = np.arange(p)
    for s in range(1, p):
        _add_blocks(b, s - 1, ranks, (ranks + s) % p, ranks, (ranks + s) % p, p, m)
    return _build(b, "pairwise", p, nchunks)


def bruck_counts(p: int) -> list[int]:
    """Blocks each rank sends in each Bruck step: offsets in ``1..p-1`` with bit ``k`` set."""
    x = np.arange(1, p)
    return [int(((x >> k) & 1).sum()) for k in range((p - 1).bit_length())]


def bruck(nranks: int, nchunks: int | None = None) -> Schedule:
    """Bruck's algorithm: ``ceil(log2 p)`` steps, step ``k`` moving every block whose
    offset has bit ``k`` set (about ``S/2`` bytes) ``2**k`` ranks ahead."""
    p = nranks
    nchunks, m = _pieces(p, nchunks)
    b = ScheduleBuilder()
    origin, dest = np.divmod(np.arange(p * p), p)
    offset = (dest - origin) % p
    for k in range((p - 1).bit_length()):
        moving = ((offset >> k) & 1).astype(bool)
        holder = (origin + (offset & ((1 << k) - 1))) % p
        o, d, h = origin[moving], dest[moving], holder[moving]
        order = np.lexsort((o, (h + (1 << k)) % p, h))  # by sender, then receiver
        o, d, h = o[order], d[order], h[order]
        _add_blocks(b, k, h, (h + (1 << k)) % p, o, d, p, m)
    return _build(b, "bruck", p, nchunks)


def hierarchical(nranks: int, nchunks: int | None = None,
                 group_size: int | None = None) -> Schedule:
    """Two-level exchange: pairwise in groups of ``group_size``, then pairwise across."""
    p = nranks
    g = group_size or default_group_size(p)
    if not isinstance(g, int) or g < 1 or p % g:
        raise ValueError(f"group_size: {g!r} must divide nranks={p}; use a divisor of nranks")
    nchunks, m = _pieces(p, nchunks)
    N = p // g
    b = ScheduleBuilder()
    ranks = np.arange(p)
    node, local = np.divmod(ranks, g)
    groups = np.arange(N)
    for s in range(1, g):  # to local rank l' every block bound for local rank l' anywhere
        peer = node * g + (local + s) % g
        dest = groups[None, :] * g + (peer % g)[:, None]
        _add_blocks(b, s - 1, ranks[:, None], peer[:, None], ranks[:, None], dest, p, m)
    members = np.arange(g)
    for t in range(1, N):  # to the same local rank of group n + t, group n's blocks for it
        peer = ((node + t) % N) * g + local
        origin = node[:, None] * g + members[None, :]
        _add_blocks(b, g - 1 + t - 1, ranks[:, None], peer[:, None], origin, peer[:, None],
                    p, m)
    return _build(b, "hierarchical", p, nchunks, group_size=g)
