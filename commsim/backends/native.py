"""Native baselines: the backend's own collectives, run beside commsim's schedules.

Buffers follow nccl-tests' out-of-place layout, with ``count`` the per-rank count:

=============== ======================= =========================
collective      ``send``                ``recv`` (the result)
=============== ======================= =========================
allreduce       ``recv`` itself         ``count``, in place
broadcast       ``recv`` itself         ``count``, in place (root's is sent)
reduce          ``recv`` itself         ``count``, in place (root's is the sum)
reduce_scatter  ``count * p``           ``count`` (this rank's part)
allgather       ``count``               ``count * p`` (every rank's part, in rank order)
alltoall        ``count`` (p blocks)    p x block ``rank``'s length (block ``rank`` of each)
=============== ======================= =========================

torch: ``all_reduce``, ``reduce_scatter_tensor``, ``all_gather_into_tensor``,
``broadcast``, ``reduce``, ``all_to_all_single``. MPI: ``Allreduce``,
``Reduce_scatter_block``, ``Allgather``, ``Bcast``, ``Reduce``, ``Alltoall`` (``Alltoallv``
when ``p`` does not divide ``count``). alltoall blocks follow ``np.array_split``: a
rank receives ``p`` blocks of its own block's length. An operation the backend lacks
raises :class:`Unsupported`.
"""

from __future__ import annotations

import warnings

from commsim.errors import CommsimError

IN_PLACE = ("allreduce", "broadcast", "reduce")
# torch's own messages, spelling included ("Float8 dtypes are not currenlty supported for
# NCCL reductions", NCCL before 2.24)
_UNSUPPORTED_WORDS = ("not supported", "unsupported", "does not support", "not implemented",
                      "no support", "datatype", "not currenlty supported",
                      "not currently supported")


class Unsupported(CommsimError):
    """The backend has no native implementation of this collective (or dtype)."""


def _unsupported(backend: str, collective: str, exc: Exception) -> Unsupported | None:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, NotImplementedError) or any(w in text.lower()
                                                   for w in _UNSUPPORTED_WORDS):
        return Unsupported(f"{backend} has no native {collective}: {text[:200]}")
    return None


def torch_native(collective: str, send, recv, root: int = 0, group=None) -> None:
    """One native torch.distributed collective on ``send``/``recv`` (see the table above).

    ``root`` is a rank of ``group``. Raises :class:`Unsupported` when the process
    group's backend lacks the operation.
    """
    import torch.distributed as dist

    try:
        if collective == "allreduce":
            dist.all_reduce(recv, group=group)
        elif collective == "broadcast":
            dist.broadcast(recv, _global(dist, group, root), group=group)
        elif collective == "reduce":
            dist.reduce(recv, _global(dist, group, root), group=group)
        elif collective == "reduce_scatter":
            fn = getattr(dist, "reduce_scatter_single", None) or dist.reduce_scatter_tensor
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                fn(recv, send, group=group)
        elif collective == "allgather":
            fn = getattr(dist, "all_gather_single", None) or dist.all_gather_into_tensor
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", FutureWarning)
                fn(recv, send, group=group)
        elif collective == "alltoall":
            p, rank = dist.get_world_size(group), dist.get_rank(group)
            sizes = alltoall_blocks(send.numel(), p)
            dist.all_to_all_single(recv, send, [sizes[rank]] * p, sizes, group=group)
        else:
            raise Unsupported(f"torch has no native {collective}")
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        unsupported = _unsupported(dist.get_backend(group), collective, exc)
        if unsupported is None:
            raise
        raise unsupported from None


def _global(dist, group, rank: int) -> int:
    if group is None or group is dist.GroupMember.WORLD:
        return rank
    return dist.get_global_rank(group, rank)


def recv_length(collective: str, count: int, p: int, rank: int) -> int:
    """Elements of ``recv`` for a non-in-place collective (the table above)."""
    if collective == "alltoall":
        return p * alltoall_blocks(count, p)[rank]
    return count if collective == "reduce_scatter" else count * p


def alltoall_blocks(count: int, p: int) -> list[int]:
    """Elements of each of the ``p`` blocks of a ``count``-element alltoall buffer."""
    base, extra = divmod(int(count), int(p))
    return [base + (i < extra) for i in range(p)]


def mpi_native(collective: str, send, recv, comm, root: int = 0) -> None:
    """One native MPI collective on numpy ``send``/``recv`` (see the table above)."""
    from mpi4py import MPI

    try:
        if collective == "allreduce":
            comm.Allreduce(MPI.IN_PLACE, recv)
        elif collective == "broadcast":
            comm.Bcast(recv, root=root)
        elif collective == "reduce":
            if comm.rank == root:
                comm.Reduce(MPI.IN_PLACE, recv, root=root)
            else:
                comm.Reduce(recv, None, root=root)
        elif collective == "reduce_scatter":
            comm.Reduce_scatter_block(send, recv)
        elif collective == "allgather":
            comm.Allgather(send, recv)
        elif collective == "alltoall":
            p = comm.size
            sizes = alltoall_blocks(send.size, p)
            if send.size % p == 0:
                comm.Alltoall(send, recv)
            else:
                mine = [sizes[comm.rank]] * p
                comm.Alltoallv([send, (sizes, _offsets(sizes))], [recv, (mine, _offsets(mine))])
        else:
            raise Unsupported(f"MPI has no native {collective}")
    except (MPI.Exception, KeyError, TypeError, ValueError, NotImplementedError) as exc:
        unsupported = _unsupported("MPI", collective, exc)
        if unsupported is None:
            raise
        raise unsupported from None


def _offsets(sizes: list[int]) -> list[int]:
    out, at = [], 0
    for n in sizes:
        out.append(at)
        at += n
    return out
