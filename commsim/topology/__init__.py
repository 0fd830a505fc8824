"""Topologies: networks as ``networkx.DiGraph``, their builders, presets and checks.

The contract every part of commsim relies on:

- ``G.graph["name"]``; every node has ``kind`` in {"gpu", "nic", "switch", "host"};
- every directed edge has ``bandwidth`` (bytes/s, > 0) and ``latency`` (s, >= 0); a
  full-duplex cable is two edges; ``bandwidth`` is the effective rate everything uses:
  a link whose efficiency is below 1 also carries ``line_rate`` (bytes/s) and
  ``efficiency`` (in (0, 1]), with bandwidth = line_rate x efficiency
  (:mod:`commsim.topology.efficiency`);
- ranks are placed on gpu nodes; :func:`gpus` lists them in insertion order, the default
  placement; traffic never transits a gpu (gpus are endpoints only).

::

    from commsim import topology
    G = topology.load("fat-tree-k8")          # a preset name, or a path to a YAML file
    G = topology.load("dgx-a100-4node", ideal=True)   # every link at line rate
    topology.gpus(G)[:2]                      # ['gpu0', 'gpu1']
    topology.summary(G)["bisection_bandwidth"]  # bytes/s
    G = topology.builders.leaf_spine(leaves=4, spines=2, hosts_per_leaf=8, oversubscription=2)
"""

from __future__ import annotations

import heapq
import math
import os
from collections import Counter, deque
from pathlib import Path

import networkx as nx

from commsim.errors import CommsimError
from commsim.topology import builders
from commsim.topology.efficiency import link_classes

__all__ = ["KINDS", "builders", "check", "gpus", "link_classes", "load", "model_parameter",
           "preset_dirs", "presets", "save", "summary"]

KINDS = ("gpu", "nic", "switch", "host")

# summary(): work budgets (edge relaxations, flow-graph size) that keep it under ~2 s
_DIAMETER_BUDGET = 1_500_000
_MAXFLOW_LIMIT = 12_000


def model_parameter(G: nx.DiGraph | None, name: str, default=None):
    """A measured model parameter of the topology (a calibrated profile's ``model`` block,
    in SI units: ``gamma``, ``step_overhead``, ``exchange_overhead``, ``exchange_latency``,
    ``message_overhead``, ``contention``), or
    ``default`` when the topology has none."""
    if G is None:
        return default
    return (G.graph.get("model") or {}).get(name, default)


def executor_overheads(G: nx.DiGraph | None, native: bool = False) -> dict:
    """The latencies a profile adds to transfers, as keyword arguments of
    :func:`commsim.sim.simulate` and :class:`commsim.model.on_topology.TopologyModel`
    (seconds): ``overhead`` for one-way steps, ``exchange_overhead`` for steps where a
    rank both sends and receives, ``message_overhead`` a message. commsim's executor pays
    its measured costs; a backend's own collective (``native``) pays none of them, only
    the profile's ``native_message_overhead`` a message (the profile's
    ``exchange_latency`` is reported, not charged: docs/calibrate.md). All 0 (and
    ``exchange_overhead`` None) without a profile. A profile from before exchange steps
    were measured apart has no ``exchange_overhead``: its ``step_overhead`` is every
    step's."""
    step = float(model_parameter(G, "step_overhead", 0.0))
    if native:
        return {"overhead": 0.0, "exchange_overhead": None,
                "message_overhead": float(model_parameter(G, "native_message_overhead", 0.0))}
    exchange = model_parameter(G, "exchange_overhead")
    return {"overhead": step,
            "message_overhead": float(model_parameter(G, "message_overhead", 0.0)),
            "exchange_overhead": None if exchange is None else float(exchange)}


def gpus(G: nx.DiGraph) -> list:
    """The gpu nodes in insertion order: the default rank placement (rank i on gpus(G)[i])."""
    return [n for n, kind in G.nodes(data="kind") if kind == "gpu"]


