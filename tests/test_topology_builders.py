"""Builders: structure, counts, speeds, and the no-gpu-transit reachability check."""

from __future__ import annotations

import itertools
import time
from collections import Counter

import networkx as nx
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim import topology
from commsim.errors import CommsimError
from commsim.topology import builders as B


def gpu_free_path(G, src, dst):
    """Shortest-latency path from src to dst on a view without the other gpus."""
    view = nx.subgraph_view(G, filter_node=lambda n: n in (src, dst)
                            or G.nodes[n]["kind"] != "gpu")
    return nx.dijkstra_path(view, src, dst, weight="latency")


ALL_BUILDERS = [
    lambda: B.ring(5),
    lambda: B.torus((3, 4)),
    lambda: B.torus((2, 3, 4)),
    lambda: B.fully_connected(4),
    lambda: B.star(6),
    lambda: B.leaf_spine(leaves=3, spines=2, hosts_per_leaf=4, oversubscription=3),
    lambda: B.fat_tree(4),
    lambda: B.fat_tree(6, hosts=20),
    lambda: B.dgx_cluster(3, gpus_per_node=4),
    lambda: B.dgx_cluster(3, gpus_per_node=4, rail_optimized=False, nodes_per_leaf=2),
    lambda: B.dragonfly(4, 3, 2),
]


@pytest.mark.parametrize("make", ALL_BUILDERS)
def test_every_builder_meets_the_contract(make):
    G = make()
    assert G.graph["name"] and G.graph["builder"] in B.BUILDERS and "params" in G.graph
    kinds = [k for _, k in G.nodes(data="kind")]
    assert set(kinds) <= set(topology.KINDS)
    first_other = next((i for i, k in enumerate(kinds) if k != "gpu"), len(kinds))
    assert all(k != "gpu" for k in kinds[first_other:]), "gpus come first"
    for u, v, attr in G.edges(data=True):
        assert attr["bandwidth"] > 0 and attr["latency"] >= 0
        back = G.edges[v, u]  # every cable is duplex, same speed both ways
        assert back == attr
    gpus = topology.gpus(G)
    for a in gpus[:3]:
        for b in gpus[-3:]:
            if a != b:
                path = gpu_free_path(G, a, b)
                assert all(G.nodes[n]["kind"] != "gpu" for n in path[1:-1])


def test_units_strings_are_parsed():
    G = B.ring(4, bandwidth="100Gb/s", latency="500ns")
    assert G.edges["r0", "r1"]["bandwidth"] == 12.5e9
    assert G.edges["r0", "r1"]["latency"] == pytest.approx(5e-7)
    with pytest.raises(CommsimError, match="bandwidth"):
        B.star(4, bandwidth="fast")


@pytest.mark.parametrize("k", [2, 4, 6, 8])
def test_fat_tree_counts_and_degrees(k):
    G = B.fat_tree(k)
    hosts, switches = k ** 3 // 4, 5 * k * k // 4
    assert len(topology.gpus(G)) == hosts
    assert G.number_of_nodes() == hosts + switches
    # cables: hosts-edge, edge-agg and agg-core layers each carry k^3/4 cables
    assert G.number_of_edges() == 2 * 3 * k ** 3 // 4
    for n, kind in G.nodes(data="kind"):
        assert G.out_degree(n) == (1 if kind == "gpu" else k)


def test_fat_tree_truncation_keeps_only_used_switches():
    G = B.fat_tree(4, hosts=5)  # 2 hosts an edge switch: edge switches 0,1 of pod 0 and 0 of pod 1
    assert topology.gpus(G) == [f"gpu{i}" for i in range(5)]
    levels = Counter(lvl for n, lvl in G.nodes(data="level") if lvl is not None)
    assert levels == {1: 3, 2: 4, 3: 4}
    for n, lvl in G.nodes(data="level"):
        if lvl == 1:
            assert any(G.nodes[m]["kind"] == "gpu" for m in G.successors(n))
    with pytest.raises(CommsimError, match="hosts"):
        B.fat_tree(4, hosts=17)
    with pytest.raises(CommsimError, match="even"):
        B.fat_tree(7)


def test_fat_tree_k42_16384_hosts_builds_quickly():
    start = time.perf_counter()
    G = B.fat_tree(42, hosts=16384)
    elapsed = time.perf_counter() - start
    assert len(topology.gpus(G)) == 16384
    assert elapsed < 10, f"fat_tree(42, hosts=16384) took {elapsed:.1f} s"


@settings(max_examples=30, deadline=None)
@given(leaves=st.integers(1, 6), spines=st.integers(1, 4), hosts=st.integers(1, 8),
       ratio=st.sampled_from([0.5, 1, 1.5, 2, 3, 4]))
