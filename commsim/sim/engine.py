"""The flow-level simulator: a schedule's transfers as flows over a topology.

Model (see docs/simulator.md):

- A transfer is a flow from its src rank's gpu to its dst rank's gpu along a route of
  directed links (:mod:`commsim.topology.routing`). It pays the route's latency, then
  moves its bytes at a rate that is re-computed whenever a flow starts or ends: the
  max-min fair share of every link's bandwidth among the flows crossing it
  (progressive filling).
- ``mode="step"`` (the executors' semantics): a rank reaches step ``s`` when all its
  transfers of earlier steps are complete and the reductions they brought are applied
  (``gamma`` seconds per byte, times the rank's slowdown, after the step's last
  transfer); a transfer of step ``s`` starts when both its ranks have reached ``s``.
  Ranks drift; there is no global barrier.
- ``mode="dataflow"``: a transfer starts as soon as every transfer that wrote the data
  it sends has arrived and been reduced (``Schedule.dependencies``), the previous
  transfer on its connection (same src and dst, in schedule order) has ended, and
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

import networkx as nx
import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.topology.routing import Router, expand_ranges

MODES = ("step", "dataflow")
ENGINES = ("auto", "events", "sweep")
_RTOL_T = 1e-13   # events closer than this (relative) are one instant
_INF = np.inf


# --- inputs ---------------------------------------------------------------------------

def _placement(G: nx.DiGraph, nranks: int, placement) -> list:
    all_gpus = [n for n, k in G.nodes(data="kind") if k == "gpu"]
    if placement is None:
        if len(all_gpus) < nranks:
            raise CommsimError(
                f"nranks: {nranks} ranks need {nranks} gpus; topology "
                f"{G.graph.get('name', '')!r} has {len(all_gpus)}; use fewer ranks or a "
                "bigger topology")
        return all_gpus[:nranks]
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
                 offsets: np.ndarray, slowdown: np.ndarray, record: bool) -> None:
        self.s = schedule
        self.router = router
        self.nbytes = nbytes
        self.chunk_bytes = schedule.chunk_sizes(nbytes).astype(np.float64)
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
        self.rank_end = offsets.copy()
        self.events = 0

    def sizes(self, a: int, b: int) -> np.ndarray:
        return self.chunk_bytes[self.s.chunk[a:b]]


# --- the contention-free sweep --------------------------------------------------------

def _sweep_uncontended(run: _Run) -> bool:
    """Simulate step mode assuming no link is ever shared; False if that turns out wrong.

    Each step: start = max(arrival of src, arrival of dst); end = start + latency +
    bytes / narrowest bandwidth; a rank's next arrival = max(end of its transfers) +
    its reductions. The assumption holds if no two byte phases ``[start + latency,
    end)`` overlap on a link. Links next to a gpu carry only that gpu's own sends (or
    receives), which step semantics already serialize from one step to the next, so
    they only need checking inside a step: no rank may send (or receive) twice in one
    step. Links between switches are checked flow by flow: a byte phase must begin
    no earlier than the last one on each of its links ended (in step order, which is
    stricter than time order, so the check can only fail safe), and two flows of one
    step must not share one.

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
                route_time = R.route_latency + sizes[0] / R.route_bandwidth
        if uniform:
            te = t0 + route_time[rid]
            np.add.at(route_count, rid, 1.0)
            size = sizes[0]
        else:
            size = sizes[s.chunk[a:b]]
            dur = size / R.route_bandwidth[rid]
            te = (t0 + R.route_latency[rid]) + dur
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
            tb_e = np.repeat(t0[sel] + R.route_latency[rid[sel]], cnt)
            if (tb_e < busy_until[edges]).any():
                return False
            pos = np.arange(len(edges))
            stamp[edges] = pos
            if (stamp[edges] != pos).any():   # two flows of this step on one link
                return False
            busy_until[edges] = np.repeat(te[sel], cnt)
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

class _StepIndex:
    """One step's transfers, sorted by src and by dst rank, to find a rank's transfers."""

    __slots__ = ("a", "left", "src_sorted", "src_order", "dst_sorted", "dst_order")

    def __init__(self, s: Schedule, a: int, b: int) -> None:
        self.a = a
        self.left = b - a
        src, dst = s.src[a:b], s.dst[a:b]
        self.src_order = np.argsort(src, kind="stable")
        self.src_sorted = src[self.src_order].astype(np.int64)
        self.dst_order = np.argsort(dst, kind="stable")
        self.dst_sorted = dst[self.dst_order].astype(np.int64)

    def ranges(self, ranks: np.ndarray):
        ls = np.searchsorted(self.src_sorted, ranks, "left")
        hs = np.searchsorted(self.src_sorted, ranks, "right")
        ld = np.searchsorted(self.dst_sorted, ranks, "left")
        hd = np.searchsorted(self.dst_sorted, ranks, "right")
        return ls, hs, ld, hd


