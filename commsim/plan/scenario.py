"""One scenario: checked before any work, run, and made a results row.

:func:`check_scenarios` finds bad combinations (an unknown topology or what-if key, more
ranks than gpus, a hierarchical group that does not divide the ranks, a layout that does
not fit) before any work. :func:`run_scenario` runs one scenario as the verbs do
(``commsim simulate``, ``commsim simulate --workload``, ``commsim plan``) and returns its
results; it is a plain function of plain data, so process pools and MPI ranks can run it
(:mod:`commsim.plan.pool`). Each process caches its topologies, fabrics, workloads, routes
and route models. :func:`make_row` and :func:`row_line` make the results-file row and its
JSON line.
"""

from __future__ import annotations

import copy
import json
import time

from commsim.errors import CommsimError
from commsim.plan.study import AXES, DEFAULTS, Scenario, Study, canon, scalar, what_if_label

SIMULATE_MAX = 1024   # plan: simulate gpu counts up to this (as commsim plan's default)
# row keys every kind has (null where they mean nothing for the kind)
RESULT_KEYS = ("time_us", "busbw_gbps", "algbw_gbps", "bottleneck", "events", "wall_s")
ROW_META = ("study", "kind", "key")


# -- checking scenarios before any work --------------------------------------------------

_GRAPHS: dict = {}
_FABRICS: dict = {}
_WORKLOADS: dict = {}
_ROUTERS: dict = {}
_MODELS: dict = {}
_CACHE_MOST = 64


def _remember(cache: dict, key, value):
    if len(cache) >= _CACHE_MOST:
        cache.pop(next(iter(cache)))
    cache[key] = value
    return value


def topology_data(topology_value, name: str) -> dict:
    """A topology file's mapping (a preset's or a path's file, or the inline mapping),
    named ``name``."""
    from commsim.plan.fabric import Fabric

    if isinstance(topology_value, str):
        data = copy.deepcopy(Fabric.load(topology_value).data)
        data.setdefault("name", name)
    else:
        data = copy.deepcopy(topology_value)
        data["name"] = name
    return data


def apply_what_if(data: dict, changes: dict, skip: tuple[str, ...] = ()) -> dict:
    """``data`` with builder parameters changed by a study's ``what_if``
    (:func:`commsim.plan.whatif.apply_topology`, the reader ``commsim plan --what-if``
    uses too: ``2x`` scales the current value, ``1:2`` is a ratio for
    ``oversubscription``, true/false for switches, anything else replaces the value as
    the builder reads it). Keys in ``skip`` are left to the caller (a plan's own keys)."""
    from commsim.plan.whatif import apply_topology

    return apply_topology(data, changes, "what_if", skip)


def fabric_for(topology_value, what_if: dict, name: str, skip: tuple[str, ...] = ()):
    """A :class:`~commsim.plan.fabric.Fabric` of a scenario's topology and what-if."""
    from commsim.plan.fabric import Fabric

    key = canon([topology_value, what_if, skip])
    if key in _FABRICS:
        return _FABRICS[key]
    data = apply_what_if(topology_data(topology_value, name), what_if, skip)
    fab = Fabric(data, data.get("name") or name)
    return _remember(_FABRICS, key, fab)


def graph_for(topology_value, what_if: dict, name: str):
    """The topology graph of a scenario, with its what-if applied (cached per process)."""
    key = canon([topology_value, what_if])
    if key in _GRAPHS:
        return _GRAPHS[key]
    if not what_if and isinstance(topology_value, str):
        from commsim import topology

        G = topology.load(topology_value)
    else:
        from commsim.topology.spec import parse

        data = apply_what_if(topology_data(topology_value, name), what_if)
        label = name if not what_if else f"{name} {what_if_label(what_if)}"
        G = parse(data, source=f"topology {label!r}", default_name=name)
    return _remember(_GRAPHS, key, G)


def _workload(source: str):
    if source not in _WORKLOADS:
        from commsim.workload import read_workload

        _remember(_WORKLOADS, source, read_workload(source))
    return _WORKLOADS[source]


def check_scenarios(scenarios: list[Scenario], progress=None) -> None:
    """Refuse, before any work, scenarios that cannot run: an unknown topology or what-if
    key, more ranks than gpus, a hierarchical group that does not divide the ranks, a
    layout that does not fit the gpus or the model. Errors name the scenario."""
    for sc in scenarios:
        try:
            _check(sc)
        except CommsimError as exc:
            raise CommsimError(f"scenario {describe(sc)}: {exc}") from None
        if progress:
            progress()


