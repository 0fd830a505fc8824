"""Several collectives at once on one topology, sharing its links.

::

    jobs = [Job(build("allreduce", "ring", 8), 64 << 20, gpus[:8], name="tp0"),
            Job(build("allreduce", "ring", 8), 64 << 20, gpus[8:], name="tp1")]
    res = simulate_many(jobs, G)
    res[0].time, res[1].busbw      # each job's own SimResult, timed from its start
    res.time, res.busiest_links()  # the whole run and the links' combined load

The jobs are played as one run: their ranks are renumbered one after the other (a
job's rank ``r`` is global rank ``offset + r``), their steps likewise, so no step
mixes two jobs and every flow of every job shares links max-min fairly with all the
others. Several jobs may place ranks on one gpu (a tensor-parallel and a
data-parallel group of the same gpus): those ranks are independent, as two streams
of one gpu are, and their flows share the gpu's links. Each job picks its
equal-cost paths as it would alone (ECMP hashes the gpus of a transfer and its
connection, not the job it belongs to).

Jobs interact only through shared links, so the run is split (:mod:`commsim.sim.split`)
into *components*, the jobs that share links with one another (directly or through
other jobs), and each component is simulated on its own. A job that shares no link
with another therefore gets exactly, bit for bit, what ``simulate_many([job], G)``
gives it; jobs of one component are one run as before (events of its jobs within 1e-13
s relative of each other are handled as one batch, so such a job's times may differ from
its times alone in the last bits even where its flows never meet the others'). A run
of one component is simulated exactly as before the split. Components that are the
same simulation on different links (a tensor-parallel group in each of 512 nodes) are
simulated once and copied, and a ``memo`` dict carries such results from call to call
(a training step's phases share their data-parallel groups): ``ManyResult.components``
and ``ManyResult.simulated`` say how many there were and how many were simulated.
"""

from __future__ import annotations

import time as _time
from collections.abc import Sequence
from dataclasses import dataclass

import networkx as nx
import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.sim.engine import check_options
from commsim.sim.result import LinkFigures, SimResult
from commsim.sim.run import check_placement
from commsim.sim.split import play
from commsim.topology.routing import Router


@dataclass(frozen=True)
class Job:
    """One collective of a :func:`simulate_many` run.

    ``schedule`` over ``nbytes`` (the collective's size convention, as
    :func:`~commsim.sim.simulate`), its ranks on ``placement`` (a gpu node per rank,
    a list or ``{rank: node}``; default the topology's first gpus), entering at
    ``start`` seconds after the run begins. ``name`` labels it in tables and traces.
    """

    schedule: Schedule
    nbytes: int
    placement: Sequence | dict | None = None
    start: float = 0.0
    name: str = ""


class _Merged:
    """The jobs' schedules as one, with the schedule views the executors read.

    ``chunk`` indexes the concatenated chunk sizes of all jobs, and ``connection`` (or
    None) the jobs' chunk connections alike, so a transfer hashes its own job's
    connection for ECMP.
    """

    def __init__(self, schedules: list[Schedule], chunk_counts: list[int]) -> None:
        self.rank_off = np.cumsum([0] + [s.nranks for s in schedules])
        self.step_off = np.cumsum([0] + [s.nsteps for s in schedules])
        self.tid_off = np.cumsum([0] + [len(s) for s in schedules])
        chunk_off = self.chunk_off = np.cumsum([0] + chunk_counts)
        self.nranks = int(self.rank_off[-1])
        self.nsteps = int(self.step_off[-1])
        ro, so, co = self.rank_off, self.step_off, chunk_off

        def cat(f):
            parts = [f(k, s) for k, s in enumerate(schedules)]
            return np.concatenate(parts) if parts else np.zeros(0, dtype=np.int64)

        self.step = cat(lambda k, s: s.step.astype(np.int64) + so[k])
        self.src = cat(lambda k, s: s.src.astype(np.int64) + ro[k])
        self.dst = cat(lambda k, s: s.dst.astype(np.int64) + ro[k])
        self.chunk = cat(lambda k, s: s.chunk.astype(np.int64) + co[k])
        self.reduce = cat(lambda k, s: s.reduce).astype(bool)
        self.connection = None
        if any(s.connection is not None for s in schedules):
            self.connection = np.concatenate([
                np.zeros(n, dtype=np.int64) if s.connection is None
                else s.connection.astype(np.int64) for s, n in zip(schedules, chunk_counts)])
        self._schedules = schedules

    def __len__(self) -> int:
        return len(self.step)

    transfer_connections = Schedule.transfer_connections
    connection_keys = Schedule.connection_keys
    both_ways = Schedule.both_ways  # steps and ranks are offset per job: none collide

    def step_bounds(self) -> np.ndarray:
        keys = np.arange(self.nsteps, dtype=np.int64)
        return np.concatenate((np.searchsorted(self.step, keys, side="left"), [len(self)]))

    def dependencies(self) -> tuple[np.ndarray, np.ndarray]:
        """Each job's own dependencies, transfer ids shifted (jobs share no data)."""
        ptrs, idx = [np.zeros(1, dtype=np.int64)], []
        for k, s in enumerate(self._schedules):
            indptr, indices = s.dependencies()
            ptrs.append(indptr[1:].astype(np.int64) + ptrs[-1][-1])
            idx.append(indices.astype(np.int64) + self.tid_off[k])
        return (np.concatenate(ptrs),
                np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64))


