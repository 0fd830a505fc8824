"""The model that reads the topology: a schedule's own pairs, hops and link rates.

:func:`commsim.model.predict` sees a topology as one alpha and one beta (the slowest
path from rank 0), so a ring whose neighbours are one hop apart pays the diameter's
latency, and recursive halving-doubling never sees that its far partners share one
uplink. :func:`predict_on` instead prices every transfer of the schedule on its own
route (seconds, bytes, bytes/s):

- its latency: the route's (plus the executor's ``overhead`` a message, or
  ``exchange_overhead`` where one of its ranks both sends and receives in the step);
- its rate: for each link of the route, the link's bandwidth over the number of the
  step's transfers that cross it (its own flows share a link evenly: the contention
  among an algorithm's own flows in a step), the smallest of those;
- its time: ``latency + message_overhead + bytes / rate``.

Then, in step mode, the same step semantics as the executors and the simulator: a rank
reaches step ``s`` when its transfers of earlier steps have ended and their reductions
(``gamma`` seconds a byte, at the receiver) are applied; a transfer starts when both
its ranks are there. So ranks drift, and the time is the longest path through the
steps. Rings and rhd in dataflow mode use :func:`commsim.model.pipelined` with each
step's slowest latency and rate, unless a pair of their ranks has several connections
(NCCL's channels, gloo's segments in flight: :meth:`Schedule.connection_keys`), which
the closed form would stream down one; those and other schedules in dataflow mode
(trees, chains) take the simulator's dataflow rules (:func:`_dataflow`): a transfer
starts when the data it sends has arrived and been reduced and its connection is free,
so a tree's reduce and broadcast overlap; and since steps then overlap, never less than
the busiest link's bytes over its bandwidth. On a contention-free case (no two
connections share a link) this is exactly the simulator's answer, to rounding; where
connections share a link the even split is an estimate (max-min may give some of them
more; in dataflow mode, connections of overlapping steps share it too: -22% to +7% of
the simulator for trees on a star, benchmarks/model_vs_sim_dataflow.py), and
:attr:`Estimate.shared` says so: the simulator is then the reference.

Where a profile's ranks share their host's cores (``cores_per_rank`` below 1), no
schedule is faster than the host's copies and reductions done one after another
(:func:`commsim.model.cores.host_work`); the simulator applies the same bound.
"""

from __future__ import annotations

from dataclasses import dataclass

import networkx as nx
import numpy as np

from commsim.collectives import chunk_unit
from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.model.cores import host_work


@dataclass(frozen=True)
class Estimate:
    """``time`` (s) of a schedule on a topology; ``shared``: some step's own flows
    shared a link (the time is then an estimate, the simulator the reference)."""

    time: float
    shared: bool