def preset_dirs() -> list[Path]:
    """Where preset names are looked up: $COMMSIM_TOPOLOGY_PATH (os.pathsep-separated)
    first, then the presets shipped with commsim (:func:`_shipped_presets_dir`)."""
    dirs = [Path(p) for p in os.environ.get("COMMSIM_TOPOLOGY_PATH", "").split(os.pathsep) if p]
    dirs.append(_shipped_presets_dir())
    return dirs


def _shipped_presets_dir() -> Path:
    """The shipped presets: the package data ``commsim/topologies`` of an installed wheel,
    else (a source checkout or an editable install) the repository's ``topologies/``."""
    from importlib.resources import files
    packaged = files("commsim") / "topologies"
    if isinstance(packaged, Path) and packaged.is_dir():
        return packaged
    import commsim
    return Path(commsim.__file__).resolve().parent.parent / "topologies"


def presets() -> list[str]:
    """Names of the presets found in :func:`preset_dirs` (sorted)."""
    names = set()
    for d in preset_dirs():
        if d.is_dir():
            names.update(p.stem for p in d.iterdir() if p.suffix in (".yaml", ".yml"))
    return sorted(names)


def load(name_or_path, ideal: bool = False) -> nx.DiGraph:
    """A topology from a preset name (``"fat-tree-k8"``) or a YAML file path; validated.

    Links run at their effective rate (line rate x efficiency); ``ideal=True`` ignores
    every efficiency, so each link's ``bandwidth`` is its line rate.
    """
    from commsim.topology import spec
    return spec.load(name_or_path, ideal=ideal)


def save(G: nx.DiGraph, path, form: str = "explicit") -> None:
    """Write ``G`` as a YAML topology file: ``form="explicit"`` (nodes and links, exact) or
    ``"builder"`` (builder + params, only for an unmodified builder graph)."""
    from commsim.report.files import write_atomic
    from commsim.topology import spec
    text = spec.dumps(G, form=form)
    try:
        write_atomic(path, text)
    except OSError as exc:
        raise CommsimError(f"topology: cannot write {str(path)!r}: {exc.strerror}") from None


# -- validation ----------------------------------------------------------------------------

def check(G: nx.DiGraph, where: str | None = None) -> nx.DiGraph:
    """Validate the topology contract; raise CommsimError naming the first problem.

    Checks kinds, positive finite bandwidths, non-negative latencies, efficiencies in
    (0, 1] and positive line rates where links have them, at least one gpu,
    and that every ordered pair of gpus is connected by a path that transits no other gpu.
    Messages start with ``where`` (default: the topology's name). Returns ``G``.
    """
    if not isinstance(G, nx.DiGraph) or G.is_multigraph():
        raise CommsimError("topology: must be a networkx.DiGraph")
    label = G.graph.get("name", "topology") if where is None else where
    name = f"{label}: " if label else ""
    for n, kind in G.nodes(data="kind"):
        if kind not in KINDS:
            raise CommsimError(f"{name}node {n!r} has kind {kind!r}; "
                               f"use one of {', '.join(KINDS)}")
    for u, v, attr in G.edges(data=True):
        bw, lat = attr.get("bandwidth"), attr.get("latency")
        if u == v:
            raise CommsimError(f"{name}link {u!r} -> {v!r} is a self-loop; remove it")
        if not _number(bw) or not math.isfinite(bw) or bw <= 0:
            raise CommsimError(f"{name}link {u!r} -> {v!r} has bandwidth {bw!r}; "
                               "it must be a positive number of bytes/s")
        if not _number(lat) or not math.isfinite(lat) or lat < 0:
            raise CommsimError(f"{name}link {u!r} -> {v!r} has latency {lat!r}; "
                               "it must be a number of seconds >= 0")
        if "efficiency" in attr or "line_rate" in attr:
            _check_rates(name, u, v, attr)
    if not gpus(G):
        raise CommsimError(f"{name}has no gpu nodes; ranks need kind: gpu nodes")
    pair = _unreachable_pair(G)
    if pair:
        raise CommsimError(f"{name}gpu {pair[0]!r} cannot reach gpu {pair[1]!r} without "
                           "passing through another gpu; add a link or a switch between them")
    return G


