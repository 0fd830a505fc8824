"""One rank's share of a schedule, as element ranges, shared by the real executors.

A real executor (torch.distributed, MPI) runs a :class:`~commsim.collectives.Schedule`
one step at a time. :func:`rank_plan` turns the schedule into what one rank does, for a
logical buffer of ``n`` elements, so the executors' hot loops only post messages and
make local moves:

- ``sends``: ``(peer, buf, lo, hi)``, elements ``bufs[buf][lo:hi]`` go to ``peer``;
- ``recvs``: ``(peer, buf, lo, hi)``, in the order to post them: the message lands in
  ``bufs[buf][lo:hi]``, straight where it belongs (a copy) or in scratch;
- ``packs`` and ``applies``: the :data:`moves <Move>` made before a step's messages are
  posted (a send gathered into scratch) and after its waits (reductions, and copies that
  landed in scratch), in order;
- ``copies``: moves made once, right after the first messages are posted;
- ``scratch`` and ``work``: elements of scratch and of the work buffer the plan needs.

**Which buffer each operation reads and writes is decided here, once, for both plans**
(:class:`Placement`; the dataflow planner in :mod:`commsim.backends.dataflow` uses it
too). A plan is built *in place* or *out of place*:

- in place: the rank's logical buffer is one array (``OUT``); every operation reads and
  writes it at the logical offsets, as the schedule says;
- out of place (nccl-tests' default, NCCL's ``sendbuff != recvbuff``): the rank's input
  is a separate, read-only array ``IN`` (its send buffer, as the collective defines it),
  the result goes to ``OUT`` (its receive buffer) and the logical chunks that are
  neither input nor result at this rank (partial sums of other ranks' segments in a
  reduce_scatter, blocks an alltoall forwards, a reduce's partial sums at a non-root)
  live in an internal ``WORK`` buffer. Each chunk has a *home* (``OUT`` when the rank's
  result holds it, else ``WORK``); until its first write it is read from ``IN``. So the
  first send of a range reads the input, the first reduction into a range writes
  ``home = in + received`` (no copy first), a copy lands at home, and a result chunk
  that the schedule never writes at this rank (allgather's own segment, a broadcast
  root's buffer, alltoall's own block, anything at one rank) is copied ``IN -> OUT``
  once (:attr:`RankPlan.copies`). No other copy is made unless a message's elements do
  not lie in one array (a send gathered into scratch, a copy scattered from it): no
  registered algorithm needs one (``tests/test_backends_plan.py`` checks it).

Consecutive transfers between one pair in one step (schedule order) whose ranges touch
and that agree on ``reduce`` are merged into one message; both ends see the same list,
so they merge alike and messages still match by their order within the pair. Empty
ranges (a chunk of zero elements when ``n`` is small) are dropped on both ends alike.
Plans are cached per ``(schedule, rank, n, out of place)``.
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
#: nccl-tests' two buffer layouts, in the order it measures them
PLACES = ("out-of-place", "in-place")
SCRATCH_ENTRIES = 8  # scratch buffers kept (a sweep reuses one per size in a row)
_SCRATCH: OrderedDict = OrderedDict()

#: the arrays an executor holds, by index: ``bufs = (input, output, work, scratch)``; in
#: place the first two are the same array (the logical buffer)
IN, OUT, WORK, SCRATCH = 0, 1, 2, 3
#: ``(dst, lo, hi, src, slo, base, blo)``: ``bufs[dst][lo:hi] = bufs[src][slo:slo+hi-lo]``,
#: plus ``bufs[base][blo:blo+hi-lo]`` when ``base >= 0`` (a reduction; ``base == dst``
#: and ``blo == lo`` is an in-place add)
Move = tuple[int, int, int, int, int, int, int]


def check_mode(mode: str) -> str:
    """``mode`` if it is an execution mode (``dataflow`` or ``step``), else a CommsimError."""
    if mode not in MODES:
        raise unknown("execution mode", mode, MODES)
    return mode


def check_place(place: str) -> str:
    """``place`` if it is ``out-of-place`` or ``in-place``, else a CommsimError."""
    if place not in PLACES:
        raise unknown("place", place, PLACES)
    return place


def scratch_for(plan, key, make: Callable[[int], object], count: int | None = None):
    """A buffer of ``count`` elements (default ``plan.scratch``): ``make(count)`` on first
    use, then the same buffer for every call with this ``plan`` and ``key`` (dtype,
    device, and what it is for). The last :data:`SCRATCH_ENTRIES` are kept. ``None``
    when the count is 0."""
    count = plan.scratch if count is None else count
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
    """What one rank does in one step (offsets into the arrays ``bufs``)."""

    step: int
    sends: tuple[tuple[int, int, int, int], ...]
    recvs: tuple[tuple[int, int, int, int], ...]
    packs: tuple[Move, ...] = ()
    applies: tuple[Move, ...] = ()


@dataclass(frozen=True)
class RankPlan:
    """A rank's steps for a logical buffer of ``n`` elements, its scratch and work needs,
    and the moves made once (``copies``)."""

    rank: int
    n: int
    steps: tuple[StepPlan, ...]
    scratch: int
    copies: tuple[Move, ...] = ()
    work: int = 0
    outplace: bool = False
    output: int = 0  # elements of the receive buffer (out of place)

    @property
    def messages(self) -> int:
        return sum(len(s.sends) + len(s.recvs) for s in self.steps)

    @property
    def messages_sent(self) -> int:
        return sum(len(s.sends) for s in self.steps)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def rank_plan(schedule: Schedule, rank: int, n: int, outplace: bool = False) -> RankPlan:
    """The (cached) plan of ``rank`` for a logical buffer of ``n`` elements, in place or
    (``outplace``) reading a separate input and writing a separate output."""
    if not 0 <= rank < schedule.nranks:
        raise CommsimError(f"rank {rank} is out of range for a {schedule.nranks}-rank schedule")
    per_schedule = _CACHE.setdefault(schedule, {})
    key = (int(rank), int(n), bool(outplace))
    plan = per_schedule.get(key)
    if plan is None:
        plan = per_schedule[key] = _build(schedule, int(rank), int(n), bool(outplace))
    return plan


def rank_transfers(schedule: Schedule, rank: int) -> tuple[list[int], ...]:
    """``(ids, step, src, dst, chunk, reduce)``: the transfers ``rank`` sends or receives,
    in schedule order, as Python lists (the planners' loops run over them)."""
    mine = np.flatnonzero((schedule.src == rank) | (schedule.dst == rank))
    return (mine.tolist(), *(getattr(schedule, name)[mine].tolist()
                             for name in ("step", "src", "dst", "chunk", "reduce")))


class Placement:
    """Where each chunk of one rank's logical buffer lives and is read from, followed in
    schedule order while a plan is built (see the module docstring).

    In place every chunk lives in ``OUT`` at its logical offset. Out of place a chunk's
    home is ``OUT`` (packed in the rank's result order) when the rank's result holds it,
    else ``WORK`` at its logical offset; until its first write it is read from ``IN``
    (packed in chunk order) when the rank's input holds it.
    """

    def __init__(self, schedule: Schedule, rank: int, n: int, outplace: bool) -> None:
        bounds = schedule.chunk_bounds(n).tolist()
        k = schedule.nchunks
        self.bounds, self.outplace = bounds, outplace
        self.home = [(OUT, bounds[c]) for c in range(k)]
        self.init = [-1] * k  # offset in IN of the chunk's initial value, -1: none there
        self.written = [False] * k
        self.copied = [False] * k  # copied IN -> OUT once the first messages are posted
        self.work = 0
        if not outplace:
            return
        self.home = [(WORK, bounds[c]) for c in range(k)]
        at = 0
        result = result_order(schedule, rank)
        for c in result:
            self.home[c] = (OUT, at)
            at += bounds[c + 1] - bounds[c]
        at = 0
        for c in np.flatnonzero(input_chunks(schedule, rank)).tolist():
            self.init[c] = at
            at += bounds[c + 1] - bounds[c]
        written = set(schedule.chunk[schedule.dst == rank].tolist())
        for c in result:
            self.copied[c] = self.init[c] >= 0 and c not in written

    def _size(self, c: int) -> int:
        return self.bounds[c + 1] - self.bounds[c]

    def at_home(self, c: int) -> bool:
        """Is chunk ``c`` read from its home now (not from ``IN``)?"""
        return self.written[c] or self.init[c] < 0 or (self.copied[c] and self.started)

    def _where(self, c: int) -> tuple[int, int]:
        return self.home[c] if self.at_home(c) else (IN, self.init[c])

    #: have the first messages been posted (and the ``copies`` made)? A result chunk that
    #: the schedule never writes here is read from ``IN`` before, from ``OUT`` after (so
    #: recursive doubling sends its own segment and those it received as one message)
    started = False

    def _pieces(self, chunks, where) -> list[list[int]]:
        out: list[list[int]] = []
        for c in chunks:
            size = self._size(c)
            if not size:
                continue
            buf, off = where(c)
            if buf == WORK:
                self.work = max(self.work, off + size)
            if out and out[-1][0] == buf and out[-1][2] == off:
                out[-1][2] = off + size
            else:
                out.append([buf, off, off + size])
        return out

    def source(self, chunks) -> list[list[int]]:
        """``[buf, lo, hi]`` pieces holding ``chunks``' current values, in order."""
        return self._pieces(chunks, self._where)

    def home_piece(self, chunks) -> tuple[int, int, int] | None:
        """``(buf, lo, hi)``: where a copy of ``chunks`` lands, when that is one range."""
        pieces = self._pieces(chunks, self.home.__getitem__)
        return tuple(pieces[0]) if len(pieces) == 1 else None

    def write(self, chunks, reduce: bool) -> list[list[int]]:
        """The moves that apply a message for ``chunks`` held in scratch from offset 0 (the
        caller shifts them): a copy home, or ``home = base + scratch`` with ``base`` the
        chunk's current value (``IN`` at its first write, else home). Marks them written."""
        moves: list[list[int]] = []
        rel = 0
        for c in chunks:
            size = self._size(c)
            if not size:
                continue
            dst, off = self.home[c]
            if dst == WORK:
                self.work = max(self.work, off + size)
            base, boff = self._where(c) if reduce else (-1, 0)
            last = moves[-1] if moves else None
            if last is not None and last[0] == dst and last[2] == off and last[5] == base \
                    and (base < 0 or last[6] + (last[2] - last[1]) == boff):
                last[2] += size
            else:
                moves.append([dst, off, off + size, SCRATCH, rel, base, boff])
            self.written[c] = True
            rel += size
        return moves

    def finish(self, schedule: Schedule, rank: int) -> tuple[Move, ...]:
        """Out of place: the ``IN -> OUT`` copies of result chunks never written here."""
        if not self.outplace:
            return ()
        moves: list[list[int]] = []
        for c in result_order(schedule, rank):
            size = self._size(c)
            if not size or not self.copied[c]:
                continue
            _, off = self.home[c]
            src = self.init[c]
            last = moves[-1] if moves else None
            if last is not None and last[2] == off and last[4] + (last[2] - last[1]) == src:
                last[2] += size
            else:
                moves.append([OUT, off, off + size, IN, src, -1, 0])
        return tuple(tuple(m) for m in moves)


def shifted(moves: list[list[int]], offset: int) -> tuple[Move, ...]:
    """``moves`` from :meth:`Placement.write` with their scratch offsets moved by ``offset``."""
    return tuple((d, lo, hi, s, slo + offset, b, blo) for d, lo, hi, s, slo, b, blo in moves)


def packing(pieces: list[list[int]], offset: int) -> tuple[Move, ...]:
    """The moves that gather ``pieces`` (``[buf, lo, hi]``) into scratch from ``offset``."""
    out, at = [], offset
    for buf, lo, hi in pieces:
        out.append((SCRATCH, at, at + hi - lo, buf, lo, -1, 0))
        at += hi - lo
    return tuple(out)


def _build(schedule: Schedule, rank: int, n: int, outplace: bool) -> RankPlan:
    place = Placement(schedule, rank, n, outplace)
    bounds = place.bounds
    mine, step, src, dst, chunk, red = rank_transfers(schedule, rank)
    steps: list[StepPlan] = []
    scratch = 0
    i, total = 0, len(mine)
    while i < total:
        s = step[i]
        sends: list[list] = []
        recvs: list[list] = []
        while i < total and step[i] == s:
            c = chunk[i]
            if bounds[c + 1] > bounds[c]:  # runs of touching non-empty chunks, as dataflow
                if src[i] == rank:
                    sends.append([dst[i], c, c + 1, int(red[i]), [c]])
                else:
                    recvs.append([src[i], c, c + 1, int(red[i]), [c]])
            i += 1
        off = 0
        planned_sends, packs = [], []
        for peer, c0, c1, _, chunks in merge_per_peer(sends):  # the values before the step
            lo, hi = bounds[c0], bounds[c1]
            pieces = place.source(chunks)
            if len(pieces) == 1:
                planned_sends.append((peer, *pieces[0]))
            else:
                packs += packing(pieces, off)
                planned_sends.append((peer, SCRATCH, off, off + hi - lo))
                off += hi - lo
        planned_recvs, applies = [], []
        for peer, c0, c1, r, chunks in merge_per_peer(recvs):
            lo, hi = bounds[c0], bounds[c1]
            landing = None if r else place.home_piece(chunks)
            moves = place.write(chunks, bool(r))
            if landing is not None:
                planned_recvs.append((peer, *landing))
            else:
                planned_recvs.append((peer, SCRATCH, off, off + hi - lo))
                applies += shifted(moves, off)
                off += hi - lo
        scratch = max(scratch, off)
        if planned_sends or planned_recvs:
            steps.append(StepPlan(s, tuple(planned_sends), tuple(planned_recvs),
                                  tuple(packs), tuple(applies)))
            place.started = True  # the executor makes the copies after posting this step
    return RankPlan(rank, n, tuple(steps), scratch, place.finish(schedule, rank), place.work,
                    outplace, output_length(schedule, n, rank))


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


def apart_share(schedule: Schedule) -> float:
    """Out of place, the share of a schedule's reductions written apart from their
    operands: a range's first write at its rank (``home = in + received``,
    :class:`Placement`) when that write is a reduction; the rest add in place. 0 without
    reductions. By transfers: chunks are near-equal ranges (one element apart at
    most), and every chunk a rank reduces into holds its input there (only allreduce,
    reduce and reduce_scatter reduce, and their input is the whole logical buffer)."""
    reduce = schedule.reduce.astype(bool)
    if not reduce.any():
        return 0.0
    keys = schedule.dst.astype(np.int64) * schedule.nchunks + schedule.chunk.astype(np.int64)
    first = np.zeros(len(keys), dtype=bool)
    first[np.unique(keys, return_index=True)[1]] = True   # in schedule (step) order
    return float(np.count_nonzero(reduce & first) / np.count_nonzero(reduce))


def segment_range(nranks: int, total: int, rank: int) -> tuple[int, int]:
    """Element range of ``rank``'s segment in a ``total``-element gathered buffer."""
    b = split_bounds(total, nranks)
    return int(b[rank]), int(b[rank + 1])


def logical_length(schedule: Schedule, count: int) -> int:
    """Elements of the logical buffer for a per-rank input of ``count`` elements
    (``nranks`` inputs for allgather and alltoall, whose ranks start with segment ``rank``)."""
    return count * schedule.nranks if schedule.collective in GATHERED_INPUT else count


GATHERED_INPUT = ("allgather", "alltoall")  # the input fills segment ``rank`` of the buffer


def input_chunks(schedule: Schedule, rank: int) -> np.ndarray:
    """Per chunk: does ``rank``'s input (its send buffer) hold it at the start? Every chunk
    for allreduce, reduce_scatter and reduce; segment ``rank`` for allgather and alltoall;
    every chunk at a broadcast's root and none elsewhere (NCCL reads only the root's)."""
    k = np.arange(schedule.nchunks)
    if schedule.collective in GATHERED_INPUT:
        return schedule.segment_of(k) == rank
    if schedule.collective == "broadcast":
        return np.full(schedule.nchunks, rank == schedule.root)
    return np.ones(schedule.nchunks, dtype=bool)


def result_order(schedule: Schedule, rank: int) -> list[int]:
    """The chunks of ``rank``'s result (its receive buffer), in their order there: every
    chunk for allreduce, allgather and broadcast, segment ``rank`` for reduce_scatter,
    every chunk at a reduce's root and none elsewhere, alltoall's final layout map."""
    c = schedule.collective
    if c == "alltoall":
        return schedule.result_chunks(rank).tolist()
    k = np.arange(schedule.nchunks)
    if c == "reduce_scatter":
        return k[schedule.segment_of(k) == rank].tolist()
    if c == "reduce" and rank != schedule.root:
        return []
    return k.tolist()


def output_length(schedule: Schedule, n: int, rank: int) -> int:
    """Elements of ``rank``'s receive buffer for a logical buffer of ``n`` elements (out of
    place): ``n`` for allreduce, allgather, broadcast and reduce, segment ``rank`` for
    reduce_scatter, block ``rank`` of every segment for alltoall."""
    c = schedule.collective
    if c == "reduce_scatter":
        lo, hi = segment_range(schedule.nranks, n, rank)
        return hi - lo
    if c == "alltoall":
        return sum(hi - lo for lo, hi in result_ranges(schedule, n, rank))
    return n


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
