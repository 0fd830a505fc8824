"""What the simulator's executors share: checked inputs and the run's state.

:class:`Run` holds a schedule's transfers with their sizes, routes and the per-link
counters both executors fill (:mod:`commsim.sim.sweep`, :mod:`commsim.sim.events`).
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.topology.placement import place
from commsim.topology.routing import Router

MODES = ("step", "dataflow")
SHARINGS = ("maxmin", "rtt")
ROUTE_ALL = 1 << 22   # runs of at most this many transfers are routed in one call


def check_placement(G: nx.DiGraph, nranks: int, placement) -> list:
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


def per_rank_values(values, nranks: int, default: float, field: str) -> np.ndarray:
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


class Run:
    """What both executors share: the schedule, sizes, routes and link counters."""

    def __init__(self, schedule: Schedule, router: Router, nbytes: int, gamma: float,
                 offsets: np.ndarray, slowdown: np.ndarray, record: bool,
                 overhead: float = 0.0, message_overhead: float = 0.0,
                 overlap: bool = True, sharing: str = "maxmin",
                 chunk_bytes: np.ndarray | None = None,
                 exchange_overhead: float | None = None,
                 routes: np.ndarray | None = None) -> None:
        self.s = schedule
        self.router = router
        self.overhead = float(overhead)  # seconds added to every transfer's latency
        # ... or, per transfer, ``exchange_overhead`` where a rank of it both sends and
        # receives in its step (Schedule.both_ways); None: every transfer pays overhead
        self.per_transfer = None
        if exchange_overhead is not None and float(exchange_overhead) != self.overhead:
            self.per_transfer = np.where(schedule.both_ways(), float(exchange_overhead),
                                         self.overhead)
        # seconds a transfer holds its connection before its first byte moves
        self.message_overhead = float(message_overhead)
        self.overlap = bool(overlap)  # may a rank reduce while its connections move bytes
        self.sharing = sharing        # "maxmin" or "rtt"
        self.nbytes = nbytes
        if chunk_bytes is None:
            logical = schedule.logical_length(nbytes)  # p times the size for alltoall
            chunk_bytes = schedule.chunk_sizes(logical)
        self.chunk_bytes = np.asarray(chunk_bytes, dtype=np.float64)
        # what ECMP hashes besides the gpus: each transfer's connection (0: one a pair)
        self.connection = (0 if schedule.connection is None
                           else schedule.transfer_connections())
        # ranks of several jobs on one gpu: its links carry more than one rank's sends
        self.shared_gpus = len(set(router.placement)) < len(router.placement)
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
        # every transfer's route (all_route_ids): ``routes`` if given, ``router``'s ids
        # that an earlier run of the same schedule computed, else on first use
        self._rid = routes

    def overheads(self, a: int, b: int):
        """Seconds added to the latency of transfers ``a:b``: a float, or an array."""
        return self.overhead if self.per_transfer is None else self.per_transfer[a:b]

    def added_latency(self):
        """Every transfer's added latency (s): a float, or an array of ``T``."""
        return self.overhead if self.per_transfer is None else self.per_transfer

    def sizes(self, a: int, b: int) -> np.ndarray:
        return self.chunk_bytes[self.s.chunk[a:b]]

    def route_ids(self, src: np.ndarray, dst: np.ndarray, a: int, b: int,
                  st: int) -> np.ndarray:
        """The routes of transfers ``a:b`` (all of step ``st``) from ``src`` to ``dst``.

        A run of at most :data:`ROUTE_ALL` transfers routes all of them in one call the
        first time (:meth:`all_route_ids`): routing costs a numpy call a step otherwise,
        which is most of the time of a run of thousands of small steps (several jobs at
        once). The routes are the same either way (a transfer's route depends only on its
        gpus and connection), only their numbering differs."""
        if self.T <= ROUTE_ALL:
            return self.all_route_ids()[a:b]
        conn = self.connection if np.isscalar(self.connection) else self.connection[a:b]
        return self.router.route_ids(src, dst, conn)

    def all_route_ids(self) -> np.ndarray:
        """Every transfer's route, computed in one call on first use."""
        if self._rid is None:
            s = self.s
            self._rid = self.router.route_ids(s.src.astype(np.intp), s.dst.astype(np.intp),
                                              self.connection)
        return self._rid


def fifo_next(s: Schedule) -> np.ndarray:
    """The next transfer on the same connection (src, dst and ``Schedule.connection``)
    in schedule order, or -1."""
    key = s.connection_keys()
    order = np.argsort(key, kind="stable")
    same = key[order[1:]] == key[order[:-1]]
    out = np.full(len(s), -1, dtype=np.int64)
    out[order[:-1][same]] = order[1:][same]
    return out


def rank_spans(s: Schedule) -> tuple[np.ndarray, np.ndarray]:
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
