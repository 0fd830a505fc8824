"""Cost models checked against an independent count of each schedule's steps and bytes.

``step_count_time`` reads nothing but the Schedule: for every step in which something
moves it charges one latency, the largest number of bytes any rank sends or receives
in that step times ``beta``, and the largest number of bytes any rank reduces times
``gamma``. Where the algorithm is symmetric this is exactly its alpha-beta-gamma
cost, so the closed forms in commsim.model and the schedules check each other.
"""

import math

import networkx as nx
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import instances

from commsim import collectives, model
from commsim.errors import CommsimError


def step_count_time(schedule, nbytes, alpha, beta, gamma):
    sizes = schedule.transfer_sizes(nbytes).astype(float)
    p = schedule.nranks
    total = 0.0
    for s in np.unique(schedule.step):
        idx = schedule.step == s
        src = schedule.src[idx].astype(int)
        dst = schedule.dst[idx].astype(int)
        b = sizes[idx]
        out = np.bincount(src, weights=b, minlength=p)
        inn = np.bincount(dst, weights=b, minlength=p)
        red = np.bincount(dst, weights=b * schedule.reduce[idx], minlength=p)
        total += alpha + max(out.max(), inn.max()) * beta + red.max() * gamma
    return total


@given(instances(max_ranks=48), st.integers(1, 64),
       st.floats(0, 1e-4), st.floats(1e-12, 1e-8), st.floats(0, 1e-9))
def test_model_matches_the_schedules_own_step_count(inst, unit, alpha, beta, gamma):
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    S = k * p * unit  # every chunk equal
    want = step_count_time(schedule, S, alpha, beta, gamma)
    got = model.predict(collective, algorithm, p, S, alpha, beta, gamma, nchunks=k, **options)
    if algorithm in ("tree", "dbt", "nccl_tree") and (p + 1) & p and p > 2:
        # an incomplete tree has steps where no node has two busy children: the closed
        # form (two children every step) is then an upper bound, within a factor of 2
        assert want * (1 - 1e-9) - 1e-15 <= got <= 2 * want + 1e-15
    else:
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


@given(st.integers(2, 7), st.integers(1, 16), st.sampled_from(["tree", "dbt"]),
       st.floats(0, 1e-4), st.floats(1e-12, 1e-8))
def test_tree_models_are_exact_on_complete_trees(m, k, algorithm, alpha, beta):
    p = 2**m - 1
    nchunks = 2 * k if algorithm == "dbt" else k
    schedule = collectives.build("allreduce", algorithm, p, nchunks)
    S = nchunks * 64
    want = step_count_time(schedule, S, alpha, beta, 0.0)
    got = model.predict("allreduce", algorithm, p, S, alpha, beta, nchunks=nchunks)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)


@pytest.mark.parametrize("p", [2, 3, 4, 7, 8, 13, 16, 64])
def test_closed_forms_from_reference(p):
    S, a, b, g = 2**20 * p, 5e-6, 1 / 25e9, 1e-10
    ring = model.predict("allreduce", "ring", p, S, a, b, g)
    assert ring == pytest.approx(2 * (p - 1) * a + 2 * (p - 1) / p * S * b + (p - 1) / p * S * g)
    rs = model.predict("reduce_scatter", "ring", p, S, a, b, g)
    assert rs == pytest.approx((p - 1) * a + (p - 1) / p * S * (b + g))
    ag = model.predict("allgather", "ring", p, S, a, b, g)
    assert ag == pytest.approx((p - 1) * a + (p - 1) / p * S * b)
    bino = model.predict("broadcast", "binomial", p, S, a, b)
    assert bino == pytest.approx(math.ceil(math.log2(p)) * (a + S * b))
    if p & (p - 1) == 0:
        L = math.log2(p)
        rhd = model.predict("allreduce", "rhd", p, S, a, b, g)
        assert rhd == pytest.approx(2 * L * a + 2 * (p - 1) / p * S * b + (p - 1) / p * S * g)


def test_pipelining_trades_latency_for_bandwidth():
    p, S, a, b = 63, 2**26, 10e-6, 1 / 25e9
    times = [model.predict("allreduce", "tree", p, S, a, b, nchunks=k) for k in (1, 8, 64, 4096)]
    assert times[1] < times[0] and times[2] < times[1]
    assert times[3] > times[2]  # too many chunks: latency dominates again


@given(instances(max_ranks=40), st.floats(1e3, 1e9), st.floats(0, 1e-4), st.floats(1e-12, 1e-8))
def test_no_algorithm_beats_the_lower_bound(inst, S, a, b):
    collective, algorithm, p, k, options = inst
    t = model.predict(collective, algorithm, p, S, a, b, nchunks=k, **options)
    assert t >= model.lower_bound(collective, p, S, a, b) * (1 - 1e-12)