class _JobRouter:
    """A job's view of the run's router: its own rank numbers, the run's routes."""

    def __init__(self, router: Router, offset: int) -> None:
        self._router = router
        self._offset = int(offset)

    def route_ids(self, src, dst, connection=0) -> np.ndarray:
        off = self._offset
        return self._router.route_ids(np.asarray(src, dtype=np.int64) + off,
                                      np.asarray(dst, dtype=np.int64) + off, connection)

    def path(self, src: int, dst: int, connection: int = 0) -> list[tuple]:
        return self._router.path(src + self._offset, dst + self._offset, connection)

    def __getattr__(self, name):
        return getattr(self._router, name)


class ManyResult(LinkFigures, list):
    """What :func:`simulate_many` returns: a list with one :class:`SimResult` per job.

    Each job's result is timed from its own start, with its own transfers and the
    bytes it put on each link; its ``link_busy`` is the time its own flows moved
    bytes on each link, and its ``link_peak`` the link's peak in the whole run. The
    run as a whole: ``time`` (s, from 0 to the last job's end), ``starts`` (each
    job's start, s) and the links' combined ``link_bytes``, ``link_busy`` and
    ``link_peak`` (see :class:`SimResult`), with :meth:`busiest_links`.

    ``components`` is the number of groups of jobs that share links (each simulated on
    its own, see :mod:`commsim.sim.split`) and ``simulated`` how many of them were
    actually simulated: the others copied the result of an identical component (the
    same jobs on links of the same bandwidths and latencies) met earlier in the run or
    in the ``memo`` given. ``engine`` is ``"sweep"`` if every component took the
    contention-free sweep, else ``"events"``; ``events`` sums the components' events
    (sweep: steps), a copied component's counted again: it describes the run, not the
    work done.
    """

    def __init__(self, results: list[SimResult], jobs: list[Job], run, router: Router,
                 engine: str, wall: float, components: int = 1,
                 simulated: int = 1) -> None:
        super().__init__(results)
        self.jobs = jobs
        self.names = [job.name or f"job {k}" for k, job in enumerate(jobs)]
        self.starts = np.array([float(job.start) for job in jobs])
        ends = [st + r.time for st, r in zip(self.starts.tolist(), results)]
        self.time = float(max(ends)) if ends else 0.0
        self.links = router.links
        self.link_bandwidth = run.link_bw
        self.link_bytes = run.link_bytes
        self.link_busy = run.link_busy
        self.link_peak = run.link_peak
        self.router = router
        self.engine = engine
        self.events = run.events
        self.wall = wall
        self.components = components
        self.simulated = simulated
        self._run = run

    def link_bytes_by(self, labels: Sequence) -> dict:
        """The bytes each link carried for each label's jobs (``labels[k]`` is job ``k``'s):
        ``{label: array over links}``, the jobs' own ``link_bytes`` summed per label, in
        one pass over the run's transfers (a label a parallel dimension, say)."""
        run, merged = self._run, self._run.s
        names = list(dict.fromkeys(labels))
        index = {name: i for i, name in enumerate(names)}
        nl = len(self.links)
        label = np.repeat(np.array([index[x] for x in labels], dtype=np.int64),
                          np.diff(merged.tid_off))
        edges, cnt = self.router.route_links(run.all_route_ids())
        key = np.repeat(label, cnt) * nl + edges
        size = np.repeat(run.chunk_bytes[merged.chunk], cnt)
        sums = np.bincount(key, weights=size, minlength=len(names) * nl)
        return {name: sums[i * nl:(i + 1) * nl] for i, name in enumerate(names)}

    def to_chrome_trace(self, path) -> None:
        """Write a Chrome/Perfetto trace: one track per job and one per busy link."""
        from commsim.sim.trace import write_chrome_trace_many
        write_chrome_trace_many(self, path)


