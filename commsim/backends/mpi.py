"""Execute a commsim schedule over MPI (mpi4py) on numpy buffers.

::

    buf = mpi.logical_buffer(schedule, my_input, comm.rank)
    mpi.run(schedule, buf, comm)          # in place, on every rank of comm
    out = mpi.result_view(schedule, buf, comm.rank)

Two modes (``run(..., mode=)``). ``dataflow`` (the default; :mod:`commsim.backends.dataflow`)
posts receives ahead, sends each message as soon as its data is final and reduces each
receive as it lands. ``step``: ``Isend``/``Irecv`` of a step's messages, one ``Waitall``,
then the reducing receives (landed in scratch, cached per plan and dtype) are added to
their slices. Messages travel as bytes, so any numpy dtype works (float16 included);
messages between a pair match by their order (MPI's non-overtaking rule). mpi4py is
imported lazily.
"""

from __future__ import annotations

import numpy as np

from commsim.backends.dataflow import execute, flow_plan
from commsim.backends.plan import (
    DEFAULT_MODE,
    GATHERED_INPUT,
    check_mode,
    logical_length,
    rank_plan,
    result_ranges,
    scratch_for,
    segment_range,
)
from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError

TAG = 7117


def mpi_module():
    """``mpi4py.MPI``, or a CommsimError that says how to install it."""
    try:
        from mpi4py import MPI
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CommsimError("the MPI backend needs mpi4py: pip install 'commsim[mpi]'") from exc
    return MPI


def logical_buffer(schedule: Schedule, local: np.ndarray, rank: int) -> np.ndarray:
    """This rank's logical buffer made from its input (see ``reference.initial_buffers``)."""
    flat = np.ascontiguousarray(local).reshape(-1)
    if schedule.collective not in GATHERED_INPUT:
        return flat.copy()
    n = logical_length(schedule, flat.size)
    buf = np.zeros(n, dtype=flat.dtype)
    lo, hi = segment_range(schedule.nranks, n, rank)
    buf[lo:hi] = flat
    return buf


def result_view(schedule: Schedule, buffer: np.ndarray, rank: int) -> np.ndarray:
    """This rank's result in ``buffer`` (reduce_scatter: segment ``rank``; alltoall: block
    ``rank`` of every segment, concatenated, a copy when ``nranks > 1``; else all of it)."""
    if schedule.collective == "alltoall":
        flat = buffer.reshape(-1)
        parts = [flat[lo:hi] for lo, hi in result_ranges(schedule, flat.size, rank)]
        return parts[0] if len(parts) == 1 else np.concatenate(parts)
    if schedule.collective != "reduce_scatter":
        return buffer
    lo, hi = segment_range(schedule.nranks, buffer.size, rank)
    return buffer.reshape(-1)[lo:hi]


def run(schedule: Schedule, array: np.ndarray, comm, mode: str = DEFAULT_MODE) -> np.ndarray:
    """Execute ``schedule`` in place on ``array``, this rank's logical buffer; returns it.

    Every rank of ``comm`` calls it with the same schedule, mode, and an array of one
    length and dtype. The array must be C-contiguous (it is used flat). ``mode``:
    ``"dataflow"`` (:mod:`commsim.backends.dataflow`) or ``"step"``.
    """
    MPI = mpi_module()
    mode = check_mode(mode)
    if comm.size != schedule.nranks:
        raise CommsimError(f"schedule is for {schedule.nranks} ranks but the communicator "
                           f"has {comm.size}; build it with nranks={comm.size}")
    if not array.flags.c_contiguous:
        raise CommsimError("array: the buffer must be C-contiguous; pass np.ascontiguousarray")
    flat = array.reshape(-1)
    if mode == "dataflow":
        plan = flow_plan(schedule, comm.rank, flat.size, pollable=True)
        if plan.messages:
            _run_dataflow(MPI, plan, flat, comm)
        return array
    plan = rank_plan(schedule, comm.rank, flat.size)
    if not plan.steps:
        return array
    width, raw, scratch, raw_scratch = _buffers(plan, flat)
    byte = MPI.BYTE
    waitall = MPI.Request.Waitall
    for step in plan.steps:
        reqs = [comm.Irecv([raw[lo * width:hi * width], byte] if off < 0 else
                           [raw_scratch[off * width:(off + hi - lo) * width], byte],
                           source=peer, tag=TAG)
                for peer, lo, hi, off in step.recvs]
        reqs += [comm.Isend([raw[lo * width:hi * width], byte], dest=peer, tag=TAG)
                 for peer, lo, hi in step.sends]
        waitall(reqs)
        for _, lo, hi, off in step.recvs:
            if off >= 0:
                np.add(flat[lo:hi], scratch[off:off + hi - lo], out=flat[lo:hi])
    return array


def _buffers(plan, flat: np.ndarray):
    """``(itemsize, flat as bytes, scratch, scratch as bytes)``: messages travel as bytes,
    so any numpy dtype works; scratch is cached per plan and dtype."""
    scratch = scratch_for(plan, flat.dtype, lambda k: np.empty(k, flat.dtype))
    return (flat.itemsize, flat.view(np.uint8), scratch,
            None if scratch is None else scratch.view(np.uint8))


def _run_dataflow(MPI, plan, flat: np.ndarray, comm) -> None:
    width, raw, scratch, raw_scratch = _buffers(plan, flat)
    byte = MPI.BYTE
    sends, recvs = plan.sends, plan.recvs

    def isend(i):
        peer, lo, hi = sends[i]
        return comm.Isend([raw[lo * width:hi * width], byte], dest=peer, tag=TAG)

    def irecv(j):
        peer, lo, hi, off, _ = recvs[j]
        into = raw[lo * width:hi * width] if off < 0 else \
            raw_scratch[off * width:(off + hi - lo) * width]
        return comm.Irecv([into, byte], source=peer, tag=TAG)

    def apply(j):
        _, lo, hi, off, red = recvs[j]
        if red:
            np.add(flat[lo:hi], scratch[off:off + hi - lo], out=flat[lo:hi])
        else:
            flat[lo:hi] = scratch[off:off + hi - lo]

    execute(plan, isend, irecv, _wait, _done, apply)


def _wait(request) -> None:
    request.Wait()


def _done(request) -> bool:
    return request.Test()
