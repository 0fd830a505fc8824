"""The flow-level simulator: a schedule's transfers as flows over a topology.

Model (see docs/simulator.md):

- A transfer is a flow from its src rank's gpu to its dst rank's gpu along a route of
  directed links (:mod:`commsim.topology.routing`). It moves its bytes at a rate that
  is re-computed whenever a flow starts or ends: the max-min fair share of every
  link's bandwidth among the flows crossing it (progressive filling; with
  ``sharing="rtt"`` each flow's share weighs inversely with its route's latency, as
  under TCP); it arrives the route's latency after its last byte left (cut-through:
  the latency occupies no link).
- ``mode="step"`` (the executors' semantics): a rank reaches step ``s`` when all its
  transfers of earlier steps are complete and the reductions they brought are applied
  (``gamma`` seconds per byte, times the rank's slowdown, after the step's last
  transfer); a transfer of step ``s`` starts when both its ranks have reached ``s``.
  Ranks drift; there is no global barrier.
- ``mode="dataflow"``: a transfer starts as soon as every transfer that wrote the data
  it sends has arrived and been reduced (``Schedule.dependencies``), the previous
  transfer on its connection (same src and dst, in schedule order) has sent its last
  byte (so messages stream down a connection, their latencies overlapping), and
  both its ranks have started (their start offsets). Connections deliver in order,
  like NCCL's channels or one TCP/RDMA stream; without that, max-min fairness lets
  transfers that ran ahead share a connection with the urgent one and slow it down.

Two executors give the same answer:

- ``_sweep_uncontended``: step by step in numpy, every transfer at full rate, checking
  as it goes that no two flows are ever in their byte phase on one link at once. If the
  check holds the result is exact (no flow ever shares a link, so the max-min rate of
  each is its route's narrowest link); if it fails the sweep gives up.
- ``_EventEngine``: the general discrete-event simulation. Events at one instant are
  handled as a batch; a batch whose new flows are alone on their links costs no
  rate computation; otherwise max-min rates are re-computed only over the flows
  connected (through shared links) to the links that changed.
"""

from __future__ import annotations

import time as _time
from bisect import bisect_left, bisect_right
from heapq import heappop, heappush
from itertools import chain

import networkx as nx
import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.topology.placement import place
from commsim.topology.routing import Router

MODES = ("step", "dataflow")
SHARINGS = ("maxmin", "rtt")
ENGINES = ("auto", "events", "sweep")
_RTOL_T = 1e-13   # events closer than this (relative) are one instant
_INF = np.inf


# --- inputs ---------------------------------------------------------------------------

def _placement(G: nx.DiGraph, nranks: int, placement) -> list:
    if placement is None:
        return place(G, nranks)
    if isinstance(placement, dict):
        missing = [r for r in range(nranks) if r not in placement]
        if missing:
            raise CommsimError(f"placement: rank {missing[0]} has no gpu; map every rank "
                               f"0..{nranks - 1}")
        placement = [placement[r] for r in range(nranks)]
    placement = list(placement)
    if len(placement) < nranks:
        raise CommsimError(f"placement: {len(placement)} gpus for {nranks} ranks; "
                           "give one gpu per rank")
    placement = placement[:nranks]
    if len(set(placement)) != len(placement):
        dup = next(g for g in placement if placement.count(g) > 1)
        raise CommsimError(f"placement: gpu {dup!r} is given to two ranks; one rank a gpu")
    return placement


def _per_rank(values, nranks: int, default: float, field: str) -> np.ndarray:
    out = np.full(nranks, float(default))
    if values is None:
        return out
    items = values.items() if isinstance(values, dict) else enumerate(values)
    for r, v in items:
        if not isinstance(r, (int, np.integer)) or not 0 <= int(r) < nranks:
            raise CommsimError(f"{field}: rank {r!r} is out of range 0..{nranks - 1}")
        v = float(v)
        if not np.isfinite(v) or v < 0:
            raise CommsimError(f"{field}: rank {r}: {v!r} must be a finite number >= 0")
        out[int(r)] = v
    return out


class _Run:
    """What both executors share: the schedule, sizes, routes and link counters."""

    def __init__(self, schedule: Schedule, router: Router, nbytes: int, gamma: float,
                 offsets: np.ndarray, slowdown: np.ndarray, record: bool,
                 overhead: float = 0.0, message_overhead: float = 0.0,
                 overlap: bool = True, sharing: str = "maxmin") -> None:
        self.s = schedule
        self.router = router
        self.overhead = float(overhead)  # seconds added to every transfer's latency
        # seconds a transfer holds its connection before its first byte moves
        self.message_overhead = float(message_overhead)
        self.overlap = bool(overlap)  # may a rank reduce while its connections move bytes
        self.sharing = sharing        # "maxmin" or "rtt"
        self.nbytes = nbytes
        logical = schedule.logical_length(nbytes)  # p times the size for alltoall
        self.chunk_bytes = schedule.chunk_sizes(logical).astype(np.float64)
        self.gamma = float(gamma)
        self.offsets = offsets
        self.slow = slowdown
        self.T = len(schedule)
        self.P = schedule.nranks
        self.nsteps = schedule.nsteps
        self.step_ptr = schedule.step_bounds()
        nl = len(router.links)
        self.link_bw = router.link_bandwidth
        self.link_bytes = np.zeros(nl)
        self.link_busy = np.zeros(nl)
        self.link_peak = np.zeros(nl)
        self.record = record
        self.start = np.empty(self.T) if record else None   # every entry gets written
        self.end = np.empty(self.T) if record else None
        # the link that set each transfer's rate longest, and for how long (s); -1: its
        # route's narrowest (it never shared a link, or it moved no bytes)
        self.limit = np.full(self.T, -1, dtype=np.int64) if record else None
        self.limit_s = np.zeros(self.T) if record else None
        self.rank_end = offsets.copy()
        self.events = 0

    def sizes(self, a: int, b: int) -> np.ndarray:
        return self.chunk_bytes[self.s.chunk[a:b]]


