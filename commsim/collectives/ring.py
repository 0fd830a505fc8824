"""Ring algorithms: reduce-scatter, allgather, and allreduce as the two back to back.

On ``q`` ranks in ring order the logical buffer is cut into ``q`` segments (each of
``m = nchunks // q`` chunks). Reduce-scatter: in step ``s`` rank ``i`` adds segment
``(i - s - 1) mod q`` into its successor, so after ``q - 1`` steps rank ``i`` holds
the full sum of segment ``i``. Allgather: in step ``s`` rank ``i`` copies segment
``(i - s) mod q`` to its successor. Each rank sends ``(q-1)/q`` of the buffer per phase.

Channels (NCCL's): with ``channels = c`` every segment's chunks are split ``c`` ways
(``nchunks`` a multiple of ``p c``) and channel ``j`` runs its own ring, with its own
rank order, over its share; all ``c`` rings move in the same steps, so a rank sends
``S/(p c)`` bytes to each of up to ``c`` successors a step (``S/p`` in all, as with
one ring). ``channels=1`` without ``gpus_per_node`` is the plain ring ``0, 1, ..., p-1``.

Ring orders (:func:`channel_rings`):

- Flat (no ``gpus_per_node``, one gpu a node, or a single node): channel ``j`` runs the
  flat ring rotated by ``j // 2`` positions, forwards for even ``j`` and backwards for
  odd ``j``, so that two channels load both directions of every cable.
- Rail-aligned (``g = gpus_per_node >= 2``, ``N = p / g >= 2`` nodes): ring ``j`` has base
  rail ``b = j mod g`` and visits the nodes in order ``0, 1, ..., N-1``, each node's
  ``g`` ranks in one run that starts at local rank ``e_n`` (its entry) and ends at local
  rank ``x_n = e_{n+1}`` (its exit), so every inter-node transfer goes from local rank
  ``r`` of one node to local rank ``r`` of the next: one rail (NIC ``r``, leaf ``r``) on
  both ends, never a spine. Entries are ``e_n = b + f(n) mod g`` with ``f = 0, 1, 0, 1,
  ...`` (odd ``N``: ``..., 1, 2`` for the last node; with ``g = 2`` and odd ``N`` the last
  node exits at ``b + 1`` and that one hop crosses rails). Inside a node the run is
  ``e_n, e_n+1, ... (mod g)`` with ``x_n`` moved to the end. Ring ``j`` thus uses rails
  ``b`` and ``b+1`` (and ``b+2`` for odd ``N``), and with ``c = g`` channels every NIC
  sends once and receives once per step. Rings ``j >= g`` repeat ring ``j mod g``,
  backwards when ``j // g`` is odd. Why not rail ``b`` alone, as NCCL does: a ring
  that enters and leaves a node through the same gpu cannot visit the node's other
  gpus; NCCL sends from the exit gpu through the entry gpu's NIC (PCIe or PXN), but
  without PXN, in commsim's topologies, gpus never forward and gpu ``l`` reaches only
  NIC ``l``.
- Rail-strict (``pxn=True``, for topologies built with PXN, ``dgx_cluster(pxn=True)``):
  ring ``j`` enters every node at local rank ``b`` and runs ``b, b+1, ..., b-1 (mod g)``;
  its exit ``b-1`` sends to the next node's local rank ``b``, which PXN routes through
  the NVSwitch to NIC ``b``: ring ``j``'s inter-node traffic uses rail ``b`` only, as
  NCCL lays its rings out.

The arrays are written straight into preallocated compact dtypes, one step at a time,
because a 16384-rank ring allreduce has half a billion transfers.
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.layout import check
from commsim.collectives.schedule import Schedule, index_dtype
from commsim.errors import CommsimError


def ring_phase(rings: np.ndarray, seg_chunks: np.ndarray, reduce: bool, step0: int = 0,
               dtype: np.dtype | None = None, out: tuple | None = None,
               at: int = 0) -> tuple[np.ndarray, ...]:
    """The transfers of one ring phase run by several rings at once.

    ``rings`` is ``(R, q)``: ``R`` rings of ``q`` ranks each, in ring order (disjoint
    groups, or channels over the same ranks with chunks of their own).
    ``seg_chunks`` is ``(R, q, m)``: the chunks of segment ``i`` of each ring (the
    segment that ring position ``i`` ends with after reduce-scatter, or starts with
    for allgather). Returns ``(step, src, dst, chunk, reduce)`` arrays, step-major;
    with ``out`` (five preallocated arrays) it writes them there from index ``at``.
    """
    rings = np.asarray(rings, dtype=np.int64)
    seg_chunks = np.asarray(seg_chunks, dtype=np.int64)
    R, q = rings.shape
    m = seg_chunks.shape[2]
    nsteps = q - 1
    per_step = R * q * m
    total = nsteps * per_step
    if out is None:
        if dtype is None:
            dtype = index_dtype(max(int(rings.max()), int(seg_chunks.max()), step0 + nsteps))
        out = tuple(np.empty(total, dtype=dtype) for _ in range(4)) + (np.empty(total, bool),)
        at = 0
    step, src, dst, chunk, red = out
    pos = np.arange(q)
    src_block = np.broadcast_to(rings[:, :, None], (R, q, m)).ravel()
    dst_block = np.broadcast_to(np.roll(rings, -1, axis=1)[:, :, None], (R, q, m)).ravel()
    lead = 1 if reduce else 0
    rows = np.arange(R)[:, None]
    for s in range(nsteps):
        sl = slice(at + s * per_step, at + (s + 1) * per_step)
        step[sl] = step0 + s
        src[sl] = src_block
        dst[sl] = dst_block
        seg = (pos - s - lead) % q
        chunk[sl] = seg_chunks[rows, seg[None, :]].ravel()
    red[at:at + total] = reduce
    return out


def _node_entries(nodes: int, g: int) -> np.ndarray:
    """``f(n)``: node ``n``'s entry offset from the ring's base rail (module docstring)."""
    f = np.arange(nodes) % 2
    if nodes % 2 and g >= 3:
        f[-1] = 2
    return f


def channel_rings(nranks: int, channels: int = 1, gpus_per_node: int | None = None,
                  pxn: bool = False) -> np.ndarray:
    """``(channels, nranks)``: each channel's ring order (the rule of the module docstring;
    ``pxn``: the rail-strict layout)."""
    p, c, g = nranks, channels, gpus_per_node
    nodes = p // g if g else 1
    if not g or g == 1 or nodes == 1:
        out = np.empty((c, p), dtype=np.int64)
        for j in range(c):
            order = np.roll(np.arange(p), -(j // 2))
            out[j] = order[::-1] if j % 2 else order
        return out
    f = np.zeros(nodes, dtype=np.int64) if pxn else _node_entries(nodes, g)
    local = np.arange(g)
    out = np.empty((c, p), dtype=np.int64)
    for j in range(c):
        entry = (j % g + f) % g
        if pxn:   # every node from local rank b to b-1: the next node's entry is rail b
            order = ((entry[:, None] + local[None, :]) % g + g * np.arange(nodes)[:, None])
            order = order.ravel()
            out[j] = order[::-1] if (j // g) % 2 else order
            continue
        exit_ = np.roll(entry, -1)
        exit_ = np.where(exit_ == entry, (entry + 1) % g, exit_)  # g = 2, odd N: one hop
        seq = (entry[:, None] + local[None, :]) % g               # run from the entry
        rest = seq[seq != exit_[:, None]].reshape(nodes, g - 1)
        order = (np.hstack([rest, exit_[:, None]]) + g * np.arange(nodes)[:, None]).ravel()
        out[j] = order[::-1] if (j // g) % 2 else order
    return out


def _layout(nranks: int, nchunks: int | None, channels, gpus_per_node, pxn=False):
    """``(rings, seg_chunks, nchunks, options, connection)`` for :func:`ring_phase`;
    ``connection[chunk]`` is the chunk's channel (None with one channel)."""
    c, g = check(nranks, channels, gpus_per_node)
    if not isinstance(pxn, bool):
        raise CommsimError(f"pxn: {pxn!r} must be true or false (the rail-strict layout "
                           "for topologies built with PXN)")
    unit = nranks * c
    nchunks = nchunks or unit
    if nchunks % unit:
        what = f"nranks={nranks}" if c == 1 else f"nranks*channels={unit}"
        raise ValueError(f"ring needs nchunks to be a multiple of {what}, got {nchunks}")
    options = {} if (c, g) == (1, None) else {"channels": c, "gpus_per_node": g}
    if pxn and options:
        options["pxn"] = True
    if not options:
        m = nchunks // nranks
        return (np.arange(nranks)[None, :], np.arange(nchunks).reshape(1, nranks, m),
                nchunks, {}, None)
    rings = channel_rings(nranks, c, g, pxn)
    chunks = np.arange(nchunks).reshape(nranks, c, nchunks // unit)  # [segment, channel]
    connection = (np.arange(nchunks) // (nchunks // unit)) % c if c > 1 else None
    return rings, chunks[rings, np.arange(c)[:, None]], nchunks, options, connection


def reduce_scatter(nranks: int, nchunks: int | None = None, channels: int = 1,
                   gpus_per_node: int | None = None, pxn: bool = False) -> Schedule:
    """Ring reduce-scatter: ``p - 1`` steps, each rank sends ``(p-1)/p`` of the buffer."""
    rings, segs, nchunks, opts, conn = _layout(nranks, nchunks, channels, gpus_per_node, pxn)
    cols = ring_phase(rings, segs, reduce=True)
    return Schedule("reduce_scatter", "ring", nranks, nchunks, *cols, segments=nranks,
                    options=opts, connection=conn)


def allgather(nranks: int, nchunks: int | None = None, channels: int = 1,
              gpus_per_node: int | None = None, pxn: bool = False) -> Schedule:
    """Ring allgather: ``p - 1`` steps, each rank sends ``(p-1)/p`` of the gathered buffer."""
    rings, segs, nchunks, opts, conn = _layout(nranks, nchunks, channels, gpus_per_node, pxn)
    cols = ring_phase(rings, segs, reduce=False)
    return Schedule("allgather", "ring", nranks, nchunks, *cols, segments=nranks,
                    options=opts, connection=conn)


def allreduce(nranks: int, nchunks: int | None = None, channels: int = 1,
              gpus_per_node: int | None = None, pxn: bool = False) -> Schedule:
    """Ring allreduce: reduce-scatter then allgather, ``2(p - 1)`` steps.

    Both phases are written into one preallocated set of arrays: at 16384 ranks a
    concatenation would double the peak memory of the half-billion transfers.
    """
    rings, segs, nchunks, opts, conn = _layout(nranks, nchunks, channels, gpus_per_node, pxn)
    dtype = index_dtype(max(nranks, nchunks, 2 * nranks))
    half = (nranks - 1) * nchunks
    cols = tuple(np.empty(2 * half, dtype=dtype) for _ in range(4)) + (
        np.empty(2 * half, dtype=bool),)
    ring_phase(rings, segs, reduce=True, out=cols, at=0)
    ring_phase(rings, segs, reduce=False, step0=nranks - 1, out=cols, at=half)
    return Schedule("allreduce", "ring", nranks, nchunks, *cols, segments=nranks,
                    options=opts, connection=conn)
