"""A :func:`~commsim.sim.simulate_many` run split into its independent parts.

Jobs interact only through the links their flows share, so the jobs of a run fall into
*components*: two jobs are in one component when they share a link, directly or through
other jobs of it (a link is a directed edge id; a job's links are those of its transfers'
routes). Each component is simulated on its own, as a run of just its jobs, and the
results are scattered back into one :class:`~commsim.sim.run.Run` of the whole, which the
results read as before. A job that shares no link with another is then simulated exactly
as ``simulate_many([job], G)`` simulates it: the same inputs in the same order, so the
same answer to the bit.

Components that are the same simulation up to which links they use are simulated once:
each gets a signature (:func:`signature`), a digest of everything the simulation reads:

- per job, in order: its schedule's arrays and shape (step, src, dst, chunk, reduce,
  connection; nranks, nchunks, segments, blocks, root, collective, algorithm), its size
  and chunk sizes and its start;
- which of its ranks share a gpu (the gpus relabelled in order);
- every transfer's route, and every route's links, the links relabelled in order (a link's
  canonical id is its rank among the component's links, so the engine meets them in the
  same order; ties between links are broken by id), with each link's bandwidth and
  latency, whether it is between two switches (what the sweep checks), each route's
  latency and bandwidth, and the routes numbered in the run's order (the sweep sums a
  link's figures route by route in that order);
- the run's options (mode, gamma, overheads, overlap, sharing, engine).

Equal signatures give equal results with the links mapped one to one, so a component
whose signature was met before copies that result (``limit`` link ids mapped, -1 kept).
A ``memo`` dict carries the results across calls: a signature holds the links' figures
and the options, so it needs no graph's identity.

A component is simulated through a view of the run's router (:class:`_SubRouter`): its
ranks numbered from 0, its routes those the run's router gave them, numbered in the
run's order. Building a :class:`Router` per component would cost tens of milliseconds
each (it reads the whole graph), and thousands of components are common (every
pipeline boundary's send of a training step); the routes are the same either way, since a
transfer's ECMP route depends only on its gpus and connection, and the router numbers
routes by rank pair and choice, an order the view keeps. The tests check that a job alone
in its component gets what ``simulate_many([job])`` gives, bit for bit
(tests/test_sim_split.py). A component of more than :data:`~commsim.sim.run.ROUTE_ALL`
transfers is routed step by step, as it would be alone, so it gets its own router and is
neither shared nor remembered.

With ``workers > 1`` the components still to simulate run in that many forked
processes at once (:func:`_in_parallel`), when there are at least two and
:data:`PARALLEL_MIN` transfers among them (forking costs tens of milliseconds). Each is
simulated exactly as it would be here, so the results are the same, to the bit, for
any number of workers; only where the fork start method exists (Linux), else one after
the other.
"""

from __future__ import annotations

import hashlib
import os
import signal
import sys
from collections.abc import Callable

import numpy as np

from commsim.errors import CommsimError
from commsim.sim.engine import execute
from commsim.sim.run import ROUTE_ALL, Run
from commsim.topology.routing import Router

PARALLEL_MIN = 100_000   # transfers to simulate before forking workers pays
_FORKED: Callable | None = None   # what a forked worker simulates: set before the fork


class _SubRouter:
    """The run's router as one component's run sees it: the component's ranks numbered
    from 0 (``ranks[r]`` is the run's rank of its rank ``r``) and only the routes its
    transfers take (``rids``, sorted: the run's route ids), renumbered from 0 in the run's
    order. Everything a run and its executors read of a router."""

    def __init__(self, router: Router, ranks: np.ndarray, rids: np.ndarray) -> None:
        self._router = router
        self._ranks = ranks
        self._rids = rids
        self.G = router.G
        self.routing = router.routing
        self.width = router.width
        self.links = router.links
        self.link_bandwidth = router.link_bandwidth
        self.link_latency = router.link_latency
        self.placement = [router.placement[r] for r in ranks.tolist()]
        self.nranks = len(self.placement)
        edges, cnt = router.route_links(rids)
        self.route_edges = edges
        self.route_ptr = np.concatenate(([0], np.cumsum(cnt))).astype(np.int64)
        self.route_latency = router.route_latency[rids]
        self.route_bandwidth = router.route_bandwidth[rids]
        fab, fcnt = router.route_fabric_links(rids)
        self.route_fabric_edges = fab
        self.route_fabric_ptr = np.concatenate(([0], np.cumsum(fcnt))).astype(np.int64)
        self.route_has_fabric = fcnt > 0

    @property
    def nroutes(self) -> int:
        return len(self._rids)

    def route_ids(self, src, dst, connection=0) -> np.ndarray:
        ranks = self._ranks
        got = self._router.route_ids(ranks[np.atleast_1d(src)], ranks[np.atleast_1d(dst)],
                                     connection)
        rid = np.searchsorted(self._rids, got)
        if len(rid) and (int(rid.max()) >= len(self._rids)
                         or not np.array_equal(self._rids[rid], got)):
            raise CommsimError("simulate_many: a component's transfer took a route outside "
                               "the component (internal error)")
        return rid

    # the router's own lookups, over this view's route arrays
    route_links = Router.route_links
    route_fabric_links = Router.route_fabric_links