# --- the contention-free sweep --------------------------------------------------------

def _sweep_uncontended(run: _Run) -> bool:
    """Simulate step mode assuming no link is ever shared; False if that turns out wrong.

    Each step: start = max(arrival of src, arrival of dst); end = start + message
    overhead + bytes / narrowest bandwidth + latency; a rank's next arrival = max(end
    of its transfers) + its reductions. The assumption holds if no two byte phases
    ``[start + message overhead, end - latency)`` overlap on a link. Links next to a
    gpu carry only that gpu's own sends (or receives), which step semantics already
    serialize from one step to the next, so they only need checking inside a step: no
    rank may send (or receive) twice in one step. Links between switches are checked
    flow by flow: a byte phase must begin no earlier than the last one on each of its
    links ended (in step order, which is stricter than time order, so the check can
    only fail safe), and two flows of one step must not share one.

    Link figures are summed per route and spread over the routes' links at the end:
    with no sharing, a link's busy time and bytes are the sums over the flows on it.
    """
    s, R, P = run.s, run.router, run.P
    A = run.offsets.copy()
    nl = len(run.link_bw)
    busy_until = np.zeros(nl)
    stamp = np.zeros(nl, dtype=np.int64)
    gamma = run.gamma
    sizes = run.chunk_bytes
    uniform = len(sizes) > 0 and bool((sizes == sizes[0]).all()) and sizes[0] > 0
    # per route: how many transfers took it (uniform sizes), or their bytes and busy time
    route_count = np.zeros(0)
    route_bytes = np.zeros(0)
    route_busy = np.zeros(0)
    route_time = np.zeros(0)        # latency + transfer time of one uniform chunk
    for st in range(run.nsteps):
        a, b = int(run.step_ptr[st]), int(run.step_ptr[st + 1])
        if a == b:
            continue
        src = s.src[a:b].astype(np.intp)   # numpy gathers 3x faster with intp indices
        dst = s.dst[a:b].astype(np.intp)
        t0 = np.maximum(A[src], A[dst])
        rid = R.route_ids(src, dst, s.chunk[a:b], st)
        if len(route_count) < R.nroutes:
            grow = np.zeros(R.nroutes - len(route_count))
            route_count = np.concatenate((route_count, grow))
            route_bytes = np.concatenate((route_bytes, grow))
            route_busy = np.concatenate((route_busy, grow))
            if uniform:
                route_time = (R.route_latency + run.overhead + run.message_overhead
                              + sizes[0] / R.route_bandwidth)
        if uniform:
            te = t0 + route_time[rid]
            np.add.at(route_count, rid, 1.0)
            size = sizes[0]
        else:
            size = sizes[s.chunk[a:b]]
            dur = size / R.route_bandwidth[rid]
            te = (t0 + (R.route_latency[rid] + run.overhead + run.message_overhead)) + dur
            np.add.at(route_bytes, rid, size)
            np.add.at(route_busy, rid, dur)
        if run.record:
            run.start[a:b] = t0
            run.end[a:b] = te
        if (np.bincount(src, minlength=P).max() > 1
                or np.bincount(dst, minlength=P).max() > 1):
            # a rank sends or receives twice in this step: check every link
            sel = np.arange(b - a) if uniform else np.flatnonzero(size > 0)
            edges, cnt = R.route_links(rid[sel])
        else:
            fab = R.route_has_fabric[rid]
            if not uniform:
                fab &= size > 0
            sel = np.flatnonzero(fab)
            edges, cnt = R.route_fabric_links(rid[sel])
        if len(edges):
            tb_e = np.repeat(t0[sel] + run.message_overhead, cnt)
            if (tb_e < busy_until[edges]).any():
                return False
            pos = np.arange(len(edges))
            stamp[edges] = pos
            if (stamp[edges] != pos).any():   # two flows of this step on one link
                return False
            sent = te[sel] - (R.route_latency[rid[sel]] + run.overhead)
            busy_until[edges] = np.repeat(sent, cnt)
        np.maximum.at(A, src, te)
        np.maximum.at(A, dst, te)
        if gamma:
            red = s.reduce[a:b]
            if red.any():
                d = dst[red]
                got = size if uniform else size[red]
                np.add.at(A, d, gamma * run.slow[d] * got)
        run.events += 1
    if uniform:
        route_bytes = route_count * sizes[0]
        route_busy = route_count * (sizes[0] / R.route_bandwidth[:len(route_count)])
    used = np.flatnonzero(route_bytes > 0)
    edges, cnt = R.route_links(used)
    run.link_busy = np.bincount(edges, weights=np.repeat(route_busy[used], cnt), minlength=nl)
    run.link_bytes = np.bincount(edges, weights=np.repeat(route_bytes[used], cnt), minlength=nl)
    util = np.repeat(R.route_bandwidth[used], cnt) / run.link_bw[edges]
    np.maximum.at(run.link_peak, edges, util)
    run.rank_end = A
    return True


