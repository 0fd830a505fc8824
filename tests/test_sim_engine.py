"""The simulator against closed forms, lower bounds, hand-computed contention and itself."""

from __future__ import annotations

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from commsim import collectives
from commsim.collectives.schedule import Schedule
from commsim.errors import CommsimError
from commsim.model import lower_bound, predict
from commsim.sim import simulate
from commsim.topology import builders, gpus
from commsim.topology.routing import Router

REL = 1e-9
bandwidths = st.sampled_from([1e9, 25e9, 3.3e9, 46.875e9])
latencies = st.sampled_from([0.0, 1e-6, 0.7e-6, 5e-6])
gammas = st.sampled_from([0.0, 0.0, 1e-10, 3e-11])


def _exact(coll, algo, p, topo, alpha, beta, chunks_per, gamma, engine, nchunks=None, **opt):
    s = collectives.build(coll, algo, p, nchunks, **opt)
    nbytes = s.nchunks * chunks_per                  # equal chunks
    r = simulate(s, topo, nbytes, gamma=gamma, engine=engine)
    want = predict(coll, algo, p, nbytes, alpha, beta, gamma=gamma, nchunks=s.nchunks, **opt)
    assert r.time == pytest.approx(want, rel=REL, abs=1e-300), (coll, algo, p, nbytes)
    return r


# --- exactness: contention-free cases equal the closed forms ------------------------------

@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["allreduce", "reduce_scatter", "allgather"]), st.integers(2, 24),
       st.integers(0, 10**6), st.integers(1, 3), bandwidths, latencies, gammas,
       st.sampled_from(["ring", "star"]))
def test_ring_algorithms_are_exact_on_ring_and_star(coll, p, per, mult, bw, lat, gamma, where):
    if where == "ring":
        G, alpha = builders.ring(p, bandwidth=bw, latency=lat), lat
    else:
        G, alpha = builders.star(p, bandwidth=bw, latency=lat), lat + lat
    r = _exact(coll, "ring", p, G, alpha, 1 / bw, per, gamma, "auto", nchunks=p * mult)
    if per:  # m > 1 chunks of one step share a link: only the event engine can do that
        assert r.engine == ("sweep" if mult == 1 else "events")


@settings(max_examples=40, deadline=None)
@given(st.integers(2, 24), st.integers(0, 10**6), bandwidths, latencies, gammas)
def test_rhd_allreduce_is_exact_on_a_star_for_any_p(p, per, bw, lat, gamma):
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact("allreduce", "rhd", p, G, 2 * lat, 1 / bw, per, gamma, "auto")


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["reduce_scatter", "allgather"]), st.integers(2, 24),
       st.integers(0, 10**6), bandwidths, latencies, gammas)
def test_rhd_halves_are_exact_on_a_star(coll, p, per, bw, lat, gamma):
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact(coll, "rhd", p, G, 2 * lat, 1 / bw, per, gamma, "auto")


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(1, 4), st.integers(0, 10**6), bandwidths, latencies,
       gammas)
def test_double_binary_tree_is_exact_on_a_star_for_complete_trees(m, k, per, bw, lat, gamma):
    p = 2**m - 1
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact("allreduce", "dbt", p, G, 2 * lat, 1 / bw, per, gamma, "auto", nchunks=2 * k)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(2, 5), st.integers(0, 10**6), bandwidths, latencies,
       gammas)
def test_hierarchical_is_exact_on_a_star(g, n, per, bw, lat, gamma):
    p = g * n
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact("allreduce", "hierarchical", p, G, 2 * lat, 1 / bw, per, gamma, "auto",
           group_size=g)


@settings(max_examples=20, deadline=None)
@given(st.sampled_from([("allreduce", "tree"), ("allreduce", "dbt")]), st.integers(2, 20),
       st.integers(1, 10**6), bandwidths, latencies)
def test_trees_never_exceed_their_model_on_a_star(ca, p, per, bw, lat):
    """Where the trees are not symmetric the model is the step-by-step maximum, an
    estimate the simulation may beat but never exceed."""
    G = builders.star(p, bandwidth=bw, latency=lat)
    s = collectives.build(*ca, p)
    n = s.nchunks * per
    want = predict(*ca, p, n, 2 * lat, 1 / bw, nchunks=s.nchunks)
    assert simulate(s, G, n).time <= want * (1 + REL)


