"""Export a topology as a SimGrid platform (XML, DTD version 4.1).

- gpus become ``<host speed="1Gf">``; switches, nics and hosts become ``<router>``;
- every directed edge becomes its own ``<link>`` (id ``"u->v"``, bandwidth in Bps,
  latency in s), so the two directions of a cable never share capacity (what SimGrid's
  SPLITDUPLEX does, made explicit);
- one zone with ``routing="Full"`` and an explicit ``<route symmetrical="NO">`` for every
  ordered pair of gpus: the path commsim uses, i.e. the shortest by latency that transits
  no gpu (ties: fewer hops, then the first found). SimGrid's own Dijkstra/Floyd routing
  counts hops and would route through gpus, so routes are never left to SimGrid.

Full routing holds n(n-1) routes, so the export refuses more than ``max_gpus`` gpus
(default 512). A ``route(src, dst) -> [nodes]`` callable may replace the path choice
(e.g. the simulator's router with ECMP off) so both simulators see the same paths.

Run SimGrid with ``--cfg=network/model:CM02 --cfg=network/crosstraffic:0`` for pure
max-min sharing, the model commsim's simulator implements.
"""

from __future__ import annotations

import heapq
import itertools
import math
from collections.abc import Callable
from xml.sax.saxutils import quoteattr

import networkx as nx

from commsim.errors import CommsimError
from commsim.topology import check, gpus

__all__ = ["link_id", "shortest_paths", "to_simgrid_xml"]

HEADER = ("<?xml version='1.0'?>\n"
          '<!DOCTYPE platform SYSTEM "https://simgrid.org/simgrid.dtd">\n'
          '<platform version="4.1">\n')


def link_id(u, v) -> str:
    """The SimGrid link id of directed edge u -> v."""
    return f"{u}->{v}"


def shortest_paths(G: nx.DiGraph, src) -> dict:
    """Paths from gpu ``src`` to every gpu: shortest by latency, never through a gpu;
    ties broken by fewer hops, then by discovery order (deterministic)."""
    is_gpu = {n: kind == "gpu" for n, kind in G.nodes(data="kind")}
    best = {src: (0.0, 0)}
    parent = {src: None}
    heap, tie = [(0.0, 0, 0, src)], 1
    while heap:
        lat, hops, _, u = heapq.heappop(heap)
        if (lat, hops) > best[u] or (u != src and is_gpu[u]):
            continue
        for v, attr in G._adj[u].items():
            cand = (lat + attr["latency"], hops + 1)
            if cand < best.get(v, (math.inf, 0)):
                best[v] = cand
                parent[v] = u
                heapq.heappush(heap, (*cand, tie, v))
                tie += 1
    paths = {}
    for dst in gpus(G):
        if dst == src or dst not in parent:
            continue
        path = [dst]
        while path[-1] != src:
            path.append(parent[path[-1]])
        paths[dst] = path[::-1]
    return paths


def to_simgrid_xml(G: nx.DiGraph, route: Callable | None = None, host_speed: str = "1Gf",
                   max_gpus: int = 512) -> str:
    """The SimGrid platform XML text for ``G`` (see the module docstring)."""
    check(G)
    gpu_list = gpus(G)
    if len(gpu_list) > max_gpus:
        raise CommsimError(f"simgrid export: {len(gpu_list)} gpus would need "
                           f"{len(gpu_list) * (len(gpu_list) - 1)} explicit routes; "
                           f"export a topology of at most {max_gpus} gpus")
    zone = G.graph.get("name") or "commsim"
    out = [HEADER, f"  <zone id={quoteattr(str(zone))} routing=\"Full\">\n"]
    for g in gpu_list:
        out.append(f"    <host id={quoteattr(str(g))} speed={quoteattr(host_speed)}/>\n")
    for n, kind in G.nodes(data="kind"):
        if kind != "gpu":
            out.append(f"    <router id={quoteattr(str(n))}/>\n")
    for u, v, attr in G.edges(data=True):
        out.append(f"    <link id={quoteattr(link_id(u, v))} "
                   f"bandwidth=\"{attr['bandwidth']!r}Bps\" latency=\"{attr['latency']!r}s\"/>\n")
    for src in gpu_list:
        paths = shortest_paths(G, src) if route is None else \
            {dst: list(route(src, dst)) for dst in gpu_list if dst != src}
        for dst in gpu_list:
            if dst == src:
                continue
            path = paths[dst]
            if route is not None:
                if len(path) < 2 or path[0] != src or path[-1] != dst:
                    raise CommsimError(f"simgrid export: route {src!r} -> {dst!r} must start "
                                       f"at {src!r} and end at {dst!r}, got {path!r}")
                for a, b in itertools.pairwise(path):
                    if not G.has_edge(a, b):
                        raise CommsimError(f"simgrid export: route {src!r} -> {dst!r} uses "
                                           f"{a!r} -> {b!r}, which is not a link")
            out.append(f"    <route src={quoteattr(str(src))} dst={quoteattr(str(dst))} "
                       "symmetrical=\"NO\">")
            out.extend(f"<link_ctn id={quoteattr(link_id(a, b))}/>"
                       for a, b in itertools.pairwise(path))
            out.append("</route>\n")
    out.append("  </zone>\n</platform>\n")
    return "".join(out)
