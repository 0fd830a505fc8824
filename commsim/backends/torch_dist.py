"""Execute a commsim schedule over torch.distributed (gloo on CPU, NCCL on CUDA).

::

    buf = torch_dist.logical_buffer(schedule, my_input)   # the schedule's logical buffer
    torch_dist.run(schedule, buf)                          # in place, on every rank
    out = torch_dist.result_view(schedule, buf)            # this rank's result

    out = torch_dist.new_output(schedule, my_input)        # out of place:
    torch_dist.run(schedule, my_input, out=out)            # my_input is only read

Two modes (``run(..., mode=)``). ``dataflow`` (the default; :mod:`commsim.backends.dataflow`)
posts receives ahead, sends each message as soon as its data is final and reduces each
receive as it lands. ``step``: a step's sends and receives go out together in one
``batch_isend_irecv`` (so NCCL groups them), copying receives land straight in the
buffer's slices, reducing receives in scratch, added after the step's waits. CUDA tensors
run step by step in both modes. Scratch is cached per plan, dtype and device. Messages
between a pair match by their order in the schedule; chunks of zero elements (fewer
elements than chunks) are skipped on both ends. Reductions are ``add_`` in the buffer's
dtype (integer sums wrap modulo 2^bits, as NCCL's do); float8, which torch cannot add, is
added in float32 and rounded back once per reduction. Out of place (``out=``) the input
is only read and the result written to ``out``; :mod:`commsim.backends.plan` decides which
tensor each operation reads and writes. torch is imported lazily.
"""

from __future__ import annotations

from commsim.backends.dataflow import FlowPlan, execute, flow_plan
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

_NCCL_READY: set = set()


def _dist():
    try:
        import torch.distributed as dist
    except ImportError as exc:  # pragma: no cover - depends on the install
        raise CommsimError("the torch backend needs torch: pip install 'commsim[torch]'") from exc
    return dist


def _rank_and_size(schedule: Schedule, group) -> tuple[int, int]:
    dist = _dist()
    if not dist.is_initialized():
        raise CommsimError("torch.distributed is not initialized: call "
                           "init_process_group first (or launch with torchrun)")
    rank, size = dist.get_rank(group), dist.get_world_size(group)
    if size != schedule.nranks:
        raise CommsimError(f"schedule is for {schedule.nranks} ranks but the process group "
                           f"has {size}; build it with nranks={size}")
    return rank, size


def logical_buffer(schedule: Schedule, local, rank: int | None = None, group=None):
    """This rank's logical buffer for ``schedule`` made from its input tensor ``local``.

    For allgather and alltoall: a zeroed buffer of ``nranks * len(local)`` elements with
    the rank's segment filled; otherwise a flat copy of ``local`` (for reduce_scatter the whole
    input, of which the rank keeps segment ``rank``). Same as the reference executor's
    ``initial_buffers``.
    """
    if rank is None:
        rank, _ = _rank_and_size(schedule, group)
    flat = local.reshape(-1)
    if schedule.collective not in GATHERED_INPUT:
        return flat.clone()
    n = logical_length(schedule, flat.numel())
    buf = flat.new_zeros(n)
    lo, hi = segment_range(schedule.nranks, n, rank)
    buf[lo:hi].copy_(flat)
    return buf


def result_view(schedule: Schedule, buffer, rank: int | None = None, group=None):
    """This rank's result in ``buffer`` after :func:`run` (a view, not a copy).

    reduce_scatter: segment ``rank`` (``np.array_split`` sizes); otherwise the whole
    buffer (for reduce only the root's is defined); alltoall: block ``rank`` of every
    segment, concatenated (a copy when ``nranks > 1``). Same as the reference's
    ``final_results``.
    """
    if schedule.collective not in ("reduce_scatter", "alltoall"):
        return buffer
    if rank is None:
        rank, _ = _rank_and_size(schedule, group)
    flat = buffer.reshape(-1)
    if schedule.collective == "alltoall":
        import torch

        parts = [flat[lo:hi] for lo, hi in result_ranges(schedule, flat.numel(), rank)]
        return parts[0] if len(parts) == 1 else torch.cat(parts)
    lo, hi = segment_range(schedule.nranks, flat.numel(), rank)
    return flat[lo:hi]


