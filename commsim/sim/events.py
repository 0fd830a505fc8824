"""The discrete-event engine: flows over links at max-min fair rates.

Step mode (the executors' semantics) or dataflow mode; see :func:`commsim.sim.simulate`
for the model and docs/simulator.md for the design.
"""

from __future__ import annotations

from bisect import bisect_left, bisect_right
from heapq import heappop, heappush
from math import fsum

import numpy as np

from commsim.errors import CommsimError
from commsim.sim.maxmin import RTT_FLOOR, fill_heap, fill_python
from commsim.sim.run import Run, fifo_next, rank_spans

_RTOL_T = 1e-13   # events closer than this (relative) are one instant
_INF = np.inf
PROGRESS_EVERY = 2048  # events between progress reports
_FULL_RTOL = 1e-9     # a link is full, a rate the most on a link, within this (relative)
SMALL_FILL = 8        # fills of at most this many items: fill_python (same bits, no heap)


# # Most contended runs bring one or two transfers an event, where a numpy call on a tiny
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

    def __init__(self, run: Run, st: int) -> None:
        s = run.s
        a, b = int(run.step_ptr[st]), int(run.step_ptr[st + 1])
        self.a = a
        self.left = b - a
        src = s.src[a:b].astype(np.intp)
        dst = s.dst[a:b].astype(np.intp)
        chunk = s.chunk[a:b]
        self.rid = run.route_ids(src, dst, a, b, st).tolist()
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
                 "rate", "rem", "tupd", "t", "version", "limit", "held", "cls")
    count = 1   # a fill item of one flow (maxmin.fill_python)

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
        self.cls: _Class | None = None   # while in the byte phase


class _Class:
    """The byte-phase flows over one route (the same links, so the same weight).

    Progressive filling gives flows over the same links the same rate and limit, and a
    re-rating takes in all the flows of a link, then more by tests of a flow's rate,
    weight and limit only, so it re-rates a class whole and the flows of a class always
    have one rate and limit (``rate``, ``limit``). The fill, the fairness checks and the
    sums of the other flows' rates then handle a class once instead of flow by flow; the
    results are those of the per-flow re-rating to the bit (tests/test_sim_maxmin.py).
    Contended runs have many flows a class: a step of rhd sends a pair dozens of chunks,
    all on one connection and so over one route (commsim.topology.routing, ECMP).
    """

    __slots__ = ("links", "weight", "flows", "count", "rate", "limit")

    def __init__(self, links: tuple, weight: float) -> None:
        self.links, self.weight = links, weight
        self.flows: set[_Flow] = set()
        self.count = 0   # len(flows), read by the fills
        self.rate = 0.0
        self.limit = -1


