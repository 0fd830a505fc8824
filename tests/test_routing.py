"""Routes: shortest by latency, never through a gpu, ECMP deterministic and spread."""

from __future__ import annotations

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import CommsimError
from commsim.topology import builders, gpus
from commsim.topology.routing import IntMap, Router, expand_ranges


def _check_path(G, path, src, dst):
    assert path[0][0] == src and path[-1][1] == dst
    for (_, v), (x, _) in zip(path, path[1:]):
        assert v == x                                   # links are consecutive
    for u, _ in path[1:]:
        assert G.nodes[u]["kind"] != "gpu"              # never transits a gpu


def _reference_latency(G, src, dst):
    """Shortest latency src -> dst with gpus as endpoints only (networkx Dijkstra)."""
    H = nx.DiGraph()
    for u, v, d in G.edges(data=True):
        if u != src and G.nodes[u]["kind"] == "gpu":
            continue
        if v != dst and G.nodes[v]["kind"] == "gpu":
            continue
        H.add_edge(u, v, weight=d["latency"])
    return nx.shortest_path_length(H, src, dst, weight="weight")


def test_star_route_is_two_hops():
    G = builders.star(4, bandwidth=1e9, latency=1e-6)
    R = Router(G, gpus(G))
    assert R.path(0, 3) == [("gpu0", "sw"), ("sw", "gpu3")]
    rid = R.route_ids(np.array([0]), np.array([3]))
    assert R.route_latency[rid[0]] == 2e-6
    assert R.route_bandwidth[rid[0]] == 1e9


def test_fat_tree_paths_and_equal_cost_sets():
    G = builders.fat_tree(4)
    R = Router(G, gpus(G))
    assert len(R.path(0, 1)) == 2                       # same edge switch
    assert len(R.path(0, 2)) == 4                       # same pod
    assert len(R.path(0, 15)) == 6                      # across pods
    assert len(R.equal_cost_routes(0, 2)) == 2          # k/2 aggregation switches
    routes = R.equal_cost_routes(0, 15)
    assert len(routes) == 4                             # (k/2)^2 core switches
    for p in routes:
        _check_path(G, p, "gpu0", "gpu15")
    assert len({p[2][1] for p in routes}) == 4          # four different cores


def test_ecmp_spreads_connections_and_static_does_not():
    G = builders.fat_tree(4)
    src, dst = np.zeros(64, dtype=np.int64), np.full(64, 15)
    conn = np.arange(64)
    ecmp = Router(G, gpus(G), routing="ecmp").route_ids(src, dst, conn)
    static = Router(G, gpus(G), routing="static").route_ids(src, dst, conn)
    assert len(set(ecmp.tolist())) >= 3
    assert len(set(static.tolist())) == 1


def test_ecmp_keeps_a_connection_on_one_path():
    """A switch hashes a connection's header, not its messages: every transfer of one
    connection between a pair of gpus takes one path, whatever chunk or step it is."""
    G = builders.fat_tree(4)
    R = Router(G, gpus(G), routing="ecmp")
    src, dst = np.zeros(64, dtype=np.int64), np.full(64, 15)
    assert len(set(R.route_ids(src, dst).tolist())) == 1
    assert len(set(R.route_ids(src, dst, np.full(64, 3)).tolist())) == 1


def test_routes_do_not_depend_on_the_order_pairs_are_met():
    G = builders.fat_tree(4)
    rng = np.random.default_rng(0)
    src = rng.integers(0, 16, 300)
    dst = (src + rng.integers(1, 16, 300)) % 16
    conn = rng.integers(0, 50, 300)
    a = Router(G, gpus(G))
    b = Router(G, gpus(G))
    ra = a.route_ids(src, dst, conn)
    order = rng.permutation(300)
    rb = np.empty(300, dtype=np.int64)
    for part in np.array_split(order, 7):
        rb[part] = b.route_ids(src[part], dst[part], conn[part])
    for i in range(300):
        pa = a.route_edges[a.route_ptr[ra[i]]:a.route_ptr[ra[i] + 1]].tolist()
        pb = b.route_edges[b.route_ptr[rb[i]]:b.route_ptr[rb[i] + 1]].tolist()
        assert pa == pb


def test_routers_of_one_graph_share_distances_until_a_latency_changes():
    """Distances depend on the network only: the routers of one graph share them (each
    phase of a training step routes on its own router); once a latency changes, a new
    router computes fresh ones and its routes are the shortest of the changed graph."""
    G = builders.fat_tree(4)
    gs = gpus(G)
    a, b = Router(G, gs), Router(G, gs[::-1])
    a.path(0, 15)
    b.path(0, 15)
    assert a._dist is b._dist and a._dist.n > 0
    core = [(u, v) for u, v in G.edges
            if G.nodes[u]["kind"] != "gpu" and G.nodes[v]["kind"] != "gpu"]
    for u, v in core[::3]:
        G.edges[u, v]["latency"] *= 3
    c = Router(G, gs)
    assert c._dist is not a._dist
    for s, d in ((0, 15), (3, 12), (5, 9), (14, 1)):
        path = c.path(s, d)
        _check_path(G, path, gs[s], gs[d])
        assert sum(G.edges[e]["latency"] for e in path) == pytest.approx(
            _reference_latency(G, gs[s], gs[d]), rel=1e-12)