def _global_ranks(group, size: int) -> list[int]:
    dist = _dist()
    if group is None or group is dist.GroupMember.WORLD:
        return list(range(size))
    return [dist.get_global_rank(group, r) for r in range(size)]


def new_output(schedule: Schedule, local, rank: int | None = None, group=None):
    """An empty receive buffer for :func:`run` out of place with input ``local``."""
    if rank is None:
        rank, _ = _rank_and_size(schedule, group)
    n = logical_length(schedule, local.numel())
    return local.new_empty(output_length(schedule, n, rank))


def run(schedule: Schedule, tensor, group=None, mode: str = DEFAULT_MODE, out=None):
    """Execute ``schedule`` on every rank of ``group`` (default: the world).

    In place (``out`` None): ``tensor`` is this rank's logical buffer; returns it. Out of
    place: ``tensor`` is this rank's input (:func:`logical_buffer`'s ``local``: one
    rank's buffer, the whole input for reduce_scatter) and is only read; the result is
    written to ``out`` (:func:`new_output`: the result's length), which is returned;
    nothing is copied first (:mod:`commsim.backends.plan` decides which buffer each
    operation reads and writes). Every rank calls it with the same schedule, mode and
    placement, and tensors of one length and dtype, contiguous; CPU tensors need gloo,
    CUDA tensors NCCL. ``mode``: ``"dataflow"`` (:mod:`commsim.backends.dataflow`) or
    ``"step"`` (one batched call a step). On CUDA tensors both run step by step: NCCL
    matches a pair's calls only in order inside ordered groups, so receives posted
    ahead in groups of their own would deadlock; the host does not block there anyway
    (waits and reductions are queued on the current stream, after their receives).
    """
    dist = _dist()
    mode = check_mode(mode)
    rank, size = _rank_and_size(schedule, group)
    if not tensor.is_contiguous():
        raise CommsimError("tensor: the buffer must be contiguous; pass tensor.contiguous()")
    flat = tensor.view(-1)
    outplace = out is not None
    n = logical_length(schedule, flat.numel()) if outplace else flat.numel()
    result = tensor if out is None else out
    if mode == "dataflow" and not flat.is_cuda:
        plan = flow_plan(schedule, rank, n, pollable=False, outplace=outplace)
    else:
        plan = rank_plan(schedule, rank, n, outplace)
    dest = _check_output(plan, out, flat) if outplace else flat
    if flat.is_cuda:  # every rank, before any returns early
        _nccl_first_call(dist, group, flat.device.index)
    peers = _global_ranks(group, size)
    if isinstance(plan, FlowPlan):
        if plan.messages or plan.copies:
            _run_dataflow(dist, plan, _arrays(plan, flat, dest), peers, group)
        return result
    if not plan.steps:
        mover((flat, dest))(plan.copies)
        return result
    arrays = _arrays(plan, flat, dest)
    move = mover(arrays)
    P2POp, isend, irecv = dist.P2POp, dist.isend, dist.irecv
    copies = plan.copies
    for step in plan.steps:
        if step.packs:
            move(step.packs)
        ops = [P2POp(isend, arrays[b][lo:hi], peers[peer], group)
               for peer, b, lo, hi in step.sends]
        ops += [P2POp(irecv, arrays[b][lo:hi], peers[peer], group)
                for peer, b, lo, hi in step.recvs]
        works = dist.batch_isend_irecv(ops)
        if copies:  # overlaps the first step's transfers
            move(copies)
            copies = ()
        for work in works:
            work.wait()
        if step.applies:
            move(step.applies)
    return result