@settings(max_examples=60, deadline=None)
@given(st.sampled_from(["broadcast", "reduce"]), st.sampled_from(["binomial", "chain"]),
       st.integers(2, 24), st.integers(1, 8), st.integers(0, 10**6), bandwidths, latencies,
       gammas, st.data())
def test_binomial_and_chain_are_exact_on_a_star(coll, algo, p, k, per, bw, lat, gamma, data):
    G = builders.star(p, bandwidth=bw, latency=lat)
    root = data.draw(st.integers(0, p - 1))
    _exact(coll, algo, p, G, 2 * lat, 1 / bw, per, gamma, "auto",
           nchunks=k if algo == "chain" else None, root=root)


@settings(max_examples=25, deadline=None)
@given(st.integers(2, 5), st.integers(1, 6), st.integers(0, 10**6), bandwidths, latencies,
       gammas)
def test_binary_tree_is_exact_on_a_star_for_complete_trees(m, k, per, bw, lat, gamma):
    p = 2**m - 1
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact("allreduce", "tree", p, G, 2 * lat, 1 / bw, per, gamma, "auto", nchunks=k)


@settings(max_examples=15, deadline=None)
@given(st.sampled_from([("allreduce", "ring"), ("allreduce", "rhd"), ("reduce", "chain"),
                        ("allgather", "ring"), ("broadcast", "binomial")]),
       st.integers(2, 12), st.integers(0, 10**5), bandwidths, latencies, gammas)
def test_the_event_engine_is_exact_too(ca, p, per, bw, lat, gamma):
    G = builders.star(p, bandwidth=bw, latency=lat)
    _exact(*ca, p, G, 2 * lat, 1 / bw, per, gamma, "events")


# --- bounds on any topology ----------------------------------------------------------------

_TOPOLOGIES = [
    lambda: builders.star(9, bandwidth="10GB/s", latency="1us"),
    lambda: builders.ring(8, bandwidth="25GB/s"),
    lambda: builders.torus((3, 3)),
    lambda: builders.fat_tree(4, bandwidth="12.5GB/s"),
    lambda: builders.leaf_spine(3, 1, 4, host_bw="50GB/s", oversubscription=4),
    lambda: builders.dgx_cluster(2, 4, nic_bw="100Gb/s", spines=1, oversubscription=2),
    lambda: builders.dragonfly(3, 2, 2),
    lambda: builders.fully_connected(6),
]


def _flat_view(G, placement):
    """(alpha, beta) no run on these ranks can beat: the smallest path latency and the
    widest injection or ejection bandwidth of any gpu."""
    p = len(placement)
    R = Router(G, placement)
    src, dst = np.nonzero(~np.eye(p, dtype=bool))
    rid = R.route_ids(src, dst)          # first: routing grows the route arrays
    alpha = float(R.route_latency[rid].min())
    widest = max(max(sum(d["bandwidth"] for *_, d in G.out_edges(g, data=True)),
                     sum(d["bandwidth"] for *_, d in G.in_edges(g, data=True)))
                 for g in placement)
    return alpha, 1.0 / widest


def _random_case(which, ca, p, rnd):
    """``(G, schedule, placement)``: topology ``which``, at most its gpu count of ranks
    placed at random; instances the algorithm refuses are skipped."""
    G = _TOPOLOGIES[which]()
    g = gpus(G)
    p = min(p, len(g))
    try:
        s = collectives.build(*ca, p)
    except CommsimError:
        assume(False)
    return G, s, rnd.sample(g, p)


@settings(max_examples=120, deadline=None)
@given(st.integers(0, len(_TOPOLOGIES) - 1), st.sampled_from(collectives.available()),
       st.integers(2, 9), st.integers(0, 4 * 10**6), st.sampled_from(["step", "dataflow"]),
       st.randoms(use_true_random=False))
