"""The reference executor: a schedule run on numpy buffers in one process.

It is the oracle every other executor and every algorithm is checked against. It
follows the step semantics of :mod:`commsim.collectives.schedule` literally: in each
step every send reads its chunk as it was before the step, then copies land, then
reductions are added, in the buffers' dtype: integer sums wrap modulo 2^bits (two's
complement), like NCCL's int8 sum and every other executor's.
"""

from __future__ import annotations

import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError


def _sum(inputs: list[np.ndarray]) -> np.ndarray:
    """The element-wise sum in the inputs' dtype, as the executors add: integer sums wrap
    modulo 2^bits (two's complement), like NCCL's int8 sum (numpy would otherwise widen
    small integers to int64 and not wrap)."""
    return np.sum(inputs, axis=0, dtype=np.result_type(*inputs))


def expected(collective: str, inputs: list[np.ndarray], root: int = 0) -> list[np.ndarray]:
    """What each rank must end with, computed directly from the inputs. Sums are in the
    inputs' dtype: integer sums wrap modulo 2^bits, as every executor's do."""
    p = len(inputs)
    if collective == "allreduce":
        total = _sum(inputs)
        return [total.copy() for _ in range(p)]
    if collective == "reduce_scatter":
        return [part.copy() for part in np.array_split(_sum(inputs), p)]
    if collective == "allgather":
        gathered = np.concatenate(inputs)
        return [gathered.copy() for _ in range(p)]
    if collective == "broadcast":
        return [np.array(inputs[root]) for _ in range(p)]
    if collective == "reduce":
        return [_sum(inputs) if r == root else np.array(inputs[r]) for r in range(p)]
    if collective == "alltoall":
        blocks = [np.array_split(x, p) for x in inputs]
        return [np.concatenate([blocks[i][j] for i in range(p)]) for j in range(p)]
    raise CommsimError(f"collective {collective!r} has no expected result")


def initial_buffers(schedule: Schedule, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Each rank's working buffer (the logical buffer) before the first step."""
    p = schedule.nranks
    if len(inputs) != p:
        raise CommsimError(f"inputs: got {len(inputs)} arrays for {p} ranks; pass one per rank")
    n = len(inputs[0])
    if n < 1 or any(len(x) != n for x in inputs):
        raise CommsimError("inputs: every rank's array must have the same length >= 1")
    if schedule.collective in ("allgather", "alltoall"):
        bufs = [np.zeros(p * n, dtype=np.result_type(*inputs)) for _ in range(p)]
        for r, x in enumerate(inputs):
            bufs[r][r * n:(r + 1) * n] = x
        return bufs
    return [np.array(x, copy=True) for x in inputs]


def final_results(schedule: Schedule, bufs: list[np.ndarray]) -> list[np.ndarray]:
    """Each rank's result, cut from its working buffer as the collective defines it."""
    if schedule.collective == "reduce_scatter":
        p = schedule.nranks
        return [np.array_split(b, p)[r] for r, b in enumerate(bufs)]
    if schedule.collective == "alltoall":
        return [gather_chunks(schedule, b, r) for r, b in enumerate(bufs)]
    return bufs


def gather_chunks(schedule: Schedule, buf: np.ndarray, rank: int) -> np.ndarray:
    """alltoall's final layout map: ``rank``'s result chunks of ``buf``, concatenated."""
    bounds = schedule.chunk_bounds(len(buf))
    keep = schedule.result_chunks(rank)
    return np.concatenate([buf[bounds[c]:bounds[c + 1]] for c in keep.tolist()])


def run(schedule: Schedule, inputs: list[np.ndarray]) -> list[np.ndarray]:
    """Execute ``schedule`` on ``inputs`` (one array per rank, one length ``n >= 1``).

    Returns each rank's result: for allreduce every rank gets ``sum(inputs)``; for
    reduce_scatter rank ``r`` gets ``np.array_split(sum(inputs), p)[r]``; for
    allgather every rank gets ``np.concatenate(inputs)``; for broadcast every rank
    gets ``inputs[root]``; for reduce the root gets ``sum(inputs)`` (the others keep
    their input, possibly with partial sums, as MPI leaves them unspecified); for
    alltoall rank ``j`` gets ``np.concatenate([np.array_split(inputs[i], p)[j] for i in
    range(p)])``. alltoall's working buffers are ``p`` inputs long (the chunk space of
    :mod:`commsim.collectives.schedule`).
    """
    bufs = initial_buffers(schedule, inputs)
    bounds = schedule.chunk_bounds(len(bufs[0]))
    steps = schedule.step_bounds()
    src, dst = schedule.src.tolist(), schedule.dst.tolist()
    chunk, red = schedule.chunk.tolist(), schedule.reduce.tolist()
    for s in range(schedule.nsteps):
        idx = range(steps[s], steps[s + 1])
        payload = [bufs[src[i]][bounds[chunk[i]]:bounds[chunk[i] + 1]].copy() for i in idx]
        for i, data in zip(idx, payload):
            if not red[i]:
                bufs[dst[i]][bounds[chunk[i]]:bounds[chunk[i] + 1]] = data
        for i, data in zip(idx, payload):
            if red[i]:
                bufs[dst[i]][bounds[chunk[i]]:bounds[chunk[i] + 1]] += data
    return final_results(schedule, bufs)