def _check_output(plan, out, flat):
    want = plan.output
    if not out.is_contiguous() or out.dtype != flat.dtype or out.device != flat.device \
            or out.numel() != want:
        raise CommsimError(f"out: the receive buffer must be a contiguous {flat.dtype} tensor "
                           f"of {want} elements on {flat.device}, got {out.dtype} x "
                           f"{out.numel()} on {out.device}; make it with new_output")
    dest = out.view(-1)
    lo, hi = flat.data_ptr(), flat.data_ptr() + flat.numel() * flat.element_size()
    olo = dest.data_ptr()
    if dest.numel() and flat.numel() and olo < hi and lo < olo + want * dest.element_size():
        raise CommsimError("out: the receive buffer overlaps the input; run in place "
                           "(out=None) on the logical buffer instead")
    return dest


def _arrays(plan, flat, dest) -> tuple:
    """``(input, output, work, scratch)``: work and scratch cached per plan, dtype, device."""
    key = (flat.dtype, flat.device)
    return (flat, dest, scratch_for(plan, key + ("work",), flat.new_empty, plan.work),
            scratch_for(plan, key, flat.new_empty))


def mover(arrays):
    """``move(moves)``: makes a plan's local moves (:data:`commsim.backends.plan.Move`) on
    the tensors ``(input, output, work, scratch)``; reductions as :func:`run` adds."""
    dtype = arrays[0].dtype
    add, add_to = adder(dtype), summer(dtype)

    def move(moves) -> None:
        for dst, lo, hi, src, slo, base, blo in moves:
            target, data = arrays[dst][lo:hi], arrays[src][slo:slo + hi - lo]
            if base < 0:
                target.copy_(data)
            elif base == dst and blo == lo:
                add(target, data)
            else:
                add_to(target, arrays[base][blo:blo + hi - lo], data)
    return move


def _run_dataflow(dist, plan, arrays, peers, group) -> None:
    sends, recvs = plan.sends, plan.recvs

    def isend(i):
        peer, b, lo, hi = sends[i]
        return dist.isend(arrays[b][lo:hi], peers[peer], group)

    def irecv(j):
        peer, b, lo, hi = recvs[j]
        return dist.irecv(arrays[b][lo:hi], peers[peer], group)

    execute(plan, isend, irecv, _wait, _done, mover(arrays))


def _add(into, other) -> None:
    into.add_(other)


def _add_float8(into, other) -> None:
    into.copy_(into.float().add_(other.float()))


def _sum_to(out, a, b) -> None:
    import torch

    torch.add(a, b, out=out)


def _sum_to_float8(out, a, b) -> None:
    out.copy_(a.float().add_(b.float()))


def summer(dtype):
    """How the executor reduces ``out = a + b`` (out of place) for tensors of ``dtype``,
    alike :func:`adder`: float8 in float32, rounded back once."""
    if dtype.is_floating_point and dtype.itemsize == 1:
        return _sum_to_float8
    return _sum_to


def adder(dtype):
    """How the executor reduces ``into += other`` for tensors of ``dtype``: ``add_``,
    except for float8 types, which torch cannot add: added in float32 and rounded back
    to float8 once per reduction (as NCCL's float8 sum rounds each partial sum). Integer
    sums wrap modulo 2^bits, as NCCL's, gloo's and numpy's do."""
    if dtype.is_floating_point and dtype.itemsize == 1:
        return _add_float8
    return _add


def add_into(into, other) -> None:
    """``into += other`` in place, as :func:`run` reduces (see :func:`adder`)."""
    adder(into.dtype)(into, other)


def _wait(work):
    work.wait()


def _done(work) -> bool:
    return False  # gloo's point-to-point works complete only inside wait()


def _nccl_first_call(dist, group, device_index: int) -> None:
    """NCCL needs every rank of a group in its first batched P2P call; a barrier does it."""
    key = id(group) if group is not None else None
    if key not in _NCCL_READY:
        dist.barrier(group=group, device_ids=[device_index])
        _NCCL_READY.add(key)