def _check(sc: Scenario) -> None:
    p = sc.params
    kind = p["kind"]
    if kind == "plan":
        _plan_setup(p, sc.topology_name)
        return
    G = graph_for(p["topology"], p["what_if"], sc.topology_name)
    from commsim import topology

    ngpus = len(topology.gpus(G))
    if kind == "simulate":
        n = _ranks(p["nranks"], ngpus, sc.topology_name)
        placed = _placement(G, n, p["placement"])
        if p["algorithm"] == "hierarchical":
            _group(G, n, p["group_size"], placed)
        return
    _workload_setup(p, G, ngpus)


def _ranks(nranks, ngpus: int, name: str) -> int:
    if nranks == "all":
        if ngpus < 2:
            raise CommsimError(f"topology {name!r} has {ngpus} gpu(s); 1 rank has nothing "
                               "to communicate")
        return ngpus
    if nranks > ngpus:
        raise CommsimError(f"nranks: {nranks} ranks need {nranks} gpus; topology {name!r} "
                           f"has {ngpus}")
    return nranks


def _placement(G, n: int, how: str) -> list:
    from commsim.topology.placement import place

    return place(G, n, how)


def _group(G, n: int, setting, placed: list) -> int | None:
    """The hierarchical group size: a number, ``switch`` (the leading ranks that share
    rank 0's switch) or ``auto`` (None: the topology's gpus a node, as commsim simulate)."""
    if setting == "auto":
        return None
    if setting == "switch":
        def attached(gpu):
            return {v for v in G.successors(gpu) if G.nodes[v].get("kind") != "gpu"}

        first = attached(placed[0])
        g = 1
        while g < n and attached(placed[g]) & first:
            g += 1
    else:
        g = int(setting)
    if n % g:
        raise CommsimError(f"group_size: {setting} ({g} ranks a group) does not divide "
                           f"{n} ranks")
    return g


def _workload_setup(p: dict, G, ngpus: int):
    from commsim.workload import resolve_layout

    spec = _workload(p["workload"])
    world = ngpus if p["nranks"] == "all" else p["nranks"]
    if world > ngpus:
        raise CommsimError(f"nranks: {world} ranks need {world} gpus; the topology has "
                           f"{ngpus}")
    given = dict(spec.layout)
    if p["layout"].keys() & {"tp", "cp", "pp"} and "dp" not in p["layout"]:
        given.pop("dp", None)   # the study changes the degrees: dp fills what remains
    layout = resolve_layout(given, world, **p["layout"])
    if p["nranks"] != "all" and layout.world != world:
        raise CommsimError(f"layout: {layout.describe()} is {layout.world} ranks, not "
                           f"nranks {world}; drop dp (it fills what remains) or change "
                           "nranks")
    if layout.world > ngpus:
        raise CommsimError(f"layout: {layout.world} ranks need {layout.world} gpus; the "
                           f"topology has {ngpus}")
    from commsim.workload import place_layout

    placement = place_layout(G, layout, p["placement"])
    return spec, layout, placement


def _plan_setup(p: dict, name: str):
    """``(cfg, fabric, layout, simulate)`` of a plan scenario, checked."""
    from commsim.plan import gpus as gpu_mod
    from commsim.plan import models, planner

    changes = dict(p["what_if"])
    fab = fabric_for(p["topology"], p["what_if"], name, planner.LAYOUT_KEYS)
    _ = fab.link_params if fab.analytic else fab.graph    # a bad value: one line, now
    training = dict(p["training"])
    simulate_max = training.pop("simulate_max", SIMULATE_MAX)
    gpu_name = training.pop("gpu", None)
    gpu = gpu_mod.get(gpu_name) if gpu_name else gpu_mod.default_for(fab.name)
    cfg = planner.Config(model=models.get(p["model"]), gpu=gpu, **training, **p["layout"])
    cfg = planner.apply_config(cfg, changes, "what_if")
    n = p["gpus"]
    fab_n = fab if n <= fab.ngpus else fab.grow(n)
    if cfg.fixed_layout:
        layout = planner.make_layout(cfg, n)
        why = planner.check_layout(cfg, layout, fab_n.gpus_per_node)
        if why:
            raise CommsimError(f"layout at {n} gpus: {why}")
    else:
        layout = None
    sim = bool(p["simulate"]) and not fab_n.grown and n <= simulate_max
    return cfg, fab_n, layout, sim


