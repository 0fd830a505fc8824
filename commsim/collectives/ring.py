"""Ring algorithms: reduce-scatter, allgather, and allreduce as the two back to back.

On ``q`` ranks in ring order the logical buffer is cut into ``q`` segments (each of
``m = nchunks // q`` chunks). Reduce-scatter: in step ``s`` rank ``i`` adds segment
``(i - s - 1) mod q`` into its successor, so after ``q - 1`` steps rank ``i`` holds
the full sum of segment ``i``. Allgather: in step ``s`` rank ``i`` copies segment
``(i - s) mod q`` to its successor. Each rank sends ``(q-1)/q`` of the buffer per phase.

The arrays are written straight into preallocated compact dtypes, one step at a time,
because a 16384-rank ring allreduce has half a billion transfers.
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.schedule import Schedule, index_dtype


def ring_phase(rings: np.ndarray, seg_chunks: np.ndarray, reduce: bool, step0: int = 0,
               dtype: np.dtype | None = None, out: tuple | None = None,
               at: int = 0) -> tuple[np.ndarray, ...]:
    """The transfers of one ring phase run by several disjoint rings at once.

    ``rings`` is ``(R, q)``: ``R`` rings of ``q`` ranks each, in ring order.
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


def _flat(nranks: int, nchunks: int) -> tuple[np.ndarray, np.ndarray]:
    if nchunks % nranks:
        raise ValueError(f"ring needs nchunks to be a multiple of nranks={nranks}, "
                         f"got {nchunks}")
    m = nchunks // nranks
    return np.arange(nranks)[None, :], np.arange(nchunks).reshape(1, nranks, m)


def reduce_scatter(nranks: int, nchunks: int | None = None) -> Schedule:
    """Ring reduce-scatter: ``p - 1`` steps, each rank sends ``(p-1)/p`` of the buffer."""
    nchunks = nchunks or nranks
    rings, segs = _flat(nranks, nchunks)
    cols = ring_phase(rings, segs, reduce=True)
    return Schedule("reduce_scatter", "ring", nranks, nchunks, *cols, segments=nranks)


def allgather(nranks: int, nchunks: int | None = None) -> Schedule:
    """Ring allgather: ``p - 1`` steps, each rank sends ``(p-1)/p`` of the gathered buffer."""
    nchunks = nchunks or nranks
    rings, segs = _flat(nranks, nchunks)
    cols = ring_phase(rings, segs, reduce=False)
    return Schedule("allgather", "ring", nranks, nchunks, *cols, segments=nranks)


def allreduce(nranks: int, nchunks: int | None = None) -> Schedule:
    """Ring allreduce: reduce-scatter then allgather, ``2(p - 1)`` steps.

    Both phases are written into one preallocated set of arrays: at 16384 ranks a
    concatenation would double the peak memory of the half-billion transfers.
    """
    nchunks = nchunks or nranks
    rings, segs = _flat(nranks, nchunks)
    dtype = index_dtype(max(nranks, nchunks, 2 * nranks))
    half = (nranks - 1) * nchunks
    cols = tuple(np.empty(2 * half, dtype=dtype) for _ in range(4)) + (
        np.empty(2 * half, dtype=bool),)
    ring_phase(rings, segs, reduce=True, out=cols, at=0)
    ring_phase(rings, segs, reduce=False, step0=nranks - 1, out=cols, at=half)
    return Schedule("allreduce", "ring", nranks, nchunks, *cols, segments=nranks)
