"""The registry and every algorithm: correct results for any rank count, chunking and length."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from strategies import instances

from commsim import collectives
from commsim.backends import reference
from commsim.errors import CommsimError

EXPECTED_PAIRS = {
    ("reduce_scatter", "ring"), ("reduce_scatter", "rhd"), ("allgather", "ring"),
    ("allgather", "rhd"), ("allreduce", "ring"), ("allreduce", "tree"), ("allreduce", "dbt"),
    ("allreduce", "rhd"), ("allreduce", "hierarchical"), ("allreduce", "nccl_tree"),
    ("broadcast", "chain"),
    ("broadcast", "binomial"), ("reduce", "chain"), ("reduce", "binomial"),
    ("alltoall", "pairwise"), ("alltoall", "bruck"), ("alltoall", "hierarchical"),
}


def test_available_lists_every_pair():
    assert set(collectives.available()) == EXPECTED_PAIRS
    assert len(collectives.available()) == len(EXPECTED_PAIRS)


def _inputs(p, n, seed):
    rng = np.random.default_rng(seed)
    # small integers in float64 reduce exactly in any order
    return [rng.integers(-50, 50, size=n).astype(np.float64) for _ in range(p)]


@given(instances(), st.integers(1, 200), st.integers(0, 2**32 - 1))
def test_every_algorithm_gives_the_exact_result(inst, n, seed):
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    schedule.validate()
    inputs = _inputs(p, n, seed)
    got = reference.run(schedule, inputs)
    want = reference.expected(collective, inputs, root=options.get("root", 0))
    ranks = [options.get("root", 0)] if collective == "reduce" else range(p)
    for r in ranks:
        np.testing.assert_array_equal(got[r], want[r], err_msg=f"rank {r}")


@pytest.mark.parametrize("collective,algorithm", sorted(EXPECTED_PAIRS))
@pytest.mark.parametrize("p", [1, 2, 3, 5, 8, 12, 17])
def test_every_algorithm_small_cases(collective, algorithm, p):
    schedule = collectives.build(collective, algorithm, p).validate()
    assert schedule.nranks == p
    for n in (1, p, 3 * p + 1):
        inputs = _inputs(p, n, p * 1000 + n)
        got = reference.run(schedule, inputs)
        want = reference.expected(collective, inputs)
        for r in ([0] if collective == "reduce" else range(p)):
            np.testing.assert_array_equal(got[r], want[r])


def _bytes_sent(schedule, nbytes):
    return schedule.bytes_sent(nbytes)


@given(st.integers(1, 64), st.integers(1, 4))
def test_ring_volume_per_rank(p, m):
    S = p * m * 64
    ar = collectives.build("allreduce", "ring", p, p * m)
    np.testing.assert_allclose(_bytes_sent(ar, S), 2 * (p - 1) / p * S)
    for coll in ("reduce_scatter", "allgather"):
        s = collectives.build(coll, "ring", p, p * m)
        np.testing.assert_allclose(_bytes_sent(s, S), (p - 1) / p * S)


@given(st.integers(0, 6), st.integers(1, 3))
def test_rhd_volume_per_rank_powers_of_two(L, m):
    p = 2**L
    S = p * m * 32
    np.testing.assert_allclose(
        _bytes_sent(collectives.build("allreduce", "rhd", p, p * m), S), 2 * (p - 1) / p * S)
    for coll in ("reduce_scatter", "allgather"):
        np.testing.assert_allclose(
            _bytes_sent(collectives.build(coll, "rhd", p, p * m), S), (p - 1) / p * S)


@given(st.integers(3, 64))
def test_rhd_fold_costs_the_extra_ranks_two_whole_buffers(p):
    S = 1 << 20
    s = collectives.build("allreduce", "rhd", p)
    pc = 1 << (p.bit_length() - 1)
    sent = _bytes_sent(s, S)
    for r in range(pc, p):  # the extra ranks send their buffer once, to their partner
        assert sent[r] == S
    if p > pc:  # their partners also hand the whole result back
        assert sent[0] == pytest.approx(2 * (pc - 1) / pc * S + S)


@given(st.integers(2, 64), st.integers(1, 8))
def test_tree_volumes(p, k):
    S = k * 128
    tree = collectives.build("allreduce", "tree", p, k)
    parent = collectives.tree.inorder_tree(p)[0]
    nchildren = np.bincount(parent[parent >= 0], minlength=p)
    expect = np.where(parent >= 0, S, 0) + nchildren * S  # up once, down to each child
    np.testing.assert_array_equal(_bytes_sent(tree, S), expect)
    dbt = collectives.build("allreduce", "dbt", p, 2 * k)
    assert _bytes_sent(dbt, 2 * S).sum() == 2 * (p - 1) * 2 * S  # each tree: S up + S down
    assert tree.nsteps == 2 * (collectives.tree.tree_height(p) + k - 1)


def test_double_tree_interior_nodes_are_disjoint():
    for p in range(2, 80):
        a = collectives.tree.inorder_tree(p)[0]
        b = collectives.tree.second_tree(p)[0]
        interior_a = set(a[a >= 0].tolist())
        interior_b = set(b[b >= 0].tolist())
        assert not (interior_a & interior_b), p
        assert (a < 0).sum() == 1 and (b < 0).sum() == 1  # one root each


@given(st.integers(1, 48), st.integers(1, 6))
def test_chain_and_binomial_volumes(p, k):
    S = k * 64
    for coll in ("broadcast", "reduce"):
        chain = collectives.build(coll, "chain", p, k)
        assert _bytes_sent(chain, S).sum() == (p - 1) * S
        assert chain.nsteps == (p + k - 2 if p > 1 else 0)
        binom = collectives.build(coll, "binomial", p, k)
        assert _bytes_sent(binom, S).sum() == (p - 1) * S
        assert binom.nsteps == (p - 1).bit_length()


@given(st.sampled_from([(8, 2), (8, 4), (16, 8), (12, 4), (6, 3), (9, 3), (5, 5), (4, 1)]))
def test_hierarchical_volume(pg):
    p, g = pg
    k = p // g
    S = p * 48
    s = collectives.build("allreduce", "hierarchical", p, group_size=g)
    expect = 2 * (g - 1) / g * S + 2 * (k - 1) / k * S / g
    np.testing.assert_allclose(_bytes_sent(s, S), expect)
    assert s.nsteps == 2 * (g - 1) + 2 * (k - 1)


@pytest.mark.parametrize("args,match", [
    (("allreduce", "rinng", 4), "did you mean 'ring'"),
    (("alreduce", "ring", 4), "did you mean 'allreduce'"),
    (("allreduce", "ring", 0), "nranks"),
    (("allreduce", "ring", 4, 6), "multiple of nranks=4"),
    (("allreduce", "dbt", 4, 3), "even nchunks"),
    (("broadcast", "chain", 4, None), None),
])
def test_build_errors_are_clear(args, match):
    if match is None:
        assert collectives.build(*args).nranks == 4
        return
    with pytest.raises(CommsimError, match=match):
        collectives.build(*args)


def test_unknown_option_and_bad_root():
    with pytest.raises(CommsimError, match="option"):
        collectives.build("allreduce", "ring", 4, colour="red")
    with pytest.raises(CommsimError, match="root 9"):
        collectives.build("broadcast", "binomial", 4, root=9)
    with pytest.raises(CommsimError, match="group_size"):
        collectives.build("allreduce", "hierarchical", 6, group_size=4)


def test_aliases_resolve():
    assert collectives.resolve("all-reduce", "rabenseifner").name == "rhd"
    assert collectives.resolve("allgather", "recursive_doubling").name == "rhd"
    assert collectives.resolve("allreduce", "double_binary_tree").name == "dbt"


def test_large_ring_is_compact():
    s = collectives.build("allreduce", "ring", 1024)
    assert len(s) == 2 * 1023 * 1024
    assert s.src.dtype == np.uint16 and s.step.dtype == np.uint16
    assert s.nsteps == 2 * 1023


@given(st.integers(2, 7), st.integers(1, 6), st.integers(1, 3),
       st.sampled_from(["allreduce", "allgather", "reduce_scatter"]))
def test_in_flight_deals_each_messages_pieces_over_k_connections(p, m, k, collective):
    """Piece ``i`` of every message on connection ``i mod k``: within a step, each pair's
    consecutive pieces alternate, and nothing else about the schedule changes."""
    s = collectives.build(collective, "ring", p, m * p)
    t = collectives.in_flight(s, k)
    for field in ("step", "src", "dst", "chunk", "reduce"):
        np.testing.assert_array_equal(getattr(t, field), getattr(s, field))
    if k == 1 or m == 1:
        assert t is s
        return
    np.testing.assert_array_equal(t.connection, (np.arange(s.nchunks) % m) % k)
    conn = t.transfer_connections()
    for st_ in range(t.nsteps):
        on = (t.step == st_) & (t.src == 0)
        assert list(conn[on]) == [i % k for i in range(m)]
    pairs = np.unique(t.src.astype(np.int64) * p + t.dst).size
    assert np.unique(t.connection_keys()).size == pairs * min(k, m)


def test_in_flight_keeps_channels_and_refuses_bad_counts():
    s = collectives.build("allreduce", "ring", 4, 16, channels=2)   # 2 pieces a channel
    t = collectives.in_flight(s, 2)
    # a segment's chunks: channel 0's two pieces, then channel 1's
    np.testing.assert_array_equal(t.connection, s.connection * 2 + np.arange(16) % 2)
    for bad in (0, -1, 1.5):
        with pytest.raises(CommsimError, match="in_flight"):
            collectives.in_flight(s, bad)
