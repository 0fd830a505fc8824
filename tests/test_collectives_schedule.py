"""The schedule IR: chunk layout, validation of malformed schedules, views."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commsim import collectives
from commsim.collectives import Schedule, ScheduleError, Transfer
from commsim.collectives.schedule import split_bounds


@given(st.integers(0, 500), st.integers(1, 40))
def test_split_bounds_matches_array_split(n, parts):
    sizes = np.diff(split_bounds(n, parts))
    assert sizes.tolist() == [len(a) for a in np.array_split(np.arange(n), parts)]


@given(st.integers(1, 300), st.integers(1, 12), st.integers(1, 5))
def test_segments_nest_inside_array_split(n, p, m):
    """Segment r of reduce_scatter/allgather is exactly np.array_split(buffer, p)[r]."""
    s = collectives.build("reduce_scatter", "ring", p, p * m)
    bounds = s.chunk_bounds(n)
    assert bounds[0] == 0 and bounds[-1] == n and np.all(np.diff(bounds) >= 0)
    seg = split_bounds(n, p)
    assert set(seg.tolist()) <= set(bounds.tolist())
    assert bounds[::m].tolist() == seg.tolist()


def _sched(collective, transfers, p=2, k=1, **kw):
    return Schedule.from_transfers(collective, "hand", p, k, transfers, **kw)


def test_valid_hand_schedule():
    s = _sched("allreduce", [Transfer(0, 0, 1, 0, True), Transfer(1, 1, 0, 0, False)])
    assert s.validate() is s
    assert list(s)[0] == Transfer(0, 0, 1, 0, True)
    assert s.nsteps == 2 and len(s) == 2


@pytest.mark.parametrize("transfers,p,k,match", [
    ([(0, 0, 2, 0, True)], 2, 1, "dst is out of range"),
    ([(0, 0, 1, 1, True)], 2, 1, "chunk is out of range"),
    ([(0, 1, 1, 0, True)], 2, 1, "sends to itself"),
    ([(0, 0, 1, 0, True), (1, 0, 1, 0, True)], 2, 1, "counted twice"),
    ([(0, 0, 1, 0, True)], 2, 1, "rank 0 ends with a wrong chunk"),
    ([(0, 0, 1, 0, False), (0, 1, 0, 0, False)], 2, 1, "data race"),
])
def test_validate_rejects_malformed_allreduce(transfers, p, k, match):
    with pytest.raises(ScheduleError, match=match):
        _sched("allreduce", transfers, p, k).validate()


def test_validate_rejects_reading_a_chunk_not_held_yet():
    # allgather on 3 ranks: rank 1 forwards rank 0's segment before it has it
    s = Schedule.from_transfers("allgather", "hand", 3, 3,
                                [(0, 1, 2, 0, False), (1, 0, 1, 0, False)], segments=3)
    with pytest.raises(ScheduleError, match="does not hold yet"):
        s.validate()


def test_validate_rejects_reduce_into_empty_chunk():
    s = Schedule.from_transfers("broadcast", "hand", 2, 1, [(0, 0, 1, 0, True)])
    with pytest.raises(ScheduleError, match="does not hold"):
        s.validate()


def test_validate_rejects_bad_root():
    s = Schedule.from_transfers("broadcast", "hand", 2, 1, [(0, 0, 1, 0, False)], root=5)
    with pytest.raises(ScheduleError, match="root 5"):
        s.validate()


def test_constructor_rejects_inconsistent_arrays():
    with pytest.raises(ScheduleError, match="multiple of segments"):
        Schedule.from_transfers("allgather", "hand", 3, 4, [], segments=3)
    with pytest.raises(ScheduleError, match="negative"):
        Schedule.from_transfers("allreduce", "hand", 2, 1, [(0, -1, 1, 0, True)])
    with pytest.raises(ScheduleError, match="collective"):
        Schedule.from_transfers("gossip", "hand", 2, 1, [])


def test_unsorted_steps_are_put_in_order():
    s = _sched("allreduce", [Transfer(1, 1, 0, 0, False), Transfer(0, 0, 1, 0, True)])
    assert s.step.tolist() == [0, 1]
    s.validate()


def test_arrays_are_read_only():
    s = collectives.build("allreduce", "ring", 4)
    with pytest.raises(ValueError):
        s.src[0] = 3


@given(st.integers(2, 24))
def test_rank_steps_partition_the_schedule(p):
    s = collectives.build("allreduce", "dbt", p, 4)
    seen = 0
    for rank in range(p):
        prog = s.rank_steps(rank)
        steps = [st_ for st_, _, _ in prog]
        assert steps == sorted(set(steps))
        for st_, sends, recvs in prog:
            assert all(t.src == rank and t.step == st_ for t in sends)
            assert all(t.dst == rank and t.step == st_ for t in recvs)
            seen += len(sends)
    assert seen == len(s)


def test_dependencies_of_ring_reduce_scatter():
    p = 4
    s = collectives.build("reduce_scatter", "ring", p)
    indptr, indices = s.dependencies()
    t = s.transfers
    for i, tr in enumerate(t):
        preds = [t[j] for j in indices[indptr[i]:indptr[i + 1]]]
        if tr.step == 0:
            assert preds == []
        else:  # the chunk was reduced into the sender exactly one step earlier
            assert preds == [Transfer(tr.step - 1, (tr.src - 1) % p, tr.src, tr.chunk, True)]


@given(st.integers(2, 16), st.sampled_from(["tree", "dbt", "rhd", "hierarchical", "ring"]))
def test_dependencies_point_backwards_at_writes_of_the_read_chunk(p, algo):
    s = collectives.build("allreduce", algo, p)
    indptr, indices = s.dependencies()
    assert len(indptr) == len(s) + 1
    for i in range(len(s)):
        for j in indices[indptr[i]:indptr[i + 1]]:
            assert s.step[j] < s.step[i]
            assert s.dst[j] == s.src[i] and s.chunk[j] == s.chunk[i]
    # every earlier write of the read chunk is listed
    writes = {}
    for j, tr in enumerate(s):
        writes.setdefault((tr.dst, tr.chunk), []).append((tr.step, j))
    for i, tr in enumerate(s):
        want = sorted(j for st_, j in writes.get((tr.src, tr.chunk), []) if st_ < tr.step)
        assert sorted(indices[indptr[i]:indptr[i + 1]].tolist()) == want


def test_both_ways_marks_transfers_of_ranks_that_send_and_receive_in_a_step():
    # step 0: 0 -> 1 and 1 -> 2 (rank 1 does both); step 1: 2 -> 0 alone
    s = Schedule.from_transfers("allgather", "hand", 3, 3, [
        Transfer(0, 0, 1, 0, False), Transfer(0, 1, 2, 1, False), Transfer(1, 2, 0, 2, False)])
    assert s.both_ways().tolist() == [True, True, False]
    assert collectives.build("allreduce", "ring", 4).both_ways().all()
    assert not collectives.build("allreduce", "tree", 2).both_ways().any()


@given(st.integers(2, 12), st.sampled_from(["ring", "tree", "rhd", "dbt"]))
def test_both_ways_agrees_with_rank_steps(p, algorithm):
    s = collectives.build("allreduce", algorithm, p)
    both = s.both_ways()
    for r in range(p):
        for step, sends, recvs in s.rank_steps(r):
            if sends and recvs:   # rank r does both here: all its transfers are marked
                idx = [i for i, t in enumerate(s) if t.step == step and r in (t.src, t.dst)]
                assert both[idx].all()
    for i, t in enumerate(s):
        if both[i]:
            busy = [r for r in (t.src, t.dst)
                    if any(x.step == t.step and x.src == r for x in s)
                    and any(x.step == t.step and x.dst == r for x in s)]
            assert busy


def test_connection_is_checked_and_all_zero_is_none():
    base = dict(step=[0], src=[0], dst=[1], chunk=[0], reduce=[False])
    cols = [np.asarray(base[k]) for k in ("step", "src", "dst", "chunk", "reduce")]
    with pytest.raises(ScheduleError, match="connection must be 2 integers"):
        Schedule("broadcast", "hand", 2, 2, *cols, connection=np.array([0]))
    with pytest.raises(ScheduleError, match="connection"):
        Schedule("broadcast", "hand", 2, 2, *cols, connection=np.array([0, -1]))
    s = Schedule("broadcast", "hand", 2, 2, *cols, connection=np.array([0, 0]))
    assert s.connection is None and s.transfer_connections().tolist() == [0]
    s = Schedule("broadcast", "hand", 2, 2, *cols, connection=np.array([0, 5]))
    assert s.transfer_connections().tolist() == [0]


@given(st.integers(2, 12), st.integers(1, 4), st.sampled_from([None, 2, 4]))
def test_each_ring_channel_is_one_connection(p, c, g):
    """Channel j's ring carries exactly the transfers of connection j: the (src, dst)
    pairs of a connection are its ring's edges (what ECMP hashes, with the gpus)."""
    if g is not None and p % g:
        g = None
    s = collectives.build("allreduce", "ring", p, channels=c, gpus_per_node=g)
    conn = s.transfer_connections()
    rings = collectives.ring.channel_rings(p, c, g)
    for j in range(c):
        pairs = {(int(a), int(b)) for a, b in zip(s.src[conn == j], s.dst[conn == j])}
        ring = rings[j].tolist()
        assert pairs == {(ring[i], ring[(i + 1) % p]) for i in range(p)}
    assert (s.connection is None) == (c == 1)