def test_never_below_the_lower_bound(which, ca, p, nbytes, mode, rnd):
    G, s, placement = _random_case(which, ca, p, rnd)
    p = s.nranks
    r = simulate(s, G, nbytes, placement=placement, mode=mode)
    alpha, beta = _flat_view(G, placement)
    if mode == "step":
        assert r.time >= lower_bound(ca[0], p, nbytes, alpha, beta) * (1 - REL)
    else:
        # without step order a rank may send to all its children at once over separate
        # links (fully connected, dgx): the log p latency term assumes one port a rank
        assert r.time >= (lower_bound(ca[0], p, nbytes, 0.0, beta) + alpha) * (1 - REL)


@settings(max_examples=80, deadline=None)
@given(st.integers(0, len(_TOPOLOGIES) - 1), st.sampled_from(collectives.available()),
       st.integers(2, 8), st.integers(0, 10**6), st.randoms(use_true_random=False),
       st.sampled_from([0.0, 1e-10]))
def test_sweep_and_event_engine_agree(which, ca, p, nbytes, rnd, gamma):
    G, s, placement = _random_case(which, ca, p, rnd)
    offsets = {0: rnd.random() * 1e-5}
    a = simulate(s, G, nbytes, placement=placement, gamma=gamma, start_offsets=offsets)
    b = simulate(s, G, nbytes, placement=placement, gamma=gamma, start_offsets=offsets,
                 engine="events")
    assert a.time == pytest.approx(b.time, rel=REL, abs=1e-300)
    np.testing.assert_allclose(a.end, b.end, rtol=REL, atol=1e-300)
    np.testing.assert_allclose(a.link_bytes, b.link_bytes, rtol=REL)
    np.testing.assert_allclose(a.link_busy, b.link_busy, rtol=1e-7, atol=1e-18)


# --- contention, computed by hand ------------------------------------------------------------

def test_oversubscribed_leaf_spine_with_a_scattered_placement():
    """Ring allreduce, 4 ranks, 2 leaves x 2 hosts, one spine, every link B = 10 GB/s,
    latency l = 1 us a link (2:1 oversubscribed: two hosts' 2B share one B uplink).

    Packed placement (ranks 0,1 on leaf 0; 2,3 on leaf 1): each step has two leaf-local
    flows (2 hops) and two cross flows (4 hops), each alone on its links; every rank
    takes part in a cross flow, so every step lasts the cross flow's 4l + (S/4)/B:
    T = 6 (4l + S/(4B)).

    Scattered placement (ranks alternate leaves): all four flows cross the spine; the
    uplink leaf0->spine carries 0->1 and 2->3, so max-min gives each B/2 (likewise on
    every spine link), and every step lasts 4l + (S/4)/(B/2): T = 6 (4l + S/(2B)).
    """
    B, lat, S = 10e9, 1e-6, 4 * 2**20
    G = builders.leaf_spine(2, 1, 2, host_bw=B, spine_bw=B, host_latency=lat,
                            spine_latency=lat)
    s = collectives.build("allreduce", "ring", 4)
    packed = simulate(s, G, S, placement=["gpu0", "gpu1", "gpu2", "gpu3"])
    scattered = simulate(s, G, S, placement=["gpu0", "gpu2", "gpu1", "gpu3"])
    assert packed.time == pytest.approx(6 * (4 * lat + S / (4 * B)), rel=REL)
    assert scattered.time == pytest.approx(6 * (4 * lat + S / (2 * B)), rel=REL)
    assert scattered.engine == "events" and packed.engine == "sweep"
    up = scattered.links.index(("leaf0", "spine0"))
    assert scattered.link_peak[up] == pytest.approx(1.0)
    assert scattered.link_bytes[up] == pytest.approx(2 * 6 * S / 4)


def test_max_min_rates_follow_flows_that_start_and_end():
    """A flat reduce into rank 2 on a star (B = 1 GB/s, latency l = 1 us a link): ranks
    0 and 1 each send c = 1e6 bytes to rank 2 over the shared link sw->gpu2; rank 1
    enters d = 0.4 ms late.

    Rank 0's flow moves alone at B from 2l to d + 2l (d*B = 0.4e6 bytes), then both
    share B/2: rank 0's remaining 0.6e6 bytes take 1.2 ms, so it ends at 2l + 1.6 ms.
    Rank 1's flow has moved 0.6e6 bytes by then and finishes its last 0.4e6 alone at B:
    end = 2l + 2.0 ms (the shared link moved 2c bytes at B without a break).
    """
    B, lat, c, d = 1e9, 1e-6, 10**6, 0.4e-3
    G = builders.star(3, bandwidth=B, latency=lat)
    s = Schedule.from_transfers("reduce", "flat", 3, 1, [(0, 0, 2, 0, True),
                                                         (0, 1, 2, 0, True)], root=2)
    r = simulate(s, G, c, start_offsets={1: d})
    assert r.end[0] == pytest.approx(2 * lat + 1.6e-3, rel=REL)
    assert r.end[1] == pytest.approx(2 * lat + 2.0e-3, rel=REL)
    assert r.time == pytest.approx(2 * lat + 2.0e-3, rel=REL)
    down = r.links.index(("sw", "gpu2"))
    assert r.link_busy[down] == pytest.approx(2.0e-3, rel=REL)
    assert r.link_peak[down] == pytest.approx(1.0)


