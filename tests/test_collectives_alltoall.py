"""alltoall: the chunk space, every algorithm's result, counts, model and simulator."""

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim import collectives, model
from commsim.backends import plan, reference
from commsim.collectives import Schedule, ScheduleError
from commsim.collectives.alltoall import bruck_counts
from commsim.sim import simulate
from commsim.topology import builders

ALGORITHMS = ("pairwise", "bruck", "hierarchical")


def _divisors(p):
    return [g for g in range(1, p + 1) if p % g == 0]


@st.composite
def alltoalls(draw, max_ranks=17):
    """``(algorithm, p, m, options)``: any algorithm, 1..17 ranks, ``m`` pieces a block."""
    algorithm = draw(st.sampled_from(ALGORITHMS))
    p = draw(st.integers(1, max_ranks))
    options = {"group_size": draw(st.sampled_from(_divisors(p)))} \
        if algorithm == "hierarchical" else {}
    return algorithm, p, draw(st.integers(1, 3)), options


def _convention(inputs):
    """Written out independently: rank j gets block j of every rank, in rank order."""
    p = len(inputs)
    return [np.concatenate([np.array_split(x, p)[j] for x in inputs]) for j in range(p)]


@settings(max_examples=150, deadline=None)
@given(alltoalls(), st.integers(1, 120), st.integers(0, 2**32 - 1))
def test_every_algorithm_gives_the_convention(case, n, seed):
    algorithm, p, m, options = case
    s = collectives.build("alltoall", algorithm, p, p * p * m, **options).validate()
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-50, 50, size=n).astype(np.float64) for _ in range(p)]
    got = reference.run(s, inputs)
    for r, (a, b, c) in enumerate(zip(got, reference.expected("alltoall", inputs),
                                      _convention(inputs))):
        np.testing.assert_array_equal(a, c, err_msg=f"rank {r}")
        np.testing.assert_array_equal(b, c, err_msg=f"rank {r}")


def test_chunk_space_is_block_of_segment():
    s = collectives.build("alltoall", "pairwise", 3, 18)   # 2 pieces a block
    n = 7                                                  # blocks 3, 2, 2 of each input
    assert s.logical_length(n) == 21 and s.blocks == 3 and s.segments == 3
    np.testing.assert_array_equal(s.chunk_sizes(21), [2, 1, 1, 1, 1, 1] * 3)
    np.testing.assert_array_equal(s.result_chunks(1), [2, 3, 8, 9, 14, 15])
    assert plan.result_ranges(s, 21, 0) == [(0, 3), (7, 10), (14, 17)]
    assert s.transfer_sizes(n).sum() == 3 * 7 - 7  # every block but the kept ones
    np.testing.assert_array_equal(s.bytes_sent(7), [4, 5, 5])  # S minus the block kept


def test_other_collectives_keep_one_block():
    s = collectives.build("allgather", "ring", 4, 8)
    assert s.blocks == 1 and s.logical_length(10) == 10
    np.testing.assert_array_equal(s.result_chunks(2), np.arange(8))


def test_validator_catches_a_missing_and_a_misdirected_block():
    s = collectives.build("alltoall", "pairwise", 4)
    cols = [s.step, s.src, s.dst, s.chunk, s.reduce]
    short = Schedule("alltoall", "x", 4, 16, *(c[1:] for c in cols), segments=4, blocks=4)
    with pytest.raises(ScheduleError, match="rank .* ends with a wrong chunk"):
        short.validate()
    dst = s.dst.astype(np.int64).copy()
    dst[0] = (dst[0] + 1) % 4 or 2  # block 0->1 goes to the wrong rank
    wrong = Schedule("alltoall", "x", 4, 16, s.step, s.src, dst, s.chunk, s.reduce,
                     segments=4, blocks=4)
    with pytest.raises(ScheduleError):
        wrong.validate()
    with pytest.raises(ScheduleError, match="blocks = nranks"):
        Schedule("alltoall", "x", 4, 16, *cols, segments=4)


def test_bad_chunking_and_group_size_are_one_line_errors():
    with pytest.raises(ValueError, match="nranks\\*\\*2=16"):
        collectives.build("alltoall", "bruck", 4, 8)
    with pytest.raises(ValueError, match="group_size"):
        collectives.build("alltoall", "hierarchical", 6, group_size=4)
    assert collectives.resolve("all-to-all", "direct").name == "pairwise"
    assert collectives.chunk_unit("alltoall", "hierarchical", 6) == 36


