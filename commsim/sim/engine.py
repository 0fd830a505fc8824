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
  transfer on its connection (same src, dst and ``Schedule.connection``, in schedule
  order) has sent its last byte (so messages stream down a connection, their
  latencies overlapping), and both its ranks have started (their start offsets).
  Connections deliver in order, like NCCL's channels or one TCP/RDMA stream; without
  that, max-min fairness lets transfers that ran ahead share a connection with the
  urgent one and slow it down. A pair's connections (NCCL's channels, gloo's two
  segments in flight) queue apart and share the links as flows.

Two executors give the same answer:

- ``sweep_uncontended``: step by step in numpy, every transfer at full rate, checking
  as it goes that no two flows are ever in their byte phase on one link at once. If the
  check holds the result is exact (no flow ever shares a link, so the max-min rate of
  each is its route's narrowest link); if it fails the sweep gives up.
- ``EventEngine``: the general discrete-event simulation. Events at one instant are
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
from commsim.model.cores import host_work
from commsim.sim.events import EventEngine
from commsim.sim.run import MODES, SHARINGS, Run, check_placement, per_rank_values
from commsim.sim.sweep import sweep_uncontended
from commsim.topology.routing import Router

ENGINES = ("auto", "events", "sweep")


def simulate(schedule: Schedule, topology: nx.DiGraph, nbytes: int, placement=None,
             routing: str = "ecmp", mode: str = "step", gamma: float = 0.0,
             start_offsets=None, reduce_slowdown=None, *, record_transfers: bool = True,
             ecmp_width: int = 16, engine: str = "auto", router: Router | None = None,
             progress=None, overhead: float = 0.0, message_overhead: float = 0.0,
             overlap: bool = True, sharing: str = "maxmin",
             exchange_overhead: float | None = None):
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
    ``exchange_overhead``: seconds added instead to transfers one of whose ranks both
    sends and receives in their step (:meth:`Schedule.both_ways`: a ring's every step;
    a profile's ``exchange_overhead``, what a host whose cores are all busy adds to
    such steps); None: those pay ``overhead`` too.
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
    Where ``topology`` is a profile whose ranks share their host's cores
    (``cores_per_rank`` below 1), the time is never less than the host's copies and
    reductions done one after another (:func:`commsim.model.cores.host_work`, as the
    model on the topology; :attr:`SimResult.host_work`).
    """
    from commsim.sim.result import SimResult

    check_options(mode, sharing, engine, gamma, overhead, message_overhead,
                  exchange_overhead)
    if isinstance(nbytes, bool) or not isinstance(nbytes, (int, np.integer)) or nbytes < 0:
        raise CommsimError(f"size: {nbytes!r} must be a whole number of bytes >= 0")
    P = schedule.nranks
    wall0 = _time.perf_counter()
    if len(schedule) and max(int(schedule.src.max()), int(schedule.dst.max())) >= P:
        raise CommsimError(f"schedule: a transfer names a rank >= nranks={P}")
    check_memory(len(schedule))
    if router is None:
        router = Router(topology, check_placement(topology, P, placement), routing, ecmp_width)
    offsets = per_rank_values(start_offsets, P, 0.0, "start_offsets")
    slowdown = per_rank_values(reduce_slowdown, P, 1.0, "reduce_slowdown")
    run, used = execute(schedule, router, int(nbytes), float(gamma), offsets, slowdown,
                        mode=mode, engine=engine, record_transfers=record_transfers,
                        progress=progress, overhead=float(overhead),
                        message_overhead=float(message_overhead), overlap=overlap,
                        sharing=sharing, exchange_overhead=exchange_overhead)
    floor = host_work(schedule, int(nbytes), router, float(gamma), slowdown)
    wall = _time.perf_counter() - wall0
    return SimResult.from_run(run, schedule, topology, mode=mode, engine=used, wall=wall,
                              host_work=floor)


BYTES_PER_TRANSFER = 160  # what a run holds a transfer: 170-180 B measured in either engine


def check_memory(ntransfers: int, available: int | None = None) -> None:
    """Refuse, before any work, a run whose per-transfer arrays cannot fit in the memory
    this process may still use (:func:`commsim.machine.available_memory`): one line with
    what it would need."""
    from commsim.machine import available_memory

    need = ntransfers * BYTES_PER_TRANSFER
    available = available_memory() if available is None else available
    if available is not None and need > available:
        raise CommsimError(f"schedule: simulating {ntransfers:,} transfers needs about "
                           f"{need / 2**30:.1f} GiB and {available / 2**30:.1f} GiB is "
                           "available; use fewer ranks (--nranks) or chunks (--chunks)")


def check_options(mode: str, sharing: str, engine: str, gamma: float, overhead: float,
                  message_overhead: float, exchange_overhead: float | None = None) -> None:
    """One clear line for a bad option of :func:`simulate` (or ``simulate_many``)."""
    if mode not in MODES:
        raise CommsimError(f"mode: {mode!r} is not one of {', '.join(MODES)}")
    if sharing not in SHARINGS:
        raise CommsimError(f"sharing: {sharing!r} is not one of {', '.join(SHARINGS)}")
    if engine not in ENGINES:
        raise CommsimError(f"engine: {engine!r} is not one of {', '.join(ENGINES)}")
    for field, value, unit in (("gamma", gamma, "seconds per byte"),
                               ("overhead", overhead, "seconds"),
                               ("message_overhead", message_overhead, "seconds"),
                               ("exchange_overhead", exchange_overhead or 0.0, "seconds")):
        value = float(value)
        if not np.isfinite(value) or value < 0:
            raise CommsimError(f"{field}: {value!r} must be a finite number of {unit} >= 0")


def execute(schedule, router: Router, nbytes: int, gamma: float, offsets: np.ndarray,
            slowdown: np.ndarray, *, mode: str, engine: str, record_transfers: bool,
            progress, overhead: float, message_overhead: float, overlap: bool,
            sharing: str, chunk_bytes: np.ndarray | None = None,
            exchange_overhead: float | None = None,
            routes: np.ndarray | None = None) -> tuple[Run, str]:
    """Run ``schedule`` (checked inputs) with the sweep when it applies, else the event
    engine; the finished :class:`Run` and the name of the executor used. ``routes``:
    every transfer's route id on ``router``, if already known."""
    def new_run(record: bool, routes) -> Run:
        return Run(schedule, router, nbytes, gamma, offsets, slowdown, record, overhead,
                   message_overhead, overlap, sharing, chunk_bytes, exchange_overhead,
                   routes)

    run = new_run(record_transfers, routes)
    if mode == "step" and engine in ("auto", "sweep") and sweep_uncontended(run):
        return run, "sweep"
    if engine == "sweep":
        raise CommsimError("engine: 'sweep' needs a contention-free step-mode run; this "
                           "one shares links (use engine='auto')")
    run = new_run(True, run._rid)    # the sweep's routes, if it routed the run at once
    EventEngine(run, mode, progress).run_all()
    if mode == "dataflow":
        ends = run.end + np.where(
            schedule.reduce,
            gamma * slowdown[schedule.dst] * run.chunk_bytes[schedule.chunk], 0.0)
        done = offsets.copy()
        np.maximum.at(done, schedule.src.astype(np.int64), run.end)
        np.maximum.at(done, schedule.dst.astype(np.int64), ends)
        run.rank_end = done
    if not record_transfers:
        run.start = run.end = None
    return run, "events"
