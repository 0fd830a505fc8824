"""Execute a commsim schedule over torch.distributed (gloo on CPU, NCCL on CUDA).

::

    buf = torch_dist.logical_buffer(schedule, my_input)   # the schedule's logical buffer
    torch_dist.run(schedule, buf)                          # in place, on every rank
    out = torch_dist.result_view(schedule, buf)            # this rank's result

Two modes (``run(..., mode=)``). ``dataflow`` (the default; :mod:`commsim.backends.dataflow`)
posts receives ahead, sends each message as soon as its data is final and reduces each
receive as it lands. ``step``: a step's sends and receives go out together in one
``batch_isend_irecv`` (so NCCL groups them), copying receives land straight in the
buffer's slices, reducing receives in scratch, added after the step's waits. CUDA tensors
run step by step in both modes. Scratch is cached per plan, dtype and device. Messages
between a pair match by their order in the schedule; chunks of zero elements (fewer
elements than chunks) are skipped on both ends. Reductions are ``add_`` in the buffer's
dtype (integer sums wrap modulo 2^bits, as NCCL's do); float8, which torch cannot add, is
added in float32 and rounded back once per reduction. torch is imported lazily.
"""

from __future__ import annotations

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


def run(schedule: Schedule, tensor, group=None, mode: str = DEFAULT_MODE):
    """Execute ``schedule`` in place on ``tensor``, this rank's logical buffer.

    Every rank of ``group`` (default: the world) calls it with the same schedule, mode,
    and a buffer of the same length and dtype. Returns ``tensor``. The tensor must be
    contiguous (it is used flat); CPU tensors need gloo, CUDA tensors NCCL. ``mode``:
    ``"dataflow"`` (:mod:`commsim.backends.dataflow`) or ``"step"`` (one batched call a
    step). On CUDA tensors both run step by step: NCCL matches a pair's calls only in
    order inside ordered groups, so receives posted ahead in groups of their own would
    deadlock; the host does not block there anyway (waits and reductions are queued on
    the current stream, after their receives).
    """
    dist = _dist()
    mode = check_mode(mode)
    rank, size = _rank_and_size(schedule, group)
    if not tensor.is_contiguous():
        raise CommsimError("tensor: the buffer must be contiguous; pass tensor.contiguous()")
    flat = tensor.view(-1)
    if flat.is_cuda:  # every rank, before any returns early
        _nccl_first_call(dist, group, flat.device.index)
        mode = "step"
    peers = _global_ranks(group, size)
    if mode == "dataflow":
        plan = flow_plan(schedule, rank, flat.numel(), pollable=False)
        if plan.messages:
            _run_dataflow(dist, plan, flat, peers, group)
        return tensor
    plan = rank_plan(schedule, rank, flat.numel())
    if not plan.steps:
        return tensor
    scratch = scratch_for(plan, (flat.dtype, flat.device), flat.new_empty)
    add = adder(flat.dtype)
    P2POp, isend, irecv = dist.P2POp, dist.isend, dist.irecv
    for step in plan.steps:
        ops = [P2POp(isend, flat[lo:hi], peers[peer], group) for peer, lo, hi in step.sends]
        reduces = []
        for peer, lo, hi, off in step.recvs:
            if off < 0:
                ops.append(P2POp(irecv, flat[lo:hi], peers[peer], group))
            else:
                into = scratch[off:off + hi - lo]
                ops.append(P2POp(irecv, into, peers[peer], group))
                reduces.append((lo, hi, into))
        for work in dist.batch_isend_irecv(ops):
            work.wait()
        for lo, hi, into in reduces:
            add(flat[lo:hi], into)
    return tensor


def _run_dataflow(dist, plan, flat, peers, group) -> None:
    scratch = scratch_for(plan, (flat.dtype, flat.device), flat.new_empty)
    add = adder(flat.dtype)
    sends, recvs = plan.sends, plan.recvs

    def isend(i):
        peer, lo, hi = sends[i]
        return dist.isend(flat[lo:hi], peers[peer], group)

    def irecv(j):
        peer, lo, hi, off, _ = recvs[j]
        into = flat[lo:hi] if off < 0 else scratch[off:off + hi - lo]
        return dist.irecv(into, peers[peer], group)

    def apply(j):
        _, lo, hi, off, red = recvs[j]
        if red:
            add(flat[lo:hi], scratch[off:off + hi - lo])
        else:
            flat[lo:hi].copy_(scratch[off:off + hi - lo])

    execute(plan, isend, irecv, _wait, _done, apply)


def _add(into, other) -> None:
    into.add_(other)


def _add_float8(into, other) -> None:
    into.copy_(into.float().add_(other.float()))


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
