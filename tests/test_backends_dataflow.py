"""The dataflow plan and loop: correct for every algorithm under any delivery order, never
deadlocked, pipelined as asked, and every handle waited for once."""

import numpy as np
import pytest
import threaded_ranks
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import instances

from commsim import collectives
from commsim.backends import dataflow, reference
from commsim.backends.plan import IN, OUT, SCRATCH, logical_length, output_length
from commsim.collectives import Schedule


def _inputs(p: int, n: int, seed: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(-8, 8, size=n).astype(np.float64) for _ in range(p)]


def _check(schedule, inputs, seed, pollable, outplace=False):
    """In place on the logical buffers, or out of place: read-only inputs (a write to one
    raises) and receive buffers filled with NaN, so an element never written shows."""
    if outplace:
        bufs = [x.copy() for x in inputs]
        n = logical_length(schedule, len(inputs[0]))
        outs = [np.full(output_length(schedule, n, r), np.nan) for r in range(len(bufs))]
        threaded_ranks.run(schedule, bufs, seed=seed, pollable=pollable, outs=outs)
        got = outs
        assert all(np.array_equal(b, x) for b, x in zip(bufs, inputs))  # inputs untouched
    else:
        bufs = reference.initial_buffers(schedule, inputs)
        threaded_ranks.run(schedule, bufs, seed=seed, pollable=pollable)
        got = reference.final_results(schedule, bufs)
    want = reference.run(schedule, inputs)
    oracle = reference.expected(schedule.collective, inputs, schedule.root)
    root = schedule.root
    for r, (g, w) in enumerate(zip(got, want)):
        if schedule.collective != "reduce" or r == root:
            assert np.array_equal(g, w), f"rank {r}: {g} != {w}"
            assert np.array_equal(g, oracle[r]), f"rank {r}: {g} != {oracle[r]}"


@settings(max_examples=150, deadline=None)
@given(instances(max_ranks=9, max_mult=4), st.integers(1, 40), st.integers(0, 2**16),
       st.booleans(), st.booleans())
def test_every_algorithm_is_correct_under_any_delivery_order(inst, n, seed, pollable,
                                                              outplace):
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    _check(schedule, _inputs(p, n, seed), seed, pollable, outplace)


@pytest.mark.parametrize("collective,algorithm", collectives.available())
def test_every_algorithm_out_of_place_at_4_ranks(collective, algorithm):
    # every pair at least once out of place, whatever hypothesis draws: 4 ranks, two
    # pipeline depths, a length below the chunk count and one above
    p = 4
    unit = collectives.chunk_unit(collective, algorithm, p)
    root = {"root": p - 1} if collective in ("broadcast", "reduce") else {}
    for mult in (1, 2):
        schedule = collectives.build(collective, algorithm, p, unit * mult, **root)
        for n, seed in ((3, 1), (37, 2)):
            _check(schedule, _inputs(p, n, seed), seed, seed % 2 == 0, outplace=True)


def test_out_of_place_first_writes_have_no_write_after_read_hazard():
    # the exchange below: each rank sends its input and adds the other's. In place the
    # reduction waits for the send of the old value; out of place the send reads the
    # input and the reduction writes output = input + received: nothing to wait for
    plan = dataflow.flow_plan(EXCHANGE, 0, 7, False, outplace=True)
    assert plan.war == ((),) and plan.sends[0][1] == IN
    assert plan.applies[0] == ((OUT, 0, 7, SCRATCH, 0, IN, 0),)
    for seed in range(4):
        _check(EXCHANGE, _inputs(2, 7, seed), seed, False, outplace=True)


# Rank 1 forwards chunk 0 to rank 2 in step 1, then receives it again from the root in
# step 2: the root's second send does not wait for rank 1's forward to land, so the copy
# cannot go straight into the buffer whenever it arrives.
RESENT = Schedule.from_transfers("broadcast", "hand", 3, 1, [
    (0, 0, 1, 0, False), (1, 1, 2, 0, False), (2, 0, 1, 0, False)])