def _check_job(G: nx.DiGraph, k: int, job) -> list:
    where = f"jobs[{k}]" + (f" ({job.name})" if getattr(job, "name", "") else "")
    if not isinstance(job, Job):
        raise CommsimError(f"{where}: {type(job).__name__} is not a Job; build "
                           "Job(schedule, nbytes, placement)")
    nbytes = job.nbytes
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise CommsimError(f"{where}: size {nbytes!r} must be a whole number of bytes >= 0")
    start = float(job.start)
    if not np.isfinite(start) or start < 0:
        raise CommsimError(f"{where}: start {job.start!r} must be a finite number of "
                           "seconds >= 0")
    s = job.schedule
    if len(s) and max(int(s.src.max()), int(s.dst.max())) >= s.nranks:
        raise CommsimError(f"{where}: a transfer names a rank >= nranks={s.nranks}")
    try:
        placement = check_placement(G, s.nranks, job.placement)
    except CommsimError as exc:
        raise CommsimError(f"{where}: {exc}") from None
    for g in placement:
        if g not in G or G.nodes[g].get("kind") != "gpu":
            what = "not a node" if g not in G else f"a {G.nodes[g].get('kind')}"
            raise CommsimError(f"{where}: placement: {g!r} is {what} of the topology; "
                               "place ranks on gpu nodes")
    return placement


def simulate_many(jobs: Sequence[Job], topology: nx.DiGraph, routing: str = "ecmp",
                  mode: str = "step", gamma: float = 0.0, *, record_transfers: bool = True,
                  ecmp_width: int = 16, engine: str = "auto", progress=None,
                  overhead: float = 0.0, message_overhead: float = 0.0,
                  overlap: bool = True, sharing: str = "maxmin",
                  memo: dict | None = None, workers: int = 1,
                  exchange_overhead: float | None = None) -> ManyResult:
    """Play several collectives at once over ``topology``: a :class:`ManyResult`.

    The options are :func:`~commsim.sim.simulate`'s, for every job alike. Jobs that
    share no link take exactly the time each takes alone (bit for bit: each group of
    jobs that share links is simulated on its own); on shared links their flows get
    max-min fair (or ``sharing="rtt"``) shares like any others. ``memo``: a dict, empty
    at first, that keeps each simulated group's results for later calls (on any
    topology; a group is reused only where the same jobs meet links of the same
    bandwidths and latencies under the same options). ``progress(done, total)`` counts
    transfers of the whole run; a copied group's advance it at once. ``workers > 1``:
    groups still to simulate run in that many forked processes at once, when there are
    enough of them (:mod:`commsim.sim.split`); the results are the same for any number.
    """
    check_options(mode, sharing, engine, gamma, overhead, message_overhead, exchange_overhead)
    if isinstance(workers, bool) or not isinstance(workers, (int, np.integer)) or workers < 1:
        raise CommsimError(f"workers: {workers!r} must be a whole number >= 1")
    jobs = list(jobs)
    if not jobs:
        raise CommsimError("jobs: no job to simulate; give at least one Job")
    wall0 = _time.perf_counter()
    placements = [_check_job(topology, k, job) for k, job in enumerate(jobs)]
    schedules = [job.schedule for job in jobs]
    sizes = [s.chunk_sizes(s.logical_length(int(job.nbytes))).astype(np.float64)
             for s, job in zip(schedules, jobs)]
    merged = _Merged(schedules, [len(c) for c in sizes])
    router = Router(topology, [g for p in placements for g in p], routing, ecmp_width)
    run, router, used, ncomp, nsim = play(
        merged, router, schedules, [int(job.nbytes) for job in jobs], sizes,
        [float(job.start) for job in jobs], _Merged,
        gamma=float(gamma), mode=mode, engine=engine, progress=progress,
        overhead=float(overhead), message_overhead=float(message_overhead),
        overlap=overlap, sharing=sharing, memo=memo, workers=int(workers),
        exchange_overhead=None if exchange_overhead is None else float(exchange_overhead))
    wall = _time.perf_counter() - wall0
    results = [_job_result(run, merged, router, topology, k, job, mode, used, wall)
               for k, job in enumerate(jobs)]
    if not record_transfers:
        for r in results:
            r._fill_links()      # its link figures, while it has its transfers' times
            r.start = r.end = r.limit = r.limit_s = None
    return ManyResult(results, jobs, run, router, used, wall, ncomp, nsim)