def _check_rates(name: str, u, v, attr: dict) -> None:
    eff, rate = attr.get("efficiency"), attr.get("line_rate")
    if eff is None or rate is None:
        alone = "line_rate" if eff is None else "efficiency"
        raise CommsimError(f"{name}link {u!r} -> {v!r} has {alone} alone; give both "
                           "line_rate and efficiency (bandwidth = line_rate x efficiency), "
                           "or neither")
    if not _number(eff) or not math.isfinite(eff) or not 0 < eff <= 1:
        raise CommsimError(f"{name}link {u!r} -> {v!r} has efficiency {eff!r}; it must be a "
                           "number in (0, 1], the fraction of line rate collectives reach "
                           "(1 is line rate)")
    if not _number(rate) or not math.isfinite(rate) or rate <= 0:
        raise CommsimError(f"{name}link {u!r} -> {v!r} has line_rate {rate!r}; "
                           "it must be a positive number of bytes/s")


def _number(x) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _unreachable_pair(G: nx.DiGraph):
    """The first ordered gpu pair (a, b) with no gpu-free path from a to b, else None."""
    gpu_list = gpus(G)
    is_gpu = {n: kind == "gpu" for n, kind in G.nodes(data="kind")}
    fabric_nodes = [n for n in G if not is_gpu[n]]
    ups = {g: [v for v in G.successors(g) if not is_gpu[v]] for g in gpu_list}
    downs = {g: [u for u in G.predecessors(g) if not is_gpu[u]] for g in gpu_list}
    attached = all(ups[g] and downs[g] for g in gpu_list)
    if attached and fabric_nodes and _fabric_strongly_connected(G, is_gpu, fabric_nodes):
        return None  # the common case, checked in linear time
    # general case: reachability between strongly connected components (SCCs) of the
    # fabric; gpus are grouped by the SCCs they inject into / receive from
    comp_of, reach = {}, {}
    if fabric_nodes:
        cond = nx.condensation(G.subgraph(fabric_nodes))
        comp_of = cond.graph["mapping"]
        for c in reversed(list(nx.topological_sort(cond))):
            reach[c] = {c}.union(*(reach[d] for d in cond.successors(c)))
    receivers: dict[frozenset, list] = {}
    for b in gpu_list:
        receivers.setdefault(frozenset(comp_of[y] for y in downs[b]), []).append(b)
    missed: dict[frozenset, list] = {}
    for a in gpu_list:
        key = frozenset(comp_of[x] for x in ups[a])
        if key not in missed:
            reached = set().union(*(reach[c] for c in key))
            missed[key] = [b for down, group in receivers.items() if not down & reached
                           for b in group]
        for b in missed[key]:
            if b != a and not G.has_edge(a, b):
                return a, b
    return None


def _fabric_strongly_connected(G, is_gpu, fabric_nodes) -> bool:
    """True when every non-gpu node reaches every other one without touching a gpu."""
    for adj in (G._succ, G._pred):
        seen, stack = {fabric_nodes[0]}, [fabric_nodes[0]]
        while stack:
            for v in adj[stack.pop()]:
                if v not in seen and not is_gpu[v]:
                    seen.add(v)
                    stack.append(v)
        if len(seen) != len(fabric_nodes):
            return False
    return True


# -- summary -------------------------------------------------------------------------------