class EventEngine:
    """Discrete-event simulation with max-min fair rates (step or dataflow mode).

    Three heaps hold what may happen next: arrivals (flows whose bytes are all sent,
    paying their latency), projected byte-phase ends (stale entries skipped by
    version) and timers (rank advances, data releases, delayed starts). Started flows
    enter their byte phase in the batch that starts them. Everything due within
    ``_RTOL_T`` of the earliest is one batch, handled in the order flows entered their
    phase and timers were set.
    """

    def __init__(self, run: Run, mode: str, progress=None) -> None:
        self.run = run
        self.mode = mode
        self.progress = progress
        self.R = run.router
        self.routes: dict[int, tuple] = {}   # rid -> (links, latency, bw, narrowest, weight)
        self.steps: dict[int, _Step] = {}
        nl = len(run.link_bw)
        self.link_bw = run.link_bw.tolist()
        self.nflow_on = [0] * nl                                  # byte-phase flows per link
        self.classes_on: list[set] = [set() for _ in range(nl)]  # and their classes
        self.classes: dict[tuple, _Class] = {}   # (links, weight) -> class, empty or not
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
            first, last = rank_spans(s)
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
            got = self.routes[rid] = (links, float(R.route_latency[rid]),
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
        start, added = run.start, run.per_transfer
        for tid in tids:
            st = int(step_of[tid])
            step = self._step(st)
            i = tid - step.a
            links, latency, bw, narrow, weight = self._route(step.rid[i])
            latency += run.overhead if added is None else float(added[tid])
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
        """Flows entered or left the byte phase at ``t``: update links and classes, then
        rates."""
        n_on, classes, classes_on = self.nflow_on, self.classes, self.classes_on
        for f in left:
            c, f.cls = f.cls, None
            c.count -= 1
            if c.count:
                c.flows.remove(f)
                for link in f.links:
                    n_on[link] -= 1
            else:                       # empty: off the links, kept for its route
                c.flows.clear()
                for link in f.links:
                    n_on[link] -= 1
                    classes_on[link].remove(c)
        for f in left:
            for link in f.links:
                if n_on[link] == 0:     # idle now; a second visit adds 0
                    self.link_busy[link] += t - self.busy_since[link]
                    self.busy_since[link] = t
        for f in entered:
            key = _class_key(f)
            c = classes.get(key)
            if c is None:
                c = classes[key] = _Class(f.links, f.weight)
            if not c.count:
                for link in f.links:
                    classes_on[link].add(c)
            c.flows.add(f)
            c.count += 1
            f.cls = c
            for link in f.links:
                if n_on[link] == 0:
                    self.busy_since[link] = t
                n_on[link] += 1
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
                f.cls.rate, f.cls.limit = f.bw, f.narrow   # alone: its class is itself
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

    def _maxmin(self, t: float, seeds: list[int]) -> None:
        """Re-rate flows after the flow sets of ``seeds`` links changed.

        The max-min allocation is re-computed over a set C of flows only, the others
        keeping their rates: C starts as the flows on the changed links and grows by
        every flow whose rate C's new rates make unfair, until none does. Then every
        flow has a bottleneck (a full link on which no flow gets more, relative to its
        weight), which makes the allocation the max-min fair one (Bertsekas & Gallager,
        Data Networks, 6.5.2): the same rates as filling the whole connected component
        at once, to rounding (links count as full within ``_FULL_RTOL``). C is kept as
        flow classes (:class:`_Class`): it takes in or leaves out a class whole.
        """
        classes_on, bw = self.classes_on, self.link_bw
        grow: set = set()
        for link in set(seeds):
            grow.update(classes_on[link])
        if not grow:
            return
        C: set = set()
        others: dict[int, list] = {}     # per link of C's: the classes outside C on it,
        outside: dict[int, float] = {}   # their rates summed,
        cap: dict[int, float] = {}       # and what they leave
        while grow:
            C |= grow
            classes = list(C)
            # only the links of the classes C just took in have other flows to sum anew
            for link in {link for c in grow for link in c.links}:
                on = classes_on[link]
                if on <= C:                # often: a gpu's links carry C's flows only
                    others[link], outside[link], cap[link] = (), 0.0, bw[link]
                    continue
                out = others[link] = [c for c in on if c not in C]
                # fsum: exact, so neither the order a set yields the classes in nor
                # adding a class's flows as repeats of its one rate can change a bit
                rates = []
                for c in out:
                    rates += [c.rate] * c.count
                o = fsum(rates)
                outside[link] = o
                cap[link] = bw[link] - o
            links = outside.keys()
            flows = sorted([f for c in classes for f in c.flows], key=_by_seq)
            new = self._fill(classes, flows, cap)
            # each link's load as the fill of flows sums it: their rates one by one, in
            # the order they entered (a class's rate times its count rounds otherwise)
            load = dict.fromkeys(links, 0.0)
            for f in flows:
                r = new[f.cls][0]
                for link in f.links:
                    load[link] += r
            grow = self._unfair(new, others, outside, load)
        peak = self.link_peak
        for link, value in load.items():
            peak[link] = max(peak[link], (outside[link] + value) / bw[link])
        for f in flows:
            rate, limit = new[f.cls]
            if rate != f.rate or limit != f.limit:
                self._set_rate(f, rate, t, limit)
        for c, (rate, limit) in new.items():
            c.rate, c.limit = rate, limit

    @staticmethod
    def _fill(classes: list, flows: list, cap: dict) -> dict:
        """``{class: (rate, limit)}`` of progressive filling over ``cap``: class by class
        where that is exact (max-min: weights of 1 sum to whole numbers in any order,
        see :func:`fill_python`), else flow by flow in the order they entered."""
        items = classes
        if any(c.weight != 1.0 for c in classes):
            items = flows
        if len(items) > SMALL_FILL:
            rates, _, limits = fill_heap(items, cap, loads=False)
        else:
            rates, _, limits = fill_python(items, cap)
        if items is classes:
            return dict(zip(classes, zip(rates, limits)))
        return {f.cls: (r, limit) for f, r, limit in zip(flows, rates, limits)}

    def _unfair(self, new: dict, others: dict, outside: dict, load: dict) -> set:
        """The classes outside C (``others`` on each of its links) whose rates C's
        ``new`` rates make unfair: one whose bottleneck is a link of C's that is no longer
        full or on which a C flow now gets more; one on a link that froze a C flow,
        getting more there than it."""
        bw = self.link_bw
        top: dict[int, float] = {}     # per link: the most a C flow gets (per weight)
        froze: dict[int, float] = {}   # per link: the level at which it froze C flows
        for c, (r, limit) in new.items():
            v = r / c.weight
            for link in c.links:
                if v > top.get(link, 0.0):
                    top[link] = v
            if limit >= 0:
                froze[limit] = max(froze.get(limit, 0.0), v)
        out: set = set()
        hi, lo = 1.0 + _FULL_RTOL, 1.0 - _FULL_RTOL
        for link, gs in others.items():
            if not gs:
                continue
            full = outside[link] + load[link] >= bw[link] * lo
            best = top.get(link, 0.0)
            level = froze.get(link)
            for g in gs:
                v = g.rate / g.weight
                if g.limit == link and (not full or v < best * lo):
                    out.add(g)
                elif level is not None and v > level * hi:
                    out.add(g)
        return out


def _class_key(f: _Flow):
    """The flows of one class: one route (links and sharing weight). The tests put each
    flow in a class of its own (the per-flow re-rating) to check classes change no bit."""
    return f.links, f.weight


def _by_seq(f: _Flow) -> int:
    return f.seq


def _pop_due(heap: list, tt: float) -> list:
    """Pop the entries of ``heap`` due by ``tt``, in the order they were pushed."""
    out = []
    while heap and heap[0][0] <= tt:
        out.append(heappop(heap))
    if len(out) > 1:
        out.sort(key=lambda entry: entry[1])
    return out

