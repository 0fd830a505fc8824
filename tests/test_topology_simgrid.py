"""SimGrid platform export: structure checked with xml.etree (SimGrid itself not needed)."""

from __future__ import annotations

import itertools
import xml.etree.ElementTree as ET

import networkx as nx
import pytest

from commsim import topology
from commsim.errors import CommsimError
from commsim.topology import builders as B
from commsim.topology.simgrid import link_id, to_simgrid_xml


def parse(G, **kw):
    text = to_simgrid_xml(G, **kw)
    assert text.startswith("<?xml") and "simgrid.dtd" in text
    root = ET.fromstring(text.split("\n", 2)[2])  # drop the XML and DOCTYPE lines
    assert root.tag == "platform" and root.get("version") == "4.1"
    zone = root.find("zone")
    assert zone.get("routing") == "Full"
    return zone


def gpu_free_latency(G, src, dst):
    view = nx.subgraph_view(G, filter_node=lambda n: n in (src, dst)
                            or G.nodes[n]["kind"] != "gpu")
    return nx.dijkstra_path_length(view, src, dst, weight="latency")


@pytest.mark.parametrize("make", [lambda: B.star(4), lambda: B.ring(5),
                                  lambda: B.leaf_spine(2, 2, 3, oversubscription=2),
                                  lambda: B.dgx_cluster(2, gpus_per_node=3),
                                  lambda: B.dragonfly(3, 2, 1)])
def test_platform_matches_the_graph(make):
    G = make()
    zone = parse(G)
    gpus = topology.gpus(G)
    assert [h.get("id") for h in zone.findall("host")] == gpus
    assert all(h.get("speed") == "1Gf" for h in zone.findall("host"))
    assert {r.get("id") for r in zone.findall("router")} == set(G) - set(gpus)
    links = {ln.get("id"): ln for ln in zone.findall("link")}
    assert len(links) == G.number_of_edges()
    for u, v, attr in G.edges(data=True):
        link = links[link_id(u, v)]
        assert float(link.get("bandwidth").removesuffix("Bps")) == attr["bandwidth"]
        assert float(link.get("latency").removesuffix("s")) == attr["latency"]
    routes = zone.findall("route")
    assert len(routes) == len(gpus) * (len(gpus) - 1)
    edge_of = {link_id(u, v): (u, v) for u, v in G.edges}
    seen = set()
    for route in routes:
        src, dst = route.get("src"), route.get("dst")
        assert route.get("symmetrical") == "NO"
        hops = [edge_of[c.get("id")] for c in route.findall("link_ctn")]
        assert hops[0][0] == src and hops[-1][1] == dst
        assert all(a[1] == b[0] for a, b in itertools.pairwise(hops)), "links form a path"
        assert all(G.nodes[v]["kind"] != "gpu" for _, v in hops[:-1]), "no gpu transit"
        latency = sum(G.edges[e]["latency"] for e in hops)
        assert latency == pytest.approx(gpu_free_latency(G, src, dst), rel=1e-12)
        seen.add((src, dst))
    assert len(seen) == len(routes)


def test_two_directions_use_distinct_links():
    zone = parse(B.star(2))
    routes = {(r.get("src"), r.get("dst")): [c.get("id") for c in r.findall("link_ctn")]
              for r in zone.findall("route")}
    assert not set(routes["gpu0", "gpu1"]) & set(routes["gpu1", "gpu0"])


def test_dgx_routes_intra_node_through_nvswitch():
    zone = parse(B.dgx_cluster(2, gpus_per_node=2))
    route = next(r for r in zone.findall("route")
                 if (r.get("src"), r.get("dst")) == ("gpu0_0", "gpu0_1"))
    assert [c.get("id") for c in route.findall("link_ctn")] == \
        [link_id("gpu0_0", "nvs0"), link_id("nvs0", "gpu0_1")]


def test_custom_route_and_size_limit():
    G = B.leaf_spine(2, 2, 1)
    def via_spine1(src, dst):
        return [src, f"leaf{src[-1]}", "spine1", f"leaf{dst[-1]}", dst]
    zone = parse(G, route=via_spine1)
    ids = [c.get("id") for r in zone.findall("route") for c in r.findall("link_ctn")]
    assert link_id("leaf0", "spine1") in ids and link_id("leaf0", "spine0") not in ids
    with pytest.raises(CommsimError, match="at most 4 gpus"):
        to_simgrid_xml(B.star(5), max_gpus=4)
    with pytest.raises(CommsimError, match="not a link"):
        to_simgrid_xml(G, route=lambda s, d: [s, d])


@pytest.mark.parametrize("name", ["leaf-spine-2to1", "fat-tree-k8"])
def test_the_export_writes_the_routes_the_simulator_takes(name):
    """Every pair's exported route is the simulator's static route, link for link (an
    outside replay found the old first-found paths differed for most pairs)."""
    from commsim.topology.routing import Router

    G = topology.load(name)
    gpus = topology.gpus(G)
    zone = parse(G)
    exported = {(r.get("src"), r.get("dst")): [c.get("id") for c in r.findall("link_ctn")]
                for r in zone.findall("route")}
    router = Router(G, gpus, routing="static")
    index = {g: i for i, g in enumerate(gpus)}
    differ = 0
    for (src, dst), links in list(exported.items())[::7]:   # a seventh of the pairs
        want = [link_id(u, v) for u, v in router.path(index[src], index[dst])]
        differ += links != want
    assert len(exported) == len(gpus) * (len(gpus) - 1)
    assert differ == 0
    # multi-path pairs are spread over the spines, not pinned to the first one
    if name == "leaf-spine-2to1":
        spines = {link.split("->")[1] for links in exported.values() for link in links
                  if "->spine" in link}
        assert len(spines) == 2