# --- the event-driven engine ----------------------------------------------------------
#
# Most contended runs bring one or two transfers an event, where a numpy call on a tiny
# array costs more than the work itself: the engine keeps its state in Python scalars
# (lists, dicts, heaps) and batches only what is naturally per step (routes, sizes).
# Every floating-point operation is the one the model states, in the same order, so the
# results do not depend on how the state is stored.

class _Step:
    """One step's transfers as Python lists: routes, sizes and who sends to whom.

    Built when the step is first needed and dropped once all its transfers have ended.
    ``src_keys``/``src_tids`` (``dst_keys``/``dst_tids``) list the step's transfers by
    sending (receiving) rank, ties in schedule order, for :func:`bisect` lookups.
    """

    __slots__ = ("a", "left", "rid", "size", "src", "dst", "reduce",
                 "src_keys", "src_tids", "dst_keys", "dst_tids")

    def __init__(self, run: _Run, st: int) -> None:
        s = run.s
        a, b = int(run.step_ptr[st]), int(run.step_ptr[st + 1])
        self.a = a
        self.left = b - a
        src = s.src[a:b].astype(np.intp)
        dst = s.dst[a:b].astype(np.intp)
        chunk = s.chunk[a:b]
        self.rid = run.router.route_ids(src, dst, chunk, st).tolist()
        self.size = run.chunk_bytes[chunk].tolist()
        self.src = src.tolist()
        self.dst = dst.tolist()
        self.reduce = s.reduce[a:b].tolist()
        order = np.argsort(src, kind="stable")
        self.src_keys, self.src_tids = src[order].tolist(), (order + a).tolist()
        order = np.argsort(dst, kind="stable")
        self.dst_keys, self.dst_tids = dst[order].tolist(), (order + a).tolist()

    def sent_by(self, rank: int) -> list[int]:
        """Transfer ids of this step that ``rank`` sends, in schedule order."""
        lo = bisect_left(self.src_keys, rank)
        return self.src_tids[lo:bisect_right(self.src_keys, rank, lo)]

    def received_by(self, rank: int) -> list[int]:
        """Transfer ids of this step that ``rank`` receives, in schedule order."""
        lo = bisect_left(self.dst_keys, rank)
        return self.dst_tids[lo:bisect_right(self.dst_keys, rank, lo)]

    def involves(self, rank: int) -> bool:
        return bool(self.sent_by(rank) or self.received_by(rank))


class _Flow:
    """One started transfer: its route, then (in the byte phase) its rate and progress.

    ``seq`` orders flows the way they entered their current phase; ``t`` is when the
    byte phase is projected to end (s); ``rem`` the bytes left at ``tupd`` (s);
    ``version`` invalidates heap entries of an older projection; ``held`` sums, per
    link, the seconds that link set the flow's rate (the bottleneck accounting).
    """

    __slots__ = ("tid", "step", "size", "links", "bw", "latency", "narrow", "weight", "seq",
                 "rate", "rem", "tupd", "t", "version", "limit", "held")

    def __init__(self, tid: int, step: int, size: float, links: tuple, bw: float,
                 latency: float, narrow: int = -1, weight: float = 1.0) -> None:
        self.tid, self.step, self.size, self.links, self.bw = tid, step, size, links, bw
        self.latency = latency
        self.weight = weight  # its share of a full link, relative (1.0 under max-min)
        self.narrow = narrow  # the route's narrowest link: the limit of a flow alone
        self.limit = -1       # the link that sets the current rate (saturated, max-min)
        self.held: dict = {}  # link -> seconds it set this flow's rate
        self.seq = 0
        self.rate = 0.0
        self.rem = size
        self.tupd = 0.0
        self.t = _INF
        self.version = 0