def test_progressive_filling_gives_unequal_shares():
    """Parking lot on a star: F1 gpu0->gpu2 and F2 gpu1->gpu2 share sw->gpu2 (1 GB/s);
    F1 and F3 gpu0->gpu3 share gpu0->sw (2 GB/s). Filling: sw->gpu2 saturates first at
    0.5 GB/s each (F1, F2), leaving 1.5 GB/s of gpu0->sw to F3. With c = 1.5e6 bytes
    and no latency, F3 ends at 1 ms; F1 and F2 stay at 0.5 GB/s and end at 3 ms.
    """
    G = nx.DiGraph(name="parking")
    for g in ("gpu0", "gpu1", "gpu2", "gpu3"):
        G.add_node(g, kind="gpu")
    G.add_node("sw", kind="switch")
    for g, up, down in (("gpu0", 2e9, 1e9), ("gpu1", 1e9, 1e9), ("gpu2", 1e9, 1e9),
                        ("gpu3", 1e9, 2e9)):
        G.add_edge(g, "sw", bandwidth=up, latency=0.0)
        G.add_edge("sw", g, bandwidth=down, latency=0.0)
    s = Schedule.from_transfers("allgather", "hand", 4, 4, [
        (0, 0, 2, 0, False), (0, 1, 2, 1, False), (0, 0, 3, 2, False)])
    r = simulate(s, G, 6 * 10**6)          # 4 chunks of 1.5e6 bytes
    np.testing.assert_allclose(r.end, [3e-3, 3e-3, 1e-3], rtol=REL)


# --- conservation and semantics --------------------------------------------------------------

@settings(max_examples=25, deadline=None)
@given(st.integers(0, len(_TOPOLOGIES) - 1), st.sampled_from(collectives.available()),
       st.integers(2, 8), st.integers(0, 10**6), st.randoms(use_true_random=False))
def test_bytes_are_conserved(which, ca, p, nbytes, rnd):
    G, s, placement = _random_case(which, ca, p, rnd)
    r = simulate(s, G, nbytes, placement=placement)
    R = r.router
    rid = R.route_ids(s.src, s.dst, s.transfer_connections())
    size = s.transfer_sizes(nbytes).astype(float)
    edges, cnt = R.route_links(rid)
    per_link = np.bincount(edges, weights=np.repeat(size, cnt), minlength=len(r.links))
    np.testing.assert_allclose(r.link_bytes, per_link, rtol=1e-12)
    assert r.link_bytes.sum() == pytest.approx((size * cnt).sum(), rel=1e-12)
    assert (r.link_peak <= 1 + 1e-9).all() and (r.link_utilization <= 1 + 1e-9).all()


@settings(max_examples=20, deadline=None)
@given(st.sampled_from(collectives.available()), st.integers(2, 8), st.integers(1, 10**6),
       st.randoms(use_true_random=False), st.sampled_from(["auto", "events"]))
