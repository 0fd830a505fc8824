"""commsim.workload.simulate: phases as jobs, and a step added up over a stand-in simulator
(``simulate_many`` is injected; the real one comes with commsim.sim)."""

from __future__ import annotations

import pytest

from commsim.errors import CommsimError
from commsim.workload import (
    Layout,
    Op,
    Phase,
    Shape,
    jobs_for_phase,
    run_step,
    step_timeline,
)
from commsim.workload.step import send_factor

GPUS = [f"g{i}" for i in range(64)]
MiB = 2**20


class FakeResults(list):
    """What simulate_many returns: one result per job, plus the combined link load."""

    link_bytes = "combined-bytes"

    def busiest_links(self, n):
        return [{"link": "a->b", "bytes": 1.0}][:n]


class FakeResult:
    def __init__(self, time):
        self.time = time


class FakeSim:
    """Each job takes ``nbytes / 1e9`` seconds, times its group size (bigger groups are
    slower), so jobs of one phase differ when their groups do. Counts its calls."""

    def __init__(self):
        self.calls = []

    def __call__(self, jobs, G, **options):
        self.calls.append((len(jobs), options))
        return FakeResults(FakeResult(j.nbytes / 1e9 * len(j.placement)) for j in jobs)


def op(dim, collective, nbytes, phase="forward", ranks=2):
    return Op(dim, collective, nbytes, 1, phase, f"{dim} {collective}", ranks)


def test_a_tp_phase_is_one_job_per_group():
    lay = Layout(tp=4, dp=2)
    jobs = jobs_for_phase(Phase("tp", (op("tp", "allreduce", MiB, ranks=4),)), lay, GPUS)
    assert len(jobs) == 2
    for job, first in zip(jobs, (0, 4)):
        s = job.schedule
        assert (s.collective, s.algorithm, s.nranks) == ("allreduce", "ring", 4)
        assert job.nbytes == MiB and job.start == 0.0
        assert list(job.placement) == GPUS[first:first + 4]
    assert jobs[0].schedule is jobs[1].schedule  # built once


def test_pp_sends_are_two_rank_broadcasts_between_neighbouring_stages():
    """pp 3, dp 2 (order tp-cp-ep-dp-pp: stages stride 2): groups [0, 2, 4] and [1, 3, 5];
    forward sends 0->2, 2->4, 1->3, 3->5; backward the other way."""
    lay = Layout(pp=3, dp=2)
    fwd = jobs_for_phase(Phase("f", (op("pp", "send", MiB),)), lay, GPUS)
    assert [list(j.placement) for j in fwd] == [["g0", "g2"], ["g2", "g4"], ["g1", "g3"],
                                                ["g3", "g5"]]
    s = fwd[0].schedule
    assert (s.collective, s.algorithm, s.nranks) == ("broadcast", "chain", 2)
    back = jobs_for_phase(Phase("b", (op("pp", "send", MiB, "backward"),)), lay, GPUS)
    assert [list(j.placement) for j in back][:2] == [["g2", "g0"], ["g4", "g2"]]


def test_single_rank_groups_make_no_jobs():
    assert jobs_for_phase(Phase("x", (op("cp", "allgather", MiB, ranks=1),)), Layout(tp=2),
                          GPUS) == []
    assert jobs_for_phase(Phase("compute"), Layout(tp=2), GPUS) == []


def test_algorithms_by_collective_or_by_dim():
    lay = Layout(tp=4, dp=2)
    phase = Phase("x", (op("tp", "allreduce", MiB, ranks=4), op("dp", "allreduce", MiB)))
    jobs = jobs_for_phase(phase, lay, GPUS, {"allreduce": "tree", "tp:allreduce": "rhd"})
    assert [j.schedule.algorithm for j in jobs] == ["rhd", "rhd", "tree", "tree", "tree",
                                                     "tree"]
    grouped = jobs_for_phase(phase, lay, GPUS, {"tp:allreduce": ("hierarchical",
                                                                 {"group_size": 2})})
    assert grouped[0].schedule.algorithm == "hierarchical"
    with pytest.raises(CommsimError, match="allreduce algorithm 'rign'; did you mean 'ring'"):
        jobs_for_phase(phase, lay, GPUS, {"allreduce": "rign"})
    with pytest.raises(CommsimError, match="unknown algorithms key 'allreduc'"):
        jobs_for_phase(phase, lay, GPUS, {"allreduc": "ring"})
    with pytest.raises(CommsimError, match="placement: 4 gpus for a layout of 8 ranks"):
        jobs_for_phase(phase, lay, GPUS[:4])


