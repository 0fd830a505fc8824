"""Native baselines: the backend's own collectives, run beside commsim's schedules.

nccl-tests measures every collective out of place (separate send and receive buffers)
and in place; so does ``commsim bench``. With ``count`` the per-rank count:

============== ====================== ============================= ===========================
collective     ``send`` (out of place) ``recv`` (the result)         in place
============== ====================== ============================= ===========================
allreduce      ``count``              ``count``                     ``send`` is ``recv``
broadcast      ``count`` (root's)     ``count``                     ``send`` is ``recv``
reduce         ``count``              ``count`` (the root's: sum)   ``send`` is ``recv``
reduce_scatter ``count * p``          ``count`` (this rank's part)  ``recv``: ``send``'s slot
allgather      ``count``              ``count * p`` (rank order)    ``send``: ``recv``'s slot
alltoall       ``count`` (p blocks)   p x block ``rank``'s length   ``send`` is ``recv``
============== ====================== ============================= ===========================

(a slot is the ``count`` elements at ``rank * count``)

What each backend has (anything else raises :class:`Unsupported`, a row marked N/A):

- torch (gloo, NCCL): ``all_reduce``, ``broadcast`` and ``reduce`` work in place only (no
  out-of-place form in torch.distributed); ``reduce_scatter_tensor`` and
  ``all_gather_into_tensor`` both ways (in place: the slot is a view of the other
  buffer, NCCL's in-place convention); ``all_to_all_single`` out of place only (NCCL has
  no in-place alltoall, and nccl-tests does not check one).
- MPI: ``Allreduce``, ``Reduce``, ``Reduce_scatter_block``, ``Allgather``, ``Alltoall``
  (``Alltoallv`` when ``p`` does not divide ``count``) both ways, in place with
  ``MPI_IN_PLACE``, where MPI puts a reduce_scatter's result at the *start* of the
  buffer, not at slot ``rank``, and an in-place alltoall needs ``p`` to divide ``count``;
  ``Bcast`` has one buffer: in place only.

alltoall blocks follow ``np.array_split``: a rank receives ``p`` blocks of its own
block's length. ``send=None`` asks for the in-place form.
"""

from __future__ import annotations

import warnings

from commsim.errors import CommsimError

#: one buffer is both input and result (in place, ``send is recv``)
IN_PLACE = ("allreduce", "broadcast", "reduce")
#: torch.distributed has only the in-place form of these
IN_PLACE_ONLY = IN_PLACE
_TORCH_NAMES = {"allreduce": "all_reduce", "broadcast": "broadcast", "reduce": "reduce"}
MPI_BCAST_IN_PLACE_ONLY = "MPI_Bcast has one buffer (no out-of-place form): N/A"
NO_IN_PLACE_ALLTOALL = ("no in-place alltoall in torch.distributed (NCCL has none either; "
                        "nccl-tests does not check it): N/A")
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
    """One native torch.distributed collective (see the table above) on ``send`` and
    ``recv``: in place when ``send`` is ``recv`` or None (allreduce, broadcast, reduce,
    alltoall) or when one is the other's slot, a view (reduce_scatter, allgather).

    ``root`` is a rank of ``group``. Raises :class:`Unsupported` when the process
    group's backend lacks the operation (or its out-of-place form).
    """
    import torch.distributed as dist

    if send is None and collective in IN_PLACE_ONLY:
        send = recv
    if collective in IN_PLACE_ONLY and send is not recv:
        raise Unsupported(torch_in_place_only(collective))
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
            if send is None or send is recv:
                raise Unsupported(NO_IN_PLACE_ALLTOALL)
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


def torch_in_place_only(collective: str) -> str:
    """Why torch has no out-of-place ``collective`` (allreduce, broadcast, reduce)."""
    return (f"torch.distributed.{_TORCH_NAMES[collective]} works in place only (no "
            "out-of-place form): N/A")


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
    """One native MPI collective on numpy ``send``/``recv`` (see the table above); in place
    (``MPI_IN_PLACE``) with ``send=None``: reduce_scatter then reads the whole input from
    ``recv`` and leaves the result at its start."""
    from mpi4py import MPI

    inplace = send is None or send is recv
    source = MPI.IN_PLACE if inplace else send
    try:
        if collective == "allreduce":
            comm.Allreduce(source, recv)
        elif collective == "broadcast":
            if not inplace:
                raise Unsupported(MPI_BCAST_IN_PLACE_ONLY)
            comm.Bcast(recv, root=root)
        elif collective == "reduce":
            if comm.rank == root:
                comm.Reduce(source, recv, root=root)
            else:  # MPI_IN_PLACE is the root's only
                comm.Reduce(recv if inplace else send, None, root=root)
        elif collective == "reduce_scatter":
            if inplace:
                comm.Reduce_scatter_block(MPI.IN_PLACE, recv)
            else:
                comm.Reduce_scatter_block(send, recv)
        elif collective == "allgather":
            comm.Allgather(source, recv)
        elif collective == "alltoall":
            p = comm.size
            count = recv.size if inplace else send.size
            sizes = alltoall_blocks(count, p)
            if count % p == 0:
                comm.Alltoall(source, recv)
            elif inplace:
                raise Unsupported(f"MPI's in-place alltoall needs the ranks ({p}) to divide "
                                  f"the count ({count}): N/A")
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