def test_step_semantics_rendezvous(ca, p, nbytes, rnd, engine):
    """Each transfer starts exactly when the later of its two ranks reaches its step: when
    the rank's transfers of earlier steps have ended and their reductions are applied."""
    G = builders.leaf_spine(2, 1, 4, host_bw="10GB/s", oversubscription=2)
    try:
        s = collectives.build(*ca, p)
    except CommsimError:
        assume(False)
    gamma, offsets = 1e-11, {r: rnd.random() * 1e-5 for r in range(p)}
    r = simulate(s, G, nbytes, placement=rnd.sample(gpus(G), p), gamma=gamma,
                 start_offsets=offsets, engine=engine)
    size = s.transfer_sizes(nbytes).astype(float)
    arrive = {}
    for rank in range(p):
        t = offsets[rank]
        for step, _, _ in s.rank_steps(rank):
            arrive[rank, step] = t
            idx = [i for i in range(len(s)) if s.step[i] == step and rank in (s.src[i], s.dst[i])]
            red = sum(size[i] for i in idx if s.dst[i] == rank and s.reduce[i])
            t = max(r.end[i] for i in idx) + gamma * red
        assert r.rank_end[rank] == pytest.approx(t, rel=REL)
    for i in range(len(s)):
        want = max(arrive[int(s.src[i]), int(s.step[i])], arrive[int(s.dst[i]), int(s.step[i])])
        assert r.start[i] == pytest.approx(want, rel=REL, abs=1e-18)


def test_ranks_drift_without_a_global_barrier():
    G = builders.star(8, bandwidth=1e9, latency=1e-6)
    s = collectives.build("broadcast", "chain", 8, 4)
    late = 1e-3
    r = simulate(s, G, 4 * 10**5, start_offsets={7: late})
    first_of_7 = r.start[(s.src == 7) | (s.dst == 7)].min()
    assert first_of_7 == pytest.approx(late)
    assert r.start[(s.step == 3)].min() < late      # others are steps ahead meanwhile


def test_a_straggler_delays_a_ring_allreduce_by_its_lateness():
    p, B, lat, S, d = 8, 10e9, 1e-6, 8 * 10**6, 200e-6
    G = builders.star(p, bandwidth=B, latency=lat)
    s = collectives.build("allreduce", "ring", p)
    r = simulate(s, G, S, start_offsets={3: d})
    assert r.time == pytest.approx(d + predict("allreduce", "ring", p, S, 2 * lat, 1 / B),
                                   rel=REL)


def test_a_slow_reducer_sets_the_pace_of_a_ring_reduce_scatter():
    p, B, lat, S, g, f = 6, 10e9, 1e-6, 6 * 10**6, 1e-10, 3.0
    G = builders.star(p, bandwidth=B, latency=lat)
    s = collectives.build("reduce_scatter", "ring", p)
    r = simulate(s, G, S, gamma=g, reduce_slowdown={2: f})
    assert r.time == pytest.approx((p - 1) * (2 * lat + S / p / B + f * g * S / p), rel=REL)


def test_dataflow_mode():
    """Without step barriers a pipelined tree overlaps its reduce and broadcast halves;
    a ring, whose every transfer waits on the one before it anyway, is unchanged, even
    with a straggler (every chunk's chain passes through the late rank)."""
    p, B, lat, S, d = 8, 10e9, 1e-6, 8 * 10**6, 200e-6
    G = builders.star(p, bandwidth=B, latency=lat)
    ring = collectives.build("allreduce", "ring", p)
    model = predict("allreduce", "ring", p, S, 2 * lat, 1 / B)
    assert simulate(ring, G, S, mode="dataflow").time == pytest.approx(model, rel=REL)
    late = simulate(ring, G, S, start_offsets={3: d}, mode="dataflow")
    assert late.time == pytest.approx(d + model, rel=REL)
    tree = collectives.build("allreduce", "tree", 7, 8)
    step = simulate(tree, G, S)
    flow = simulate(tree, G, S, mode="dataflow")
    assert flow.time < step.time
    lb = lower_bound("allreduce", 7, S, 2 * lat, 1 / B)
    assert flow.time >= lb


def test_dataflow_connections_deliver_in_order():
    """Two chunks from rank 0 to rank 1, both ready at once: the second starts when the
    first has sent its last byte, so both move at the full rate, one after the other,
    and the latency is paid once: the second arrives one chunk's time after the first."""
    B, lat, c = 1e9, 1e-6, 10**6
    G = builders.star(2, bandwidth=B, latency=lat)
    s = Schedule.from_transfers("broadcast", "hand", 2, 2, [(0, 0, 1, 0, False),
                                                            (1, 0, 1, 1, False)])
    r = simulate(s, G, 2 * c, mode="dataflow")
    np.testing.assert_allclose(r.start, [0, c / B], rtol=REL)
    np.testing.assert_allclose(r.end, [2 * lat + c / B, 2 * lat + 2 * c / B], rtol=REL)


