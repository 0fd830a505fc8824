"""One rank's share of a schedule, as element ranges, shared by the real executors.

A real executor (torch.distributed, MPI) runs a :class:`~commsim.collectives.Schedule`
one step at a time. :func:`rank_plan` turns the schedule into what one rank does, for a
logical buffer of ``n`` elements, so the executors' hot loops only post messages:

- ``sends``: ``(peer, lo, hi)``, elements ``buf[lo:hi]`` go to ``peer``;
- ``recvs``: ``(peer, lo, hi, off)``, in the order to post them; ``off < 0`` means the
  message lands straight in ``buf[lo:hi]`` (a copy), ``off >= 0`` that it lands in
  ``scratch[off:off + hi - lo]`` and is added to ``buf[lo:hi]`` after the step's waits;
- ``scratch``: elements of scratch the largest step needs (allocate once per call).

Consecutive transfers between one pair in one step (schedule order) whose ranges touch
and that agree on ``reduce`` are merged into one message; both ends see the same list,
so they merge alike and messages still match by their order within the pair. Empty
ranges (a chunk of zero elements when ``n`` is small) are dropped on both ends alike.
Plans are cached per ``(schedule, rank, n)``.
"""

from __future__ import annotations

import weakref
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from commsim.collectives.schedule import Schedule, split_bounds
from commsim.errors import CommsimError, unknown

MODES = ("dataflow", "step")
DEFAULT_MODE = "dataflow"
SCRATCH_ENTRIES = 8  # scratch buffers kept (a sweep reuses one per size in a row)
_SCRATCH: OrderedDict = OrderedDict()


def check_mode(mode: str) -> str:
    """``mode`` if it is an execution mode (``dataflow`` or ``step``), else a CommsimError."""
    if mode not in MODES:
        raise unknown("execution mode", mode, MODES)
    return mode


def scratch_for(plan, key, make: Callable[[int], object]):
    """The scratch buffer of ``plan.scratch`` elements: ``make(plan.scratch)`` on first use,
    then the same buffer for every call with this ``plan`` and ``key`` (dtype, device).
    The last :data:`SCRATCH_ENTRIES` are kept. ``None`` when the plan needs none."""
    count = plan.scratch
    if not count:
        return None
    cache_key = (id(plan), key)
    entry = _SCRATCH.get(cache_key)
    if entry is None or entry[0] is not plan:
        entry = _SCRATCH[cache_key] = (plan, make(count))
        while len(_SCRATCH) > SCRATCH_ENTRIES:
            _SCRATCH.popitem(last=False)
    else:
        _SCRATCH.move_to_end(cache_key)
    return entry[1]


@dataclass(frozen=True)
class StepPlan:
    """What one rank does in one step (element offsets into the logical buffer)."""

    step: int
    sends: tuple[tuple[int, int, int], ...]
    recvs: tuple[tuple[int, int, int, int], ...]


@dataclass(frozen=True)
class RankPlan:
    """A rank's steps for a logical buffer of ``n`` elements, and its scratch need."""

    rank: int
    n: int
    steps: tuple[StepPlan, ...]
    scratch: int

    @property
    def messages(self) -> int:
        return sum(len(s.sends) + len(s.recvs) for s in self.steps)

    @property
    def messages_sent(self) -> int:
        return sum(len(s.sends) for s in self.steps)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rank_plan(schedule: Schedule, rank: int, n: int) -> RankPlan:
    """The (cached) plan of ``rank`` for a logical buffer of ``n`` elements."""
    if not 0 <= rank < schedule.nranks:
        raise CommsimError(f"rank {rank} is out of range for a {schedule.nranks}-rank schedule")
    per_schedule = _CACHE.setdefault(schedule, {})
    key = (int(rank), int(n))
    plan = per_schedule.get(key)
    if plan is None:
        plan = per_schedule[key] = _build(schedule, int(rank), int(n))
    return plan


