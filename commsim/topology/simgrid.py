"""Export a topology as a SimGrid platform (XML, DTD version 4.1).

- gpus become ``<host speed="1Gf">``; switches, nics and hosts become ``<router>``;
- every directed edge becomes its own ``<link>`` (id ``"u->v"``, bandwidth in Bps,
  latency in s), so the two directions of a cable never share capacity (what SimGrid's
  SPLITDUPLEX does, made explicit);
- one zone with ``routing="Full"`` and an explicit ``<route symmetrical="NO">`` for every
  ordered pair of gpus: the route ``commsim simulate --routing static`` takes, from the
  simulator's own router (:class:`commsim.topology.routing.Router`, gpu ``i`` as rank
  ``i``). SimGrid's own Dijkstra/Floyd routing counts hops and would route through
  gpus, so routes are never left to SimGrid.

ECMP is the export's documented limit: Full routing holds one route a pair, so a pair
with several equal-cost paths gets its static one, and SimGrid then matches commsim's
``--routing static``, not its default ECMP. Full routing holds n(n-1) routes, so the
export refuses more than ``max_gpus`` gpus (default 512). A ``route(src, dst) ->
[nodes]`` callable may replace the path choice.

Sharing: SimGrid's CM02 model (``--cfg=network/model:CM02 --cfg=network/crosstraffic:0``)
weights each flow's share of a link by its route's latency (on one 10 GB/s link, flows
with 1 us and 3 us routes get 7.5 and 2.5 GB/s): that is ``simulate --sharing rtt``,
not commsim's default max-min. Where every flow on a link has the same route latency
the two agree.
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


def static_routes(G: nx.DiGraph, gpu_list: list) -> Callable:
    """``route(src, dst) -> [nodes]``: the simulator's static route between two gpus
    (gpu ``i`` of ``gpu_list`` as rank ``i``), found for every pair at once."""
    import numpy as np

    from commsim.topology.routing import Router

    router = Router(G, gpu_list, routing="static")
    n = len(gpu_list)
    src, dst = np.divmod(np.arange(n * n), n)
    keep = src != dst
    src, dst = src[keep], dst[keep]
    rid = router.route_ids(src, dst)
    edges, cnt = router.route_links(rid)
    ends = np.cumsum(cnt)
    links = router.links
    paths = {}
    for s_, d_, hi, c in zip(src.tolist(), dst.tolist(), ends.tolist(), cnt.tolist()):
        hops = [links[e] for e in edges[hi - c:hi].tolist()]
        paths[gpu_list[s_], gpu_list[d_]] = [hops[0][0]] + [v for _, v in hops]

    def route(a, b):
        return paths[a, b]

    return route


def to_simgrid_xml(G: nx.DiGraph, route: Callable | None = None, host_speed: str = "1Gf",
                   max_gpus: int = 512) -> str:
    """The SimGrid platform XML text for ``G`` (see the module docstring)."""
    check(G)
    gpu_list = gpus(G)
    if len(gpu_list) > max_gpus:
        raise CommsimError(f"simgrid export: {len(gpu_list)} gpus would need "
                           f"{len(gpu_list) * (len(gpu_list) - 1)} explicit routes; "
                           f"export a topology of at most {max_gpus} gpus")
    if route is None:
        route = static_routes(G, gpu_list)
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
        for dst in gpu_list:
            if dst == src:
                continue
            path = list(route(src, dst))
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