class _Flows:
    """A group of flows as parallel arrays (struct of arrays), compacted on removal."""

    FIELDS = ("tid", "rid", "size", "t", "rem", "rate", "tupd")

    def __init__(self) -> None:
        for f in self.FIELDS:
            setattr(self, f, np.zeros(0, dtype=np.int64 if f in ("tid", "rid") else np.float64))

    def __len__(self) -> int:
        return len(self.tid)

    def add(self, **cols) -> None:
        n = len(cols["tid"])
        for f in self.FIELDS:
            old = getattr(self, f)
            new = cols.get(f)
            if new is None:
                new = np.zeros(n, dtype=old.dtype)
            setattr(self, f, np.concatenate((old, np.asarray(new, dtype=old.dtype))))

    def take(self, mask: np.ndarray) -> dict:
        """Remove the flows where ``mask`` holds and return their columns."""
        out = {f: getattr(self, f)[mask] for f in self.FIELDS}
        keep = ~mask
        for f in self.FIELDS:
            setattr(self, f, getattr(self, f)[keep])
        return out


class _EventEngine:
    """Discrete-event simulation with max-min fair rates (step or dataflow mode)."""

    def __init__(self, run: _Run, mode: str, progress=None) -> None:
        self.run = run
        self.mode = mode
        self.progress = progress
        self.R = run.router
        s = run.s
        self.src = s.src
        self.dst = s.dst
        nl = len(run.link_bw)
        self.nflow_on = np.zeros(nl, dtype=np.int64)
        self.busy_since = np.zeros(nl)
        self.lat = _Flows()     # paying latency: t = when the latency ends
        self.byt = _Flows()     # moving bytes: t = projected finish
        # timers: (time, kind, id); kind 0 = rank advances, 1 = release data, 2 = start
        self.tm_t = np.zeros(0)
        self.tm_kind = np.zeros(0, dtype=np.int64)
        self.tm_id = np.zeros(0, dtype=np.int64)
        self.started = 0
        self.done = 0
        # per transfer end time is needed even when not recorded (critical bookkeeping)
        if mode == "step":
            P = run.P
            self.at_step = np.full(P, -1, dtype=np.int64)
            self.pending = np.zeros(P, dtype=np.int64)
            self.red_bytes = np.zeros(P)
            self.arriving = np.zeros(P, dtype=bool)
            self.first, self.last = _rank_spans(s)
            self.steps: dict[int, _StepIndex] = {}
            self._timer(run.offsets, 0, np.arange(P))
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
            when = np.maximum(run.offsets[self.src[roots]], run.offsets[self.dst[roots]])
            self._timer(when, 2, roots)

    # --- timers -------------------------------------------------------------------

    def _timer(self, when, kind: int, ids) -> None:
        ids = np.asarray(ids, dtype=np.int64)
        self.tm_t = np.concatenate((self.tm_t, np.broadcast_to(when, ids.shape)))
        self.tm_kind = np.concatenate((self.tm_kind, np.full(len(ids), kind)))
        self.tm_id = np.concatenate((self.tm_id, ids))

    def _pop_timers(self, tt: float):
        due = self.tm_t <= tt
        if not due.any():
            return None
        kind, ids = self.tm_kind[due], self.tm_id[due]
        keep = ~due
        self.tm_t, self.tm_kind, self.tm_id = self.tm_t[keep], self.tm_kind[keep], self.tm_id[keep]
        return kind, ids

    # --- the loop -------------------------------------------------------------------

    def run_all(self) -> None:
        run = self.run
        while True:
            t = min(self.lat.t.min() if len(self.lat) else _INF,
                    self.byt.t.min() if len(self.byt) else _INF,
                    self.tm_t.min() if len(self.tm_t) else _INF)
            if t == _INF:
                break
            run.events += 1
            if self.progress is not None and run.events % PROGRESS_EVERY == 0:
                self.progress(self.done, run.T)
            tt = t + max(abs(t) * _RTOL_T, 1e-300)
            entered: list[np.ndarray] = []       # rids of flows entering the byte phase
            entered_n = 0
            left: list[np.ndarray] = []          # rids of flows leaving it
            nbyt_before = len(self.byt)
            while True:
                progress = False
                fin = self.byt.t <= tt
                fin[nbyt_before:] = False          # new flows have no rate yet
                if fin.any():
                    cols = self.byt.take(fin)
                    nbyt_before -= len(cols["tid"])
                    left.append(cols["rid"])
                    self._complete(cols["tid"], cols["size"], t)
                    progress = True
                up = self.lat.t <= tt
                if up.any():
                    cols = self.lat.take(up)
                    zero = cols["size"] <= 0
                    if zero.any():
                        self._complete(cols["tid"][zero], cols["size"][zero], t)
                    mv = ~zero
                    if mv.any():
                        self.byt.add(tid=cols["tid"][mv], rid=cols["rid"][mv],
                                     size=cols["size"][mv], t=np.full(mv.sum(), _INF),
                                     rem=cols["size"][mv], tupd=np.full(mv.sum(), t))
                        entered.append(cols["rid"][mv])
                        entered_n += int(mv.sum())
                    progress = True
                due = self._pop_timers(tt)
                if due is not None:
                    self._fire(due[0], due[1], t)
                    progress = True
                if not progress:
                    break
            if entered or left:
                self._rerate(t, entered, left, entered_n)
        if self.done != run.T:
            raise CommsimError(f"simulate: {run.T - self.done} transfers never ran; the "
                               "schedule is not executable (a rank waits on a step no "
                               "partner reaches)")

    # --- starting and completing transfers ------------------------------------------

    def _start(self, tids: np.ndarray, t: float) -> None:
        if not len(tids):
            return
        run, s = self.run, self.run.s
        src = self.src[tids].astype(np.int64)
        dst = self.dst[tids].astype(np.int64)
        rid = self.R.route_ids(src, dst, s.chunk[tids], s.step[tids])
        size = run.chunk_bytes[s.chunk[tids]]
        if run.record:
            run.start[tids] = t
        self.lat.add(tid=tids, rid=rid, size=size, t=t + self.R.route_latency[rid])
        self.started += len(tids)

    def _complete(self, tids: np.ndarray, size: np.ndarray, t: float) -> None:
        run, s = self.run, self.run.s
        self.done += len(tids)
        if run.record:
            run.end[tids] = t
        dst = self.dst[tids].astype(np.int64)
        red = s.reduce[tids]
        if self.mode == "step":
            src = self.src[tids].astype(np.int64)
            np.subtract.at(self.pending, src, 1)
            np.subtract.at(self.pending, dst, 1)
            if red.any():
                np.add.at(self.red_bytes, dst[red], size[red])
            steps = s.step[tids]
            for st in _distinct(steps):
                ix = self.steps[st]
                ix.left -= int(np.count_nonzero(steps == st)) if len(steps) > 1 else 1
                if ix.left == 0:
                    del self.steps[st]
            touched = np.concatenate((src, dst))
            if len(touched) > 2:
                touched = np.unique(touched)
            finished = touched[self.pending[touched] == 0]
            if len(finished):
                delay = run.gamma * run.slow[finished] * self.red_bytes[finished]
                self.red_bytes[finished] = 0.0
                later = delay > 0
                if later.any():
                    self._timer(t + delay[later], 0, finished[later])
                if (~later).any():
                    self._advance(finished[~later], t)
        else:
            nxt = self.fifo_next[tids]
            self._unblock(nxt[nxt >= 0], t)        # the connection is free
            delay = np.where(red, run.gamma * run.slow[dst] * size, 0.0)
            later = delay > 0
            if later.any():
                self._timer(t + delay[later], 1, tids[later])
            if (~later).any():
                self._release(tids[~later], t)

    def _fire(self, kind: np.ndarray, ids: np.ndarray, t: float) -> None:
        for k in (0, 1, 2):
            sel = ids[kind == k]
            if not len(sel):
                continue
            if k == 0:
                self._advance(sel, t)
            elif k == 1:
                self._release(sel, t)
            else:
                self._start(sel, t)

    # --- dataflow -------------------------------------------------------------------

    def _release(self, tids: np.ndarray, t: float) -> None:
        """The data of ``tids`` is in place: successors may start."""
        starts, ends = self.succ_ptr[tids], self.succ_ptr[tids + 1]
        self._unblock(self.succ[expand_ranges(starts, ends - starts)], t)

    def _unblock(self, succ: np.ndarray, t: float) -> None:
        """One predecessor of each of ``succ`` is satisfied; start those with none left."""
        if not len(succ):
            return
        np.subtract.at(self.npred, succ, 1)
        ready = np.unique(succ[self.npred[succ] == 0])
        if not len(ready):
            return
        run = self.run
        when = np.maximum(run.offsets[self.src[ready]], run.offsets[self.dst[ready]])
        later = when > t
        if later.any():
            self._timer(when[later], 2, ready[later])
        self._start(ready[~later], t)

    # --- step mode: ranks advance ------------------------------------------------------

    def _step_index(self, st: int) -> _StepIndex:
        ix = self.steps.get(st)
        if ix is None:
            run = self.run
            ix = _StepIndex(run.s, int(run.step_ptr[st]), int(run.step_ptr[st + 1]))
            self.steps[st] = ix
        return ix

    def _advance(self, ranks: np.ndarray, t: float) -> None:
        """``ranks`` have finished their step at ``t``: move each to its next step."""
        run = self.run
        cur = self.at_step[ranks]
        nxt = np.where(cur < 0, self.first[ranks], cur + 1)
        todo = np.arange(len(ranks))
        target = np.full(len(ranks), run.nsteps, dtype=np.int64)
        while len(todo):
            r, c = ranks[todo], nxt[todo]
            alive = c <= self.last[r]
            todo, r, c = todo[alive], r[alive], c[alive]
            if not len(todo):
                break
            found = np.zeros(len(todo), dtype=bool)
            for st in _distinct(c):
                sel = np.flatnonzero(c == st)
                ls, hs, ld, hd = self._step_index(st).ranges(r[sel])
                found[sel] = (hs - ls + hd - ld) > 0
            target[todo[found]] = c[found]
            todo = todo[~found]
            nxt[todo] += 1
        done = target >= run.nsteps
        if done.any():
            fin = ranks[done]
            self.at_step[fin] = run.nsteps
            run.rank_end[fin] = t
        ranks, target = ranks[~done], target[~done]
        if not len(ranks):
            return
        self.at_step[ranks] = target
        self.arriving[ranks] = True
        for st in _distinct(target):
            R = ranks[target == st]
            ix = self._step_index(st)
            ls, hs, ld, hd = ix.ranges(R)
            self.pending[R] = (hs - ls) + (hd - ld)
            loc = ix.src_order[expand_ranges(ls, hs - ls)]
            tid_s = ix.a + loc
            tid_s = tid_s[self.at_step[self.dst[tid_s]] == st]
            loc = ix.dst_order[expand_ranges(ld, hd - ld)]
            tid_d = ix.a + loc
            sr = self.src[tid_d]
            tid_d = tid_d[(self.at_step[sr] == st) & ~self.arriving[sr]]
            self._start(np.concatenate((tid_s, tid_d)), t)
        self.arriving[ranks] = False

    # --- rates ------------------------------------------------------------------------

    def _rerate(self, t: float, entered: list, left: list, entered_n: int) -> None:
        run, R = self.run, self.R
        e_in, cnt_in = R.route_links(np.concatenate(entered)) if entered else (
            np.zeros(0, dtype=np.int64), np.zeros(0, dtype=np.int64))
        e_out, _ = R.route_links(np.concatenate(left)) if left else (
            np.zeros(0, dtype=np.int64), None)
        n_on = self.nflow_on
        if len(e_out):
            np.subtract.at(n_on, e_out, 1)
            idle = e_out[n_on[e_out] == 0]
            run.link_busy[idle] += t - self.busy_since[idle]
            self.busy_since[idle] = t   # duplicates write the same value
        if len(e_in):
            fresh = e_in[n_on[e_in] == 0]
            self.busy_since[fresh] = t
            np.add.at(n_on, e_in, 1)
        nnew = entered_n
        first_new = len(self.byt) - nnew
        new = slice(first_new, len(self.byt))
        if (n_on[e_in] == 1).all() and (n_on[e_out] == 0).all():
            # every new flow is alone on its links and no survivor gained room
            rid = self.byt.rid[new]
            rate = R.route_bandwidth[rid]
            self.byt.rate[new] = rate
            self.byt.t[new] = t + self.byt.size[new] / rate
            if len(e_in):
                run.link_bytes[e_in] += np.repeat(self.byt.size[new], cnt_in)
                util = np.repeat(rate, cnt_in) / run.link_bw[e_in]
                run.link_peak[e_in] = np.maximum(run.link_peak[e_in], util)
            return
        if len(e_in):
            np.add.at(run.link_bytes, e_in, np.repeat(self.byt.size[new], cnt_in))
        self._maxmin(t, np.concatenate((e_in, e_out)))

    def _maxmin(self, t: float, seeds: np.ndarray) -> None:
        """Re-rate the flows connected to ``seeds`` links by progressive filling."""
        run, R, F = self.run, self.R, self.byt
        nF = len(F)
        if not nF:
            return
        edges, cnt = R.route_links(F.rid)
        owner = np.repeat(np.arange(nF), cnt)
        mark = np.zeros(len(run.link_bw), dtype=bool)
        mark[seeds] = True
        infl = np.zeros(nF, dtype=bool)
        count = -1
        while True:
            infl[owner[mark[edges]]] = True
            c = int(infl.sum())
            if c == count:
                break
            count = c
            mark[edges[infl[owner]]] = True
        sel = infl[owner]
        inc_f, inc_l = owner[sel], edges[sel]
        links, inv = np.unique(inc_l, return_inverse=True)
        cap = run.link_bw[links].copy()
        nfl = np.bincount(inv, minlength=len(links)).astype(np.float64)
        rate = np.zeros(nF)
        frozen = np.zeros(nF, dtype=bool)
        live = np.ones(len(inc_f), dtype=bool)
        while live.any():
            with np.errstate(divide="ignore", invalid="ignore"):
                share = np.where(nfl > 0, np.maximum(cap, 0.0) / nfl, _INF)
            m = share.min()
            bott = share <= m * (1 + 1e-12)
            hit = live & bott[inv]
            fr = inc_f[hit]
            rate[fr] = m
            frozen[fr] = True
            rm = live & frozen[inc_f]
            cap -= np.bincount(inv[rm], minlength=len(links)) * m
            nfl -= np.bincount(inv[rm], minlength=len(links))
            live &= ~rm
        load = np.bincount(inv, weights=rate[inc_f], minlength=len(links))
        run.link_peak[links] = np.maximum(run.link_peak[links], load / run.link_bw[links])
        idx = np.flatnonzero(infl)
        old = F.rate[idx]
        new = rate[idx]
        chg = idx[old != new]
        if len(chg):
            F.rem[chg] = np.maximum(F.rem[chg] - F.rate[chg] * (t - F.tupd[chg]), 0.0)
            F.tupd[chg] = t
            F.rate[chg] = rate[chg]
            F.t[chg] = t + F.rem[chg] / rate[chg]


