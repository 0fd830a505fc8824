"""Per-rank step plans: played in one process they give the reference's result, in place
and out of place (a separate, read-only input and a receive buffer)."""

from collections import defaultdict, deque

import numpy as np
import pytest
from executor_cases import option_sets
from hypothesis import given, settings
from hypothesis import strategies as st
from strategies import instances

from commsim import collectives
from commsim.backends import dataflow, reference
from commsim.backends.mpi import move_numpy
from commsim.backends.plan import (
    IN,
    OUT,
    WORK,
    apart_share,
    input_chunks,
    logical_length,
    output_length,
    rank_plan,
    result_order,
)


def arrays_for(schedule, inputs, outplace):
    """Per rank ``(input, output, work, scratch)`` (NaN where nothing was written) and the
    logical length. In place the first two are the logical buffer; out of place the input
    is read-only."""
    p = schedule.nranks
    if not outplace:
        bufs = reference.initial_buffers(schedule, inputs)
        return [[b, b] for b in bufs], len(bufs[0])
    n = logical_length(schedule, len(inputs[0]))
    out = []
    for r in range(p):
        inp = np.array(inputs[r], dtype=np.float64)
        inp.flags.writeable = False
        out.append([inp, np.full(output_length(schedule, n, r), np.nan)])
    return out, n


def results_of(schedule, arrays, outplace):
    if outplace:
        return [a[OUT] for a in arrays]
    return reference.final_results(schedule, [a[OUT] for a in arrays])


def play(schedule, inputs, outplace=False):
    """Every rank's plan, step by step, messages matched per pair in order (as MPI/gloo
    do); each rank's ``copies`` right after its first step is posted."""
    p = schedule.nranks
    arrays, n = arrays_for(schedule, inputs, outplace)
    plans = [rank_plan(schedule, r, n, outplace) for r in range(p)]
    for r, plan in enumerate(plans):
        arrays[r] += [np.full(plan.work, np.nan), np.full(plan.scratch, np.nan)]
    by_step = [{s.step: s for s in plan.steps} for plan in plans]
    pending = [bool(plan.copies) for plan in plans]
    for step in sorted(set().union(*by_step)):
        wire = defaultdict(deque)
        for r in range(p):
            if step in by_step[r]:
                move_numpy(arrays[r], by_step[r][step].packs)
                for peer, b, lo, hi in by_step[r][step].sends:
                    assert hi > lo, "an empty message was planned"
                    wire[(r, peer)].append(arrays[r][b][lo:hi].copy())
        for r in range(p):
            if step in by_step[r] and pending[r]:
                move_numpy(arrays[r], plans[r].copies)
                pending[r] = False
        for r in range(p):
            if step not in by_step[r]:
                continue
            for peer, b, lo, hi in by_step[r][step].recvs:
                data = wire[(peer, r)].popleft()
                assert len(data) == hi - lo, "messages of a pair do not match in order"
                arrays[r][b][lo:hi] = data
        for r in range(p):
            if step in by_step[r]:
                move_numpy(arrays[r], by_step[r][step].applies)
        assert not any(wire.values()), "a message was sent that nobody receives"
    for r in range(p):
        if pending[r]:  # a rank without messages
            move_numpy(arrays[r], plans[r].copies)
    return results_of(schedule, arrays, outplace)


def _check(schedule, inputs, got):
    want = reference.run(schedule, inputs)
    oracle = reference.expected(schedule.collective, inputs, schedule.root)
    ranks = [schedule.root] if schedule.collective == "reduce" else range(schedule.nranks)
    for r in ranks:
        np.testing.assert_array_equal(got[r], want[r])
        np.testing.assert_array_equal(got[r], oracle[r])


@settings(max_examples=150, deadline=None)
@given(instances(max_ranks=12, max_mult=3), st.integers(1, 60), st.integers(0, 2**31),
       st.booleans())
def test_plans_give_the_reference_result(inst, n, seed, outplace):
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-9, 9, size=n).astype(np.float64) for _ in range(p)]
    _check(schedule, inputs, play(schedule, inputs, outplace))


def _every_instance(ranks=(1, 2, 3, 4, 5, 8), mults=(1, 2)):
    for p in ranks:
        for collective, algorithm in collectives.available():
            unit = collectives.chunk_unit(collective, algorithm, p)
            for opts in option_sets(collective, algorithm, p):
                for mult in mults:
                    yield collectives.build(collective, algorithm, p, unit * mult, **opts)