class _EventEngine:
    """Discrete-event simulation with max-min fair rates (step or dataflow mode).

    Three heaps hold what may happen next: arrivals (flows whose bytes are all sent,
    paying their latency), projected byte-phase ends (stale entries skipped by
    version) and timers (rank advances, data releases, delayed starts). Started flows
    enter their byte phase in the batch that starts them. Everything due within
    ``_RTOL_T`` of the earliest is one batch, handled in the order flows entered their
    phase and timers were set.
    """

    def __init__(self, run: _Run, mode: str, progress=None) -> None:
        self.run = run
        self.mode = mode
        self.progress = progress
        self.R = run.router
        self.routes: dict[int, tuple] = {}   # rid -> (links, latency, bw, narrowest, weight)
        self.steps: dict[int, _Step] = {}
        nl = len(run.link_bw)
        self.link_bw = run.link_bw.tolist()
        self.nflow_on = [0] * nl
        self.flows_on: list[set] = [set() for _ in range(nl)]   # byte-phase flows per link
        self.busy_since = [0.0] * nl
        self.link_busy = run.link_busy.tolist()
        self.link_bytes = run.link_bytes.tolist()
        self.link_peak = run.link_peak.tolist()
        self.arr_heap: list = []    # (arrival, seq, flow): bytes sent, latency running
        self.entering: list = []    # flows started in this batch, to enter the byte phase
        self.posting: dict = {}     # tid -> flow paying its message overhead
        self.byt_heap: list = []    # (projected end, tick, version, flow)
        self.timers: list = []      # (time, tick, kind, id); kinds: see _fire
        self.tick = 0
        self.done = 0
        s = run.s
        if mode == "step":
            P = run.P
            self.at_step = [-1] * P
            self.pending = [0] * P
            self.red_bytes = [0.0] * P
            self.arriving = [False] * P
            first, last = _rank_spans(s)
            self.first, self.last = first.tolist(), last.tolist()
            for r, when in enumerate(run.offsets.tolist()):
                self._timer(when, 0, r)
        else:
            indptr, indices = s.dependencies()
            npred = np.diff(indptr)
            order = np.argsort(indices, kind="stable")
            self.succ = np.repeat(np.arange(run.T), npred)[order]
            self.succ_ptr = np.concatenate(
                ([0], np.cumsum(np.bincount(indices, minlength=run.T))))
            self.fifo_next = fifo_next(s)
            self.npred = npred + np.bincount(self.fifo_next[self.fifo_next >= 0],
                                             minlength=run.T)
            roots = np.flatnonzero(self.npred == 0)
            when = np.maximum(run.offsets[s.src[roots]], run.offsets[s.dst[roots]])
            for tid, w in zip(roots.tolist(), when.tolist()):
                self._timer(w, 2, tid)

    # --- bookkeeping ----------------------------------------------------------------

    def _next_tick(self) -> int:
        self.tick += 1
        return self.tick

    def _timer(self, when: float, kind: int, ident: int) -> None:
        heappush(self.timers, (when, self._next_tick(), kind, ident))

    def _step(self, st: int) -> _Step:
        step = self.steps.get(st)
        if step is None:
            step = self.steps[st] = _Step(self.run, st)
        return step

    def _route(self, rid: int) -> tuple:
        """``(links, latency s, bandwidth B/s, narrowest link, sharing weight)`` of route
        ``rid``, cached as Python values."""
        got = self.routes.get(rid)
        if got is None:
            R = self.R
            links = tuple(R.route_edges[R.route_ptr[rid]:R.route_ptr[rid + 1]].tolist())
            narrow = min(links, key=lambda link: (self.link_bw[link], link)) if links else -1
            weight = 1.0
            if self.run.sharing == "rtt":   # TCP-like: a share inversely proportional to RTT
                weight = 1.0 / max(float(R.route_latency[rid]), RTT_FLOOR)
            got = self.routes[rid] = (links, float(R.route_latency[rid]) + self.run.overhead,
                                      float(R.route_bandwidth[rid]), narrow, weight)
        return got

    # --- the loop -------------------------------------------------------------------

    def _next_time(self) -> float:
        byt = self.byt_heap
        while byt and byt[0][2] != byt[0][3].version:
            heappop(byt)                       # a projection that a re-rating replaced
        return min(self.arr_heap[0][0] if self.arr_heap else _INF,
                   byt[0][0] if byt else _INF,
                   self.timers[0][0] if self.timers else _INF)

    def run_all(self) -> None:
        run = self.run
        while True:
            t = self._next_time()
            if t == _INF:
                break
            run.events += 1
            if self.progress is not None and run.events % PROGRESS_EVERY == 0:
                self.progress(self.done, run.T)
            self._batch(t, t + max(abs(t) * _RTOL_T, 1e-300))
        run.link_busy = np.array(self.link_busy)
        run.link_bytes = np.array(self.link_bytes)
        run.link_peak = np.array(self.link_peak)
        if self.done != run.T:
            raise CommsimError(f"simulate: {run.T - self.done} transfers never ran; the "
                               "schedule is not executable (a rank waits on a step no "
                               "partner reaches)")

    def _batch(self, t: float, tt: float) -> None:
        """Handle everything due by ``tt`` as happening at ``t``, cascades included."""
        entered: list[_Flow] = []      # flows that started moving bytes
        left: list[_Flow] = []         # flows that ended their byte phase
        while True:
            fin = self._pop_finished(tt)
            if fin:
                left += fin
                self._sent(fin, t)
            arrived = _pop_due(self.arr_heap, tt)
            if arrived:
                self._complete([entry[2] for entry in arrived], t)
            due = _pop_due(self.timers, tt)
            if due:
                self._fire(due, t)
            new = self.entering
            if new:
                self.entering = []
                self._enter(new, t, entered)
            if not (fin or arrived or due or new):
                break
        if entered or left:
            self._rerate(t, entered, left)

    def _pop_finished(self, tt: float) -> list[_Flow]:
        """Flows whose byte phase ends by ``tt``, in the order they entered it."""
        out = [entry[3] for entry in _pop_due(self.byt_heap, tt)
               if entry[2] == entry[3].version]
        if len(out) > 1:
            out.sort(key=lambda f: f.seq)
        for f in out:
            f.version = -1
        return out

    def _enter(self, flows: list, t: float, entered: list) -> None:
        """``flows`` start at ``t``: move bytes, or (with none to move) pay the latency."""
        zero = [f for f in flows if f.size <= 0]
        if zero:
            self._sent(zero, t)
        for f in flows:
            if f.size > 0:
                f.seq = self._next_tick()
                f.tupd = t
                entered.append(f)

    def _sent(self, flows: list, t: float) -> None:
        """``flows`` have sent their last byte at ``t``: their connections are free for
        the next transfer (dataflow), and each arrives after its route's latency.

        Without ``overlap`` the receiver's one core reduces what came before the next
        transfer on the connection moves: that waits out the reduction too."""
        if self.mode == "dataflow":
            fifo, run = self.fifo_next, self.run
            now = []
            for f in flows:
                nxt = int(fifo[f.tid])
                if nxt < 0:
                    continue
                delay = 0.0
                if not run.overlap:
                    step = self.steps[f.step]
                    i = f.tid - step.a
                    if step.reduce[i]:
                        delay = run.gamma * float(run.slow[step.dst[i]]) * f.size
                if delay > 0:
                    self._timer(t + delay, 4, nxt)
                else:
                    now.append(nxt)
            self._unblock(now, t)
        limit, held = self.run.limit, self.run.limit_s
        for f in flows:
            heappush(self.arr_heap, (t + f.latency, self._next_tick(), f))
            if f.limit >= 0:
                f.held[f.limit] = f.held.get(f.limit, 0.0) + (t - f.tupd)
                if limit is not None:
                    link = max(f.held, key=lambda k: (f.held[k], -k))
                    limit[f.tid], held[f.tid] = link, f.held[link]

    # --- starting and completing transfers ------------------------------------------

    def _start(self, tids: list[int], t: float) -> None:
        run, step_of = self.run, self.run.s.step
        start = run.start
        for tid in tids:
            st = int(step_of[tid])
            step = self._step(st)
            i = tid - step.a
            links, latency, bw, narrow, weight = self._route(step.rid[i])
            start[tid] = t
            flow = _Flow(tid, st, step.size[i], links, bw, latency, narrow, weight)
            if self.run.message_overhead > 0:
                self.posting[tid] = flow
                self._timer(t + self.run.message_overhead, 3, tid)
            else:
                self.entering.append(flow)

    def _complete(self, flows: list[_Flow], t: float) -> None:
        run = self.run
        self.done += len(flows)
        end = run.end
        for f in flows:
            end[f.tid] = t
        if self.mode == "step":
            self._complete_step(flows, t)
        else:
            self._complete_dataflow(flows, t)
        for f in flows:
            step = self.steps[f.step]
            step.left -= 1
            if step.left == 0:
                del self.steps[f.step]

    def _complete_step(self, flows: list[_Flow], t: float) -> None:
        run, pending, red_bytes = self.run, self.pending, self.red_bytes
        touched = []
        for f in flows:
            step = self.steps[f.step]
            i = f.tid - step.a
            src, dst = step.src[i], step.dst[i]
            pending[src] -= 1
            pending[dst] -= 1
            if step.reduce[i]:
                red_bytes[dst] += f.size
            touched += (src, dst)
        if len(touched) > 2:
            touched = sorted(set(touched))
        now = []
        for r in touched:
            if pending[r] != 0:
                continue
            delay = run.gamma * float(run.slow[r]) * red_bytes[r]
            red_bytes[r] = 0.0
            if delay > 0:
                self._timer(t + delay, 0, r)
            else:
                now.append(r)
        if now:
            self._advance(now, t)

    def _complete_dataflow(self, flows: list[_Flow], t: float) -> None:
        run = self.run
        released = []
        for f in flows:
            step = self.steps[f.step]
            i = f.tid - step.a
            delay = (run.gamma * float(run.slow[step.dst[i]]) * f.size
                     if step.reduce[i] else 0.0)
            if delay > 0:
                self._timer(t + delay, 1, f.tid)
            else:
                released.append(f.tid)
        if released:
            self._release(released, t)

    def _fire(self, due: list, t: float) -> None:
        """Timers due now, by kind: 0 = ranks advance, 1 = data released, 2 = starts,
        3 = message overheads paid (those flows move bytes now), 4 = connections free."""
        for kind, act in ((0, self._advance), (1, self._release), (2, self._start),
                          (3, self._posted), (4, self._unblock)):
            ids = [entry[3] for entry in due if entry[2] == kind]
            if ids:
                act(ids, t)

    def _posted(self, tids: list[int], t: float) -> None:
        self.entering += [self.posting.pop(tid) for tid in tids]

    # --- dataflow -------------------------------------------------------------------

    def _release(self, tids: list[int], t: float) -> None:
        """The data of ``tids`` is in place: successors may start."""
        succ, ptr = self.succ, self.succ_ptr
        out: list[int] = []
        for tid in tids:
            out += succ[ptr[tid]:ptr[tid + 1]].tolist()
        self._unblock(out, t)

    def _unblock(self, succ: list[int], t: float) -> None:
        """One predecessor of each of ``succ`` is satisfied; start those with none left."""
        if not succ:
            return
        npred = self.npred
        for tid in succ:
            npred[tid] -= 1
        ready = sorted({tid for tid in succ if npred[tid] == 0})
        run, s = self.run, self.run.s
        now = []
        for tid in ready:
            when = max(float(run.offsets[s.src[tid]]), float(run.offsets[s.dst[tid]]))
            if when > t:
                self._timer(when, 2, tid)
            else:
                now.append(tid)
        self._start(now, t)

    # --- step mode: ranks advance ------------------------------------------------------

    def _target(self, rank: int) -> int:
        """The next step ``rank`` takes part in, or ``nsteps`` when it has none left."""
        cur = self.at_step[rank]
        st = self.first[rank] if cur < 0 else cur + 1
        while st <= self.last[rank]:
            if self._step(st).involves(rank):
                return st
            st += 1
        return self.run.nsteps

    def _advance(self, ranks: list[int], t: float) -> None:
        """``ranks`` have finished their step at ``t``: move each to its next step."""
        run, at_step, arriving = self.run, self.at_step, self.arriving
        moving = []
        for r in ranks:
            st = self._target(r)
            at_step[r] = st
            if st >= run.nsteps:
                run.rank_end[r] = t
            else:
                moving.append(r)
        for r in moving:
            arriving[r] = True
        for st in sorted({at_step[r] for r in moving}):
            self._enter_step(st, [r for r in moving if at_step[r] == st], t)
        for r in moving:
            arriving[r] = False

    def _enter_step(self, st: int, ranks: list[int], t: float) -> None:
        """``ranks`` reach step ``st``: start its transfers whose partner is there too.

        A transfer between two ranks arriving together starts once, from its sender.
        """
        step, at_step, arriving = self._step(st), self.at_step, self.arriving
        sends = [step.sent_by(r) for r in ranks]
        receives = [step.received_by(r) for r in ranks]
        for r, out, inc in zip(ranks, sends, receives):
            self.pending[r] = len(out) + len(inc)
        a, src, dst = step.a, step.src, step.dst
        tids = [tid for out in sends for tid in out if at_step[dst[tid - a]] == st]
        tids += [tid for inc in receives for tid in inc
                 if at_step[src[tid - a]] == st and not arriving[src[tid - a]]]
        self._start(tids, t)

    # --- rates ------------------------------------------------------------------------

    def _rerate(self, t: float, entered: list[_Flow], left: list[_Flow]) -> None:
        """Flows entered or left the byte phase at ``t``: update links, then rates."""
        n_on, flows_on = self.nflow_on, self.flows_on
        for f in left:
            for link in f.links:
                n_on[link] -= 1
                flows_on[link].discard(f)
        for f in left:
            for link in f.links:
                if n_on[link] == 0:     # idle now; a second visit adds 0
                    self.link_busy[link] += t - self.busy_since[link]
                    self.busy_since[link] = t
        for f in entered:
            for link in f.links:
                if n_on[link] == 0:
                    self.busy_since[link] = t
                n_on[link] += 1
                flows_on[link].add(f)
        alone = (all(n_on[link] == 1 for f in entered for link in f.links)
                 and all(n_on[link] == 0 for f in left for link in f.links))
        link_bytes = self.link_bytes
        for f in entered:
            for link in f.links:
                link_bytes[link] += f.size
        if alone:
            # every new flow is alone on its links and no survivor gained room
            for f in entered:
                for link in f.links:
                    self.link_peak[link] = max(self.link_peak[link], f.bw / self.link_bw[link])
                self._set_rate(f, f.bw, t, f.narrow)
            return
        seeds = [link for f in entered for link in f.links]
        seeds += [link for f in left for link in f.links]
        self._maxmin(t, seeds)

    def _set_rate(self, f: _Flow, rate: float, t: float, limit: int) -> None:
        """Give ``f`` a new rate from ``t`` on, set by link ``limit``, and project its end."""
        if f.limit >= 0 and t > f.tupd:
            f.held[f.limit] = f.held.get(f.limit, 0.0) + (t - f.tupd)
        f.limit = limit
        f.rem = max(f.rem - f.rate * (t - f.tupd), 0.0)
        f.tupd = t
        f.rate = rate
        f.t = t + f.rem / rate if rate > 0 else _INF
        f.version += 1
        if f.t < _INF:
            heappush(self.byt_heap, (f.t, self._next_tick(), f.version, f))

    def _component(self, seeds: list[int]) -> list[_Flow]:
        """The byte-phase flows connected to ``seeds`` links through shared links."""
        flows_on = self.flows_on
        seen_links = set(seeds)
        todo = list(seen_links)
        found: set = set()
        while todo:
            for f in flows_on[todo.pop()]:
                if f in found:
                    continue
                found.add(f)
                for link in f.links:
                    if link not in seen_links:
                        seen_links.add(link)
                        todo.append(link)
        return sorted(found, key=lambda f: f.seq)

    def _maxmin(self, t: float, seeds: list[int]) -> None:
        """Re-rate the flows connected to ``seeds`` links by progressive filling."""
        flows = self._component(seeds)
        if not flows:
            return
        if sum(len(f.links) for f in flows) > _NUMPY_FILL:
            rates, load, limits = _fill_numpy(flows, self.run.link_bw)
        else:
            rates, load, limits = _fill_python(flows, self.link_bw)
        peak, bw = self.link_peak, self.link_bw
        for link, value in load:
            peak[link] = max(peak[link], value / bw[link])
        for f, rate, limit in zip(flows, rates, limits):
            if rate != f.rate or limit != f.limit:
                self._set_rate(f, rate, t, limit)