class _Done:
    """One component's simulated results, its links by canonical id (their rank among
    the component's links): what a component of the same signature copies."""

    __slots__ = ("start", "end", "limit", "limit_s", "rank_end", "link_bytes", "link_busy",
                 "link_peak", "events", "engine", "pid")

    def __init__(self, run: Run, links: np.ndarray, engine: str, copy: bool = False) -> None:
        own = np.copy if copy else np.asarray    # copies of arrays the caller gets too
        self.start, self.end = own(run.start), own(run.end)
        limit = run.limit
        self.limit = np.where(limit >= 0, np.searchsorted(links, limit), -1)
        self.limit_s = own(run.limit_s)
        self.rank_end = own(run.rank_end)
        self.link_bytes = run.link_bytes[links]
        self.link_busy = run.link_busy[links]
        self.link_peak = run.link_peak[links]
        self.events = run.events
        self.engine = engine
        self.pid = os.getpid()   # the process that simulated it


class _Component:
    """Jobs ``jobs`` (indices, in order) of the run: their transfers ``tids``, ranks
    ``ranks`` (the run's numbers), the sorted route ids ``rids`` their transfers take
    (``route[i]``: transfer ``tids[i]``'s, an index into ``rids``) and the sorted ids of
    the links those routes cross."""

    def __init__(self, jobs: list[int], merged, rid: np.ndarray, job_rids: list) -> None:
        self.jobs = jobs
        self.tids = _spans(merged.tid_off, jobs)
        self.ranks = _spans(merged.rank_off, jobs)
        if len(jobs) == 1:
            self.rids, self.route = job_rids[jobs[0]]
        else:
            self.rids = np.unique(np.concatenate([job_rids[k][0] for k in jobs]))
            self.route = np.searchsorted(self.rids, rid[self.tids])
        self.links = np.zeros(0, dtype=np.int64)

    @property
    def ntransfers(self) -> int:
        return len(self.tids)


def components(merged, router: Router, rid: np.ndarray) -> list[_Component]:
    """The run's jobs grouped by the links they share (directly or transitively), each
    group in job order, the groups in order of their first job."""
    njobs = len(merged.tid_off) - 1
    to = merged.tid_off
    job_rids = []
    for k in range(njobs):
        u, inv = np.unique(rid[to[k]:to[k + 1]], return_inverse=True)
        job_rids.append((u, inv.reshape(-1)))
    job_links = [np.unique(router.route_links(u)[0]) for u, _ in job_rids]
    parent = list(range(njobs))

    def find(x: int) -> int:
        while parent[x] != x:
            parent[x] = parent[parent[x]]
            x = parent[x]
        return x

    if njobs > 1:
        link = np.concatenate(job_links)
        job = np.repeat(np.arange(njobs), [len(x) for x in job_links])
        order = np.argsort(link, kind="stable")
        link, job = link[order], job[order]
        same = np.flatnonzero(link[1:] == link[:-1])
        pairs = np.unique(job[same] * njobs + job[same + 1])
        for a, b in zip(*(x.tolist() for x in np.divmod(pairs, njobs))):
            ra, rb = find(a), find(b)
            if ra != rb:
                parent[max(ra, rb)] = min(ra, rb)
    groups: dict[int, list[int]] = {}
    for k in range(njobs):
        groups.setdefault(find(k), []).append(k)
    out = []
    for jobs in groups.values():
        c = _Component(jobs, merged, rid, job_rids)
        c.links = (job_links[jobs[0]] if len(jobs) == 1
                   else np.unique(np.concatenate([job_links[k] for k in jobs])))
        out.append(c)
    return out


def _update(h, *arrays) -> None:
    for a in arrays:
        a = np.ascontiguousarray(a)
        h.update(f"{a.dtype.str}{a.shape}".encode())
        h.update(a.tobytes())


def schedule_digest(s, cache: dict) -> bytes:
    """A digest of everything a simulation reads of schedule ``s`` (memoized in
    ``cache`` by the object, which the cache keeps alive)."""
    got = cache.get(id(s))
    if got is not None and got[0] is s:
        return got[1]
    h = hashlib.blake2b(digest_size=32)
    h.update(repr((s.collective, s.algorithm, int(s.nranks), int(s.nchunks),
                   int(s.segments), int(s.blocks), int(s.root))).encode())
    _update(h, s.step, s.src, s.dst, s.chunk, s.reduce)
    if s.connection is None:
        h.update(b"no connection")
    else:
        _update(h, s.connection)
    cache[id(s)] = (s, h.digest())
    return h.digest()