@given(st.integers(2, 16), st.integers(1, 3))
def test_each_nccl_tree_is_one_connection_and_dbt_two(p, c):
    s = collectives.build("allreduce", "nccl_tree", p, channels=c)
    k = s.nchunks // (2 * c)
    np.testing.assert_array_equal(s.transfer_connections(), s.chunk // k)
    d = collectives.build("allreduce", "dbt", p, 4)
    np.testing.assert_array_equal(d.transfer_connections(), d.chunk // 2)
    for algorithm in ("rhd", "tree"):
        assert collectives.build("allreduce", algorithm, p).connection is None


@given(st.integers(2, 9), st.integers(1, 4), st.integers(1, 3))
def test_connection_keys_tell_connections_apart_exactly(p, channels, k):
    """Two transfers share a key exactly when they share src, dst and connection."""
    s = collectives.in_flight(
        collectives.build("allreduce", "ring", p, 2 * p * channels, channels=channels), k)
    keys = s.connection_keys()
    triples = np.column_stack([s.src, s.dst, s.transfer_connections()]).astype(np.int64)
    _, by_triple = np.unique(triples, axis=0, return_inverse=True)
    _, by_key = np.unique(keys, return_inverse=True)
    # the same partition of the transfers
    assert len(set(zip(by_triple.ravel(), by_key.ravel()))) == by_key.max() + 1 \
        == by_triple.max() + 1