def summary(G: nx.DiGraph) -> dict:
    """Counts and figures of merit, in bytes/s and seconds.

    Keys: name, description, gpus and ranks (the same count), switches, nics, hosts, nodes,
    links (directed edges), link_speeds ({bytes/s: directed-edge count}, fastest first;
    effective rates), link_classes (:func:`link_classes`: per class of link its line rate,
    efficiency and effective rate), ideal (True when loaded with ``ideal=True``),
    diameter_hops and diameter_latency (s) over gpu pairs on gpu-free paths, diameter_note
    (how they were computed: exact, or from a sample of source gpus when the graph is large),
    bisection_bandwidth (bytes/s, one direction, min cut from the first half of the gpus to
    the second half; None when skipped) and bisection_note (analytical / max-flow /
    skipped and why).
    """
    kinds = Counter(kind for _, kind in G.nodes(data="kind"))
    speeds = Counter(bw for _, _, bw in G.edges(data="bandwidth"))
    hops, latency, note = _diameters(G)
    bisection, bnote = _bisection(G)
    return {
        "name": G.graph.get("name", ""),
        "description": G.graph.get("description", ""),
        "gpus": kinds["gpu"],
        "ranks": kinds["gpu"],
        "switches": kinds["switch"],
        "nics": kinds["nic"],
        "hosts": kinds["host"],
        "nodes": G.number_of_nodes(),
        "links": G.number_of_edges(),
        "link_speeds": dict(sorted(speeds.items(), key=lambda kv: -kv[0])),
        "link_classes": link_classes(G),
        "ideal": bool(G.graph.get("ideal", False)),
        "diameter_hops": hops,
        "diameter_latency": latency,
        "diameter_note": note,
        "bisection_bandwidth": bisection,
        "bisection_note": bnote,
    }


def _gpu_free_distances(adj, is_gpu, src, by_latency: bool) -> dict:
    """Shortest distances from ``src`` (hops, or seconds of latency) never expanding gpus."""
    if not by_latency:
        dist, queue = {src: 0}, deque([src])
        while queue:
            u = queue.popleft()
            if u != src and is_gpu[u]:
                continue
            d = dist[u] + 1
            for v in adj[u]:
                if v not in dist:
                    dist[v] = d
                    queue.append(v)
        return dist
    dist, heap, tie = {src: 0.0}, [(0.0, 0, src)], 1
    while heap:
        d, _, u = heapq.heappop(heap)
        if d > dist[u] or (u != src and is_gpu[u]):
            continue
        for v, attr in adj[u].items():
            nd = d + attr["latency"]
            if nd < dist.get(v, math.inf):
                dist[v] = nd
                heapq.heappush(heap, (nd, tie, v))
                tie += 1
    return dist


def _diameters(G: nx.DiGraph):
    gpu_list = gpus(G)
    if len(gpu_list) < 2:
        return 0, 0.0, "exact"
    is_gpu = {n: kind == "gpu" for n, kind in G.nodes(data="kind")}
    work = G.number_of_nodes() + G.number_of_edges()
    n_src = max(1, min(len(gpu_list), _DIAMETER_BUDGET // (2 * work)))
    sources = [gpu_list[i * len(gpu_list) // n_src] for i in range(n_src)]
    hops, latency = 0, 0.0
    for s in sources:
        for by_latency in (False, True):
            dist = _gpu_free_distances(G._adj, is_gpu, s, by_latency)
            far = max(dist.get(g, math.inf) for g in gpu_list if g != s)
            if by_latency:
                latency = max(latency, far)
            else:
                hops = max(hops, far)
    note = "exact" if n_src == len(gpu_list) else \
        f"from {n_src} of {len(gpu_list)} source gpus; too large for all pairs"
    return hops, latency, note


def _bisection(G: nx.DiGraph):
    known = G.graph.get("bisection_bandwidth")
    if known is not None:
        return float(known), "analytical"
    gpu_list = gpus(G)
    if len(gpu_list) < 2:
        return None, "skipped (fewer than 2 gpus)"
    if G.number_of_nodes() + G.number_of_edges() > _MAXFLOW_LIMIT:
        return None, (f"skipped (graph of {G.number_of_nodes()} nodes and "
                      f"{G.number_of_edges()} links is too large for a quick max-flow)")
    half = len(gpu_list) // 2
    first, second = set(gpu_list[:half]), set(gpu_list[half:])
    flow = nx.DiGraph()
    flow.add_edges_from((u, v, {"capacity": bw}) for u, v, bw in G.edges(data="bandwidth")
                        if v not in first and u not in second)
    src, sink = ("__source__",), ("__sink__",)
    flow.add_edges_from((src, g) for g in first)   # no capacity attribute: unbounded
    flow.add_edges_from((g, sink) for g in second)
    value = nx.maximum_flow_value(flow, src, sink)
    return float(value), "max-flow, first half of the gpus to the second half"