PROGRESS_EVERY = 2048  # events between progress reports


def _distinct(values: np.ndarray) -> list[int]:
    """The distinct values as Python ints (cheap for the one- or two-value batches that
    most events bring)."""
    if len(values) <= 2:
        return sorted(set(values.tolist()))
    return np.unique(values).tolist()


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
             progress=None):
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
    """
    from commsim.sim.result import SimResult

    if mode not in MODES:
        raise CommsimError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if engine not in ENGINES:
        raise CommsimError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise CommsimError(f"size: {nbytes!r} must be a whole number of bytes >= 0")
    gamma = float(gamma)
    if not np.isfinite(gamma) or gamma < 0:
        raise CommsimError(f"gamma: {gamma!r} must be a finite number of seconds per byte >= 0")
    P = schedule.nranks
    wall0 = _time.perf_counter()
    if len(schedule) and max(int(schedule.src.max()), int(schedule.dst.max())) >= P:
        raise CommsimError(f"schedule: a transfer names a rank >= nranks={P}")
    if router is None:
        router = Router(topology, _placement(topology, P, placement), routing, ecmp_width)
    offsets = _per_rank(start_offsets, P, 0.0, "start_offsets")
    slowdown = _per_rank(reduce_slowdown, P, 1.0, "reduce_slowdown")
    run = _Run(schedule, router, int(nbytes), gamma, offsets, slowdown, record_transfers)
    used = "events"
    if mode == "step" and engine in ("auto", "sweep") and _sweep_uncontended(run):
        used = "sweep"
    elif engine == "sweep":
        raise CommsimError("engine: 'sweep' needs a contention-free step-mode run; this "
                           "one shares links (use engine='auto')")
    else:
        run = _Run(schedule, router, int(nbytes), gamma, offsets, slowdown, True)
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