def test_busbw_factors_follow_nccl_tests():
    assert model.busbw_factor("allreduce", 8) == pytest.approx(2 * 7 / 8)
    assert model.busbw_factor("reduce_scatter", 8) == pytest.approx(7 / 8)
    assert model.busbw_factor("allgather", 4) == pytest.approx(3 / 4)
    assert model.busbw_factor("broadcast", 4) == 1.0
    assert model.busbw_factor("reduce", 4) == 1.0


def test_one_rank_costs_nothing():
    for coll, algo in collectives.available():
        assert model.predict(coll, algo, 1, 1e6, 1e-6, 1e-9) == 0.0


def test_bad_model_input():
    with pytest.raises(CommsimError, match="alpha"):
        model.predict("allreduce", "ring", 4, 1e6, -1.0, 1e-9)
    with pytest.raises(CommsimError, match="did you mean"):
        model.predict("allreduce", "rign", 4, 1e6, 1e-6, 1e-9)
    with pytest.raises(CommsimError, match="group_size"):
        model.predict("allreduce", "hierarchical", 6, 1e6, 1e-6, 1e-9, group_size=4)


def _two_level():
    """Two 'nodes' of two gpus: fast links inside, one slow switch between."""
    G = nx.DiGraph(name="two-level")
    for n in ("g0", "g1", "g2", "g3"):
        G.add_node(n, kind="gpu")
    for n in ("s0", "s1", "spine"):
        G.add_node(n, kind="switch")

    def duplex(u, v, bw, lat):
        G.add_edge(u, v, bandwidth=bw, latency=lat)
        G.add_edge(v, u, bandwidth=bw, latency=lat)
    duplex("g0", "s0", 100e9, 1e-6)
    duplex("g1", "s0", 100e9, 1e-6)
    duplex("g2", "s1", 100e9, 1e-6)
    duplex("g3", "s1", 100e9, 1e-6)
    duplex("s0", "spine", 10e9, 2e-6)
    duplex("s1", "spine", 10e9, 2e-6)
    return G


def test_alpha_beta_takes_the_slowest_path_from_rank_zero():
    G = _two_level()
    a, b = model.alpha_beta(G, 2)
    assert a == pytest.approx(2e-6) and b == pytest.approx(1 / 100e9)
    a, b = model.alpha_beta(G, 4)
    assert a == pytest.approx(6e-6) and b == pytest.approx(1 / 10e9)


def test_alpha_beta_never_routes_through_a_gpu():
    G = nx.DiGraph(name="line")
    for n in ("a", "b", "c"):
        G.add_node(n, kind="gpu")
    for u, v in (("a", "b"), ("b", "c")):
        G.add_edge(u, v, bandwidth=1e9, latency=1e-6)
        G.add_edge(v, u, bandwidth=1e9, latency=1e-6)
    with pytest.raises(CommsimError, match=r"'a' \(rank 0\) cannot reach gpu 'c'"):
        model.alpha_beta(G, 3)
    with pytest.raises(CommsimError, match="has 3"):
        model.alpha_beta(G, 4)


@given(st.integers(2, 64), st.integers(1, 2**30))
def test_default_chunks_match_the_builders(p, S):
    for coll, algo in collectives.available():
        k = model.default_nchunks(coll, algo, p)
        assert collectives.build(coll, algo, p).nchunks == k


RING_AND_RHD = [(c, a) for c, a in collectives.available() if a in ("ring", "rhd")]


@given(instances(max_ranks=40, max_mult=1, pairs=RING_AND_RHD), st.floats(1e3, 1e9),
       st.floats(0, 1e-4), st.floats(1e-12, 1e-8), st.floats(0, 1e-9))
def test_dataflow_in_one_piece_costs_what_step_mode_does(inst, S, a, b, g):
    collective, algorithm, p, k, _ = inst
    step = model.predict(collective, algorithm, p, S, a, b, g, nchunks=k)
    flow = model.predict(collective, algorithm, p, S, a, b, g, nchunks=k, mode="dataflow")
    assert flow == pytest.approx(step, rel=1e-12, abs=1e-18)


@given(instances(max_ranks=40, max_mult=16, pairs=RING_AND_RHD), st.floats(1e3, 1e9),
       st.floats(0, 1e-4), st.floats(1e-12, 1e-8), st.floats(0, 1e-9))
def test_dataflow_never_beats_the_lower_bound(inst, S, a, b, g):
    # pieces stream: a link sends while the latency elapses, so dataflow mode is bound by
    # the larger of the two terms, not their sum
    collective, algorithm, p, k, _ = inst
    t = model.predict(collective, algorithm, p, S, a, b, g, nchunks=k, mode="dataflow")
    bound = max(model.lower_bound(collective, p, S, a, 0.0),
                model.lower_bound(collective, p, S, 0.0, b))
    assert t >= bound * (1 - 1e-12)


