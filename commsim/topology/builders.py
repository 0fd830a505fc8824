"""Topology builders: plain functions, like networkx's generators, that return a DiGraph.

Every builder follows the topology contract of :mod:`commsim.topology`:

- a full-duplex cable is two directed edges, each with ``bandwidth`` (bytes/s) and
  ``latency`` (s);
- every node has ``kind`` in ``gpu``, ``nic``, ``switch``, ``host``; gpus are endpoints
  only (traffic never transits a gpu), so direct gpu-to-gpu networks such as rings and
  tori give each gpu a router (a ``switch`` node with ``role: router``);
- gpus are added first, in rank order (node 0's gpus 0..7, then node 1's, ...), so
  ``commsim.topology.gpus(G)`` is the natural placement;
- ``G.graph`` holds ``name``, ``builder``, ``params`` (as given) and, when the builder
  knows it, ``bisection_bandwidth`` (bytes/s, one direction, first half of the gpus to
  the second half).

Bandwidth and latency arguments take numbers (bytes/s, seconds) or unit strings
(``"450GB/s"``, ``"400Gb/s"``, ``"1us"``); bandwidths are line rates. Each class of link
also takes an efficiency (``efficiency``, ``nvlink_efficiency``, ``nic_efficiency`` ...):
the fraction of line rate collectives reach, in (0, 1], default 1. A link's ``bandwidth``
is line rate x efficiency (see :mod:`commsim.topology.efficiency`); figures derived from
line rates (leaf-spine oversubscription, default spine and injection rates) use line
rates, bisection bandwidths use effective rates. Every link also carries its ``class``
(``nvlink``, ``pcie``, ``nic``, ``spine``, ``host``, ``torus`` ...), the name its
efficiency parameter and ``commsim topo show`` use.
"""

from __future__ import annotations

import itertools
import math

import networkx as nx

from commsim.errors import CommsimError
from commsim.topology.efficiency import link, parse_efficiency
from commsim.units import parse_bandwidth, parse_time

__all__ = ["BUILDERS", "dgx_cluster", "dragonfly", "fat_tree", "fully_connected",
           "leaf_spine", "ring", "star", "torus"]


# -- helpers -------------------------------------------------------------------------------

def _bw(value, field: str) -> float:
    return parse_bandwidth(value, field)


def _lat(value, field: str) -> float:
    return parse_time(value, field)


def _eff(value, field: str) -> float:
    return parse_efficiency(value, field)


def _count(value, field: str, minimum: int = 1) -> int:
    """A whole number >= minimum (YAML may hand us floats like 4.0 or strings)."""
    if isinstance(value, bool):
        raise CommsimError(f"{field}: {value!r} is not a whole number")
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CommsimError(f"{field}: {value!r} is not a whole number") from None
    if not number.is_integer():
        raise CommsimError(f"{field}: {value!r} is not a whole number")
    if number < minimum:
        raise CommsimError(f"{field}: {value!r} must be at least {minimum}")
    return int(number)


# the largest graph a builder makes: beyond any machine commsim simulates, and what
# networkx holds in about a gigabyte (a typo like nodes: 1e9 fails here, not after minutes)
MAX_NODES = 2**18
MAX_LINKS = 2**21


def _limit(fields: str, nodes: int, links: int) -> None:
    """Refuse, before building, a graph of more than :data:`MAX_NODES` nodes or
    :data:`MAX_LINKS` directed links; ``fields`` names the parameters that set its size."""
    if nodes > MAX_NODES or links > MAX_LINKS:
        raise CommsimError(f"{fields}: a topology of {nodes:,} nodes and {links:,} links is "
                           f"more than commsim builds (at most {MAX_NODES:,} nodes and "
                           f"{MAX_LINKS:,} links); use smaller counts")


def _ratio(value, field: str) -> float:
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise CommsimError(f"{field}: {value!r} is not a number; write e.g. 2 for 2:1") from None
    if not math.isfinite(number) or number <= 0:
        raise CommsimError(f"{field}: {value!r} must be a positive ratio, e.g. 2 for 2:1")
    return number


def _graph(name: str, builder: str, params: dict) -> nx.DiGraph:
    G = nx.DiGraph()
    G.graph.update(name=name, builder=builder, params=dict(params))
    return G


