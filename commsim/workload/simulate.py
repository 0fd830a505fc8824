"""A training step on the simulator: each phase's collectives as concurrent jobs.

:func:`jobs_for_phase` turns a :class:`~commsim.workload.step.Phase` into simulator jobs:
one per group per op, each the schedule of ``commsim.collectives.build(collective,
algorithm, group size)`` placed on its group's gpus. :func:`run_step` simulates every
distinct phase once, with ``simulate_many(jobs, G, **options)`` (passed in: the
simulator's, or a stand-in in tests), and adds the phases up::

    step time = sum(count * (communication + compute))    # max() for overlap phases

where a phase's communication time is its slowest job's. Units: seconds, bytes, bytes/s.
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np

from commsim import collectives
from commsim.errors import CommsimError, unknown
from commsim.workload.layout import Layout
from commsim.workload.step import Op, Phase, send_factor

DEFAULT_ALGORITHMS = {"allreduce": "ring", "reduce_scatter": "ring", "allgather": "ring",
                      "alltoall": "pairwise", "send": "chain"}


def algorithm_for(op: Op, algorithms: dict | None) -> tuple[str, str, dict]:
    """``(collective to build, algorithm, options)`` for ``op``: ``algorithms`` maps
    ``"dim:collective"`` or ``"collective"`` to a name or ``(name, options)``; defaults
    :data:`DEFAULT_ALGORITHMS`. A PP ``send`` is a 2-rank ``broadcast`` from the sender."""
    algorithms = algorithms or {}
    choice = algorithms.get(f"{op.dim}:{op.collective}",
                            algorithms.get(op.collective, DEFAULT_ALGORITHMS[op.collective]))
    name, options = (choice, {}) if isinstance(choice, str) else (choice[0], dict(choice[1]))
    collective = "broadcast" if op.collective == "send" else op.collective
    return collective, collectives.resolve(collective, name).name, options


def _check_algorithms(algorithms: dict | None) -> None:
    known = set(DEFAULT_ALGORITHMS)
    for key in algorithms or {}:
        coll = str(key).split(":")[-1]
        if coll not in known:
            raise unknown("algorithms key", key, known)


def _instances(op: Op, layout: Layout) -> list[list[int]]:
    """The rank lists ``op`` runs on: every group of its dimension; for a PP send, every
    pair of neighbouring stages (sender first: to the next stage in forward, to the
    previous one in backward)."""
    groups = layout.groups(op.dim)
    if op.collective != "send":
        return [g for g in groups if len(g) > 1]
    back = op.phase == "backward"
    return [[g[i + 1], g[i]] if back else [g[i], g[i + 1]]
            for g in groups for i in range(len(g) - 1)]


def _phase_jobs(phase: Phase, layout: Layout, placement: Sequence, algorithms: dict | None,
                cache: dict) -> tuple[list, list[Op], list[str]]:
    """The jobs of one phase and, parallel to them, the op each job runs and the group it
    runs on (``"tp 3"``: the fourth TP group; ``"pp 5"``: the sixth pair of neighbouring
    stages)."""
    _check_algorithms(algorithms)
    from commsim.sim import Job
    if len(placement) < layout.world:
        raise CommsimError(f"placement: {len(placement)} gpus for a layout of {layout.world} "
                           "ranks; place every rank (workload.place_layout)")
    jobs, owners, tracks = [], [], []
    for op in phase.ops:
        collective, algorithm, options = algorithm_for(op, algorithms)
        for i, ranks in enumerate(_instances(op, layout)):
            key = (collective, algorithm, len(ranks), tuple(sorted(options.items())))
            if key not in cache:
                cache[key] = collectives.build(collective, algorithm, len(ranks), **options)
            jobs.append(Job(cache[key], op.nbytes, [placement[r] for r in ranks],
                                 start=0.0, name=f"{phase.name}/{op.dim}:{op.collective}#{i}"))
            owners.append(op)
            tracks.append(f"{op.dim} {i}")
    return jobs, owners, tracks


def jobs_for_phase(phase: Phase, layout: Layout, placement: Sequence,
                   algorithms: dict | None = None) -> list:
    """One simulator ``Job`` per group per op of ``phase``, all starting at 0.

    ``placement[r]``: global rank ``r``'s gpu (:func:`~commsim.workload.place_layout`).
    ``algorithms``: ``{"allreduce": "ring", "tp:allreduce": "rhd", "send": "chain", ...}``
    (:func:`algorithm_for`). Single-rank groups produce no job.
    """
    return _phase_jobs(phase, layout, placement, algorithms, {})[0]


# -- results -----------------------------------------------------------------------------

@dataclass
class PhaseResult:
    """One distinct phase, simulated once. ``comm_s``: its slowest job (s); ``time_s``:
    one execution with its compute; ``dims``: the slowest job per dimension (s);
    ``ops``: per op ``{dim, collective, nbytes, ranks, jobs, time_s, busbw}`` (busbw in
    bytes/s); ``links``: the combined run's busiest links, ``link_bytes`` and
    ``link_busy`` its bytes and busy seconds per link, ``crossing`` ``{link: {dim:
    bytes}}`` what each link carried for whom (when the simulator gives them);
    ``model_s``: the model's estimate, if one ran."""

    name: str
    count: int
    comm_s: float
    compute_s: float
    overlap: bool
    dims: dict = field(default_factory=dict)
    ops: list = field(default_factory=list)
    links: list = field(default_factory=list)
    link_bytes: object = None
    model_s: float | None = None
    link_busy: object = None
    crossing: dict = field(default_factory=dict)
    many: object = field(default=None, repr=False)
    groups: list = field(default_factory=list)

    @property
    def time_s(self) -> float:
        """One execution: communication and compute, added or (overlap) side by side."""
        if self.overlap:
            return max(self.comm_s, self.compute_s)
        return self.comm_s + self.compute_s