def _lazy(name: str) -> property:
    def get(self):
        if self.__dict__.get(name) is None:
            self._fill_links()
        return self.__dict__[name]

    def put(self, value) -> None:
        self.__dict__[name] = value
    return property(get, put)


class _JobResult(SimResult):
    """A job's :class:`SimResult` whose link figures (``link_bytes``, ``link_busy``,
    ``link_peak``) are computed when first read: three arrays over every link for each
    of thousands of jobs (every pipeline boundary's send at 4096 gpus) would cost
    seconds and gigabytes that a training step never reads (it reads
    :meth:`ManyResult.link_bytes_by`)."""

    link_bytes = _lazy("link_bytes")
    link_busy = _lazy("link_busy")
    link_peak = _lazy("link_peak")

    def _fill_links(self) -> None:
        from commsim.sim.trace import link_intervals

        rid, run_peak = self._rids, self._run_peak
        nl = len(self.links)
        self.link_bytes, self.link_busy, self.link_peak = (np.zeros(nl), np.zeros(nl),
                                                           np.zeros(nl))
        if len(self.schedule):
            edges, cnt = self.router.route_links(rid)
            size = self.schedule.transfer_sizes(int(self.nbytes)).astype(np.float64)
            self.link_bytes = np.bincount(edges, weights=np.repeat(size, cnt), minlength=nl)
            ids, x, y = link_intervals(self)
            self.link_busy = np.bincount(ids, weights=y - x, minlength=nl)
            self.link_peak = np.where(self.link_bytes > 0, run_peak, 0.0)


def _job_result(run, merged: _Merged, router: Router, G, k: int, job: Job, mode: str,
                engine: str, wall: float) -> SimResult:
    """Job ``k``'s own :class:`SimResult`, its times from its start."""
    a, b = int(merged.tid_off[k]), int(merged.tid_off[k + 1])
    ra, rb = int(merged.rank_off[k]), int(merged.rank_off[k + 1])
    t0 = float(job.start)
    s = job.schedule
    view = _JobRouter(router, ra)
    res = _JobResult(
        schedule=s, topology_name=str(G.graph.get("name", "")), nbytes=int(job.nbytes),
        time=0.0, start=run.start[a:b] - t0, end=run.end[a:b] - t0,
        rank_end=run.rank_end[ra:rb] - t0, links=router.links,
        link_bandwidth=run.link_bw, link_bytes=None, link_busy=None, link_peak=None,
        mode=mode, engine=engine, events=run.events, wall=wall, gamma=run.gamma,
        router=view, limit=None if run.limit is None else run.limit[a:b],
        limit_s=None if run.limit_s is None else run.limit_s[a:b],
        message_overhead=run.message_overhead, overhead=run.overhead)
    res.time = float(res.rank_end.max()) if len(res.rank_end) else 0.0
    res._rids = run.all_route_ids()[a:b]   # the run's routes of the job's transfers
    res._run_peak = run.link_peak
    return res