def test_run_step_adds_phases_up():
    """tp 2, dp 4, 4 layers, m 3, 1 MiB buckets: phases forward TP (24 x), backward TP
    (24 x), grad-sync (12 x 1 MiB buckets). Fake times: a TP allreduce of 1 MiB on 2 ranks
    takes 2 x 2^20 / 1e9 s, a DP bucket on 4 ranks 4 x 2^20 / 1e9 s; compute 1 ms forward
    and 2 ms backward a layer and micro-batch (12 of each)."""
    shape = Shape(layers=4, hidden=512, seq_len=1024, micro_batches=3, bucket=MiB)
    lay = Layout(tp=2, dp=4)
    timeline = step_timeline(shape, lay, {"forward": 1e-3, "backward": 2e-3})
    sim = FakeSim()
    res = run_step(timeline, None, lay, GPUS, simulate_many=sim, routing="static")
    tp_t, dp_t = 2 * MiB / 1e9, 4 * MiB / 1e9
    compute = 12 * 3e-3
    assert res.time_s == pytest.approx(48 * tp_t + 12 * dp_t + compute)
    assert res.compute_s == pytest.approx(compute)
    assert res.comm_s == pytest.approx(48 * tp_t + 12 * dp_t)
    # forward and backward TP allreduces are the same simulation: simulated once
    assert len(sim.calls) == 2 and sim.calls[0] == (4, {"routing": "static"})
    assert res.dims["tp"]["time_s"] == pytest.approx(48 * tp_t)
    assert res.dims["tp"]["share"] == pytest.approx(48 * tp_t / res.time_s)
    assert res.dims["tp"]["bytes"] == pytest.approx(48 * MiB * send_factor("allreduce", 2))
    assert res.dims["dp"]["busbw"] == pytest.approx(2 * 3 / 4 * MiB / dp_t)
    grad = [p for p in res.phases if p.name.startswith("grad-sync")][0]
    assert grad.count == 12 and grad.links == [{"link": "a->b", "bytes": 1.0}]
    assert grad.link_bytes == "combined-bytes"
    assert grad.ops[0]["jobs"] == 2 and grad.ops[0]["ranks"] == 4
    assert res.as_dict()["phases"][0]["count"] == 24


def test_overlap_phases_take_the_longer_of_comm_and_compute():
    lay = Layout(dp=4)
    phases = [Phase("hidden", (op("dp", "allreduce", MiB, "grad-sync", 4),), compute_s=1.0,
                    count=2, overlap=True),
              Phase("exposed", (op("dp", "allreduce", MiB, "grad-sync", 4),), compute_s=0.0,
                    count=1, overlap=True)]
    res = run_step(phases, None, lay, GPUS, simulate_many=FakeSim())
    assert res.time_s == pytest.approx(2 * 1.0 + 4 * MiB / 1e9)


def test_model_only_and_model_beside_the_simulator():
    lay = Layout(tp=2)
    timeline = [Phase("tp", (op("tp", "allreduce", MiB),), count=3, compute_s=0.5)]

    def model(job):
        return 1e-3

    alone = run_step(timeline, None, lay, GPUS, model=model)
    assert alone.time_s == pytest.approx(3 * (1e-3 + 0.5)) and alone.model_s is None
    both = run_step(timeline, None, lay, GPUS, simulate_many=FakeSim(), model=model)
    assert both.time_s == pytest.approx(3 * (2 * MiB / 1e9 + 0.5))
    assert both.model_s == pytest.approx(3 * (1e-3 + 0.5))
    assert both.phases[0].model_s == pytest.approx(1e-3)
    with pytest.raises(CommsimError, match="give simulate_many"):
        run_step(timeline, None, lay, GPUS)


def test_simulate_many_must_answer_every_job():
    def short(jobs, G, **options):
        return FakeResults([FakeResult(1.0)])
    with pytest.raises(CommsimError, match="returned 1 results for 2 jobs"):
        run_step([Phase("tp", (op("tp", "allreduce", MiB),))], None, Layout(tp=2, dp=2),
                 GPUS, simulate_many=short)