@given(st.integers(1, 17), st.integers(1, 3))
def test_steps_and_volumes(p, m):
    S = p * m * 16  # equal chunks
    pw = collectives.build("alltoall", "pairwise", p, p * p * m)
    assert pw.nsteps == p - 1
    np.testing.assert_allclose(pw.bytes_sent(S), (p - 1) / p * S)
    np.testing.assert_allclose(pw.bytes_received(S), (p - 1) / p * S)
    br = collectives.build("alltoall", "bruck", p, p * p * m)
    assert br.nsteps == math.ceil(math.log2(p)) if p > 1 else br.nsteps == 0
    np.testing.assert_allclose(br.bytes_sent(S), sum(bruck_counts(p)) * S / p)
    for g in _divisors(p):
        h = collectives.build("alltoall", "hierarchical", p, p * p * m, group_size=g)
        N = p // g
        assert h.nsteps == (g - 1) + (N - 1)
        np.testing.assert_allclose(h.bytes_sent(S), (g - 1) / g * S + (N - 1) / N * S)


def _step_count_time(s, S, a, b, a2=None, b2=None, inter_from=None):
    """One latency a step plus the busiest rank's bytes in or out of it, from the schedule."""
    sizes = s.transfer_sizes(S).astype(float)
    t = 0.0
    for step in np.unique(s.step):
        idx = s.step == step
        out = np.bincount(s.src[idx].astype(int), sizes[idx], minlength=s.nranks)
        inn = np.bincount(s.dst[idx].astype(int), sizes[idx], minlength=s.nranks)
        inter = inter_from is not None and step >= inter_from
        t += (a2 if inter else a) + max(out.max(), inn.max()) * (b2 if inter else b)
    return t


@given(alltoalls(), st.integers(1, 64), st.floats(0, 1e-4), st.floats(1e-12, 1e-8),
       st.floats(0, 1e-4), st.floats(1e-12, 1e-8))
def test_model_matches_the_schedules_own_count(case, unit, a, b, a2, b2):
    algorithm, p, m, options = case
    s = collectives.build("alltoall", algorithm, p, p * p * m, **options)
    S = p * m * unit
    if algorithm == "hierarchical":
        g = options["group_size"]
        want = _step_count_time(s, S, a, b, a2, b2, inter_from=g - 1)
        got = model.predict("alltoall", algorithm, p, S, a, b, group_size=g,
                            alpha_inter=a2, beta_inter=b2)
    else:
        want = _step_count_time(s, S, a, b)
        got = model.predict("alltoall", algorithm, p, S, a, b, nchunks=p * p * m)
    assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
    if algorithm != "hierarchical":  # one link speed: nothing beats the bound
        assert got >= model.lower_bound("alltoall", p, S, a, b) * (1 - 1e-12) - 1e-15


@settings(max_examples=40, deadline=None)
@given(st.sampled_from(ALGORITHMS), st.integers(2, 9), st.integers(0, 4 * 10**5),
       st.sampled_from(["step", "dataflow"]))
def test_simulator_is_exact_on_a_star_and_never_beats_the_bound(algorithm, p, per, mode):
    lat, bw = 1e-6, 10e9
    G = builders.star(p, bandwidth=bw, latency=lat)
    s = collectives.build("alltoall", algorithm, p)
    nbytes = p * per                                   # equal blocks
    r = simulate(s, G, nbytes, mode=mode)
    if mode == "step":
        want = model.predict("alltoall", algorithm, p, nbytes, 2 * lat, 1 / bw,
                             **s.options)
        assert r.time == pytest.approx(want, rel=1e-9, abs=1e-300)
    assert r.time >= model.lower_bound("alltoall", p, nbytes, 2 * lat, 1 / bw) * (1 - 1e-9) \
        or mode == "dataflow"
    odd = simulate(s, builders.fat_tree(4, bandwidth="12.5GB/s"), nbytes + 1, mode=mode)
    assert odd.time >= model.lower_bound("alltoall", p, nbytes + 1, 0.0, 1 / 12.5e9) * (1 - 1e-9)