def test_leaf_spine_oversubscription_is_the_ratio_of_capacities(leaves, spines, hosts, ratio):
    G = B.leaf_spine(leaves=leaves, spines=spines, hosts_per_leaf=hosts, host_bw="25GB/s",
                     oversubscription=ratio)
    for leaf in (n for n, lvl in G.nodes(data="level") if lvl == 1):
        down = sum(G.edges[leaf, m]["bandwidth"] for m in G.successors(leaf)
                   if G.nodes[m]["kind"] == "gpu")
        up = sum(G.edges[leaf, m]["bandwidth"] for m in G.successors(leaf)
                 if G.nodes[m].get("level") == 2)
        assert down / up == pytest.approx(ratio, rel=1e-12)
    assert G.graph["oversubscription"] == pytest.approx(ratio)


def test_leaf_spine_rejects_both_spine_bw_and_ratio():
    with pytest.raises(CommsimError, match="not both"):
        B.leaf_spine(spine_bw="100GB/s", oversubscription=2)


@pytest.mark.parametrize("dims", [(5,), (4, 4), (3, 4, 5), (2, 4), (2, 2, 2)])
def test_torus_router_degree(dims):
    G = B.torus(dims)
    expected = sum(2 if d > 2 else (1 if d == 2 else 0) for d in dims)
    for n, kind in G.nodes(data="kind"):
        if kind == "switch":
            routers = [m for m in G.successors(n) if G.nodes[m]["kind"] == "switch"]
            assert len(routers) == expected
            assert sum(G.nodes[m]["kind"] == "gpu" for m in G.successors(n)) == 1


def test_ring_neighbour_path_costs_one_link_latency():
    G = B.ring(6, bandwidth="50GB/s", latency="2us")
    path = gpu_free_path(G, "gpu0", "gpu1")
    assert path == ["gpu0", "r0", "r1", "gpu1"]
    assert nx.path_weight(G, path, "latency") == pytest.approx(2e-6)
    assert min(G.edges[u, v]["bandwidth"] for u, v in itertools.pairwise(path)) == 50e9


def test_dgx_intra_node_goes_through_nvswitch_and_inter_node_through_nics():
    G = B.dgx_cluster(2, gpus_per_node=4, nvlink_bw="450GB/s", nic_bw="400Gb/s")
    assert topology.gpus(G)[:5] == ["gpu0_0", "gpu0_1", "gpu0_2", "gpu0_3", "gpu1_0"]
    intra = gpu_free_path(G, "gpu0_0", "gpu0_3")
    assert intra == ["gpu0_0", "nvs0", "gpu0_3"]
    assert G.edges["gpu0_0", "nvs0"]["bandwidth"] == 450e9
    inter = gpu_free_path(G, "gpu0_1", "gpu1_1")
    assert inter[1] == "nic0_1" and inter[-2] == "nic1_1"
    assert "nvs0" not in inter and "nvs1" not in inter
    assert G.edges["nic0_1", inter[2]]["bandwidth"] == 50e9


def test_dgx_rail_optimized_vs_by_node_leaves():
    def leaf_of(G, nic):
        return next(m for m in G.successors(nic) if G.nodes[m]["kind"] == "switch")
    rail = B.dgx_cluster(4, gpus_per_node=8, rail_optimized=True)
    for i in range(8):
        assert len({leaf_of(rail, f"nic{n}_{i}") for n in range(4)}) == 1
    assert len({leaf_of(rail, f"nic0_{i}") for i in range(8)}) == 8
    by_node = B.dgx_cluster(4, gpus_per_node=8, rail_optimized=False, nodes_per_leaf=2)
    for n in range(4):
        assert len({leaf_of(by_node, f"nic{n}_{i}") for i in range(8)}) == 1
    assert leaf_of(by_node, "nic0_0") == leaf_of(by_node, "nic1_0")
    assert leaf_of(by_node, "nic0_0") != leaf_of(by_node, "nic2_0")


def test_dragonfly_links_groups_all_to_all():
    G = B.dragonfly(groups=5, routers_per_group=3, hosts_per_router=2)
    group = dict(G.nodes(data="group"))
    routers = [n for n, k in G.nodes(data="kind") if k == "switch"]
    pairs = Counter()
    for u, v in G.edges:
        if u in routers and v in routers and group[u] != group[v]:
            pairs[tuple(sorted((group[u], group[v])))] += 1
    assert len(pairs) == 10 and set(pairs.values()) == {2}  # one cable = 2 directed edges
    for r in routers:  # local all-to-all
        local = [m for m in G.successors(r) if m in routers and group[m] == group[r]]
        assert len(local) == 2
    assert len(topology.gpus(G)) == 30


# -- check() -----------------------------------------------------------------------------

def _line_of_gpus():
    G = nx.DiGraph(name="line")
    G.add_nodes_from(["g0", "g1", "g2"], kind="gpu")
    for u, v in (("g0", "g1"), ("g1", "g2")):
        G.add_edge(u, v, bandwidth=1e9, latency=0.0)
        G.add_edge(v, u, bandwidth=1e9, latency=0.0)
    return G