@dataclass
class StepResult:
    """A simulated step. ``time_s``: ``sum(count * phase.time_s)``; ``compute_s`` and
    ``comm_s``: the compute and communication in it (overlapped parts counted in both);
    ``dims``: per dimension ``{time_s, share, bytes, busbw}`` (its collectives' time per
    step, that over the step time, bytes a GPU sends, bytes over time as bus bandwidth);
    dimensions that share a phase both count its time."""

    time_s: float
    compute_s: float
    comm_s: float
    phases: list[PhaseResult]
    dims: dict
    model_s: float | None = None

    def phases_once(self) -> list[PhaseResult]:
        """Each distinct phase once, in the order the step first runs it."""
        seen, out = set(), []
        for p in self.phases:
            if p.name not in seen:
                seen.add(p.name)
                out.append(p)
        return out

    def slowest_links(self, n: int = 5) -> list[dict]:
        """The ``n`` links busiest over the step, most first: ``link`` (its id),
        ``busy_s`` (seconds per step it moved bytes, every phase times its count),
        ``share`` (that over the step time), ``bytes`` per step and ``crossing`` ``{dim:
        bytes per step}``: which parallel dimensions' traffic crosses it."""
        busy: dict[int, float] = {}
        nbytes: dict[int, float] = {}
        crossing: dict[int, dict] = {}
        for p in self.phases:
            if p.link_busy is None:
                continue
            for link in np.flatnonzero(p.link_busy).tolist():
                busy[link] = busy.get(link, 0.0) + p.count * float(p.link_busy[link])
            for link, dims in p.crossing.items():
                nbytes[link] = nbytes.get(link, 0.0) + p.count * sum(dims.values())
                mine = crossing.setdefault(link, {})
                for dim, b in dims.items():
                    mine[dim] = mine.get(dim, 0.0) + p.count * b
        top = sorted(busy, key=lambda k: (-busy[k], -nbytes.get(k, 0.0), k))[:n]
        return [{"link": k, "busy_s": busy[k],
                 "share": busy[k] / self.time_s if self.time_s > 0 else 0.0,
                 "bytes": nbytes.get(k, 0.0), "crossing": crossing.get(k, {})} for k in top]

    def as_dict(self) -> dict:
        return {"time_s": self.time_s, "compute_s": self.compute_s, "comm_s": self.comm_s,
                "model_s": self.model_s, "dims": self.dims,
                "phases": [{"name": p.name, "count": p.count, "comm_s": p.comm_s,
                            "compute_s": p.compute_s, "overlap": p.overlap,
                            "time_s": p.time_s, "dims": p.dims, "ops": p.ops,
                            "links": p.links, "model_s": p.model_s} for p in self.phases]}


