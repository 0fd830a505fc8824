"""Dataflow execution: one rank's share of a schedule as a dependency-ordered plan.

The real counterpart of the simulator's ``dataflow`` mode. Where the step executors
post a step's messages, wait for all of them, then reduce, a rank here

- posts its receives ahead (reducing receives into scratch, one region each, at the
  start; copying receives straight into the buffer, as soon as nothing that reads or
  writes those elements earlier can still be in flight);
- waits for its receives one at a time, in schedule order, and reduces each as soon
  as it lands, so the reduction of one message overlaps the transfer of the next;
- posts each send as soon as every receive that wrote its data (its predecessors in
  :meth:`~commsim.collectives.Schedule.dependencies`) has been applied.

Messages: a step's transfers between one pair are merged into runs of touching
chunks, as in step mode, and each run is cut at chunk boundaries into at most ``m``
near-equal pieces, ``m = nchunks / chunk_unit`` (the pipeline depth that ``--chunks``
asks for). So a ring with ``nchunks = m p`` sends ``m`` messages a step, and the
next step's first piece leaves while the later pieces are still arriving. Both ends
of a pair cut alike and post in schedule order, so messages match by their order.

Hazards the plan orders (per element range, in schedule order on the rank):

- a send waits for the writes of earlier steps (read after write);
- a write waits for the sends that read the old value to complete (write after read:
  a send's buffer is read until it completes), reductions before they are added,
  direct copies before they are posted;
- writes apply in schedule order (a copy after a reduction replaces it).

Out of place (``flow_plan(..., outplace=True)``) the arrays each operation reads and
writes come from :class:`commsim.backends.plan.Placement`, as in step mode: a send of a
range not yet written here reads the read-only input, so it is no write-after-read
hazard for the range's first write (``home = in + received``, or a copy that lands at
home whenever it arrives).

No deadlock: before posting an operation of step ``s`` a rank only blocks on
operations of earlier steps (a delayed receive is posted at the latest just before the
rank waits for its first receive of step ``s``), so by induction on the step every
operation is posted and completes, as in step mode.

The loop (:func:`execute`) is written once over five backend calls (post a send, post a
receive, wait, test, make local moves); the torch and MPI executors supply them. Plans
are cached per ``(schedule, rank, n, pollable, out of place)``.
"""

from __future__ import annotations

import weakref
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from commsim.backends.plan import (
    SCRATCH,
    Move,
    Placement,
    merge_per_peer,
    output_length,
    packing,
    rank_transfers,
    shifted,
)
from commsim.collectives import chunk_unit
from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError


@dataclass(frozen=True)
class FlowPlan:
    """A rank's messages for a logical buffer of ``n`` elements, in dataflow order.

    Offsets are into the executor's arrays ``bufs = (input, output, work, scratch)``
    (:mod:`commsim.backends.plan`; in place the first two are one array).
    ``sends[i] = (peer, buf, lo, hi)``, gathered first by the moves ``packs[i]`` (none for
    every registered algorithm); ``recvs[j] = (peer, buf, lo, hi)``: where receive ``j``
    lands, then ``applies[j]`` moves it from scratch (a reduction, or a copy that could
    not land straight in place; empty when it did). ``copies``: moves made once, after
    the first messages are posted (out of place: result chunks this rank never writes).
    ``send_after[0]`` are the sends posted at the start, ``send_after[k + 1]`` those
    posted once receive ``k`` is applied. ``war[j]``: the sends that must be complete
    before receive ``j`` writes its elements. ``early``: the receives posted at the
    start. ``queued``: per peer, the others in order, each ``(j, ready, deadline)``: it
    may be posted once receive ``ready - 1`` is applied (and its ``war`` sends are
    complete), and must be before receive ``deadline`` is waited for.
    """

    rank: int
    n: int
    sends: tuple[tuple[int, int, int, int], ...]
    recvs: tuple[tuple[int, int, int, int], ...]
    send_after: tuple[tuple[int, ...], ...]
    war: tuple[tuple[int, ...], ...]
    early: tuple[int, ...]
    queued: tuple[tuple[tuple[int, int, int], ...], ...]
    scratch: int
    packs: tuple[tuple[Move, ...], ...] = ()
    applies: tuple[tuple[Move, ...], ...] = ()
    copies: tuple[Move, ...] = ()
    work: int = 0
    outplace: bool = False
    output: int = 0  # elements of the receive buffer (out of place)

    @property
    def messages(self) -> int:
        return len(self.sends) + len(self.recvs)

    @property
    def messages_sent(self) -> int:
        return len(self.sends)