# Progressive filling: raise every flow's rate together, each in proportion to its weight
# (all 1 under max-min), until a link is full (within 1e-12), freeze the flows on it,
# repeat. Both versions below do the same arithmetic in the same order (rates, then each
# link's load summed flow by flow), so they agree to the bit; numpy pays off above this
# many flow-link incidences.
_NUMPY_FILL = 128
RTT_FLOOR = 1e-9  # s: under rtt sharing a route of no latency weighs as one of 1 ns


def _fill_python(flows: list[_Flow], link_bw: list[float]) -> tuple[list, list, list]:
    """Weighted max-min fair rates (B/s) of ``flows``, ``(link, load B/s)`` of their
    links, and each flow's limit: the lowest-numbered full link that froze it."""
    cap: dict[int, float] = {}
    nfl: dict[int, float] = {}   # the weight of the flows still rising, per link
    rising: dict[int, int] = {}  # and how many they are
    for f in flows:
        for link in f.links:
            if link in nfl:
                nfl[link] += f.weight
                rising[link] += 1
            else:
                nfl[link] = f.weight
                rising[link] = 1
                cap[link] = link_bw[link]
    rate = [0.0] * len(flows)
    limit = [-1] * len(flows)
    live = list(range(len(flows)))
    while live:
        share = {link: max(cap[link], 0.0) / n for link, n in nfl.items() if rising[link]}
        m = min(share.values())
        full = {link for link, v in share.items() if v <= m * (1 + 1e-12)}
        frozen: dict[int, float] = {}
        still = []
        for i in live:
            if full.isdisjoint(flows[i].links):
                still.append(i)
                continue
            w = flows[i].weight
            rate[i] = w * m
            limit[i] = min(full.intersection(flows[i].links))
            for link in flows[i].links:
                frozen[link] = frozen.get(link, 0.0) + w
                rising[link] -= 1
        for link, k in frozen.items():
            cap[link] -= k * m
            nfl[link] -= k
        live = still
    load = dict.fromkeys(nfl, 0.0)
    for f, r in zip(flows, rate):
        for link in f.links:
            load[link] += r
    return rate, list(load.items()), limit