def describe(sc: Scenario, axes: list[str] | None = None) -> str:
    """A scenario in a few words: its topology, then each axis not at its default
    (``fat-tree-k8, ring, 16M, nranks 64, nic_bw=2x``); only ``axes`` when given."""
    p = sc.params
    parts = [sc.topology_name] if axes is None or "topology" in axes else []
    bare = ("collective", "algorithm", "size", "workload", "model", "what_if")
    for axis in AXES[p["kind"]][1:]:
        v = p.get(axis)
        if axes is not None and axis not in axes:
            continue
        if axis == "what_if" and not v:
            if axes is not None:
                parts.append("baseline")
            continue
        if axes is None and v == DEFAULTS[p["kind"]].get(axis) and axis != "algorithm":
            continue
        text = format_value(axis, v)
        parts.append(text if axis in bare else f"{axis} {text}")
    return ", ".join(parts)


def format_value(axis: str, v) -> str:
    """An axis value as tables show it."""
    from commsim.units import format_size, format_time

    if axis == "size":
        return format_size(v)
    if axis == "what_if":
        return what_if_label(v)
    if axis == "gamma":
        return "default" if v is None else f"{format_time(v)}/B"
    if axis == "compute":
        return ",".join(f"{k}={format_time(t)}" for k, t in v.items()) or "none"
    if isinstance(v, dict):
        return ",".join(f"{k}={scalar(x)}" for k, x in v.items()) or "default"
    return scalar(v)


# -- running one scenario ----------------------------------------------------------------

def run_scenario(task: tuple) -> dict:
    """Run one scenario (``Scenario.task()``) and return its results (without the
    parameters; :func:`make_row` joins them). A plain function of plain data, for
    process pools and MPI workers; caches topologies and routes per process."""
    kind, params, name = task
    wall0 = time.perf_counter()
    if kind == "simulate":
        out = _run_simulate(params, name)
    elif kind == "workload":
        out = _run_workload(params, name)
    else:
        out = _run_plan(params, name)
    out["wall_s"] = time.perf_counter() - wall0
    return plain(out)


def _run_simulate(p: dict, name: str) -> dict:
    from commsim import collectives, model, topology
    from commsim.model.setup import build_options, topology_model, topology_params
    from commsim.sim import simulate

    G = graph_for(p["topology"], p["what_if"], name)
    ngpus = len(topology.gpus(G))
    n = _ranks(p["nranks"], ngpus, name)
    coll, algo, size, mode = p["collective"], p["algorithm"], p["size"], p["mode"]
    placed = _placement(G, n, p["placement"])
    group = _group(G, n, p["group_size"], placed) if algo == "hierarchical" else None
    gamma = p["gamma"] if p["gamma"] is not None else \
        float(topology.model_parameter(G, "gamma", 0.0))
    a, b, opts = topology_params(G, n, algo, group, p["channels"],
                                 linear=p["placement"] == "linear")
    k = model.nchunks_for(p["chunks"], coll, algo, n, size, a, b, gamma, mode=mode, **opts)
    s = collectives.build(coll, algo, n, k, **build_options(opts))
    route_key = canon([p["topology"], p["what_if"], n, p["placement"], p["routing"], coll,
                        algo, sorted(build_options(opts).items())])
    res = simulate(s, G, size, placement=placed, routing=p["routing"], sharing=p["sharing"],
                   mode=mode, gamma=gamma, **topology.executor_overheads(G),
                   router=_ROUTERS.get(route_key))
    _remember(_ROUTERS, route_key, res.router)
    if route_key not in _MODELS:
        _remember(_MODELS, route_key, topology_model(G, n, res.router))
    est = _MODELS[route_key](coll, algo, n, s.nchunks, opts, size, gamma, mode, s)
    if est is not None:
        t_model, estimate = est.time, est.shared
    else:
        t_model = model.predict(coll, algo, n, size, a, b, gamma, nchunks=s.nchunks,
                                mode=mode, **opts)
        estimate = True
    bott = res.bottleneck
    return dict(ranks=n, nchunks=s.nchunks,
                group=(s.options or {}).get("group_size") if algo == "hierarchical" else None,
                time_us=res.time * 1e6, algbw_gbps=res.algbw / 1e9,
                busbw_gbps=res.busbw / 1e9, t_model_us=t_model * 1e6,
                model_estimate=bool(estimate),
                bottleneck=bott["link"] if bott else None,
                bottleneck_class=bott.get("link_class") if bott else None,
                bottleneck_share=bott.get("share") if bott else None,
                bottleneck_util=bott["utilization"] if bott else None,
                transfers=res.ntransfers, events=res.events)


