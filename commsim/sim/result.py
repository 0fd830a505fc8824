"""What a simulation returns: times, rates, per-transfer and per-link figures."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.topology.routing import Router

_CRIT_RTOL = 1e-9


@dataclass(frozen=True)
class CriticalPath:
    """The chain of transfers (and the links under them) that sets the end time.

    ``transfers`` are indices into the schedule, earliest first; ``links`` are
    ``(link_id, seconds)`` pairs: each critical transfer's byte-moving time, credited
    to the link that set its rate for longest (saturated under max-min, or its route's
    narrowest link when it shared none), summed per link, most first.
    """

    transfers: np.ndarray
    links: list[tuple[int, float]]


class LinkFigures:
    """Per-link views over ``links``, ``link_bandwidth``, ``link_bytes``, ``link_busy``,
    ``link_peak``, ``time`` and ``router`` (a single run's or several jobs' at once)."""

    @property
    def link_utilization(self) -> np.ndarray:
        """Fraction of the run each link spent moving bytes (``link_busy / time``)."""
        return self.link_busy / self.time if self.time > 0 else np.zeros_like(self.link_busy)

    def link_name(self, i: int) -> str:
        u, v = self.links[i]
        return f"{u}->{v}"

    def busiest_links(self, n: int = 5) -> list[dict]:
        """The ``n`` links with the most busy time (then most bytes), as dicts."""
        order = np.lexsort((-self.link_bytes, -self.link_busy))
        out = []
        for i in order[:n].tolist():
            if self.link_bytes[i] <= 0:
                break
            out.append(dict(link=self.link_name(i), bytes=float(self.link_bytes[i]),
                            busy_s=float(self.link_busy[i]),
                            utilization=float(self.link_utilization[i]),
                            peak_utilization=float(self.link_peak[i]),
                            bandwidth=float(self.link_bandwidth[i])))
        return out

    def link_class(self, i: int) -> str:
        """A link's class: the topology's ``class`` of the edge when it has one, else the
        kinds of its ends (``gpu->switch``)."""
        u, v = self.links[i]
        G = getattr(self.router, "G", None)
        if G is not None:
            attrs = G.edges[u, v]
            if attrs.get("class"):
                return str(attrs["class"])
            return f"{G.nodes[u].get('kind', '?')}->{G.nodes[v].get('kind', '?')}"
        return "-"


@dataclass(eq=False)
class SimResult(LinkFigures):
    """The outcome of :func:`commsim.sim.simulate`.

    Times are seconds, sizes bytes, rates bytes/s. ``start``/``end`` hold each
    transfer's start (when both ranks were ready) and end (last byte delivered), or
    are None when not recorded. Link arrays are indexed by link id (``links[i]`` is
    the directed edge ``(u, v)``): ``link_bytes`` carried, ``link_busy`` seconds with
    at least one flow moving bytes, ``link_peak`` the highest fraction of the
    bandwidth in use at any instant. ``rank_end`` is when each rank finished.
    """

    schedule: Schedule
    topology_name: str
    nbytes: int
    time: float
    start: np.ndarray | None
    end: np.ndarray | None
    rank_end: np.ndarray
    links: list
    link_bandwidth: np.ndarray
    link_bytes: np.ndarray
    link_busy: np.ndarray
    link_peak: np.ndarray
    mode: str = "step"
    engine: str = "events"
    events: int = 0
    wall: float = 0.0
    gamma: float = 0.0
    router: Router | None = field(default=None, repr=False)
    limit: np.ndarray | None = field(default=None, repr=False)
    limit_s: np.ndarray | None = field(default=None, repr=False)
    message_overhead: float = 0.0
    overhead: float | np.ndarray = 0.0  # added latency (s): one for all, or per transfer
    # s: where ranks share their host's cores, the host's copies and reductions one after
    # another (commsim.model.cores.host_work); ``time`` is never less (0: not applied)
    host_work: float = 0.0
    _critical: CriticalPath | None = field(default=None, repr=False)

    @classmethod
    def from_run(cls, run, schedule: Schedule, topology, mode: str, engine: str,
                 wall: float, host_work: float = 0.0) -> SimResult:
        time = max(float(run.rank_end.max()) if len(run.rank_end) else 0.0, host_work)
        return cls(schedule=schedule, topology_name=str(topology.graph.get("name", "")),
                   nbytes=run.nbytes, time=time, start=run.start, end=run.end,
                   rank_end=run.rank_end, links=run.router.links,
                   link_bandwidth=run.link_bw, link_bytes=run.link_bytes,
                   link_busy=run.link_busy, link_peak=run.link_peak, mode=mode,
                   engine=engine, events=run.events, wall=wall, gamma=run.gamma,
                   router=run.router, limit=run.limit, limit_s=run.limit_s,
                   message_overhead=run.message_overhead, overhead=run.added_latency(),
                   host_work=host_work)

    # --- headline figures -------------------------------------------------------------

    @property
    def algbw(self) -> float:
        """``size / time`` in bytes/s (nccl-tests' algorithm bandwidth)."""
        return self.nbytes / self.time if self.time > 0 else float("inf")

    @property
    def busbw(self) -> float:
        """``algbw * busbw_factor`` in bytes/s (nccl-tests' bus bandwidth)."""
        from commsim.model import busbw_factor
        return self.algbw * busbw_factor(self.schedule.collective, self.schedule.nranks)

    @property
    def ntransfers(self) -> int:
        return len(self.schedule)

    def bottlenecks(self, n: int = 5) -> list[dict]:
        """The links that bound the completion time, most first, as dicts.

        For every transfer on the critical path, the link that set its rate for longest
        while it moved bytes (saturated under max-min; its route's narrowest link when
        it shared none) is credited with that transfer's byte time. ``seconds`` is the
        sum per link, ``share`` that over the run's time: how much of the run the link
        held up. Falls back to :meth:`busiest_links` without per-transfer times.
        """
        if self.start is None or self.end is None or self.router is None:
            return self.busiest_links(n)
        out = []
        for i, seconds in self.critical_path.links[:n]:
            out.append(dict(link=self.link_name(i), link_class=self.link_class(i),
                            seconds=seconds,
                            share=seconds / self.time if self.time > 0 else 0.0,
                            bytes=float(self.link_bytes[i]),
                            busy_s=float(self.link_busy[i]),
                            utilization=float(self.link_utilization[i]),
                            peak_utilization=float(self.link_peak[i]),
                            bandwidth=float(self.link_bandwidth[i])))
        return out

    @property
    def bottleneck(self) -> dict | None:
        """The link that held the run up longest (see :meth:`bottlenecks`), or None if no
        byte moved."""
        top = self.bottlenecks(1)
        return top[0] if top else None

    def summary(self) -> dict:
        """Headline figures as plain numbers (seconds, bytes, bytes/s); the same for the same
        inputs (the wall time of the run is ``wall``, not in here)."""
        s = self.schedule
        b = self.bottleneck
        return dict(collective=s.collective, algorithm=s.algorithm, nranks=s.nranks,
                    nchunks=s.nchunks, size=self.nbytes, topology=self.topology_name,
                    time_s=self.time, algbw=self.algbw, busbw=self.busbw, mode=self.mode,
                    transfers=self.ntransfers, events=self.events,
                    bottleneck=b["link"] if b else None,
                    bottleneck_utilization=b["utilization"] if b else None)

    # --- the critical path --------------------------------------------------------------

    @property
    def critical_path(self) -> CriticalPath:
        """The transfers (and links) that set :attr:`time` (computed on first use)."""
        if self._critical is None:
            self._critical = self._find_critical()
        return self._critical

    def _need_transfers(self, what: str) -> None:
        if self.start is None or self.end is None:
            from commsim.errors import CommsimError
            raise CommsimError(f"{what} needs per-transfer times; simulate with "
                               "record_transfers=True")

    def _ready_times(self) -> np.ndarray:
        """When each transfer's data is usable at its receiver (end + reduction)."""
        s = self.schedule
        if not self.gamma:
            return self.end
        size = s.transfer_sizes(self.nbytes).astype(np.float64)
        return self.end + np.where(s.reduce, self.gamma * size, 0.0)

    def _find_critical(self) -> CriticalPath:
        self._need_transfers("critical_path")
        s = self.schedule
        if not len(s):
            return CriticalPath(np.zeros(0, dtype=np.int64), [])
        chain = (self._chain_dataflow() if self.mode == "dataflow" else self._chain_step())
        chain = np.asarray(chain[::-1], dtype=np.int64)
        return CriticalPath(chain, self._links_of(chain))

    def _chain_step(self) -> list[int]:
        s = self.schedule
        ptr = s.step_bounds()
        gamma_size = (s.chunk_sizes(s.logical_length(self.nbytes)).astype(np.float64) * self.gamma
                      if self.gamma else None)
        i = int(np.argmax(self.end))
        chain = [i]
        while True:
            t0 = self.start[i]
            st = int(s.step[i])
            best, best_t = None, -np.inf
            for r in (int(s.src[i]), int(s.dst[i])):
                for prev in range(st - 1, -1, -1):  # the rank's previous step
                    a, b = ptr[prev], ptr[prev + 1]
                    mine = np.flatnonzero((s.src[a:b] == r) | (s.dst[a:b] == r)) + a
                    if len(mine):
                        arrive = self.end[mine].max()
                        if gamma_size is not None:
                            got = mine[(s.dst[mine] == r) & s.reduce[mine]]
                            arrive += gamma_size[s.chunk[got]].sum()
                        if arrive > best_t:
                            best_t, best = arrive, int(mine[np.argmax(self.end[mine])])
                        break
            if best is None or best_t < t0 - _CRIT_RTOL * max(abs(t0), 1e-300):
                return chain      # started by a start offset, not by a transfer
            i = best
            chain.append(i)

    def _chain_dataflow(self) -> list[int]:
        from commsim.sim.run import fifo_next
        indptr, indices = self.schedule.dependencies()
        fifo_prev = np.full(len(self.schedule), -1, dtype=np.int64)
        nxt = fifo_next(self.schedule)
        fifo_prev[nxt[nxt >= 0]] = np.flatnonzero(nxt >= 0)
        ready = self._ready_times()
        sent = self._sent_times()
        i = int(np.argmax(ready))
        chain = [i]
        while True:
            preds = indices[indptr[i]:indptr[i + 1]]
            times = ready[preds]
            if fifo_prev[i] >= 0:        # the connection frees once the last byte left
                preds = np.append(preds, fifo_prev[i])
                times = np.append(times, sent[fifo_prev[i]])
            if not len(preds):
                return chain
            j = int(preds[np.argmax(times)])
            t0 = self.start[i]
            if times.max() < t0 - _CRIT_RTOL * max(abs(t0), 1e-300):
                return chain
            i = j
            chain.append(i)

    def _route_ids(self, transfers: np.ndarray) -> np.ndarray:
        s = self.schedule
        return self.router.route_ids(s.src[transfers], s.dst[transfers],
                                     s.transfer_connections()[transfers])

    def _added(self, transfers: np.ndarray):
        """The added latency (s) of ``transfers``: the one overhead, or each one's."""
        return self.overhead if np.ndim(self.overhead) == 0 else self.overhead[transfers]

    def _sent_times(self) -> np.ndarray:
        """When each transfer's last byte left its sender (its end less its latency)."""
        rid = self._route_ids(np.arange(len(self.schedule)))
        return self.end - (self.router.route_latency[rid] + self.overhead)

    def _links_of(self, transfers: np.ndarray) -> list[tuple[int, float]]:
        """``(link, seconds)``: each transfer's byte time credited to the link that set its
        rate longest (the engine's record; else its route's narrowest link)."""
        if self.router is None or not len(transfers):
            return []
        R = self.router
        rid = self._route_ids(transfers)
        moving = np.maximum(self.end[transfers] - self.start[transfers]
                            - (R.route_latency[rid] + self._added(transfers)
                               + self.message_overhead),
                            0.0)
        limit = (self.limit[transfers] if self.limit is not None
                 else np.full(len(transfers), -1, dtype=np.int64))
        missing = np.flatnonzero(limit < 0)
        if len(missing):
            edges, cnt = R.route_links(rid[missing])
            owner = np.repeat(np.arange(len(missing)), cnt)
            # the narrowest link of each route, ties to the lowest id
            order = np.lexsort((edges, self.link_bandwidth[edges], owner))
            first = np.ones(len(order), dtype=bool)
            first[1:] = owner[order][1:] != owner[order][:-1]
            narrow = np.full(len(missing), -1, dtype=np.int64)
            narrow[owner[order][first]] = edges[order][first]
            limit = limit.copy()
            limit[missing] = narrow
        ok = limit >= 0
        per = np.bincount(limit[ok], weights=moving[ok], minlength=len(self.links))
        order = np.argsort(-per, kind="stable")
        return [(int(i), float(per[i])) for i in order if per[i] > 0]

    # --- output ------------------------------------------------------------------------

    def to_chrome_trace(self, path) -> None:
        """Write a Chrome/Perfetto trace: one track per rank and one per busy link."""
        from commsim.sim.trace import write_chrome_trace
        write_chrome_trace(self, path)