def _fill_numpy(flows: list[_Flow], link_bw: np.ndarray) -> tuple[list, list, list]:
    """:func:`_fill_python` over the flow-link incidence in numpy, for big components."""
    counts = [len(f.links) for f in flows]
    inc_l = np.fromiter(chain.from_iterable(f.links for f in flows), np.int64, sum(counts))
    inc_f = np.repeat(np.arange(len(flows)), counts)
    links, inv = np.unique(inc_l, return_inverse=True)
    cap = link_bw[links].copy()
    weight = np.fromiter((f.weight for f in flows), np.float64, len(flows))
    w_inc = weight[inc_f]
    nfl = np.bincount(inv, weights=w_inc, minlength=len(links))
    rising = np.bincount(inv, minlength=len(links))
    rate = np.zeros(len(flows))
    limit = np.full(len(flows), np.iinfo(np.int64).max)
    frozen = np.zeros(len(flows), dtype=bool)
    live = np.ones(len(inc_f), dtype=bool)
    while live.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(rising > 0, np.maximum(cap, 0.0) / nfl, _INF)
        m = share.min()
        hit = live & (share <= m * (1 + 1e-12))[inv]
        rate[inc_f[hit]] = weight[inc_f[hit]] * m
        np.minimum.at(limit, inc_f[hit], inc_l[hit])
        frozen[inc_f[hit]] = True
        now = live & frozen[inc_f]
        k = np.bincount(inv[now], weights=w_inc[now], minlength=len(links))
        cap -= k * m
        nfl -= k
        rising -= np.bincount(inv[now], minlength=len(links))
        live &= ~now
    load = np.bincount(inv, weights=rate[inc_f], minlength=len(links))
    return rate.tolist(), list(zip(links.tolist(), load.tolist())), limit.tolist()