def _checked(G: nx.DiGraph) -> nx.DiGraph:
    from commsim.topology import check  # the package imports this module first
    return check(G)


def _duplex(edges: list, u, v, bandwidth: float, latency: float,
            efficiency: float = 1.0, cls: str | None = None) -> None:
    """Append the two directed edges of a full-duplex cable of line rate ``bandwidth`` to
    ``edges`` (their ``bandwidth`` attribute is line rate x ``efficiency``; ``class`` is
    ``cls``)."""
    attr = link(bandwidth, latency, efficiency, cls)
    edges.append((u, v, attr))
    edges.append((v, u, attr))  # add_edges_from copies attr per edge


def _add_gpus(G: nx.DiGraph, names, **attrs) -> list:
    names = list(names)
    G.add_nodes_from(names, kind="gpu", **attrs)
    return names


# -- direct networks -------------------------------------------------------------------------

def torus(dims=(4, 4), bandwidth="25GB/s", latency="1us", injection_bw=None,
          injection_latency=0.0, efficiency=1.0, name: str | None = None) -> nx.DiGraph:
    """A 1D/2D/3D torus: one gpu per router, routers linked to +-1 neighbours in each dim.

    ``bandwidth``/``latency``: each router-router link, per direction. Each gpu attaches to
    its router by an injection link of ``injection_bw`` (default: the router's total
    torus bandwidth, so injection never limits) and ``injection_latency`` (default 0, so a
    one-hop gpu-to-gpu path costs exactly ``latency``). gpu ``i`` sits at the row-major
    coordinate of ``i`` (last dim fastest). A dim of 2 has one cable, not two.
    ``efficiency`` applies to every link (router and injection links alike).
    """
    if isinstance(dims, (int, str)):
        dims = (dims,)
    dims = tuple(_count(d, f"dims[{i}]") for i, d in enumerate(dims))
    if not 1 <= len(dims) <= 3:
        raise CommsimError(f"dims: {dims!r} must have 1, 2 or 3 sizes, e.g. [4, 4]")
    _limit("n" if len(dims) == 1 else "dims", 2 * math.prod(dims),
           2 * math.prod(dims) * (1 + len(dims)))
    bw, lat = _bw(bandwidth, "bandwidth"), _lat(latency, "latency")
    inj_lat = _lat(injection_latency, "injection_latency")
    eff = _eff(efficiency, "efficiency")
    params = {"dims": list(dims), "bandwidth": bandwidth, "latency": latency,
              "injection_bw": injection_bw, "injection_latency": injection_latency,
              "efficiency": efficiency}
    label = "x".join(map(str, dims))
    G = _graph(name or (f"ring-{dims[0]}" if len(dims) == 1 else f"torus-{label}"),
               "ring" if len(dims) == 1 else "torus", params)
    if len(dims) == 1:
        G.graph["params"] = {"n": dims[0], "bandwidth": bandwidth, "latency": latency,
                             "injection_bw": injection_bw,
                             "injection_latency": injection_latency, "efficiency": efficiency}
    coords = list(itertools.product(*(range(d) for d in dims)))
    index = {c: i for i, c in enumerate(coords)}
    _add_gpus(G, (f"gpu{i}" for i in range(len(coords))))
    for i, c in enumerate(coords):
        G.add_node(f"r{i}", kind="switch", role="router", coord=list(c))
    edges: list = []
    degree = [0] * len(coords)
    for i, c in enumerate(coords):
        for axis, d in enumerate(dims):
            if d == 1 or (d == 2 and c[axis] == 1):
                continue  # no self-link; a dim of 2 gets one cable between its two routers
            nxt = list(c)
            nxt[axis] = (c[axis] + 1) % d
            j = index[tuple(nxt)]
            _duplex(edges, f"r{i}", f"r{j}", bw, lat, eff, "torus")
            degree[i] += 1
            degree[j] += 1
    for i in range(len(coords)):
        inj = _bw(injection_bw, "injection_bw") if injection_bw is not None \
            else max(degree[i], 1) * bw
        _duplex(edges, f"gpu{i}", f"r{i}", inj, inj_lat, eff, "injection")
    G.add_edges_from(edges)
    return _checked(G)


