"""Per-rank step plans: played in one process they give the reference's result."""

from collections import defaultdict, deque

import numpy as np
from hypothesis import given
from hypothesis import strategies as st
from strategies import instances

from commsim import collectives
from commsim.backends import reference
from commsim.backends.plan import rank_plan


def play(schedule, inputs):
    """Every rank's plan, step by step, messages matched per pair in order (as MPI/gloo do)."""
    p = schedule.nranks
    bufs = reference.initial_buffers(schedule, inputs)
    n = len(bufs[0])
    plans = [{s.step: s for s in rank_plan(schedule, r, n).steps} for r in range(p)]
    for step in sorted(set().union(*plans)):
        wire = defaultdict(deque)
        for r in range(p):
            if step in plans[r]:
                for peer, lo, hi in plans[r][step].sends:
                    assert hi > lo, "an empty message was planned"
                    wire[(r, peer)].append(bufs[r][lo:hi].copy())
        adds = []
        for r in range(p):
            if step not in plans[r]:
                continue
            scratch = np.zeros(rank_plan(schedule, r, n).scratch)
            for peer, lo, hi, off in plans[r][step].recvs:
                data = wire[(peer, r)].popleft()
                assert len(data) == hi - lo, "messages of a pair do not match in order"
                if off < 0:
                    bufs[r][lo:hi] = data
                else:
                    scratch[off:off + hi - lo] = data
                    adds.append((r, lo, hi, scratch[off:off + hi - lo]))
        for r, lo, hi, data in adds:
            bufs[r][lo:hi] += data
        assert not any(wire.values()), "a message was sent that nobody receives"
    return reference.final_results(schedule, bufs)


@given(instances(max_ranks=12, max_mult=3), st.integers(1, 60), st.integers(0, 2**31))
def test_plans_give_the_reference_result(inst, n, seed):
    collective, algorithm, p, k, options = inst
    schedule = collectives.build(collective, algorithm, p, k, **options)
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-9, 9, size=n).astype(np.float64) for _ in range(p)]
    got = play(schedule, inputs)
    want = reference.run(schedule, inputs)
    ranks = [options.get("root", 0)] if collective == "reduce" else range(p)
    for r in ranks:
        np.testing.assert_array_equal(got[r], want[r])


def test_touching_chunks_to_one_peer_go_as_one_message():
    schedule = collectives.build("allreduce", "ring", 4, 16)  # 4 chunks a segment
    plan = rank_plan(schedule, 0, 1600)
    assert all(len(s.sends) == 1 and len(s.recvs) == 1 for s in plan.steps)
    assert plan.scratch == 400 and plan.messages == 2 * schedule.nsteps
    assert rank_plan(schedule, 0, 1600) is plan  # cached


def test_empty_chunks_are_skipped_on_both_ends():
    schedule = collectives.build("allreduce", "ring", 8)
    plans = [rank_plan(schedule, r, 3) for r in range(8)]  # 5 of 8 chunks are empty
    sent = sum(hi - lo for pl in plans for s in pl.steps for _, lo, hi in s.sends)
    received = sum(hi - lo for pl in plans for s in pl.steps for _, lo, hi, _ in s.recvs)
    assert sent == received == 2 * 7 * 3  # every element goes around twice
