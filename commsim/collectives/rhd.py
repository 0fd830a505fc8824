"""Recursive halving and doubling: reduce-scatter, allgather, and Rabenseifner allreduce.

On ``p' = 2**L`` ranks, recursive halving exchanges half of a shrinking window with
partner ``v ^ d`` for ``d = p'/2, p'/4, ..., 1`` (``L`` steps, ``(p'-1)/p'`` of the
window in all); recursive doubling runs the mirror image with ``d = 1, 2, ...``.

For other ``p`` the ``rem = p - p'`` extra ranks ``p' .. p-1`` first fold into
partners ``0 .. rem-1`` (one extra step before) and are served by them at the end
(one extra step after), as MPICH does. For reduce_scatter and allgather the ``p``
segments are owned by core rank ``owner(s) = s if s < p' else s - p'``.
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.schedule import Schedule, ScheduleBuilder


def core_size(nranks: int) -> int:
    """``p'``: the largest power of two not above ``nranks``."""
    return 1 << (nranks.bit_length() - 1)


def _levels(pc: int) -> int:
    return pc.bit_length() - 1


def _halving(b: ScheduleBuilder, pc: int, owner: np.ndarray, seg_chunks: np.ndarray,
             step0: int) -> int:
    """Recursive halving among ranks ``0..pc-1``; segment ``s`` ends at ``owner[s]``."""
    L = _levels(pc)
    v = np.arange(pc)[:, None]
    o = owner[None, :]
    for i in range(L):
        d = pc >> (i + 1)
        window = (o >> (L - i)) == (v >> (L - i))  # same top i bits: still v's business
        send = window & ((o & d) != (v & d))
        rank, seg = np.nonzero(send)
        _add_segments(b, step0 + i, rank, rank ^ d, seg, seg_chunks, True)
    return step0 + L


def _doubling(b: ScheduleBuilder, pc: int, owner: np.ndarray, seg_chunks: np.ndarray,
              step0: int) -> int:
    """Recursive doubling among ranks ``0..pc-1``; segment ``s`` starts at ``owner[s]``."""
    L = _levels(pc)
    v = np.arange(pc)[:, None]
    o = owner[None, :]
    for i in range(L):
        d = 1 << i
        held = (o >> i) == (v >> i)
        rank, seg = np.nonzero(held)
        _add_segments(b, step0 + i, rank, rank ^ d, seg, seg_chunks, False)
    return step0 + L


def _add_segments(b, step, src, dst, seg, seg_chunks, reduce) -> None:
    m = seg_chunks.shape[1]
    chunks = seg_chunks[seg]  # (n, m)
    b.add(step, np.repeat(src, m), np.repeat(dst, m), chunks.ravel(), reduce)


def _fold_whole_buffer(b: ScheduleBuilder, nranks: int, nchunks: int) -> int:
    """Step 0: each extra rank adds its whole buffer into its partner. Returns the next step."""
    pc = core_size(nranks)
    if pc == nranks:
        return 0
    src, c = np.meshgrid(np.arange(pc, nranks), np.arange(nchunks), indexing="ij")
    b.add(0, src, src - pc, c, True)
    return 1


def _segments(nsegments: int, nchunks: int | None) -> tuple[int, np.ndarray]:
    nchunks = nchunks or nsegments
    if nchunks % nsegments:
        raise ValueError(f"rhd needs nchunks to be a multiple of {nsegments}, got {nchunks}")
    return nchunks, np.arange(nchunks).reshape(nsegments, nchunks // nsegments)


def _owner(nranks: int) -> np.ndarray:
    pc = core_size(nranks)
    s = np.arange(nranks)
    return np.where(s < pc, s, s - pc)


def reduce_scatter(nranks: int, nchunks: int | None = None) -> Schedule:
    """Fold, recursive halving over the ``p`` segments, then serve the extra ranks."""
    p, pc = nranks, core_size(nranks)
    rem = p - pc
    nchunks, seg_chunks = _segments(p, nchunks)
    b = ScheduleBuilder()
    step = _fold_whole_buffer(b, p, nchunks)
    step = _halving(b, pc, _owner(p), seg_chunks, step)
    if rem:
        _add_segments(b, step, np.arange(rem), np.arange(pc, p), np.arange(pc, p),
                      seg_chunks, False)
    return b.build("reduce_scatter", "rhd", p, nchunks, segments=p)


def allgather(nranks: int, nchunks: int | None = None) -> Schedule:
    """Fold the extra ranks' segments in, recursive doubling, then serve the extra ranks."""
    p, pc = nranks, core_size(nranks)
    rem = p - pc
    nchunks, seg_chunks = _segments(p, nchunks)
    b = ScheduleBuilder()
    step = 0
    if rem:
        _add_segments(b, 0, np.arange(pc, p), np.arange(rem), np.arange(pc, p),
                      seg_chunks, False)
        step = 1
    step = _doubling(b, pc, _owner(p), seg_chunks, step)
    if rem:
        dst, seg = np.meshgrid(np.arange(pc, p), np.arange(p), indexing="ij")
        keep = seg != dst  # the extra rank already has its own segment
        _add_segments(b, step, dst[keep] - pc, dst[keep], seg[keep], seg_chunks, False)
    return b.build("allgather", "rhd", p, nchunks, segments=p)


def allreduce(nranks: int, nchunks: int | None = None) -> Schedule:
    """Rabenseifner: fold, halving reduce-scatter and doubling allgather on ``p'``, unfold.

    The buffer is cut into ``p'`` segments, so the core is symmetric for every ``p``.
    """
    p, pc = nranks, core_size(nranks)
    rem = p - pc
    nchunks, seg_chunks = _segments(pc, nchunks)
    owner = np.arange(pc)
    b = ScheduleBuilder()
    step = _fold_whole_buffer(b, p, nchunks)
    step = _halving(b, pc, owner, seg_chunks, step)
    step = _doubling(b, pc, owner, seg_chunks, step)
    if rem:
        dst, c = np.meshgrid(np.arange(pc, p), np.arange(nchunks), indexing="ij")
        b.add(step, dst - pc, dst, c, False)
    return b.build("allreduce", "rhd", p, nchunks, segments=pc)