def signature(comp: _Component, router: Router, job_keys: list[bytes],
              rank_node: np.ndarray, options: bytes) -> bytes:
    """The component's signature (see the module docstring). ``job_keys[k]`` digests job
    ``k``'s schedule, size, chunk sizes and start; ``rank_node`` the run's rank -> gpu
    node index; ``options`` the run's options."""
    h = hashlib.blake2b(options, digest_size=32)
    for k in comp.jobs:
        h.update(job_keys[k])
    _, gpu = np.unique(rank_node[comp.ranks], return_inverse=True)
    rids, links = comp.rids, comp.links
    edges, cnt = router.route_links(rids)
    fab, fcnt = router.route_fabric_links(rids)
    _update(h, gpu.reshape(-1).astype(np.int64), comp.route.astype(np.int64), cnt,
            np.searchsorted(links, edges), fcnt, np.searchsorted(links, fab),
            router.route_latency[rids], router.route_bandwidth[rids],
            router.link_bandwidth[links], router.link_latency[links])
    return h.digest()


def play(merged, router: Router, schedules: list, nbytes: list[int], sizes: list,
         starts: list[float], merge: Callable, *, gamma: float, mode: str, engine: str,
         progress, overhead: float, message_overhead: float, overlap: bool, sharing: str,
         memo: dict | None, workers: int = 1,
         exchange_overhead: float | None = None) -> tuple[Run, Router, str, int, int]:
    """Simulate the jobs of ``merged`` (the run of every job, over ``router``) component
    by component: the run's :class:`Run` with every transfer's, rank's and link's
    figures, the router its routes are numbered by, the engine (``"sweep"`` if every
    component took it, else ``"events"``), the number of components and how many were
    simulated (the others copied). Per job: ``schedules``, ``nbytes``, chunk ``sizes``
    (bytes) and ``starts`` (s). ``merge(schedules, chunk_counts)`` builds a run's
    schedule of several jobs. ``memo`` and ``workers``: see the module docstring."""
    P, T = merged.nranks, len(merged)
    offsets = np.repeat(np.asarray(starts, dtype=np.float64),
                        [s.nranks for s in schedules])
    chunk_bytes = np.concatenate(sizes) if sizes else np.zeros(0)
    opts = dict(mode=mode, engine=engine, record_transfers=True, overhead=overhead,
                message_overhead=message_overhead, overlap=overlap, sharing=sharing,
                exchange_overhead=exchange_overhead)

    def whole(router: Router, routes=None) -> tuple[Run, Router, str]:
        """The run as one, as before the split (``routes``: its route ids on ``router``,
        if known); routed step by step (as alone) by a router of its own when it has too
        many transfers to route at once."""
        if T > ROUTE_ALL and router.nroutes:
            router, routes = Router(router.G, router.placement, router.routing,
                                    router.width), None
        run, used = execute(merged, router, 0, gamma, offsets, np.ones(P),
                            progress=progress, chunk_bytes=chunk_bytes, routes=routes, **opts)
        return run, router, used

    if len(schedules) == 1 and (memo is None or T > ROUTE_ALL):
        return (*whole(router), 1, 1)
    full = Run(merged, router, 0, gamma, offsets, np.ones(P), False, overhead,
               message_overhead, overlap, sharing, chunk_bytes, exchange_overhead)
    comps = components(merged, router, full.all_route_ids())
    store = {} if memo is None else memo
    sigs: list = [None] * len(comps)
    if memo is not None or len(comps) > 1:
        sigs = _signatures(comps, router, schedules, nbytes, sizes, starts, repr(
            (mode, float(gamma).hex(), float(overhead).hex(), float(message_overhead).hex(),
             None if exchange_overhead is None else float(exchange_overhead).hex(),
             bool(overlap), sharing, engine, True)).encode())
    if len(comps) == 1 and (sigs[0] is None or sigs[0] not in store):
        run, router, used = whole(router, full.all_route_ids())
        if sigs[0] is not None:
            store[sigs[0]] = _Done(run, comps[0].links, used, copy=True)
        return run, router, used, 1, 1
    full.start, full.end = np.empty(T), np.empty(T)
    full.limit, full.limit_s = np.full(T, -1, dtype=np.int64), np.zeros(T)
    full.record = True

    def simulate(i: int, tick=None) -> _Done:
        c = comps[i]
        sub = merge([schedules[k] for k in c.jobs], [len(sizes[k]) for k in c.jobs])
        if sigs[i] is None:   # too many transfers to route at once: a router of its own
            view = Router(router.G, [router.placement[r] for r in c.ranks.tolist()],
                          router.routing, router.width)
        else:
            view = _SubRouter(router, c.ranks, c.rids)
        run, used = execute(sub, view, 0, gamma, offsets[c.ranks], np.ones(len(c.ranks)),
                            progress=tick, chunk_bytes=chunk_bytes[_chunks(merged, c)],
                            **opts)
        return _Done(run, c.links, used)

    ahead = _in_parallel(simulate, _to_simulate(comps, sigs, store), comps, workers)
    simulated, engines, done = 0, set(), 0
    for i, (c, sig) in enumerate(zip(comps, sigs)):
        got = ahead.pop(i, None)
        if got is None:
            got = store.get(sig) if sig is not None else None
            if got is None:
                tick = None
                if progress is not None:
                    def tick(n, _total, base=done):
                        progress(base + n, T)
                got = simulate(i, tick)
                simulated += 1
        else:
            simulated += 1
        if sig is not None and sig not in store:
            store[sig] = got
        _scatter(full, c, got)
        engines.add(got.engine)
        done += c.ntransfers
        if progress is not None:
            progress(done, T)
    used = "sweep" if engines == {"sweep"} else "events"
    return full, router, used, len(comps), simulated