def test_a_pairs_connections_queue_apart():
    """Four pieces from rank 0 to rank 1 (and back), each paying a message overhead ``o``
    on its connection before its bytes: on one connection one after another, ``4 (o +
    z/B)``; dealt over two (gloo's two segments in flight) each connection streams two,
    their bytes sharing the link, ``2 (o + 2 z/B)``: the posting of one piece overlaps
    the other's bytes. The model's dataflow rules give the same times."""
    from commsim.model.on_topology import predict_on

    B, lat, o, z = 1e9, 1e-6, 300e-6, 2**18
    G = builders.star(2, bandwidth=B, latency=lat)
    one = collectives.build("allgather", "ring", 2, 8)          # 4 pieces a message
    two = collectives.in_flight(one, 2)
    assert list(two.connection) == [0, 1, 0, 1, 0, 1, 0, 1]
    kw = dict(mode="dataflow", message_overhead=o)
    size = 8 * z                                                # the gathered buffer
    expect = {1: 2 * lat + 4 * (o + z / B), 2: 2 * lat + 2 * (o + 2 * z / B)}
    for k, s in ((1, one), (2, two)):
        assert simulate(s, G, size, **kw).time == pytest.approx(expect[k], rel=REL)
        assert predict_on(s, G, size, **kw).time == pytest.approx(expect[k], rel=REL)


def test_zero_bytes_cost_pure_latency():
    G = builders.star(4, latency=1e-6)
    s = collectives.build("allreduce", "ring", 4)
    assert simulate(s, G, 0).time == pytest.approx(6 * 2e-6, rel=REL)
    # 3 bytes in 4 chunks: chunks of 1, 1, 1 and 0 bytes; every step has a 1-byte
    # transfer on a chain that can stay on 1-byte transfers, so all 6 steps pay 1/B
    assert simulate(s, G, 3).time == pytest.approx(6 * (2e-6 + 1 / 25e9), rel=REL)


def test_bad_input_is_one_clear_error():
    G = builders.star(4)
    s = collectives.build("allreduce", "ring", 8)
    with pytest.raises(CommsimError, match="8 ranks need 8 gpus"):
        simulate(s, G, 1024)
    s = collectives.build("allreduce", "ring", 2)
    with pytest.raises(CommsimError, match="two ranks"):
        simulate(s, G, 1024, placement=["gpu1", "gpu1"])
    with pytest.raises(CommsimError, match="mode"):
        simulate(s, G, 1024, mode="barrier")
    with pytest.raises(CommsimError, match="start_offsets"):
        simulate(s, G, 1024, start_offsets={5: 1.0})
    with pytest.raises(CommsimError, match="size"):
        simulate(s, G, -1)
    with pytest.raises(CommsimError, match="sweep"):
        simulate(collectives.build("allreduce", "rhd", 4), G, 1024, engine="sweep")


def test_runs_repeat_exactly():
    G = builders.fat_tree(4)
    s = collectives.build("allreduce", "rhd", 16)
    a = simulate(s, G, 10**6, placement=gpus(G)[::-1])
    b = simulate(s, G, 10**6, placement=gpus(G)[::-1])
    assert a.time == b.time and (a.end == b.end).all()
    assert math.isfinite(a.time)


@pytest.mark.parametrize("engine", ["sweep", "events"])
def test_routing_every_transfer_at_once_changes_nothing(monkeypatch, engine):
    """A run routes all its transfers in one call (commsim.sim.run.ROUTE_ALL), not a call a
    step: the same routes, so the same times to the bit, contended or not (only their
    numbering differs, and with it the order the sweep sums a link's busy time in)."""
    import commsim.sim.run as run_mod

    G = builders.fat_tree(4)
    s = collectives.build("allreduce", "rhd" if engine == "events" else "ring", 16)
    kw = dict(placement=gpus(G)[::-1], engine=engine)
    once = simulate(s, G, 10**6, **kw)
    monkeypatch.setattr(run_mod, "ROUTE_ALL", 0)      # a routing call a step
    per_step = simulate(s, G, 10**6, **kw)
    assert once.engine == per_step.engine == engine
    assert once.time == per_step.time and (once.end == per_step.end).all()
    assert np.array_equal(once.link_bytes, per_step.link_bytes)
    assert once.link_busy == pytest.approx(per_step.link_busy, rel=1e-14)