def _key(phase: Phase) -> tuple:
    """What makes two phases the same simulation: their ops' groups, sizes and direction."""
    return tuple(sorted((op.dim, op.collective, op.nbytes, op.phase == "backward"
                         and op.collective == "send") for op in phase.ops))


def takes_memo(simulate_many: Callable) -> bool:
    """Whether ``simulate_many`` takes a ``memo`` keyword: the simulator's
    (:func:`commsim.sim.simulate_many`) does; a stand-in must name it to get one."""
    from commsim.sim import simulate_many as simulator

    if simulate_many is simulator:
        return True
    try:
        param = inspect.signature(simulate_many).parameters.get("memo")
    except (TypeError, ValueError):
        return False
    return param is not None and param.kind in (param.POSITIONAL_OR_KEYWORD,
                                                 param.KEYWORD_ONLY)


def run_step(timeline: list[Phase], G, layout: Layout, placement: Sequence,
             algorithms: dict | None = None, simulate_many: Callable | None = None,
             model: Callable | None = None, **sim_options) -> StepResult:
    """Simulate each distinct phase of ``timeline`` once and add the step up.

    ``simulate_many(jobs, G, **sim_options)`` returns one result per job, in order, each
    with ``time`` (s from its own start); the combined ``busiest_links(n)`` and
    ``link_bytes`` are read when present. ``model(job) -> seconds or None``, if given,
    estimates each job too (the phase's estimate is its slowest job); without
    ``simulate_many`` the model's times are the step's (a model-only step).

    A ``simulate_many`` that takes a ``memo`` (:func:`takes_memo`; the simulator's does)
    gets one dict for the whole step unless ``sim_options`` brings one: groups of jobs
    met in an earlier phase (the data-parallel groups beside each phase's
    tensor-parallel ones) are then not simulated again.
    """
    if simulate_many is None and model is None:
        raise CommsimError("run_step: give simulate_many (the simulator) or model (an "
                           "estimate per job), or both")
    if (simulate_many is not None and "memo" not in sim_options
            and takes_memo(simulate_many)):
        sim_options = {**sim_options, "memo": {}}
    cache: dict = {}
    done: dict[tuple, PhaseResult] = {}
    results = []
    for phase in timeline:
        key = _key(phase)
        if key not in done:
            done[key] = _run_phase(phase, G, layout, placement, algorithms, simulate_many,
                                   model, cache, sim_options)
        base = done[key]
        results.append(PhaseResult(phase.name, phase.count, base.comm_s, phase.compute_s,
                                   phase.overlap, base.dims, base.ops, base.links,
                                   base.link_bytes, base.model_s, base.link_busy,
                                   base.crossing, base.many, base.groups))
    return _total(results, model is not None and simulate_many is not None)


def _run_phase(phase, G, layout, placement, algorithms, simulate_many, model, cache,
               sim_options) -> PhaseResult:
    jobs, owners, tracks = _phase_jobs(phase, layout, placement, algorithms, cache)
    out = PhaseResult(phase.name, phase.count, 0.0, phase.compute_s, phase.overlap)
    if not jobs:
        return out
    estimates = None
    if model is not None:
        estimates = [model(job) for job in jobs]
        known = [t for t in estimates if t is not None]
        out.model_s = max(known) if known else None
    if simulate_many is not None:
        res = simulate_many(jobs, G, **sim_options)
        times = [float(r.time) for r in res]
        if len(times) != len(jobs):
            raise CommsimError(f"simulate_many returned {len(times)} results for {len(jobs)} "
                               "jobs; it must return one per job")
        if hasattr(res, "busiest_links"):
            out.links = list(res.busiest_links(5))
        out.link_bytes = getattr(res, "link_bytes", None)
        out.link_busy = getattr(res, "link_busy", None)
        out.many = res
        out.groups = tracks
        if hasattr(res, "link_bytes_by"):     # the simulator's: every job in one pass
            per_dim = res.link_bytes_by([op.dim for op in owners]).items()
        else:
            per_dim = [(op.dim, r.link_bytes) for op, r in zip(owners, res)
                       if getattr(r, "link_bytes", None) is not None]
        for dim, per_link in per_dim:
            for link in np.flatnonzero(per_link).tolist():
                mine = out.crossing.setdefault(link, {})
                mine[dim] = mine.get(dim, 0.0) + float(per_link[link])
    else:
        times = [float(t or 0.0) for t in estimates]
    out.comm_s = max(times)
    per_op: dict[Op, float] = {}
    per_op_jobs: dict[Op, int] = {}
    for op, t in zip(owners, times):
        per_op[op] = max(per_op.get(op, 0.0), t)
        per_op_jobs[op] = per_op_jobs.get(op, 0) + 1
        out.dims[op.dim] = max(out.dims.get(op.dim, 0.0), t)
    for op, t in per_op.items():
        out.ops.append({"dim": op.dim, "collective": op.collective, "nbytes": op.nbytes,
                        "ranks": op.ranks, "jobs": per_op_jobs[op], "time_s": t,
                        "busbw": op.factor * op.nbytes / t if t > 0 else 0.0})
    return out