class TopologyModel:
    """The model on one topology and placement of ``nranks`` ranks; each schedule's
    pricing is computed once and reused across sizes. ``overhead`` (s, every message's
    latency) and ``message_overhead`` (s, before every message's bytes) are a calibrated
    profile's executor costs, ``exchange_overhead`` (s, or None: ``overhead``) the
    latency added instead to transfers of a rank busy both ways in their step; placement
    and routing mean what they mean for :func:`commsim.sim.simulate`."""

    def __init__(self, topology: nx.DiGraph, nranks: int, placement=None,
                 routing: str = "ecmp", overhead: float = 0.0,
                 message_overhead: float = 0.0, router=None,
                 exchange_overhead: float | None = None) -> None:
        from commsim.sim.run import check_placement
        from commsim.topology.routing import Router

        self.router = router or Router(topology, check_placement(topology, nranks, placement),
                                       routing)
        self.overhead = float(overhead)
        self.message_overhead = float(message_overhead)
        self.exchange_overhead = None if exchange_overhead is None else \
            float(exchange_overhead)
        self._priced: dict = {}
        self._met: dict = {}

    def estimate(self, schedule: Schedule, nbytes: int, gamma: float = 0.0,
                 mode: str = "step", overlap: bool = True) -> Estimate:
        """Seconds ``schedule`` takes for an ``nbytes`` buffer (see the module docstring)."""
        from commsim import model

        if mode not in ("step", "dataflow"):
            raise CommsimError(f"mode: {mode!r} is not 'step' or 'dataflow'")
        s = schedule
        if not len(s):
            return Estimate(0.0, False)
        # in dataflow mode a connection's pieces stream down it one after another, so
        # they share its links as one connection
        streams = mode == "dataflow"
        got = self._priced.get((id(s), streams))
        if got is None or got[0] is not s:
            got = self._priced[(id(s), streams)] = (
                s, *_priced(s, self.router, self._added(s), streams))
        _, latency, rate, shared, crossing, queues = got
        size = s.transfer_sizes(int(nbytes)).astype(np.float64)
        o = self.message_overhead
        # where ranks share their host's cores, never before the cores did the host's work
        floor = host_work(s, nbytes, self.router, gamma)
        # the closed form streams a pair's pieces down one connection; a pair with
        # several (channels, messages in flight) takes the dataflow rules
        if streams and s.algorithm in model.PIPELINED_IN_DATAFLOW and not queues:
            m = max(1, s.nchunks // chunk_unit(s.collective, s.algorithm, s.nranks))
            return Estimate(max(_pipelined(s, size, latency, rate, m, gamma, overlap, o),
                                floor), shared)
        moving = np.divide(size, rate, out=np.zeros_like(size), where=size > 0)
        if mode == "dataflow":
            # steps overlap there, and the even split sees only a step's own flows: no
            # faster than the busiest link can carry every byte that crosses it
            edges, owner = crossing
            load = np.bincount(edges, weights=size[owner], minlength=len(self.router.links))
            busiest = float((load / self.router.link_bandwidth).max())
            return Estimate(max(_dataflow(s, latency, o + moving, size, gamma, overlap),
                                busiest, floor), shared or self._meet(s, edges, owner))
        time, start = _steps(s, latency + o + moving, size, gamma)
        if not shared:   # steps apart, ranks drift: do byte phases of two steps meet?
            shared = _overlapping(s, self.router, start + o, start + o + moving)
        return Estimate(max(time, floor), shared)

    def _meet(self, s: Schedule, edges: np.ndarray, owner: np.ndarray) -> bool:
        """Whether two connections of ``s``, whatever their steps, cross one link (where
        steps overlap, as in dataflow mode, they may meet there); once a schedule."""
        got = self._met.get(id(s))
        if got is None or got[0] is not s:
            pair = s.connection_keys()[owner]
            links = np.unique(np.column_stack([edges, pair]), axis=0)[:, 0]
            got = self._met[id(s)] = (s, bool((np.bincount(links) > 1).any()))
        return got[1]

    def _added(self, s: Schedule):
        """Latency (s) added to each transfer of ``s``: a float, or an array."""
        ex = self.exchange_overhead
        if ex is None or ex == self.overhead:
            return self.overhead
        return np.where(s.both_ways(), ex, self.overhead)


def predict_on(schedule: Schedule, topology: nx.DiGraph, nbytes: int, *, placement=None,
               gamma: float = 0.0, mode: str = "step", overlap: bool = True,
               overhead: float = 0.0, message_overhead: float = 0.0,
               routing: str = "ecmp", router=None,
               exchange_overhead: float | None = None) -> Estimate:
    """Seconds ``schedule`` takes for an ``nbytes`` buffer on ``topology``: one
    :meth:`TopologyModel.estimate`."""
    tm = TopologyModel(topology, schedule.nranks, placement, routing, overhead,
                       message_overhead, router, exchange_overhead)
    return tm.estimate(schedule, nbytes, gamma, mode, overlap)


def _priced(s: Schedule, router, overhead, streams: bool = False) -> tuple:
    """Each transfer's latency (s) and rate (B/s) on its route, its step's own flows
    sharing every link evenly; whether any link was shared; and ``(edges, owner)``, the
    links every transfer crosses (link ids, and the transfer of each); and whether a pair
    of ranks has more than one connection. ``streams``: the pieces of one connection
    follow each other down it (dataflow), so a link is shared by the step's
    connections, not by its pieces."""
    rid = router.route_ids(s.src.astype(np.intp), s.dst.astype(np.intp),
                           s.transfer_connections())
    edges, cnt = router.route_links(rid)
    owner = np.repeat(np.arange(len(s)), cnt)
    key = s.step.astype(np.int64)[owner] * len(router.links) + edges
    # the step's connections on each link: one connection's pieces alone on a link move
    # as one message would, exactly; two connections there make the even split a guess
    keys = s.connection_keys()
    pair = keys[owner]
    conns = np.unique(np.column_stack([key, pair]), axis=0)[:, 0]
    links, per_link = np.unique(conns, return_counts=True)
    connections = per_link[np.searchsorted(links, key)]
    if streams:
        counts = connections
    else:
        _, inverse, counts_of = np.unique(key, return_inverse=True, return_counts=True)
        counts = counts_of[inverse]
    share = router.link_bandwidth[edges] / counts
    rate = np.full(len(s), np.inf)
    np.minimum.at(rate, owner, share)
    queues = s.connection is not None and bool(
        np.unique(keys).size
        > np.unique(s.src.astype(np.int64) * s.nranks + s.dst.astype(np.int64)).size)
    return (router.route_latency[rid] + overhead, rate, bool((connections > 1).any()),
            (edges, owner), queues)


def _steps(s: Schedule, duration: np.ndarray, size: np.ndarray,
           gamma: float) -> tuple[float, np.ndarray]:
    """The step semantics' completion time (s), ranks drifting with no global barrier;
    and each transfer's start (s)."""
    A = np.zeros(s.nranks)
    start = np.zeros(len(s))
    ptr = s.step_bounds()
    for st in range(s.nsteps):
        a, b = int(ptr[st]), int(ptr[st + 1])
        if a == b:
            continue
        src, dst = s.src[a:b].astype(np.intp), s.dst[a:b].astype(np.intp)
        start[a:b] = np.maximum(A[src], A[dst])
        end = start[a:b] + duration[a:b]
        np.maximum.at(A, src, end)
        np.maximum.at(A, dst, end)
        if gamma:
            red = s.reduce[a:b]
            np.add.at(A, dst[red], gamma * size[a:b][red])
    return float(A.max()), start


def _dataflow(s: Schedule, latency: np.ndarray, sending: np.ndarray, size: np.ndarray,
              gamma: float, overlap: bool) -> float:
    """The simulator's dataflow semantics at the step's even-split rates (s): a transfer
    starts once every transfer that wrote its data has arrived and been reduced
    (:meth:`Schedule.dependencies`) and the one before it on its connection has sent
    its last byte (and, without ``overlap``, been reduced); it sends for ``sending``
    seconds (message overhead and bytes) and arrives ``latency`` later."""
    indptr, indices = s.dependencies()
    reduce_s = np.where(s.reduce, gamma * size, 0.0)
    conn = s.connection_keys()
    order = np.lexsort((np.arange(len(s)), conn))   # by connection, in schedule order
    before = np.full(len(s), -1)
    same = conn[order][1:] == conn[order][:-1]
    before[order[1:][same]] = order[:-1][same]
    # how many transfers before it on its connection in its own step: those go first
    run = np.concatenate([[False], same & (s.step[order][1:] == s.step[order][:-1])])
    at = np.arange(len(s))
    depth = np.empty(len(s), dtype=np.int64)
    depth[order] = at - np.maximum.accumulate(np.where(run, 0, at))
    hold = sending + (0.0 if overlap else reduce_s)  # until the connection is free again
    released = np.zeros(len(s))
    freed = np.zeros(len(s))   # when each transfer's connection is free for the next
    ptr = s.step_bounds()
    for st in range(s.nsteps):
        a, b = int(ptr[st]), int(ptr[st + 1])
        if a == b:
            continue
        lo, hi = int(indptr[a]), int(indptr[b])
        start = np.zeros(b - a)
        if hi > lo:  # the latest release among each transfer's predecessors
            has = indptr[a + 1:b + 1] > indptr[a:b]
            first = indptr[a:b][has] - lo
            start[has] = np.maximum.reduceat(released[indices[lo:hi]], first)
        prev = before[a:b]
        earlier = prev >= 0
        later = prev >= a          # the previous on the connection is in this very step
        start[earlier & ~later] = np.maximum(start[earlier & ~later],
                                             freed[prev[earlier & ~later]])
        freed[a:b] = start + hold[a:b]
        queued = np.flatnonzero(later)
        if queued.size:   # one after another: each waits for the one before it
            level = depth[a + queued]
            by = np.argsort(level, kind="stable")
            queued, level = queued[by], level[by]
            bounds = np.searchsorted(level, np.arange(1, int(level[-1]) + 2))
            for lo_, hi_ in zip(bounds[:-1], bounds[1:]):
                i = queued[lo_:hi_]
                start[i] = np.maximum(start[i], freed[prev[i]])
                freed[a + i] = start[i] + hold[a + i]
        released[a:b] = start + sending[a:b] + latency[a:b] + reduce_s[a:b]
    return float(released.max())


def _overlapping(s: Schedule, router, begin: np.ndarray, until: np.ndarray) -> bool:
    """Whether two connections' byte phases ``[begin, until)`` (s) meet on a link."""
    moving = np.flatnonzero(until > begin)
    rid = router.route_ids(s.src[moving].astype(np.intp), s.dst[moving].astype(np.intp),
                           s.transfer_connections()[moving])
    edges, cnt = router.route_links(rid)
    owner = moving[np.repeat(np.arange(len(moving)), cnt)]
    order = np.lexsort((begin[owner], edges))
    e, t = edges[order], owner[order]
    pair = s.connection_keys()[t]
    same_link = e[1:] == e[:-1]
    other = pair[1:] != pair[:-1]
    tol = 1e-12 * np.maximum(np.abs(until[t][:-1]), 1e-300)
    meet = begin[t][1:] < until[t][:-1] - tol
    return bool((same_link & other & meet).any())


def _pipelined(s: Schedule, size, latency, rate, m: int, gamma: float, overlap: bool,
               o: float) -> float:
    """Rings and rhd in dataflow mode: :func:`commsim.model.pipelined`, each step with
    its slowest transfer's latency and rate and its busiest rank's bytes."""
    from commsim.model import pipelined

    ptr = s.step_bounds()
    steps = []
    for st in range(s.nsteps):
        a, b = int(ptr[st]), int(ptr[st + 1])
        if a == b:
            continue
        sent = np.bincount(s.src[a:b].astype(np.intp), weights=size[a:b], minlength=s.nranks)
        steps.append((float(sent.max()), bool(s.reduce[a:b].any()),
                      float(latency[a:b].max()), float((1.0 / rate[a:b]).max())))
    return pipelined(steps, m, 0.0, 0.0, gamma, overlap, o)