@settings(max_examples=60, deadline=None)
@given(st.data())
def test_both_progressive_fillings_agree_to_the_bit(data):
    """The pure-Python filling (small components) and the heap one (the others) must
    give the same rates and link loads, so results never depend on the switch."""
    from commsim.sim.events import _Flow
    from commsim.sim.maxmin import fill_heap, fill_python

    nlinks = data.draw(st.integers(1, 12))
    bw = np.array(data.draw(st.lists(st.sampled_from([1e9, 3.3e9, 25e9, 46.875e9, 7e9]),
                                     min_size=nlinks, max_size=nlinks)))
    routes = data.draw(st.lists(st.sets(st.integers(0, nlinks - 1), min_size=1, max_size=4),
                                min_size=1, max_size=40))
    weights = data.draw(st.lists(st.sampled_from([1.0, 1.0, 1e6, 3.3e5, 1 / 7e-6]),
                                 min_size=len(routes), max_size=len(routes)))
    flows = [_Flow(i, 0, 1.0, tuple(sorted(r)), 0.0, 0.0, weight=w)
             for i, (r, w) in enumerate(zip(routes, weights))]
    rates_py, load_py, limit_py = fill_python(flows, bw.tolist())
    rates_np, load_np, limit_np = fill_heap(flows, bw.tolist())
    assert rates_py == rates_np
    assert dict(load_py) == dict(load_np)
    assert limit_py == limit_np               # the same link sets each flow's rate
    for f, link in zip(flows, limit_py):
        assert link in f.links                # a link of its own route, and a full one
        got = sum(r for g, r in zip(flows, rates_py) if link in g.links)
        assert got == pytest.approx(bw[link], rel=1e-9)
    for link, load in load_py:                 # max-min: no link over its bandwidth
        assert load <= bw[link] * (1 + 1e-9)


@pytest.mark.parametrize("mode,algorithm", [("step", "ring"), ("step", "rhd"),
                                            ("dataflow", "ring")])
def test_overhead_is_charged_like_alpha(mode, algorithm):
    # a calibrated profile's executor overhead: on a contention-free star the simulator
    # with overhead equals the model with alpha + overhead, in both modes and engines
    from commsim import model
    from commsim.topology import builders

    p, S, over = 4, 3 * 2**20, 37e-6
    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    a, b = model.alpha_beta(G, p)
    s = collectives.build("allreduce", algorithm, p)
    want = model.predict("allreduce", algorithm, p, S, a + over, b, mode=mode)
    for engine in ("auto", "events"):
        got = simulate(s, G, S, mode=mode, overhead=over, engine=engine).time
        assert got == pytest.approx(want, rel=1e-9)
    with pytest.raises(CommsimError, match="overhead"):
        simulate(s, G, S, overhead=-1.0)


def _two_flows_one_link():
    """Two senders whose routes (1 us and 3 us) share one 10 GB/s link; every other
    link is 100 times faster."""
    import networkx as nx

    from commsim.topology import check

    G = nx.DiGraph(name="two-rtts")
    for n in ("g0", "g1", "g2", "g3"):
        G.add_node(n, kind="gpu")
    G.add_nodes_from(("a", "b"), kind="switch")
    fast = 1e12
    for u, v, lat in (("g0", "a", 0.5e-6), ("g1", "a", 2.5e-6), ("b", "g2", 0.5e-6),
                      ("b", "g3", 0.5e-6)):
        G.add_edge(u, v, bandwidth=fast, latency=lat)
        G.add_edge(v, u, bandwidth=fast, latency=lat)
    G.add_edge("a", "b", bandwidth=10e9, latency=0.0)
    G.add_edge("b", "a", bandwidth=10e9, latency=0.0)
    return check(G)