def rank_transfers(schedule: Schedule, rank: int) -> tuple[list[int], ...]:
    """``(ids, step, src, dst, chunk, reduce)``: the transfers ``rank`` sends or receives,
    in schedule order, as Python lists (the planners' loops run over them)."""
    mine = np.flatnonzero((schedule.src == rank) | (schedule.dst == rank))
    return (mine.tolist(), *(getattr(schedule, name)[mine].tolist()
                             for name in ("step", "src", "dst", "chunk", "reduce")))


def _build(schedule: Schedule, rank: int, n: int) -> RankPlan:
    bounds = schedule.chunk_bounds(n).tolist()
    mine, step, src, dst, chunk, red = rank_transfers(schedule, rank)
    steps: list[StepPlan] = []
    scratch = 0
    i, total = 0, len(mine)
    while i < total:
        s = step[i]
        sends: list[list[int]] = []
        recvs: list[list[int]] = []
        while i < total and step[i] == s:
            c = chunk[i]
            if src[i] == rank:
                sends.append([dst[i], bounds[c], bounds[c + 1], int(red[i])])
            else:
                recvs.append([src[i], bounds[c], bounds[c + 1], int(red[i])])
            i += 1
        sends = merge_per_peer(sends)
        recvs = merge_per_peer(recvs)
        off = 0
        planned_recvs = []
        for peer, lo, hi, r in recvs:
            if r:
                planned_recvs.append((peer, lo, hi, off))
                off += hi - lo
            else:
                planned_recvs.append((peer, lo, hi, -1))
        scratch = max(scratch, off)
        if sends or planned_recvs:
            steps.append(StepPlan(s, tuple((p, lo, hi) for p, lo, hi, _ in sends),
                                  tuple(planned_recvs)))
    return RankPlan(rank, n, tuple(steps), scratch)


def merge_per_peer(items: list[list]) -> list[list]:
    """Merge, for each peer separately, consecutive touching ranges with one ``reduce``.

    ``items`` are ``[peer, lo, hi, reduce]`` lists, optionally with a fifth element, a
    list that merging concatenates. The result keeps the order of each peer's first
    message; messages to different peers are independent, so only the order within a
    peer matters for matching. Empty ranges are dropped.
    """
    by_peer: dict[int, list[list]] = {}
    for item in items:
        by_peer.setdefault(item[0], []).append(item)
    out: list[list] = []
    for peer_items in by_peer.values():
        merged: list[list] = []
        for item in peer_items:
            last = merged[-1] if merged else None
            if last is not None and last[2] == item[1] and last[3] == item[3]:
                last[2] = item[2]
                if len(item) > 4:
                    last[4] = last[4] + item[4]
            else:
                merged.append(list(item))
        out.extend(m for m in merged if m[2] > m[1])
    return out


def segment_range(nranks: int, total: int, rank: int) -> tuple[int, int]:
    """Element range of ``rank``'s segment in a ``total``-element gathered buffer."""
    b = split_bounds(total, nranks)
    return int(b[rank]), int(b[rank + 1])


def logical_length(schedule: Schedule, count: int) -> int:
    """Elements of the logical buffer for a per-rank input of ``count`` elements
    (``nranks`` inputs for allgather and alltoall, whose ranks start with segment ``rank``)."""
    return count * schedule.nranks if schedule.collective in GATHERED_INPUT else count


GATHERED_INPUT = ("allgather", "alltoall")  # the input fills segment ``rank`` of the buffer


def result_ranges(schedule: Schedule, n: int, rank: int) -> list[tuple[int, int]]:
    """alltoall's final layout map: the ``(lo, hi)`` element ranges of an ``n``-element
    logical buffer whose concatenation is ``rank``'s result (touching ranges merged)."""
    bounds = schedule.chunk_bounds(n).tolist()
    out: list[list[int]] = []
    for c in schedule.result_chunks(rank).tolist():
        if out and out[-1][1] == bounds[c]:
            out[-1][1] = bounds[c + 1]
        else:
            out.append([bounds[c], bounds[c + 1]])
    return [(lo, hi) for lo, hi in out]