def test_latency_beats_hop_count_and_ties_prefer_fewer_hops():
    G = nx.DiGraph(name="t")
    for n in ("a", "b"):
        G.add_node(n, kind="gpu")
    for n in ("s1", "s2", "s3", "s4"):
        G.add_node(n, kind="switch")
    def link(u, v, lat):
        G.add_edge(u, v, bandwidth=1e9, latency=lat)
        G.add_edge(v, u, bandwidth=1e9, latency=lat)
    link("a", "s1", 0.0)
    link("s1", "b", 5e-6)            # 2 hops, 5 us
    link("s1", "s2", 1e-6)
    link("s2", "s3", 1e-6)
    link("s3", "b", 1e-6)            # 4 hops, 3 us: the shortest by latency
    R = Router(G, ["a", "b"])
    assert [v for _, v in R.path(0, 1)] == ["s1", "s2", "s3", "b"]
    link("s1", "s4", 1.5e-6)
    link("s4", "b", 1.5e-6)          # 3 hops, 3 us: same latency, fewer hops
    R = Router(G, ["a", "b"])
    assert [v for _, v in R.path(0, 1)] == ["s1", "s4", "b"]


def test_unreachable_pair_is_one_clear_error():
    G = nx.DiGraph(name="line")
    for n in ("g0", "g1", "g2"):
        G.add_node(n, kind="gpu")
    for u, v in (("g0", "g1"), ("g1", "g2")):
        G.add_edge(u, v, bandwidth=1e9, latency=1e-6)
        G.add_edge(v, u, bandwidth=1e9, latency=1e-6)
    R = Router(G, ["g0", "g1", "g2"])
    assert R.path(0, 1) == [("g0", "g1")]                # a direct gpu-gpu link is fine
    with pytest.raises(CommsimError, match="cannot reach"):
        R.path(0, 2)                                    # only through gpu g1


def test_dgx_intra_node_uses_nvswitch_and_inter_node_the_nics():
    G = builders.dgx_cluster(2, 4)
    R = Router(G, gpus(G))
    assert R.path(0, 1) == [("gpu0_0", "nvs0"), ("nvs0", "gpu0_1")]
    path = R.path(0, 5)
    _check_path(G, path, "gpu0_0", "gpu1_1")
    assert path[0] == ("gpu0_0", "nic0_0")


def test_placement_must_name_gpus():
    G = builders.star(4)
    with pytest.raises(CommsimError, match="not a gpu"):
        Router(G, ["gpu0", "sw"])
    with pytest.raises(CommsimError, match="not a node"):
        Router(G, ["gpu0", "nope"])


_TOPOLOGIES = [
    lambda: builders.ring(6, latency="1us"),
    lambda: builders.torus((3, 4), latency="2us"),
    lambda: builders.fat_tree(4),
    lambda: builders.leaf_spine(3, 2, 2, oversubscription=2),
    lambda: builders.dragonfly(3, 2, 1),
    lambda: builders.dgx_cluster(2, 2, rail_optimized=False),
    lambda: builders.fully_connected(5),
]


@settings(max_examples=40, deadline=None)
@given(st.integers(0, len(_TOPOLOGIES) - 1), st.data())
def test_every_route_is_a_shortest_gpu_free_path(which, data):
    G = _TOPOLOGIES[which]()
    g = gpus(G)
    R = Router(G, g)
    i = data.draw(st.integers(0, len(g) - 1))
    j = data.draw(st.integers(0, len(g) - 1).filter(lambda x: x != i))
    conn = data.draw(st.integers(0, 1000))
    for path in [R.path(i, j, conn)] + R.equal_cost_routes(i, j):
        _check_path(G, path, g[i], g[j])
        lat = sum(G.edges[e]["latency"] for e in path)
        assert lat == pytest.approx(_reference_latency(G, g[i], g[j]), rel=1e-9, abs=1e-15)


@settings(max_examples=50, deadline=None)
@given(st.lists(st.integers(0, 2**40), unique=True, max_size=300),
       st.lists(st.integers(0, 2**40), max_size=50))
def test_intmap_matches_a_dict(keys, probes):
    m = IntMap(4)
    half = len(keys) // 2
    for part in (keys[:half], keys[half:]):
        m.put(np.array(part, dtype=np.int64), np.array(part, dtype=np.int64) * 3 + 1)
    ref = {k: 3 * k + 1 for k in keys}
    q = np.array(keys + probes, dtype=np.int64)
    assert m.get(q).tolist() == [ref.get(k, -1) for k in keys + probes]


@given(st.lists(st.tuples(st.integers(0, 50), st.integers(0, 5)), max_size=20))
def test_expand_ranges(runs):
    starts = np.array([s for s, _ in runs], dtype=np.int64)
    counts = np.array([c for _, c in runs], dtype=np.int64)
    want = [x for s, c in runs for x in range(s, s + c)]
    assert expand_ranges(starts, counts).tolist() == want