def _run_workload(p: dict, name: str) -> dict:
    from commsim import topology
    from commsim.sim import simulate_many
    from commsim.workload import run_step, step_timeline

    G = graph_for(p["topology"], p["what_if"], name)
    ngpus = len(topology.gpus(G))
    spec, layout, placement = _workload_setup(p, G, ngpus)
    timeline = step_timeline(spec.shape, layout, dict(p["compute"]))
    gamma = p["gamma"] if p["gamma"] is not None else \
        float(topology.model_parameter(G, "gamma", 0.0))
    step = run_step(timeline, G, layout, placement, dict(p["algorithms"]), simulate_many,
                    routing=p["routing"], mode=p["mode"], gamma=gamma, sharing=p["sharing"],
                    **topology.executor_overheads(G))
    once = step.phases_once()
    many = next((ph.many for ph in once if ph.many is not None), None)
    top = step.slowest_links(1)
    link = cls = share = None
    if top:
        link = many.link_name(top[0]["link"]) if many is not None else str(top[0]["link"])
        cls = many.link_class(top[0]["link"]) if many is not None else None
        share = top[0]["share"]
    dims = {d: {"time_us": v["time_s"] * 1e6, "share": v["share"], "bytes": v["bytes"],
                "busbw_gbps": v["busbw"] / 1e9} for d, v in step.dims.items()}
    return dict(workload_name=spec.name,
                world=layout.world, tp=layout.tp, cp=layout.cp, pp=layout.pp, dp=layout.dp,
                ep=layout.ep, time_us=step.time_s * 1e6, compute_us=step.compute_s * 1e6,
                comm_us=step.comm_s * 1e6,
                comm_exposed_us=max(0.0, step.time_s - step.compute_s) * 1e6,
                busbw_gbps=None, algbw_gbps=None, bottleneck=link, bottleneck_class=cls,
                bottleneck_share=share, dims=dims, phases=len(once),
                events=sum(int(getattr(ph.many, "events", 0) or 0) for ph in once
                           if ph.many is not None))


def _run_plan(p: dict, name: str) -> dict:
    from commsim.plan import planner
    from commsim.workload import Layout

    cfg, fab, layout, sim = _plan_setup(p, name)
    n = p["gpus"]
    if layout is None:
        best, _valid = planner.search(cfg, fab, n, top=1)
        if not best:
            raise CommsimError(f"gpus {n}: no valid layout of {n} gpus for "
                               f"{cfg.model.name}; give the layout")
        b = best[0]
        layout = Layout(tp=b.tp, cp=b.cp, pp=b.pp, dp=b.dp, ep=b.ep)
    simulate_many = None
    if sim:
        from commsim.sim import simulate_many
    row = planner.evaluate(cfg, fab, n, layout, scenario=what_if_label(p["what_if"]),
                           simulate_many=simulate_many, G=fab.graph if sim else None)
    d = row.as_dict()
    for k in ("link_utilization", "scenario", "wall_s", "gpus"):
        d.pop(k, None)
    out = dict(model_name=cfg.model.name, gpu_name=cfg.gpu.name,
               time_us=row.step_time_s * 1e6, busbw_gbps=None, algbw_gbps=None, events=None)
    out.update(d)
    return out


def plain(value):
    """``value`` with numpy scalars and tuples made JSON's own types (recursively)."""
    import numpy as np

    if isinstance(value, dict):
        return {str(k): plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [plain(v) for v in value]
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    return value


def make_row(study: Study, sc: Scenario, results: dict) -> dict:
    """A results-file row: the study, kind and key, the parameters, then the results."""
    row = {"study": study.name, "kind": study.kind, "key": sc.key}
    row.update({k: v for k, v in sc.params.items() if k != "kind"})
    row["topology_name"] = sc.topology_name
    row.update({k: v for k, v in results.items() if k not in row})
    for k in RESULT_KEYS:
        row.setdefault(k, None)
    return row


def row_line(row: dict, sc: Scenario | None = None) -> str:
    """One JSON line (``allow_nan=False``: inf and nan are refused with the scenario)."""
    try:
        return json.dumps(row, allow_nan=False) + "\n"
    except ValueError:
        where = describe(sc) if sc is not None else row.get("key")
        raise CommsimError(f"scenario {where}: a result is infinite or undefined, which "
                           "JSON cannot carry; check its links and options") from None