def _total(phases: list[PhaseResult], with_model: bool) -> StepResult:
    time = sum(p.count * p.time_s for p in phases)
    compute = sum(p.count * p.compute_s for p in phases)
    comm = sum(p.count * p.comm_s for p in phases)
    dims: dict[str, dict] = {}
    for p in phases:
        for op in p.ops:
            d = dims.setdefault(op["dim"], {"time_s": 0.0, "bytes": 0.0, "op_time_s": 0.0})
            d["bytes"] += p.count * send_factor(op["collective"], op["ranks"]) * op["nbytes"]
            d["op_time_s"] += p.count * op["time_s"]
        for dim, t in p.dims.items():
            dims[dim]["time_s"] += p.count * t
    for d in dims.values():
        op_time = d.pop("op_time_s")
        d["share"] = d["time_s"] / time if time > 0 else 0.0
        d["busbw"] = d["bytes"] / op_time if op_time > 0 else 0.0
    model = None
    if with_model:
        model = sum(p.count * (max(p.model_s or 0.0, p.compute_s) if p.overlap
                               else (p.model_s or 0.0) + p.compute_s) for p in phases)
    return StepResult(time, compute, comm, phases, dims, model)


def step_chrome_trace(step: StepResult) -> dict:
    """A Chrome/Perfetto trace of one step: the distinct phases one after the other, once
    each (a phase run ``count`` times is named with its count), a track per group (every
    phase a group takes part in lands on its track, a slice per collective) and a track
    per link that carried bytes. Times are microseconds."""
    from commsim.sim.trace import link_events, link_intervals, merge_intervals

    us = 1e6
    ev: list[dict] = [dict(ph="M", pid=1, name="process_name", args=dict(name="groups")),
                      dict(ph="M", pid=2, name="process_name", args=dict(name="links"))]
    track: dict[str, int] = {}
    ids, xs, ys = [], [], []
    names = None
    t = 0.0
    for p in step.phases_once():
        many = p.many
        if many is not None:
            names = many
            for r, group in zip(many, p.groups):
                if group not in track:
                    track[group] = len(track)
                    ev.append(dict(ph="M", pid=1, tid=track[group], name="thread_name",
                                   args=dict(name=group)))
                    ev.append(dict(ph="M", pid=1, tid=track[group],
                                   name="thread_sort_index", args=dict(sort_index=track[group])))
                ev.append(dict(ph="X", pid=1, tid=track[group], ts=t * us, dur=r.time * us,
                               name=f"{p.name}" + (f" (x{p.count})" if p.count > 1 else ""),
                               args=dict(collective=r.schedule.collective,
                                         algorithm=r.schedule.algorithm, bytes=r.nbytes,
                                         busbw_gbps=r.busbw / 1e9)))
                if r.start is not None:
                    a, x, y = link_intervals(r)
                    ids.append(a)
                    xs.append(x + t)
                    ys.append(y + t)
        t += p.time_s
    if ids:
        ev += link_events(*merge_intervals(np.concatenate(ids), np.concatenate(xs),
                                           np.concatenate(ys)), names.link_name, pid=2)
    return dict(traceEvents=ev, displayTimeUnit="ns",
                otherData=dict(step_s=step.time_s, comm_s=step.comm_s))
