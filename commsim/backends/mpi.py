"""Execute a commsim schedule over MPI (mpi4py) on numpy buffers.

::

    buf = mpi.logical_buffer(schedule, my_input, comm.rank)
    mpi.run(schedule, buf, comm)          # in place, on every rank of comm
    out = mpi.result_view(schedule, buf, comm.rank)

    out = mpi.new_output(schedule, my_input, comm.rank)
    mpi.run(schedule, my_input, comm, out=out)   # out of place: my_input is only read

Two modes (``run(..., mode=)``). ``dataflow`` (the default; :mod:`commsim.backends.dataflow`)
posts receives ahead, sends each message as soon as its data is final and reduces each
receive as it lands. ``step``: ``Isend``/``Irecv`` of a step's messages, one ``Waitall``,
then the reducing receives (landed in scratch, cached per plan and dtype) are added to
their slices. Out of place (``out=``) the input is only read and the result written to
``out``; :mod:`commsim.backends.plan` decides which array each operation uses. Messages
travel as bytes, so any numpy dtype works (float16 included); messages between a pair
match by their order (MPI's non-overtaking rule). mpi4py is imported lazily.
"""

from __future__ import annotations

import numpy as np

from commsim.backends.dataflow import execute, flow_plan
from commsim.backends.plan import (
    DEFAULT_MODE,
    GATHERED_INPUT,
    check_mode,
    logical_length,
    output_length,
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


def new_output(schedule: Schedule, local: np.ndarray, rank: int) -> np.ndarray:
    """An empty receive buffer for :func:`run` out of place with input ``local``."""
    n = logical_length(schedule, np.asarray(local).size)
    return np.empty(output_length(schedule, n, rank), dtype=np.asarray(local).dtype)


def run(schedule: Schedule, array: np.ndarray, comm, mode: str = DEFAULT_MODE,
        out: np.ndarray | None = None) -> np.ndarray:
    """Execute ``schedule`` on every rank of ``comm``; returns the result's array.

    In place (``out`` None): ``array`` is this rank's logical buffer and is returned.
    Out of place: ``array`` is this rank's input (:func:`logical_buffer`'s ``local``:
    one rank's buffer, the whole input for reduce_scatter) and is only read; the result
    is written to ``out`` (:func:`new_output`: the result's length) and ``out`` is
    returned; nothing is copied first (:mod:`commsim.backends.plan`). Every rank calls
    it with the same schedule, mode and placement, and arrays of one length and dtype,
    C-contiguous. ``mode``: ``"dataflow"`` (:mod:`commsim.backends.dataflow`) or ``"step"``.
    """
    MPI = mpi_module()
    mode = check_mode(mode)
    if comm.size != schedule.nranks:
        raise CommsimError(f"schedule is for {schedule.nranks} ranks but the communicator "
                           f"has {comm.size}; build it with nranks={comm.size}")
    if not array.flags.c_contiguous:
        raise CommsimError("array: the buffer must be C-contiguous; pass np.ascontiguousarray")
    flat = array.reshape(-1)
    outplace = out is not None
    n = logical_length(schedule, flat.size) if outplace else flat.size
    result = array if out is None else out
    if mode == "dataflow":
        plan = flow_plan(schedule, comm.rank, n, pollable=True, outplace=outplace)
        dest = _check_output(plan, out, flat) if outplace else flat
        if plan.messages or plan.copies:
            _run_dataflow(MPI, plan, flat, dest, comm)
        return result
    plan = rank_plan(schedule, comm.rank, n, outplace)
    dest = _check_output(plan, out, flat) if outplace else flat
    if not plan.steps:
        move_numpy((flat, dest), plan.copies)
        return result
    arrays = _arrays(plan, flat, dest)
    raw = [None if a is None else a.view(np.uint8) for a in arrays]
    width = flat.itemsize
    byte = MPI.BYTE
    waitall = MPI.Request.Waitall
    copies = plan.copies
    for step in plan.steps:
        if step.packs:
            move_numpy(arrays, step.packs)
        reqs = [comm.Irecv([raw[b][lo * width:hi * width], byte], source=peer, tag=TAG)
                for peer, b, lo, hi in step.recvs]
        reqs += [comm.Isend([raw[b][lo * width:hi * width], byte], dest=peer, tag=TAG)
                 for peer, b, lo, hi in step.sends]
        if copies:  # overlaps the first step's transfers
            move_numpy(arrays, copies)
            copies = ()
        waitall(reqs)
        if step.applies:
            move_numpy(arrays, step.applies)
    return result


def _check_output(plan, out, flat: np.ndarray) -> np.ndarray:
    want = plan.output
    if not out.flags.c_contiguous or out.dtype != flat.dtype or out.size != want:
        raise CommsimError(f"out: the receive buffer must be a C-contiguous {flat.dtype} "
                           f"array of {want} elements, got {out.dtype} x {out.size}; "
                           f"make it with new_output")
    if np.may_share_memory(out, flat):  # bounds only: cheap, exact for flat arrays
        raise CommsimError("out: the receive buffer overlaps the input; run in place "
                           "(out=None) on the logical buffer instead")
    return out.reshape(-1)


def _arrays(plan, flat: np.ndarray, dest: np.ndarray) -> tuple:
    """``(input, output, work, scratch)``: work and scratch cached per plan and dtype."""
    make = lambda k: np.empty(k, flat.dtype)  # noqa: E731
    return (flat, dest, scratch_for(plan, (flat.dtype, "work"), make, plan.work),
            scratch_for(plan, flat.dtype, make))


def move_numpy(arrays, moves) -> None:
    """Make the local moves of a plan (:data:`commsim.backends.plan.Move`) on numpy
    arrays ``(input, output, work, scratch)``."""
    for dst, lo, hi, src, slo, base, blo in moves:
        target, data = arrays[dst][lo:hi], arrays[src][slo:slo + hi - lo]
        if base < 0:
            target[...] = data
        else:
            np.add(arrays[base][blo:blo + hi - lo], data, out=target)


def _run_dataflow(MPI, plan, flat: np.ndarray, dest: np.ndarray, comm) -> None:
    arrays = _arrays(plan, flat, dest)
    raw = [None if a is None else a.view(np.uint8) for a in arrays]
    width = flat.itemsize
    byte = MPI.BYTE
    sends, recvs = plan.sends, plan.recvs

    def isend(i):
        peer, b, lo, hi = sends[i]
        return comm.Isend([raw[b][lo * width:hi * width], byte], dest=peer, tag=TAG)

    def irecv(j):
        peer, b, lo, hi = recvs[j]
        return comm.Irecv([raw[b][lo * width:hi * width], byte], source=peer, tag=TAG)

    execute(plan, isend, irecv, _wait, _done, lambda moves: move_numpy(arrays, moves))


def _wait(request) -> None:
    request.Wait()


def _done(request) -> bool:
    return request.Test()