def test_check_refuses_transit_through_a_gpu():
    with pytest.raises(CommsimError, match="'g0' cannot reach gpu 'g2'"):
        topology.check(_line_of_gpus())
    G = _line_of_gpus()
    G.add_edge("g0", "g2", bandwidth=1e9, latency=0.0)
    G.add_edge("g2", "g0", bandwidth=1e9, latency=0.0)
    topology.check(G)


def test_check_sees_one_way_links():
    G = B.star(3)
    G.remove_edge("sw", "gpu2")
    with pytest.raises(CommsimError, match="cannot reach gpu 'gpu2'"):
        topology.check(G)


@pytest.mark.parametrize("breakage, message", [
    (lambda G: G.edges["gpu0", "sw"].update(bandwidth=0), "bandwidth"),
    (lambda G: G.edges["gpu0", "sw"].update(latency=-1e-6), "latency"),
    (lambda G: G.nodes["sw"].update(kind="router"), "kind"),
    (lambda G: G.remove_nodes_from(["gpu0", "gpu1", "gpu2", "gpu3"]), "no gpu"),
])
def test_check_rejects_bad_attributes(breakage, message):
    G = B.star(4)
    breakage(G)
    with pytest.raises(CommsimError, match=message):
        topology.check(G)


def test_check_on_disconnected_fabric_names_a_pair():
    G = nx.union(B.star(2), nx.relabel_nodes(B.star(2), {"gpu0": "x0", "gpu1": "x1",
                                                          "sw": "sw2"}))
    with pytest.raises(CommsimError, match="cannot reach"):
        topology.check(G)


# -- summary() ----------------------------------------------------------------------------

def test_summary_of_a_star():
    s = topology.summary(B.star(8, bandwidth="10GB/s", latency="1us"))
    assert (s["gpus"], s["switches"], s["links"]) == (8, 1, 16)
    assert s["link_speeds"] == {10e9: 16}
    assert s["diameter_hops"] == 2 and s["diameter_latency"] == pytest.approx(2e-6)
    assert s["bisection_bandwidth"] == pytest.approx(40e9)


def test_summary_max_flow_bisection_matches_hand_counts():
    # ring of 8: the halves 0..3 and 4..7 are joined by the 3->4 and 7->0 links
    s = topology.summary(B.ring(8, bandwidth="10GB/s"))
    assert s["bisection_bandwidth"] == pytest.approx(20e9)
    assert "max-flow" in s["bisection_note"]
    # a star without the analytical figure: 4 gpus' uplinks bound the cut
    G = B.star(8, bandwidth="10GB/s")
    del G.graph["bisection_bandwidth"]
    assert topology.summary(G)["bisection_bandwidth"] == pytest.approx(40e9)
    # 2:1 leaf-spine, 4 leaves: 2 leaves x 2 spines x 50 GB/s cross
    G = B.leaf_spine(leaves=4, spines=2, hosts_per_leaf=8, host_bw="25GB/s",
                     oversubscription=2)
    analytic = G.graph.pop("bisection_bandwidth")
    assert analytic == pytest.approx(200e9)
    assert topology.summary(G)["bisection_bandwidth"] == pytest.approx(analytic)


def test_summary_is_fast_on_the_largest_preset():
    G = topology.load("dgx-h100-superpod")
    start = time.perf_counter()
    s = topology.summary(G)
    elapsed = time.perf_counter() - start
    assert s["gpus"] == 1024 and s["diameter_hops"] == 6
    assert elapsed < 4, f"summary took {elapsed:.2f} s"


def test_pxn_sends_cross_rail_traffic_through_the_peer_s_nic_not_the_spines():
    from commsim.topology.routing import Router

    plain = B.dgx_cluster(2, gpus_per_node=4, nic_bw="200Gb/s", spines=2)
    pxn = B.dgx_cluster(2, gpus_per_node=4, nic_bw="200Gb/s", spines=2, pxn=True)
    gpus = topology.gpus(pxn)
    src, dst = gpus.index("gpu0_1"), gpus.index("gpu1_0")   # rail 1 to rail 0
    without = [v for _, v in Router(plain, gpus, "static").path(src, dst)]
    with_pxn = [v for _, v in Router(pxn, gpus, "static").path(src, dst)]
    assert any(v.startswith("spine") for v in without)
    assert with_pxn[:2] == ["nvs0", "nic0_0"] and not any(v.startswith("spine")
                                                          for v in with_pxn)
    assert pxn.edges["nvs0", "nic0_0"]["class"] == "pxn"
    same_rail = gpus.index("gpu1_1")   # rail 1 to rail 1: its own NIC, as without PXN
    assert [v for _, v in Router(pxn, gpus, "static").path(src, same_rail)][0] == "nic0_1"