def _pop_due(heap: list, tt: float) -> list:
    """Pop the entries of ``heap`` due by ``tt``, in the order they were pushed."""
    out = []
    while heap and heap[0][0] <= tt:
        out.append(heappop(heap))
    if len(out) > 1:
        out.sort(key=lambda entry: entry[1])
    return out


PROGRESS_EVERY = 2048  # events between progress reports


def fifo_next(s: Schedule) -> np.ndarray:
    """The next transfer on the same connection (src, dst) in schedule order, or -1."""
    key = s.src.astype(np.int64) * s.nranks + s.dst.astype(np.int64)
    order = np.argsort(key, kind="stable")
    same = key[order[1:]] == key[order[:-1]]
    out = np.full(len(s), -1, dtype=np.int64)
    out[order[:-1][same]] = order[1:][same]
    return out


def _rank_spans(s: Schedule) -> tuple[np.ndarray, np.ndarray]:
    """First and last step each rank takes part in (``nsteps`` and -1 for idle ranks).

    Scans from each end only until every rank has been seen, so a schedule in which
    every rank acts in the first and last steps (rings) costs two steps' work.
    """
    P, T, n = s.nranks, len(s), s.nsteps
    first = np.full(P, n, dtype=np.int64)
    last = np.full(P, -1, dtype=np.int64)
    block = max(1 << 16, 4 * P)
    for lo in range(0, T, block):
        hi = min(T, lo + block)
        st = s.step[lo:hi].astype(np.int64)
        np.minimum.at(first, s.src[lo:hi].astype(np.int64), st)
        np.minimum.at(first, s.dst[lo:hi].astype(np.int64), st)
        if (first < n).sum() == P or hi == T:
            break
    for hi in range(T, 0, -block):
        lo = max(0, hi - block)
        st = s.step[lo:hi].astype(np.int64)
        np.maximum.at(last, s.src[lo:hi].astype(np.int64), st)
        np.maximum.at(last, s.dst[lo:hi].astype(np.int64), st)
        if (last >= 0).sum() == P:
            break
    return first, last