def _signatures(comps: list[_Component], router: Router, schedules: list, nbytes: list,
                sizes: list, starts: list, options: bytes) -> list:
    """Each component's :func:`signature` (None for one too big to route at once)."""
    cache: dict = {}
    job_keys = []
    for s, n, size, start in zip(schedules, nbytes, sizes, starts):
        h = hashlib.blake2b(schedule_digest(s, cache), digest_size=32)
        h.update(f"{int(n)} {float(start).hex()}".encode())
        _update(h, size)
        job_keys.append(h.digest())
    index = {n: i for i, n in enumerate(router.nodes)}
    rank_node = np.array([index[g] for g in router.placement], dtype=np.int64)
    return [signature(c, router, job_keys, rank_node, options)
            if c.ntransfers <= ROUTE_ALL else None for c in comps]


def _to_simulate(comps: list[_Component], sigs: list, store: dict) -> list[int]:
    """The components a run must simulate: the first of each signature not in ``store``
    (and every one without a signature)."""
    seen, out = set(), []
    for i, sig in enumerate(sigs):
        if sig is None or (sig not in store and sig not in seen):
            out.append(i)
            if sig is not None:
                seen.add(sig)
    return out


def _in_parallel(simulate: Callable, todo: list[int], comps: list[_Component],
                 workers: int) -> dict:
    """``{i: simulate(i)}`` for the components ``todo``, computed by ``workers`` forked
    processes, or ``{}`` where that does not pay or cannot be done (the caller then
    simulates them itself)."""
    global _FORKED
    if (workers <= 1 or len(todo) < 2 or sys.platform != "linux"
            or sum(comps[i].ntransfers for i in todo) < PARALLEL_MIN):
        return {}
    import multiprocessing
    from concurrent.futures import ProcessPoolExecutor

    _FORKED = simulate      # the workers inherit it (and the run) when they are forked
    pool = ProcessPoolExecutor(max_workers=min(workers, len(todo)),
                               mp_context=multiprocessing.get_context("fork"),
                               initializer=signal.signal,
                               initargs=(signal.SIGINT, signal.SIG_IGN))
    try:
        # the largest first, so that no worker is left with a long one at the end
        todo = sorted(todo, key=lambda i: -comps[i].ntransfers)
        futures = {i: pool.submit(_forked, i) for i in todo}
        return {i: f.result() for i, f in futures.items()}
    finally:
        pool.shutdown(wait=True, cancel_futures=True)
        _FORKED = None


def _forked(i: int) -> _Done:
    return _FORKED(i)


def _chunks(merged, c: _Component) -> np.ndarray:
    """The run's chunk ids of the component's jobs, in order."""
    return _spans(merged.chunk_off, c.jobs)


def _spans(offsets: np.ndarray, jobs: list[int]) -> np.ndarray:
    """The ids ``offsets[k]:offsets[k + 1]`` of each job ``k`` of ``jobs``, in order."""
    return np.concatenate([np.arange(offsets[k], offsets[k + 1]) for k in jobs])


def _scatter(full: Run, c: _Component, got: _Done) -> None:
    """Write a component's results into the run's arrays (components share no link, so
    each link's figures are its component's)."""
    t, links = c.tids, c.links
    full.start[t] = got.start
    full.end[t] = got.end
    limit = np.full(len(t), -1, dtype=np.int64)
    ok = got.limit >= 0
    limit[ok] = links[got.limit[ok]]
    full.limit[t] = limit
    full.limit_s[t] = got.limit_s
    full.rank_end[c.ranks] = got.rank_end
    full.link_bytes[links] = got.link_bytes
    full.link_busy[links] = got.link_busy
    full.link_peak[links] = got.link_peak
    full.events += got.events