def test_out_of_place_plans_copy_nothing_but_untouched_results():
    """Out of place, no registered algorithm gathers a send into scratch or scatters a
    copy from it (every message lies in one array), and the only whole copies are of
    result chunks the schedule never writes at the rank: its own segment (allgather),
    the root's buffer (broadcast), its own block (alltoall), everything at one rank."""
    for schedule in _every_instance():
        p, c = schedule.nranks, schedule.collective
        for n in (1, 3, 100):
            length = logical_length(schedule, n)
            for r in range(p):
                plans = [rank_plan(schedule, r, length, True)]
                plans += [dataflow.flow_plan(schedule, r, length, pol, True)
                          for pol in (True, False)]
                step = plans[0]
                assert not any(s.packs for s in step.steps), (schedule, r)
                assert all(m[5] >= 0 for s in step.steps for m in s.applies), (schedule, r)
                for flow in plans[1:]:
                    assert not any(flow.packs) and all(
                        m[5] >= 0 for a in flow.applies for m in a), (schedule, r)
                copied = sum(hi - lo for _, lo, hi, *_ in step.copies)
                assert all(plan.copies == step.copies for plan in plans)
                bounds = schedule.chunk_bounds(length)
                mine = input_chunks(schedule, r)
                if p == 1:
                    want = output_length(schedule, length, r)
                elif c == "allgather":
                    want = n
                elif c == "broadcast" and r == schedule.root:
                    want = length
                elif c == "alltoall":  # own block
                    want = sum(bounds[k + 1] - bounds[k] for k in result_order(schedule, r)
                               if mine[k])
                else:
                    want = 0
                assert copied == want, (schedule, r, n, copied, want)


def test_out_of_place_reads_the_input_until_the_first_write():
    # ring reduce_scatter: every send of the first step reads the input, the first
    # reduction of a segment writes work = in + received, and the last step, the first
    # write of the rank's own segment, output = in + received
    schedule = collectives.build("reduce_scatter", "ring", 4)
    plan = rank_plan(schedule, 0, 400, True)
    first = plan.steps[0]
    assert [b for _, b, _, _ in first.sends] == [IN]
    assert all(m[5] == IN and m[0] == WORK for m in first.applies)
    last = plan.steps[-1]
    assert all(m[0] == OUT and m[5] == IN for m in last.applies)
    assert plan.copies == () and plan.work <= 400
    # in place, the same plan on one buffer
    inplace = rank_plan(schedule, 0, 400)
    assert {b for s in inplace.steps for _, b, _, _ in s.sends + s.recvs} <= {OUT, 3}
    assert all(m[0] == m[5] == OUT for s in inplace.steps for m in s.applies)


REDUCING = [(c, a) for c, a in collectives.available()
            if c in ("allreduce", "reduce", "reduce_scatter")]


@settings(max_examples=80, deadline=None)
@given(instances(max_ranks=12, max_mult=3, pairs=REDUCING))
def test_the_apart_share_is_the_plans_reductions_written_apart(inst):
    """apart_share, from the schedule alone, is what the out-of-place plans do: the
    elements reduced into a buffer apart from their operands (``home = IN + received``)
    over every element reduced, on every rank."""
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    n = k * 6 * (p if collective == "reduce_scatter" else 1)   # equal chunks
    length = logical_length(schedule, n)
    assert len(set(schedule.chunk_sizes(length).tolist())) == 1
    apart = total = 0
    for r in range(p):
        for step in rank_plan(schedule, r, length, True).steps:
            for _, lo, hi, _, _, base, _ in step.applies:
                if base >= 0:
                    total += hi - lo
                    apart += (hi - lo) * (base == IN)
    want = apart / total if total else 0.0
    assert apart_share(schedule) == pytest.approx(want)
    assert 0.0 <= want <= 1.0


def test_a_ring_writes_every_reduction_apart_and_a_tree_s_second_child_adds_in_place():
    assert apart_share(collectives.build("allreduce", "ring", 4)) == 1.0
    assert apart_share(collectives.build("allreduce", "tree", 4)) == pytest.approx(2 / 3)
    assert apart_share(collectives.build("allreduce", "rhd", 4)) == pytest.approx(2 / 3)
    assert apart_share(collectives.build("allgather", "ring", 4)) == 0.0


def test_touching_chunks_to_one_peer_go_as_one_message():
    schedule = collectives.build("allreduce", "ring", 4, 16)  # 4 chunks a segment
    plan = rank_plan(schedule, 0, 1600)
    assert all(len(s.sends) == 1 and len(s.recvs) == 1 for s in plan.steps)
    assert plan.scratch == 400 and plan.messages == 2 * schedule.nsteps
    assert rank_plan(schedule, 0, 1600) is plan  # cached
    assert rank_plan(schedule, 0, 1600, True) is not plan


def test_empty_chunks_are_skipped_on_both_ends():
    schedule = collectives.build("allreduce", "ring", 8)
    plans = [rank_plan(schedule, r, 3) for r in range(8)]  # 5 of 8 chunks are empty
    sent = sum(hi - lo for pl in plans for s in pl.steps for _, _, lo, hi in s.sends)
    received = sum(hi - lo for pl in plans for s in pl.steps for _, _, lo, hi in s.recvs)
    assert sent == received == 2 * 7 * 3  # every element goes around twice


@pytest.mark.parametrize("collective", collectives.COLLECTIVES)
def test_output_length_is_the_result_s(collective):
    p, count = 3, 10
    algorithm = next(a for c, a in collectives.available() if c == collective)
    schedule = collectives.build(collective, algorithm, p)
    inputs = [np.arange(count * (p if collective == "reduce_scatter" else 1), dtype=float)
              for _ in range(p)]
    want = reference.expected(collective, inputs)
    n = logical_length(schedule, len(inputs[0]))
    for r in range(p):
        assert output_length(schedule, n, r) == len(want[r])