def test_rtt_sharing_splits_a_link_inversely_to_route_latency():
    """The hand-worked case: routes of 1 us and 3 us on one 10 GB/s link get 7.5 and
    2.5 GB/s under rtt sharing; the short one ends at S / 7.5 GB/s, the long one then
    has the link alone. Max-min gives both 5 GB/s."""
    G = _two_flows_one_link()
    S = 3 * 10**8
    s = Schedule.from_transfers("broadcast", "hand", 4, 2, [(0, 0, 2, 0, False),
                                                           (0, 1, 3, 1, False)])
    r = simulate(s, G, 2 * S, sharing="rtt", engine="events")
    t1 = S / 7.5e9
    t2 = t1 + (S - 2.5e9 * t1) / 10e9
    np.testing.assert_allclose(r.end, [t1 + 1e-6, t2 + 3e-6], rtol=1e-9)
    m = simulate(s, G, 2 * S, engine="events")     # max-min: an even split
    np.testing.assert_allclose(m.end, [S / 5e9 + 1e-6, S / 5e9 + 3e-6], rtol=1e-9)
    with pytest.raises(CommsimError, match="sharing"):
        simulate(s, G, 2 * S, sharing="tcp")


@pytest.mark.parametrize("mode", ["step", "dataflow"])
def test_exchange_overhead_is_charged_to_exchange_steps_only(mode):
    """A profile's ``exchange_overhead`` replaces ``overhead`` on transfers one of whose
    ranks both sends and receives in their step: every transfer of a ring, none of a
    two-rank tree's. Ring: as if alpha grew by the exchange overhead; tree: as with the
    one-way overhead alone. Both engines, and the model on the topology, agree."""
    from commsim import model
    from commsim.model.on_topology import predict_on
    from commsim.topology import builders

    p, S, one_way, exchange = 2, 3 * 2**20, 7e-6, 41e-6
    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    a, b = model.alpha_beta(G, p)
    for algorithm, extra in (("ring", exchange), ("tree", one_way)):
        s = collectives.build("allreduce", algorithm, p)
        want = model.predict("allreduce", algorithm, p, S, a + extra, b, mode=mode)
        engines = ("auto", "events") if mode == "step" else ("events",)
        for engine in engines:
            got = simulate(s, G, S, mode=mode, overhead=one_way, exchange_overhead=exchange,
                           engine=engine).time
            assert got == pytest.approx(want, rel=1e-9), (algorithm, engine)
        est = predict_on(s, G, S, mode=mode, overhead=one_way, exchange_overhead=exchange)
        assert est.time == pytest.approx(want, rel=1e-9), algorithm
    with pytest.raises(CommsimError, match="exchange_overhead"):
        simulate(s, G, S, exchange_overhead=-1.0)


def test_exchange_overhead_on_a_mixed_schedule_matches_the_model():
    """A pipelined 4-rank tree mixes one-way and exchange steps: the simulator (both
    engines) and the model charge each transfer its own overhead and agree; equal
    overheads give the run without the distinction."""
    from commsim.model.on_topology import predict_on
    from commsim.topology import builders

    p, S = 4, 2**20
    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    s = collectives.build("allreduce", "tree", p, 2)
    both = s.both_ways()
    assert both.any() and not both.all()
    kw = dict(overhead=5e-6, exchange_overhead=60e-6)
    times = {e: simulate(s, G, S, engine=e, **kw).time for e in ("auto", "events")}
    assert times["auto"] == pytest.approx(times["events"], rel=1e-12)
    assert predict_on(s, G, S, **kw).time == pytest.approx(times["events"], rel=1e-9)
    plain = simulate(s, G, S, overhead=5e-6).time
    assert simulate(s, G, S, overhead=5e-6, exchange_overhead=5e-6).time == plain
    assert times["events"] > plain


def test_check_memory_refuses_what_cannot_fit_and_says_how_much(monkeypatch):
    from commsim.sim import engine

    engine.check_memory(1000, available=1 << 30)          # 160 kB in 1 GiB: fine
    with pytest.raises(CommsimError, match=r"10,000,000 transfers needs about 1\.5 GiB"):
        engine.check_memory(10_000_000, available=1 << 30)
    monkeypatch.setattr("commsim.machine.available_memory", lambda: 1000)
    s = collectives.build("allreduce", "ring", 4)
    with pytest.raises(CommsimError, match="transfers needs about"):
        simulate(s, builders.star(4, bandwidth=1e9, latency=1e-6), 1 << 20)
