"""Two-level hierarchical allreduce: reduce-scatter in groups, allreduce across, allgather.

Ranks form ``k = p / g`` groups of ``g`` consecutive ranks (a node's GPUs). Phase 1: a
ring reduce-scatter inside every group leaves local rank ``j`` with segment ``j`` (of
``g``) summed over its group. Phase 2: the ``g`` rings of same-``j`` ranks, one per
local index, run a ring allreduce of segment ``j`` across groups. Phase 3: a ring
allgather inside every group. Time: ``2(g-1)`` intra steps of ``S/g`` and ``2(k-1)``
inter steps of ``S/(g k)``.
"""

from __future__ import annotations

import math

import numpy as np

from commsim.collectives.ring import ring_phase
from commsim.collectives.schedule import Schedule, ScheduleBuilder


def default_group_size(nranks: int) -> int:
    """Eight GPUs a node when that divides ``nranks``, else the largest divisor of 8 that does."""
    return math.gcd(nranks, 8)


def allreduce(nranks: int, nchunks: int | None = None, group_size: int | None = None) -> Schedule:
    """Hierarchical allreduce with groups of ``group_size`` consecutive ranks."""
    p = nranks
    g = group_size or default_group_size(p)
    if not isinstance(g, int) or g < 1 or p % g:
        raise ValueError(f"group_size={g!r} must be a whole number dividing nranks={p}")
    k = p // g
    nchunks = nchunks or p
    if nchunks % p:
        raise ValueError(f"hierarchical needs nchunks to be a multiple of nranks={p}")
    m = nchunks // p
    chunks = np.arange(nchunks).reshape(g, k, m)  # [segment j][sub-segment i][piece]
    groups = np.arange(p).reshape(k, g)           # groups[i] = ranks of group i
    b = ScheduleBuilder()
    intra_segs = np.broadcast_to(chunks.reshape(1, g, k * m), (k, g, k * m))
    inter_segs = chunks                           # ring j over groups[:, j]
    b.add(*ring_phase(groups, intra_segs, reduce=True))
    step = g - 1
    b.add(*ring_phase(groups.T, inter_segs, reduce=True, step0=step))
    step += k - 1
    b.add(*ring_phase(groups.T, inter_segs, reduce=False, step0=step))
    step += k - 1
    b.add(*ring_phase(groups, intra_segs, reduce=False, step0=step))
    return b.build("allreduce", "hierarchical", p, nchunks, segments=g,
                   options={"group_size": g})