_CACHE: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def flow_plan(schedule: Schedule, rank: int, n: int, pollable: bool = True,
              outplace: bool = False) -> FlowPlan:
    """The (cached) dataflow plan of ``rank`` for a logical buffer of ``n`` elements, in
    place or (``outplace``) reading a separate input and writing a separate output
    (:class:`commsim.backends.plan.Placement` says which array each operation uses).

    ``pollable``: the backend can tell without blocking whether a send has completed
    (MPI's ``Test``), so a copy into elements that were sent before can land straight
    in the buffer once those sends are done. gloo cannot (its point-to-point sends
    complete only inside ``wait``): there such a copy lands in scratch, posted at the
    start like every receive, and is copied into the buffer when it is processed.
    """
    if not 0 <= rank < schedule.nranks:
        raise CommsimError(f"rank {rank} is out of range for a {schedule.nranks}-rank schedule")
    per_schedule = _CACHE.setdefault(schedule, {})
    key = (int(rank), int(n), bool(pollable), bool(outplace))
    plan = per_schedule.get(key)
    if plan is None:
        plan = per_schedule[key] = _build(schedule, int(rank), int(n), bool(pollable),
                                          bool(outplace))
    return plan


def pipeline_depth(schedule: Schedule) -> int:
    """``m``: the pieces each run of a step is cut into (1 for unregistered algorithms)."""
    try:
        unit = chunk_unit(schedule.collective, schedule.algorithm, schedule.nranks)
    except CommsimError:
        return 1
    return max(1, schedule.nchunks // unit) if schedule.nchunks % unit == 0 else 1


def _messages(schedule: Schedule, rank: int, bounds: list[int], m: int):
    """This rank's messages in schedule order: ``(kind, step, peer, lo, hi, reduce, ids)``
    with ``kind`` 0 for a send and 1 for a receive, ``ids`` the transfers it carries."""
    ids, step, src, dst, chunk, red = rank_transfers(schedule, rank)
    out = []
    i, total = 0, len(ids)
    while i < total:
        s = step[i]
        sends, recvs = [], []
        while i < total and step[i] == s:
            c = chunk[i]
            if bounds[c + 1] > bounds[c]:
                if src[i] == rank:
                    sends.append([dst[i], c, c + 1, bool(red[i]), [ids[i]]])
                else:
                    recvs.append([src[i], c, c + 1, bool(red[i]), [ids[i]]])
            i += 1
        for kind, items in ((0, sends), (1, recvs)):
            for peer, c0, c1, r, tids in merge_per_peer(items):
                for part in np.array_split(np.arange(c0, c1), min(m, c1 - c0)):
                    a, b = int(part[0]), int(part[-1]) + 1
                    out.append((kind, s, peer, a, b, r, tids[a - c0:b - c0]))
    return out


def _build(schedule: Schedule, rank: int, n: int, pollable: bool, outplace: bool) -> FlowPlan:
    place = Placement(schedule, rank, n, outplace)
    bounds = place.bounds
    msgs = _messages(schedule, rank, bounds, pipeline_depth(schedule))
    indptr, indices = schedule.dependencies()
    indptr, indices = indptr.tolist(), indices.tolist()
    recv_of = {}          # transfer id -> index of the receive message that carries it
    send_of = {}          # transfer id -> index of the send message that carries it
    sends, send_trigger, recvs = [], [], []
    send_after: list[list[int]] = [[]]
    last_send_trigger: dict[int, int] = {}
    # per chunk, in schedule order: (index, step) of the last write, and the sends since
    # that read the chunk's home (a send from the read-only input is no hazard)
    last_write: dict[int, tuple[int, int]] = {}
    reads: dict[int, list[tuple[int, int]]] = {}
    first_of_step: dict[int, int] = {}
    meta = []             # per receive: (step, transfers, hazards, last write, touched)
    for kind, s, peer, c0, c1, red, tids in msgs:
        lo, hi = bounds[c0], bounds[c1]
        chunks = range(c0, c1)
        if kind == 0:
            trigger = max((recv_of[p] for t in tids for p in indices[indptr[t]:indptr[t + 1]]),
                          default=-1)
            trigger = max(trigger, last_send_trigger.get(peer, -1))  # per-peer order
            last_send_trigger[peer] = trigger
            i = len(sends)
            place.started = trigger >= 0  # posted after the start, when the copies are made
            sends.append((peer, hi - lo, place.source(chunks)))
            send_trigger.append(trigger)
            send_after[trigger + 1].append(i)
            for c in chunks:
                if place.at_home(c):
                    reads.setdefault(c, []).append((i, s))
            for t in tids:
                send_of[t] = i
            continue
        j = len(recvs)
        first_of_step.setdefault(s, j)
        hazards, written, touched = set(), -1, False
        for c in chunks:
            w_index, w_step = last_write.get(c, (-1, -1))
            touched |= w_index >= 0 or bool(reads.get(c))
            written = max(written, w_index)
            hazards.update(i for i, rs in reads.get(c, ()) if w_step < rs <= s)
            last_write[c] = (j, s)
            reads[c] = []
        landing = None if red else place.home_piece(chunks)
        recvs.append((peer, hi - lo, landing, place.write(chunks, red)))
        meta.append((s, tids, tuple(sorted(hazards)), written, touched))
        for t in tids:
            recv_of[t] = j
        send_after.append([])
    ancestors = _send_ancestors(schedule, indptr, indices, send_of) if any(
        touched and recvs[j][2] is not None for j, (*_, touched) in enumerate(meta)) else None
    planned, applies, war, early, queues, off = [], [], [], [], {}, 0
    for j, (s, tids, hazards, written, touched) in enumerate(meta):
        peer, size, landing, moves = recvs[j]
        delayed = False
        if landing is not None and (not touched or _causal(ancestors, tids, hazards, written,
                                                           send_trigger)):
            planned.append((peer, *landing))  # a copy straight in place, any time
            applies.append(())
            hazards = ()
        elif landing is not None and pollable:
            planned.append((peer, *landing))  # a copy straight in place, once safe
            applies.append(())
            delayed = True
        else:
            planned.append((peer, SCRATCH, off, off + size))  # into scratch, applied in order
            applies.append(shifted(moves, off))
            off += size
        war.append(hazards)
        if delayed or peer in queues:  # a peer's receives are posted in schedule order
            ready = max([written] + [send_trigger[i] for i in hazards]) + 1 if delayed else 0
            queues.setdefault(peer, []).append((j, ready, first_of_step[s]))
        else:
            early.append(j)
    planned_sends, packs = [], []
    for peer, size, pieces in sends:
        if len(pieces) == 1:
            planned_sends.append((peer, *pieces[0]))
            packs.append(())
        else:  # elements in several arrays: gathered into a scratch region of its own
            planned_sends.append((peer, SCRATCH, off, off + size))
            packs.append(packing(pieces, off))
            off += size
    return FlowPlan(rank, n, tuple(planned_sends), tuple(planned),
                    tuple(tuple(x) for x in send_after), tuple(war), tuple(early),
                    tuple(tuple(q) for q in queues.values()), off, tuple(packs),
                    tuple(applies), place.finish(schedule, rank), place.work, outplace,
                    output_length(schedule, n, rank))


def _send_ancestors(schedule: Schedule, indptr: list, indices: list, send_of: dict) -> list:
    """Per transfer, a bitset of this rank's send messages it depends on, through any
    chain of transfers (``Schedule.dependencies``; preds come in earlier steps)."""
    anc = [0] * len(schedule)
    for t in range(len(schedule)):
        a = 0
        for p in indices[indptr[t]:indptr[t + 1]]:
            a |= anc[p]
            i = send_of.get(p)
            if i is not None:
                a |= 1 << i
        anc[t] = a
    return anc


def _causal(ancestors, tids, hazards, written, send_trigger) -> bool:
    """Can this copy land in the buffer whenever it arrives? Yes when its data leaves the
    peer only after every send that reads the old values has been delivered (each is an
    ancestor of it) and after the last earlier write was applied (a send posted after
    that write is an ancestor)."""
    a = 0
    for t in tids:
        a |= ancestors[t]
    if any(not a >> i & 1 for i in hazards):
        return False
    if written < 0:
        return True
    return any(a >> i & 1 for i, trigger in enumerate(send_trigger) if trigger >= written)


def execute(plan: FlowPlan, isend: Callable[[int], object], irecv: Callable[[int], object],
            wait: Callable[[object], object], done: Callable[[object], bool],
            move: Callable[[tuple], object]) -> None:
    """Run ``plan``: ``isend(i)`` / ``irecv(j)`` post message ``i`` / ``j`` and return a
    handle, ``wait(h)`` blocks until it completes, ``done(h)`` tells without blocking,
    ``move(moves)`` makes local moves (:data:`commsim.backends.plan.Move`): a send's
    packing, a receive's application, the plan's ``copies``. Each handle is waited for
    at most once (a second wait on a gloo send blocks for ever)."""
    sends: list = [None] * len(plan.sends)
    recvs: list = [None] * len(plan.recvs)
    packs, applies = plan.packs, plan.applies

    def post(i):
        if packs[i]:
            move(packs[i])
        return isend(i)

    for j in plan.early:
        recvs[j] = irecv(j)
    for i in plan.send_after[0]:
        sends[i] = post(i)
    if plan.copies:  # overlaps the first transfers
        move(plan.copies)
    queues = [deque(q) for q in plan.queued]
    war, send_after = plan.war, plan.send_after
    for k in range(len(plan.recvs)):
        if queues:
            queues = _post_queued(queues, k, plan, sends, recvs, irecv, wait, done)
        wait(recvs[k])
        if applies[k]:
            for i in war[k]:
                if sends[i] is not None:
                    wait(sends[i])
                    sends[i] = None
            move(applies[k])
        for i in send_after[k + 1]:
            sends[i] = post(i)
    for handle in sends:
        if handle is not None:
            wait(handle)


def _post_queued(queues, k, plan, sends, recvs, irecv, wait, done):
    """Post each peer's queued receives that may go before receive ``k`` is waited for.

    A queued copy lands in place, so the sends that read the old values must be
    complete first: it goes as soon as they are, and at its deadline it waits for them.
    """
    for queue in queues:
        while queue:
            j, ready, deadline = queue[0]
            if ready > k:
                break
            hazards = [i for i in plan.war[j] if sends[i] is not None] \
                if not plan.applies[j] else ()
            for i in hazards:
                if deadline <= k or done(sends[i]):
                    if deadline <= k:
                        wait(sends[i])
                    sends[i] = None
            if any(sends[i] is not None for i in hazards):
                break
            recvs[j] = irecv(j)
            queue.popleft()
    return [q for q in queues if q]