# --- entry point ------------------------------------------------------------------------

def simulate(schedule: Schedule, topology: nx.DiGraph, nbytes: int, placement=None,
             routing: str = "ecmp", mode: str = "step", gamma: float = 0.0,
             start_offsets=None, reduce_slowdown=None, *, record_transfers: bool = True,
             ecmp_width: int = 16, engine: str = "auto", router: Router | None = None,
             progress=None, overhead: float = 0.0, message_overhead: float = 0.0,
             overlap: bool = True, sharing: str = "maxmin"):
    """Play ``schedule`` over ``topology`` for an ``nbytes`` buffer; a :class:`SimResult`.

    ``nbytes`` follows REFERENCE.md's size convention for the schedule's collective
    (one rank's buffer; the whole gathered buffer for allgather and reduce_scatter),
    split into the schedule's chunks with 1-byte elements. ``placement`` maps rank ->
    gpu node (a list, or a dict ``{rank: node}``; default: the topology's gpus in
    order). ``routing``: ``"ecmp"`` or ``"static"``. ``mode``: ``"step"`` (default) or
    ``"dataflow"``. ``gamma``: seconds per byte of reduction at the receiver of a
    reducing transfer; ``reduce_slowdown={rank: factor}`` multiplies it per rank.
    ``start_offsets={rank: seconds}``: when each rank enters the collective.
    ``record_transfers=False`` drops the per-transfer start/end arrays (16 bytes a
    transfer). ``engine``: ``"auto"`` (the contention-free sweep when it applies, else
    events), ``"events"`` (always the event engine) or ``"sweep"`` (fail if contended).
    ``progress(done, total)``, if given, is called now and then by the event engine
    with the number of transfers completed (for progress bars on long runs).
    ``overhead``: seconds added to every transfer's latency, the executor's fixed cost a
    message (a calibrated profile's ``step_overhead``; the model adds it to alpha).
    ``message_overhead``: seconds every transfer holds its connection before its first
    byte moves (a profile's ``message_overhead``: posting a message costs the executor
    that much; pieces streaming down a connection pay it each, unlike the latency).
    ``sharing``: ``"maxmin"`` (every flow on a full link gets the same share: RDMA
    fabrics, NCCL over InfiniBand) or ``"rtt"`` (each flow's share is inversely
    proportional to its route's latency, as TCP's congestion control and SimGrid's CM02
    model give: on one 10 GB/s link, routes of 1 and 3 us get 7.5 and 2.5 GB/s).
    ``overlap=False`` (dataflow): a rank's one core reduces and moves its bytes, so a
    connection's next transfer waits until the receiver has reduced the one before
    (the model's ``overlap=False``); step mode never overlaps the two anyway.
    """
    from commsim.sim.result import SimResult

    if mode not in MODES:
        raise CommsimError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if sharing not in SHARINGS:
        raise CommsimError(f"sharing: {sharing!r} is not one of {', '.join(SHARINGS)}")
    if engine not in ENGINES:
        raise CommsimError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise CommsimError(f"size: {nbytes!r} must be a whole number of bytes >= 0")
    gamma, overhead, message_overhead = float(gamma), float(overhead), float(message_overhead)
    if not np.isfinite(gamma) or gamma < 0:
        raise CommsimError(f"gamma: {gamma!r} must be a finite number of seconds per byte >= 0")
    for field, value in (("overhead", overhead), ("message_overhead", message_overhead)):
        if not np.isfinite(value) or value < 0:
            raise CommsimError(f"{field}: {value!r} must be a finite number of seconds >= 0")
    P = schedule.nranks
    wall0 = _time.perf_counter()
    if len(schedule) and max(int(schedule.src.max()), int(schedule.dst.max())) >= P:
        raise CommsimError(f"schedule: a transfer names a rank >= nranks={P}")
    if router is None:
        router = Router(topology, _placement(topology, P, placement), routing, ecmp_width)
    offsets = _per_rank(start_offsets, P, 0.0, "start_offsets")
    slowdown = _per_rank(reduce_slowdown, P, 1.0, "reduce_slowdown")
    run = _Run(schedule, router, int(nbytes), gamma, offsets, slowdown, record_transfers,
               overhead, message_overhead, overlap, sharing)
    used = "events"
    if mode == "step" and engine in ("auto", "sweep") and _sweep_uncontended(run):
        used = "sweep"
    elif engine == "sweep":
        raise CommsimError("engine: 'sweep' needs a contention-free step-mode run; this "
                           "one shares links (use engine='auto')")
    else:
        run = _Run(schedule, router, int(nbytes), gamma, offsets, slowdown, True, overhead,
                   message_overhead, overlap, sharing)
        _EventEngine(run, mode, progress).run_all()
        if mode == "dataflow":
            red = schedule.reduce
            ends = run.end + np.where(
                red, gamma * slowdown[schedule.dst] * run.chunk_bytes[schedule.chunk], 0.0)
            done = offsets.copy()
            np.maximum.at(done, schedule.src.astype(np.int64), run.end)
            np.maximum.at(done, schedule.dst.astype(np.int64), ends)
            run.rank_end = done
        if not record_transfers:
            run.start = run.end = None
    wall = _time.perf_counter() - wall0
    return SimResult.from_run(run, schedule, topology, mode=mode, engine=used, wall=wall)