def ring(n=8, bandwidth="25GB/s", latency="1us", injection_bw=None, injection_latency=0.0,
         efficiency=1.0, name: str | None = None) -> nx.DiGraph:
    """A bidirectional ring of ``n`` gpus (a 1D torus: each gpu on a router, see :func:`torus`)."""
    return torus((_count(n, "n"),), bandwidth, latency, injection_bw, injection_latency,
                 efficiency, name)


def fully_connected(n=8, bandwidth="25GB/s", latency="1us", efficiency=1.0,
                    name: str | None = None) -> nx.DiGraph:
    """``n`` gpus with a direct duplex link between every pair (no switch)."""
    n = _count(n, "n")
    _limit("n", n, n * (n - 1))
    bw, lat = _bw(bandwidth, "bandwidth"), _lat(latency, "latency")
    eff = _eff(efficiency, "efficiency")
    G = _graph(name or f"fully-connected-{n}", "fully_connected",
               {"n": n, "bandwidth": bandwidth, "latency": latency, "efficiency": efficiency})
    names = _add_gpus(G, (f"gpu{i}" for i in range(n)))
    edges: list = []
    for a, b in itertools.combinations(names, 2):
        _duplex(edges, a, b, bw, lat, eff, "direct")
    G.add_edges_from(edges)
    G.graph["bisection_bandwidth"] = (n // 2) * (n - n // 2) * bw * eff
    return _checked(G)


# -- switched networks -----------------------------------------------------------------------

def star(n=8, bandwidth="25GB/s", latency="1us", efficiency=1.0,
         name: str | None = None) -> nx.DiGraph:
    """``n`` gpus on one non-blocking switch ``sw``: gpu-to-gpu is 2 hops, 2x ``latency``."""
    n = _count(n, "n")
    _limit("n", n + 1, 2 * n)
    bw, lat = _bw(bandwidth, "bandwidth"), _lat(latency, "latency")
    eff = _eff(efficiency, "efficiency")
    G = _graph(name or f"star-{n}", "star", {"n": n, "bandwidth": bandwidth, "latency": latency,
                                             "efficiency": efficiency})
    names = _add_gpus(G, (f"gpu{i}" for i in range(n)))
    G.add_node("sw", kind="switch", level=1)
    edges: list = []
    for g in names:
        _duplex(edges, g, "sw", bw, lat, eff, "host")
    G.add_edges_from(edges)
    G.graph["bisection_bandwidth"] = (n // 2) * bw * eff
    return _checked(G)


def _add_leaf_spine(G: nx.DiGraph, edges: list, leaf_hosts: list[list], spines: int,
                    host_bw: float, host_lat: float, spine_bw, spine_lat: float,
                    oversubscription, prefix: str = "", host_eff: float = 1.0,
                    spine_eff: float = 1.0, host_cls: str = "host") -> tuple[float, float]:
    """Wire ``leaf_hosts[i]`` (endpoint nodes) to leaf i, and every leaf to every spine.

    One leaf-spine edge stands for the bundle of cables between them. Unless given,
    ``spine_bw`` = (host-facing line rate of the fullest leaf) / (spines x
    oversubscription). Links get efficiencies ``host_eff`` and ``spine_eff`` and classes
    ``host_cls`` and ``spine``.
    Returns (spine_bw as a line rate, oversubscription of the fullest leaf).
    """
    if spine_bw is not None and oversubscription is not None:
        raise CommsimError("give spine_bw or oversubscription, not both "
                           "(oversubscription = host-facing bw / spine-facing bw per leaf)")
    widest = max(len(h) for h in leaf_hosts) * host_bw
    if spines == 0:
        if len(leaf_hosts) > 1:
            raise CommsimError(f"spines: 0 leaves the {len(leaf_hosts)} leaves unconnected; "
                               "use at least 1 spine")
        spine_bw = None
    elif spine_bw is None:
        ratio = 1.0 if oversubscription is None else _ratio(oversubscription, "oversubscription")
        spine_bw = widest / (spines * ratio)
    else:
        spine_bw = _bw(spine_bw, "spine_bw")
    leaves = [f"{prefix}leaf{i}" for i in range(len(leaf_hosts))]
    G.add_nodes_from(leaves, kind="switch", level=1)
    G.add_nodes_from((f"{prefix}spine{j}" for j in range(spines)), kind="switch", level=2)
    for leaf, hosts in zip(leaves, leaf_hosts):
        for h in hosts:
            _duplex(edges, h, leaf, host_bw, host_lat, host_eff, host_cls)
        for j in range(spines):
            _duplex(edges, leaf, f"{prefix}spine{j}", spine_bw, spine_lat, spine_eff, "spine")
    return spine_bw, (widest / (spines * spine_bw) if spines else 1.0)


def leaf_spine(leaves=4, spines=2, hosts_per_leaf=8, host_bw="50GB/s", spine_bw=None,
               oversubscription=None, host_latency="1us", spine_latency="1us",
               host_efficiency=1.0, spine_efficiency=1.0,
               name: str | None = None) -> nx.DiGraph:
    """A two-level leaf-spine (folded Clos): ``hosts_per_leaf`` gpus per leaf, every leaf on
    every spine.

    ``oversubscription`` = host-facing bw / spine-facing bw per leaf (2 means 2:1; default
    1, non-blocking); it sets ``spine_bw``, the bandwidth of each leaf-spine link (one edge
    per direction standing for the bundle of cables). Give one of the two, not both.
    ``host_efficiency`` and ``spine_efficiency`` scale the two classes of link.
    gpu-to-gpu: 2 hops on one leaf, 4 hops across leaves.
    """
    leaves, spines = _count(leaves, "leaves"), _count(spines, "spines", minimum=0)
    hosts_per_leaf = _count(hosts_per_leaf, "hosts_per_leaf")
    _limit("leaves, spines, hosts_per_leaf", leaves * (hosts_per_leaf + 1) + spines,
           2 * leaves * (hosts_per_leaf + spines))
    host_bw_v = _bw(host_bw, "host_bw")
    host_eff = _eff(host_efficiency, "host_efficiency")
    spine_eff = _eff(spine_efficiency, "spine_efficiency")
    G = _graph(name or f"leaf-spine-{leaves}x{spines}", "leaf_spine",
               {"leaves": leaves, "spines": spines, "hosts_per_leaf": hosts_per_leaf,
                "host_bw": host_bw, "spine_bw": spine_bw, "oversubscription": oversubscription,
                "host_latency": host_latency, "spine_latency": spine_latency,
                "host_efficiency": host_efficiency, "spine_efficiency": spine_efficiency})
    gpus = _add_gpus(G, (f"gpu{i}" for i in range(leaves * hosts_per_leaf)))
    for i, g in enumerate(gpus):
        G.nodes[g]["leaf"] = i // hosts_per_leaf
    edges: list = []
    leaf_hosts = [gpus[i * hosts_per_leaf:(i + 1) * hosts_per_leaf] for i in range(leaves)]
    sbw, ratio = _add_leaf_spine(G, edges, leaf_hosts, spines, host_bw_v,
                                 _lat(host_latency, "host_latency"), spine_bw,
                                 _lat(spine_latency, "spine_latency"), oversubscription,
                                 host_eff=host_eff, spine_eff=spine_eff)
    G.add_edges_from(edges)
    G.graph["oversubscription"] = ratio
    if leaves % 2 == 0:  # the halves are whole leaves: each crosses through its spine links
        G.graph["bisection_bandwidth"] = (leaves // 2) * min(
            hosts_per_leaf * (host_bw_v * host_eff), spines * (sbw * spine_eff))
    return _checked(G)


def fat_tree(k=8, hosts=None, bandwidth="25GB/s", latency="1us", efficiency=1.0,
             name: str | None = None) -> nx.DiGraph:
    """A k-ary 3-level fat-tree (Al-Fares et al., SIGCOMM 2008): k pods of k/2 edge and k/2
    aggregation switches, (k/2)^2 core switches, k/2 hosts (gpus) per edge switch,
    k^3/4 hosts in all; every link ``bandwidth``/``latency``/``efficiency``.

    ``hosts`` keeps only the first N hosts (e.g. 16384 from k=42) and drops the edge
    switches and pods left without hosts; the core stays whole. Wiring: aggregation
    switch a of every pod connects to core switches a*k/2 .. a*k/2 + k/2 - 1.
    """
    k = _count(k, "k", minimum=2)
    if k % 2:
        raise CommsimError(f"k: {k} must be even (a k-ary fat-tree has k/2 ports up, k/2 down)")
    half = k // 2
    full = k ** 3 // 4
    n = full if hosts is None else _count(hosts, "hosts")
    if n > full:
        raise CommsimError(f"hosts: {n} exceeds the {full} hosts of a k={k} fat-tree; "
                           f"raise k")
    pods = -(-n // (half * half))
    _limit("k, hosts", n + pods * k + half * half, 2 * (n + 2 * pods * half * half))
    bw, lat = _bw(bandwidth, "bandwidth"), _lat(latency, "latency")
    eff = _eff(efficiency, "efficiency")
    G = _graph(name or (f"fat-tree-k{k}" if n == full else f"fat-tree-k{k}-{n}"), "fat_tree",
               {"k": k, "hosts": hosts, "bandwidth": bandwidth, "latency": latency,
                "efficiency": efficiency})
    per_pod = half * half
    G.add_nodes_from((f"gpu{i}", {"kind": "gpu", "pod": i // per_pod}) for i in range(n))
    n_edge_sw = -(-n // half)          # edge switches that keep at least one host
    n_pods = -(-n_edge_sw // half)
    edge_sw = [(f"edge{p}_{e}", p) for p in range(n_pods) for e in range(half)
               if p * half + e < n_edge_sw]
    G.add_nodes_from(((s, {"kind": "switch", "level": 1, "pod": p}) for s, p in edge_sw))
    G.add_nodes_from((f"agg{p}_{a}", {"kind": "switch", "level": 2, "pod": p})
                      for p in range(n_pods) for a in range(half))
    G.add_nodes_from((f"core{c}", {"kind": "switch", "level": 3}) for c in range(per_pod))
    edges: list = []
    for i in range(n):
        e = i // half
        _duplex(edges, f"gpu{i}", f"edge{e // half}_{e % half}", bw, lat, eff, "host")
    for s, p in edge_sw:
        for a in range(half):
            _duplex(edges, s, f"agg{p}_{a}", bw, lat, eff, "aggregation")
    for p in range(n_pods):
        for a in range(half):
            for j in range(half):
                _duplex(edges, f"agg{p}_{a}", f"core{a * half + j}", bw, lat, eff, "core")
    G.add_edges_from(edges)
    if n == full:  # full bisection by construction
        G.graph["bisection_bandwidth"] = (n // 2) * (bw * eff)
    return _checked(G)


def dgx_cluster(nodes=4, gpus_per_node=8, nvlink_bw="450GB/s", nvlink_latency="1us",
                pcie_bw="64GB/s", pcie_latency="1us", nic_bw="400Gb/s", nic_latency="1us",
                spines=None, spine_bw=None, oversubscription=None, spine_latency="1us",
                rail_optimized=True, nodes_per_leaf=None, nvlink_efficiency=1.0,
                pcie_efficiency=1.0, nic_efficiency=1.0, spine_efficiency=1.0,
                pxn=False, name: str | None = None) -> nx.DiGraph:
    """DGX-style nodes on a leaf-spine fabric.

    Each node: ``gpus_per_node`` gpus on one NVSwitch (``nvs{n}``) at ``nvlink_bw`` per
    gpu per direction; one NIC per gpu (``nic{n}_{i}``) on PCIe at ``pcie_bw``; each NIC
    cabled to a leaf at ``nic_bw``. ``rail_optimized`` puts NIC i of every node on rail
    leaf i (``nodes_per_leaf`` nodes per rail leaf, default all nodes); otherwise each leaf
    takes all NICs of ``nodes_per_leaf`` consecutive nodes (default 32 NICs a leaf).
    Leaves connect to every one of ``spines`` spines (default: as many as NICs per leaf / 2,
    at least 1) with ``spine_bw`` per leaf-spine link, or derived from
    ``oversubscription`` (default 1) as in :func:`leaf_spine`. Intra-node traffic goes
    gpu -> NVSwitch -> gpu; inter-node traffic gpu -> NIC -> leaf [-> spine -> leaf] ->
    NIC -> gpu (no PXN forwarding through a peer gpu: gpus never forward).
    ``pxn=True`` adds NCCL's PXN on the sending side: every NIC of a node is also
    reachable from the NVSwitch (``nvs{n} -> nic{n}_{i}``, class ``pxn``: the peer gpu's
    NVLink then its PCIe, at the slower of the two and their summed latency), so
    traffic for another rail crosses to that rail's NIC inside the sender's node
    instead of through the spines (routes are shortest by latency, then by hops).
    ``nvlink_efficiency``, ``pcie_efficiency``, ``nic_efficiency`` (NIC-leaf cables) and
    ``spine_efficiency`` (leaf-spine bundles) scale each class of link; spine bandwidth
    derived from ``oversubscription`` starts from the NICs' line rate.
    """
    nodes, gpn = _count(nodes, "nodes"), _count(gpus_per_node, "gpus_per_node")
    nv_bw, nv_lat = _bw(nvlink_bw, "nvlink_bw"), _lat(nvlink_latency, "nvlink_latency")
    pc_bw, pc_lat = _bw(pcie_bw, "pcie_bw"), _lat(pcie_latency, "pcie_latency")
    ni_bw, ni_lat = _bw(nic_bw, "nic_bw"), _lat(nic_latency, "nic_latency")
    effs = {key: _eff(value, key) for key, value in (
        ("nvlink_efficiency", nvlink_efficiency), ("pcie_efficiency", pcie_efficiency),
        ("nic_efficiency", nic_efficiency), ("spine_efficiency", spine_efficiency))}
    if not isinstance(rail_optimized, bool):
        raise CommsimError(f"rail_optimized: {rail_optimized!r} must be true or false")
    rail = rail_optimized
    if nodes_per_leaf is None:
        npl = nodes if rail else max(1, 32 // gpn)
    else:
        npl = _count(nodes_per_leaf, "nodes_per_leaf")
    # the leaves and spines _add_leaf_spine will make (the default spine count as below)
    n_leaves = -(-nodes // npl) * (gpn if rail else 1)
    widest = min(npl, nodes) * (1 if rail else gpn)
    n_spines = _count(spines, "spines", minimum=0) if spines is not None else \
        0 if n_leaves == 1 else max(1, widest // 2)
    _limit("nodes, gpus_per_node, spines", nodes * (2 * gpn + 1) + n_leaves + n_spines,
           nodes * gpn * 7 + 2 * n_leaves * n_spines)
    G = _graph(name or f"dgx-{nodes}node", "dgx_cluster",
               {"nodes": nodes, "gpus_per_node": gpn, "nvlink_bw": nvlink_bw,
                "nvlink_latency": nvlink_latency, "pcie_bw": pcie_bw,
                "pcie_latency": pcie_latency, "nic_bw": nic_bw, "nic_latency": nic_latency,
                "spines": spines, "spine_bw": spine_bw, "oversubscription": oversubscription,
                "spine_latency": spine_latency, "rail_optimized": rail,
                "nodes_per_leaf": nodes_per_leaf, "nvlink_efficiency": nvlink_efficiency,
                "pcie_efficiency": pcie_efficiency, "nic_efficiency": nic_efficiency,
                "spine_efficiency": spine_efficiency, "pxn": pxn})
    if not isinstance(pxn, bool):
        raise CommsimError(f"pxn: {pxn!r} must be true or false")
    G.add_nodes_from((f"gpu{n}_{i}", {"kind": "gpu", "node": n, "local": i})
                      for n in range(nodes) for i in range(gpn))
    G.add_nodes_from((f"nvs{n}", {"kind": "switch", "level": 0, "node": n})
                      for n in range(nodes))
    G.add_nodes_from((f"nic{n}_{i}", {"kind": "nic", "node": n, "rail": i})
                      for n in range(nodes) for i in range(gpn))
    edges: list = []
    for n in range(nodes):
        for i in range(gpn):
            _duplex(edges, f"gpu{n}_{i}", f"nvs{n}", nv_bw, nv_lat,
                    effs["nvlink_efficiency"], "nvlink")
            _duplex(edges, f"gpu{n}_{i}", f"nic{n}_{i}", pc_bw, pc_lat,
                    effs["pcie_efficiency"], "pcie")
            if pxn:   # sender side only: a gpu hands its data to a peer's NIC
                edges.append((f"nvs{n}", f"nic{n}_{i}",
                              link(min(nv_bw, pc_bw), nv_lat + pc_lat,
                                   effs["pcie_efficiency"], "pxn")))
    groups = [range(s, min(s + npl, nodes)) for s in range(0, nodes, npl)]
    if rail:
        leaf_hosts = [[f"nic{n}_{i}" for n in grp] for grp in groups for i in range(gpn)]
    else:
        leaf_hosts = [[f"nic{n}_{i}" for n in grp for i in range(gpn)] for grp in groups]
    if spines is None and len(leaf_hosts) == 1:
        n_spines = 0  # one leaf needs no spine
    elif spines is None:
        n_spines = max(1, max(len(h) for h in leaf_hosts) // 2)
    _, ratio = _add_leaf_spine(G, edges, leaf_hosts, n_spines, ni_bw, ni_lat, spine_bw,
                               _lat(spine_latency, "spine_latency"), oversubscription,
                               host_eff=effs["nic_efficiency"],
                               spine_eff=effs["spine_efficiency"], host_cls="nic")
    G.add_edges_from(edges)
    G.graph["oversubscription"] = ratio
    return _checked(G)


def dragonfly(groups=5, routers_per_group=4, hosts_per_router=2, host_bw="25GB/s",
              local_bw="25GB/s", global_bw="25GB/s", host_latency="1us", local_latency="1us",
              global_latency="2us", host_efficiency=1.0, local_efficiency=1.0,
              global_efficiency=1.0, name: str | None = None) -> nx.DiGraph:
    """A dragonfly (Kim et al., ISCA 2008): ``groups`` groups of ``routers_per_group``
    routers, all-to-all local links inside a group, one global link between every pair of
    groups, ``hosts_per_router`` gpus per router.

    Group i's link to its m-th other group (other groups in increasing order) leaves from
    router m mod routers_per_group, so global links spread round-robin over the routers.
    ``host_efficiency``, ``local_efficiency`` and ``global_efficiency`` scale the three
    classes of link.
    """
    groups, a = _count(groups, "groups"), _count(routers_per_group, "routers_per_group")
    hpr = _count(hosts_per_router, "hosts_per_router")
    _limit("groups, routers_per_group, hosts_per_router", groups * a * (hpr + 1),
           2 * groups * a * hpr + groups * a * (a - 1) + groups * (groups - 1))
    h_bw, l_bw, g_bw = (_bw(host_bw, "host_bw"), _bw(local_bw, "local_bw"),
                        _bw(global_bw, "global_bw"))
    h_lat, l_lat, g_lat = (_lat(host_latency, "host_latency"),
                           _lat(local_latency, "local_latency"),
                           _lat(global_latency, "global_latency"))
    h_eff, l_eff, g_eff = (_eff(host_efficiency, "host_efficiency"),
                           _eff(local_efficiency, "local_efficiency"),
                           _eff(global_efficiency, "global_efficiency"))
    G = _graph(name or f"dragonfly-{groups}x{a}x{hpr}", "dragonfly",
               {"groups": groups, "routers_per_group": a, "hosts_per_router": hpr,
                "host_bw": host_bw, "local_bw": local_bw, "global_bw": global_bw,
                "host_latency": host_latency, "local_latency": local_latency,
                "global_latency": global_latency, "host_efficiency": host_efficiency,
                "local_efficiency": local_efficiency, "global_efficiency": global_efficiency})
    G.add_nodes_from((f"gpu{i}", {"kind": "gpu", "group": i // (a * hpr)})
                      for i in range(groups * a * hpr))
    G.add_nodes_from((f"rt{g}_{r}", {"kind": "switch", "level": 1, "group": g})
                      for g in range(groups) for r in range(a))
    edges: list = []
    for i in range(groups * a * hpr):
        router = i // hpr
        _duplex(edges, f"gpu{i}", f"rt{router // a}_{router % a}", h_bw, h_lat, h_eff, "host")
    for g in range(groups):
        for r, s in itertools.combinations(range(a), 2):
            _duplex(edges, f"rt{g}_{r}", f"rt{g}_{s}", l_bw, l_lat, l_eff, "local")
    for g, h in itertools.combinations(range(groups), 2):
        rg = (h - 1) % a          # h is g's (h-1)-th other group since h > g
        rh = g % a                # g is h's g-th other group since g < h
        _duplex(edges, f"rt{g}_{rg}", f"rt{h}_{rh}", g_bw, g_lat, g_eff, "global")
    G.add_edges_from(edges)
    return _checked(G)


BUILDERS = {
    "ring": ring,
    "torus": torus,
    "fully_connected": fully_connected,
    "star": star,
    "leaf_spine": leaf_spine,
    "fat_tree": fat_tree,
    "dgx_cluster": dgx_cluster,
    "dragonfly": dragonfly,
}