def test_pieces_hide_the_reduction_and_auto_finds_them_only_in_dataflow_mode():
    p, S, a, b, g, o = 8, 2**26, 5e-6, 1 / 10e9, 1 / 5e9, 20e-6
    unit = collectives.chunk_unit("allreduce", "ring", p)

    def t(m, gamma=g):
        return model.predict("allreduce", "ring", p, S, a, b, gamma, nchunks=m * unit,
                             mode="dataflow", message_overhead=o)

    assert t(2) < t(1)  # the second piece travels while the first is reduced
    assert t(4, 0.0) > t(1, 0.0)  # nothing to hide: pieces only add their posting cost
    best = model.best_nchunks("allreduce", "ring", p, S, a, b, g, mode="dataflow",
                              message_overhead=o)
    assert best > unit and best % unit == 0
    assert t(best // unit) <= min(t(m) for m in (1, 2, 4, 8, 16, 32))
    assert model.best_nchunks("allreduce", "ring", p, S, a, b, g, message_overhead=o) == unit
    assert model.best_nchunks("allreduce", "ring", p, S, a, b, 0.0, mode="dataflow",
                              message_overhead=o) == unit
    assert model.best_nchunks("allreduce", "rhd", p, S, a, b, g, mode="dataflow",
                              message_overhead=o) > p


@pytest.mark.parametrize("o", [0.0, 30e-6])
@pytest.mark.parametrize("m", [1, 2, 4, 8])
@pytest.mark.parametrize("p", [2, 4, 6])
def test_pipelined_ring_model_matches_the_simulator(p, m, o):
    # a star of equal links: no contention, and the reduction of a piece is shorter than
    # its transfer, so the simulator (which does not serialize a rank's reductions) and
    # the model agree, with a message overhead on every piece or without
    from commsim.sim import simulate
    from commsim.topology import builders

    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    a, b = model.alpha_beta(G, p)
    S, g = 3 * 2**24, 1 / 8e9  # divides into every chunk count here
    s = collectives.build("allreduce", "ring", p, m * p)
    sim = simulate(s, G, S, mode="dataflow", gamma=g, message_overhead=o).time
    assert model.predict("allreduce", "ring", p, S, a, b, g, nchunks=m * p,
                         mode="dataflow", message_overhead=o) == pytest.approx(sim, rel=1e-9)


@pytest.mark.parametrize("m", [1, 2, 8])
@pytest.mark.parametrize("p", [2, 4])
def test_without_a_core_to_spare_the_simulator_agrees_with_the_model(p, m):
    # a rank's one core reduces a piece before its connection moves the next
    from commsim.sim import simulate
    from commsim.topology import builders

    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    a, b = model.alpha_beta(G, p)
    S, g, o = 3 * 2**24, 1 / 8e9, 5e-6
    s = collectives.build("allreduce", "ring", p, m * p)
    sim = simulate(s, G, S, mode="dataflow", gamma=g, message_overhead=o, overlap=False)
    assert model.predict("allreduce", "ring", p, S, a, b, g, nchunks=m * p, mode="dataflow",
                         overlap=False, message_overhead=o) == pytest.approx(sim.time, rel=1e-9)
    if m > 1:
        assert sim.time > simulate(s, G, S, mode="dataflow", gamma=g, message_overhead=o).time


@pytest.mark.parametrize("algorithm", ["ring", "rhd", "tree"])
def test_message_overhead_in_step_mode_adds_to_alpha_in_model_and_simulator(algorithm):
    from commsim.sim import simulate
    from commsim.topology import builders

    p, S, o = 4, 3 * 2**20, 25e-6
    G = builders.star(p, bandwidth=4e9, latency=10e-6)
    a, b = model.alpha_beta(G, p)
    s = collectives.build("allreduce", algorithm, p)
    want = model.predict("allreduce", algorithm, p, S, a + o, b)
    assert model.predict("allreduce", algorithm, p, S, a, b, message_overhead=o) == want
    if algorithm != "tree":  # the tree's formula charges two busy children: a bound
        assert simulate(s, G, S, message_overhead=o).time == pytest.approx(want, rel=1e-9)


def test_unknown_mode_is_a_clear_error():
    with pytest.raises(CommsimError, match="mode"):
        model.predict("allreduce", "ring", 4, 1e6, 1e-6, 1e-9, mode="dataflw")


def test_without_a_core_to_spare_pieces_cannot_hide_the_reduction():
    p, S, a, b, g, o = 8, 2**26, 5e-6, 1 / 10e9, 1 / 5e9, 20e-6
    unit = collectives.chunk_unit("allreduce", "ring", p)

    def t(m):
        return model.predict("allreduce", "ring", p, S, a, b, g, nchunks=m * unit,
                             mode="dataflow", overlap=False, message_overhead=o)

    assert t(1) == pytest.approx(model.predict("allreduce", "ring", p, S, a + o, b, g))
    assert t(1) < t(2) < t(4)
    assert model.best_nchunks("allreduce", "ring", p, S, a, b, g, mode="dataflow",
                              overlap=False, message_overhead=o) == unit