@pytest.mark.parametrize("pollable", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_a_copy_over_data_still_in_flight_waits_or_lands_in_scratch(pollable, seed):
    RESENT.validate()
    plan = dataflow.flow_plan(RESENT, 1, 5, pollable)
    copy = plan.recvs[1]
    if pollable:  # posted into the buffer once the forward completed
        assert copy[1] == OUT and not plan.applies[1] and plan.queued and plan.war[1] == (0,)
    else:  # posted at the start into scratch, copied in after the forward completed
        assert copy[1] == SCRATCH and plan.applies[1][0][5] < 0 and plan.war[1] == (0,)
    _check(RESENT, _inputs(3, 5, seed), seed, pollable)


# Both ranks send their whole buffer and add the other's in the same step: a reduction
# may not be applied before the send of the old value has completed.
EXCHANGE = Schedule.from_transfers("allreduce", "hand", 2, 1, [
    (0, 0, 1, 0, True), (0, 1, 0, 0, True)])


@pytest.mark.parametrize("pollable", [True, False])
@pytest.mark.parametrize("seed", range(4))
def test_a_reduction_waits_for_the_send_of_the_old_value(pollable, seed):
    EXCHANGE.validate()
    plan = dataflow.flow_plan(EXCHANGE, 0, 7, pollable)
    assert plan.war == ((0,),)
    _check(EXCHANGE, _inputs(2, 7, seed), seed, pollable)


@pytest.mark.parametrize("algorithm", ["ring", "rhd", "tree", "dbt", "hierarchical"])
def test_allreduce_copies_land_in_the_buffer_posted_at_the_start(algorithm):
    # every copy's data depends on the sends that read the old values, so no copy needs
    # scratch or a late post, on a backend that can poll sends or not
    schedule = collectives.build("allreduce", algorithm, 6, 2 * collectives.chunk_unit(
        "allreduce", algorithm, 6))
    for rank in range(6):
        for pollable in (True, False):
            plan = dataflow.flow_plan(schedule, rank, 1000, pollable)
            assert not plan.queued
            assert sorted(plan.early) == list(range(len(plan.recvs)))
            assert all(b == OUT for (_, b, _, _), a in zip(plan.recvs, plan.applies)
                       if not a or a[0][5] < 0)


@pytest.mark.parametrize("m", [1, 2, 4])
def test_ring_sends_m_pieces_a_step_and_forwards_each_as_soon_as_it_is_reduced(m):
    p = 4
    schedule = collectives.build("allreduce", "ring", p, m * p)
    plan = dataflow.flow_plan(schedule, 0, 4000, True)
    assert len(plan.sends) == len(plan.recvs) == 2 * (p - 1) * m
    assert dataflow.pipeline_depth(schedule) == m
    # the first pieces go at the start; each later send waits for exactly one receive
    assert list(plan.send_after[0]) == list(range(m))
    assert all(len(after) == 1 for after in plan.send_after[1:len(plan.sends) - m + 1])
    # a step's pieces are near-equal and tile the segment
    sizes = [hi - lo for _, _, lo, hi in plan.sends[:m]]
    assert sum(sizes) == 1000 and max(sizes) - min(sizes) <= 1


def test_rhd_merges_a_step_into_one_message_like_step_mode():
    schedule = collectives.build("allreduce", "rhd", 8)
    plan = dataflow.flow_plan(schedule, 3, 800, True)
    assert len(plan.sends) == len(plan.recvs) == 6  # 3 halving + 3 doubling steps


def test_empty_chunks_send_nothing():
    schedule = collectives.build("allreduce", "ring", 4, 16)
    plan = dataflow.flow_plan(schedule, 2, 3, True)
    assert all(hi > lo for _, _, lo, hi in plan.sends)
    assert all(hi > lo for _, _, lo, hi in plan.recvs)


def test_every_handle_is_waited_for_exactly_once():
    waits: dict[int, int] = {}
    posted = []

    def post(kind):
        def fn(i):
            handle = len(posted)
            posted.append((kind, i))
            return handle
        return fn

    def wait(handle):
        waits[handle] = waits.get(handle, 0) + 1

    for collective, algorithm in collectives.available():
        schedule = collectives.build(collective, algorithm, 5)
        for rank in range(5):
            for pollable, outplace in ((True, False), (False, False), (True, True)):
                waits.clear()
                posted.clear()
                plan = dataflow.flow_plan(schedule, rank, 50, pollable, outplace)
                dataflow.execute(plan, post("s"), post("r"), wait, lambda h: False,
                                 lambda j: None)
                assert len(posted) == plan.messages
                assert waits == {h: 1 for h in range(len(posted))}, (algorithm, rank)


def test_a_rank_out_of_range_is_a_clear_error():
    with pytest.raises(ValueError, match="rank 4 is out of range"):
        dataflow.flow_plan(collectives.build("allreduce", "ring", 4), 4, 10)
