"""Several collectives at once: commsim.sim.simulate_many."""

from __future__ import annotations

import json

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim import collectives
from commsim.errors import CommsimError
from commsim.sim import Job, simulate, simulate_many
from commsim.topology import builders, gpus, load

GB = 1e9


def _two_leaves(spine_bw: float = 10 * GB, gpu_bw: float = 100 * GB,
                lat: float = 1e-6) -> nx.DiGraph:
    """g0, g1 on leaf a; g2, g3 on leaf b; one a<->b link of ``spine_bw`` (full duplex)."""
    G = nx.DiGraph(name="two-leaves")
    for g in ("g0", "g1", "g2", "g3"):
        G.add_node(g, kind="gpu")
    G.add_node("a", kind="switch")
    G.add_node("b", kind="switch")
    for g, sw in (("g0", "a"), ("g1", "a"), ("g2", "b"), ("g3", "b")):
        G.add_edge(g, sw, bandwidth=gpu_bw, latency=lat)
        G.add_edge(sw, g, bandwidth=gpu_bw, latency=lat)
    G.add_edge("a", "b", bandwidth=spine_bw, latency=lat)
    G.add_edge("b", "a", bandwidth=spine_bw, latency=lat)
    return G


def _send():
    """A 2-rank broadcast: rank 0 sends its whole buffer to rank 1, one transfer."""
    s = collectives.build("broadcast", "binomial", 2)
    assert len(s) == 1
    return s


def test_two_sends_on_one_spine_link_share_it_as_worked_by_hand():
    """g0 -> g2 moves N bytes and g1 -> g3 moves 2N; both cross the 10 GB/s a->b link.

    Route: gpu link, a->b, gpu link: latency 3 us, alone each flow would run at the
    10 GB/s spine (the gpu links are 100 GB/s). Together both get 5 GB/s until the
    first has moved its N bytes at t1 = N / 5 GB/s; the second, with N left, then has
    the link to itself: it ends sending at t1 + N / 10 GB/s. Each arrives 3 us after
    its last byte left.
    """
    G = _two_leaves()
    N = 10_000_000
    lat = 3e-6
    res = simulate_many([Job(_send(), N, ["g0", "g2"], name="small"),
                         Job(_send(), 2 * N, ["g1", "g3"], name="big")], G)
    t1 = N / (5 * GB)
    assert res[0].time == pytest.approx(t1 + lat, rel=1e-12)
    assert res[1].time == pytest.approx(t1 + N / (10 * GB) + lat, rel=1e-12)
    assert res.time == pytest.approx(res[1].time, rel=1e-12)
    spine = res.links.index(("a", "b"))
    assert res.link_bytes[spine] == pytest.approx(3 * N)
    assert res.link_busy[spine] == pytest.approx(t1 + N / (10 * GB), rel=1e-12)
    assert res.link_peak[spine] == pytest.approx(1.0)
    # each job's own bytes on the link, and the time its own flow moved bytes there
    assert res[0].link_bytes[spine] == pytest.approx(N)
    assert res[0].link_busy[spine] == pytest.approx(t1, rel=1e-12)
    assert res.busiest_links(1)[0]["link"] == "a->b"
    # alone, the small one runs at the full spine rate
    alone = simulate(_send(), G, N, ["g0", "g2"])
    assert alone.time == pytest.approx(N / (10 * GB) + lat, rel=1e-12)


def test_a_later_start_shares_only_what_is_left():
    """Both move N bytes over the spine; the second starts when the first is half done.

    First alone at 10 GB/s until ts = N / 20 GB/s (half its bytes); then both at 5 GB/s
    until the first's last N/2 bytes are gone at ts + N / 10 GB/s; the second has then
    moved N/2 and finishes its other N/2 alone in N / 20 GB/s. The second's own time
    counts from its start.
    """
    G = _two_leaves()
    N = 8_000_000
    lat = 3e-6
    ts = N / (20 * GB)
    res = simulate_many([Job(_send(), N, ["g0", "g2"]),
                         Job(_send(), N, ["g1", "g3"], start=ts)], G)
    assert res[0].time == pytest.approx(ts + N / (10 * GB) + lat, rel=1e-12)
    assert res[1].time == pytest.approx(N / (10 * GB) + N / (20 * GB) + lat, rel=1e-12)
    assert res.starts.tolist() == [0.0, ts]
    assert res.time == pytest.approx(ts + res[1].time, rel=1e-12)
    assert res[1].start[0] == pytest.approx(0.0, abs=1e-18)


@pytest.mark.parametrize("mode", ["step", "dataflow"])
@pytest.mark.parametrize("routing", ["ecmp", "static"])
def test_jobs_that_share_no_link_take_exactly_their_time_alone(mode, routing):
    """One TP ring per DGX node: the rings never meet, so each takes its time alone (to
    rounding: a job entering at 1 ms is timed as its end less 1 ms)."""
    G = load("dgx-a100-4node")
    gs = gpus(G)
    s = collectives.build("allreduce", "ring", 8, nchunks=16, channels=2)
    jobs = [Job(s, 32 << 20, gs[8 * k:8 * k + 8], start=1e-3 * k, name=f"tp{k}")
            for k in range(4)]
    res = simulate_many(jobs, G, routing=routing, mode=mode, gamma=1e-11)
    for k, r in enumerate(res):
        alone = simulate(s, G, 32 << 20, gs[8 * k:8 * k + 8], routing=routing, mode=mode,
                         gamma=1e-11)
        assert r.time == pytest.approx(alone.time, rel=1e-12)
        assert r.end == pytest.approx(alone.end, rel=1e-12)
        assert np.array_equal(r.link_bytes, alone.link_bytes)
    assert res.time == pytest.approx(3e-3 + res[3].time, rel=1e-15)


@pytest.mark.parametrize("memo", [None, {}])
def test_a_profile_s_exchange_overhead_is_charged_to_each_job_as_alone(memo):
    """An exchange step (a ring's) pays ``exchange_overhead``, a one-way step (a 2-rank
    tree's) ``overhead``: each job as it would alone, whether its group is simulated
    whole or split and memoised."""
    G = load("dgx-a100-4node")
    gs = gpus(G)
    ring = collectives.build("allreduce", "ring", 8, nchunks=8)
    tree = collectives.build("allreduce", "tree", 2, nchunks=2)
    jobs = [Job(ring, 8 << 20, gs[:8], name="ring"), Job(tree, 8 << 20, gs[8:10], name="tree")]
    costs = dict(overhead=20e-6, exchange_overhead=300e-6, message_overhead=5e-6)
    res = simulate_many(jobs, G, mode="dataflow", memo=memo, **costs)
    for job, r in zip(jobs, res):
        alone = simulate(job.schedule, G, job.nbytes, job.placement, mode="dataflow",
                         **costs)
        assert r.time == pytest.approx(alone.time, rel=1e-12)
    cheaper = simulate_many(jobs, G, mode="dataflow", memo=memo,
                            **{**costs, "exchange_overhead": None})
    assert cheaper[0].time < res[0].time   # the ring's exchanges paid 300 us, not 20
    assert cheaper[1].time == pytest.approx(res[1].time, rel=1e-12)


def test_ecmp_jobs_across_a_fat_tree_pick_their_own_routes():
    """Rhd allreduces in different pods of a k=4 fat-tree take, under ECMP, the paths
    they take alone (ECMP hashes their gpus and connections, not the run around them),
    so they share no link, and each is simulated apart (commsim.sim.split): the same
    per-link bytes and the same times, to the bit."""
    G = builders.fat_tree(4)
    gs = gpus(G)
    s = collectives.build("allreduce", "rhd", 4)
    jobs = [Job(s, 1 << 20, gs[4 * k:4 * k + 4]) for k in range(4)]
    res = simulate_many(jobs, G)
    assert res.components == 4
    for k, r in enumerate(res):
        alone = simulate(s, G, 1 << 20, gs[4 * k:4 * k + 4])
        assert r.time == alone.time
        assert np.array_equal(r.end, alone.end)
        assert np.array_equal(r.link_bytes, alone.link_bytes)


def test_link_bytes_by_label_sums_the_jobs_own_and_job_figures_come_on_demand():
    """ManyResult.link_bytes_by sums the jobs' own link_bytes per label in one pass; each
    job's link figures are computed when read, the same with record_transfers=False."""
    G = builders.fat_tree(4)
    gs = gpus(G)
    rhd, ring = collectives.build("allreduce", "rhd", 4), collectives.build("allgather",
                                                                            "ring", 4)
    jobs = [Job(rhd if k % 2 else ring, (k + 1) << 18, gs[k::4]) for k in range(4)]
    res = simulate_many(jobs, G)
    by = res.link_bytes_by(["dp", "tp", "dp", "tp"])
    assert list(by) == ["dp", "tp"]
    assert np.array_equal(by["dp"], res[0].link_bytes + res[2].link_bytes)
    assert np.array_equal(by["tp"], res[1].link_bytes + res[3].link_bytes)
    assert np.array_equal(by["dp"] + by["tp"], res.link_bytes)
    bare = simulate_many(jobs, G, record_transfers=False)
    for r, b in zip(res, bare):
        assert b.start is None and b.time == r.time
        for name in ("link_bytes", "link_busy", "link_peak"):
            assert np.array_equal(getattr(b, name), getattr(r, name))


def test_two_jobs_on_the_same_gpus_share_their_links():
    """Two identical 2-rank allreduces on g0, g2: every flow has its twin beside it on
    every link, so each moves at half the rate; a step takes what one job of twice the
    bytes takes alone (the latency is paid once either way)."""
    G = _two_leaves()
    s = collectives.build("allreduce", "ring", 2)
    N = 4_000_000
    res = simulate_many([Job(s, N, ["g0", "g2"]), Job(s, N, ["g0", "g2"])], G)
    double = simulate(s, G, 2 * N, ["g0", "g2"])
    assert res[0].time == pytest.approx(double.time, rel=1e-12)
    assert res[1].time == pytest.approx(double.time, rel=1e-12)
    assert res.engine == "events"


@settings(max_examples=25, deadline=None)
@given(p=st.integers(2, 6), q=st.integers(2, 6), n=st.integers(0, 1 << 16),
       mode=st.sampled_from(["step", "dataflow"]))
def test_never_faster_than_alone(p, q, n, mode):
    """Sharing links can only slow a job down (max-min gives no flow more than alone)."""
    G = builders.fat_tree(4)
    gs = gpus(G)
    a = collectives.build("allreduce", "ring", p)
    b = collectives.build("allgather", "ring", q)
    jobs = [Job(a, n, gs[:p]), Job(b, n, gs[16 - q:])]
    res = simulate_many(jobs, G, mode=mode)
    for job, r in zip(jobs, res):
        alone = simulate(job.schedule, G, n, job.placement, mode=mode)
        assert r.time >= alone.time * (1 - 1e-12)


def test_chrome_trace_has_a_track_per_job(tmp_path):
    G = _two_leaves()
    res = simulate_many([Job(_send(), 1 << 20, ["g0", "g2"], name="pp0"),
                         Job(collectives.build("allreduce", "ring", 2), 1 << 20,
                             ["g1", "g3"], name="dp0")], G)
    path = tmp_path / "t.json"
    res.to_chrome_trace(path)
    ev = json.loads(path.read_text())["traceEvents"]
    names = {e["args"]["name"] for e in ev if e.get("name") == "thread_name"}
    assert {"pp0", "dp0", "a->b"} <= names
    assert any(e.get("ph") == "X" and e["args"].get("job") == "dp0" for e in ev
               if e.get("pid") == 1)


def test_bad_jobs_get_one_clear_line():
    G = _two_leaves()
    s = _send()
    with pytest.raises(CommsimError, match="jobs: no job"):
        simulate_many([], G)
    with pytest.raises(CommsimError, match=r"jobs\[0\] \(x\): start"):
        simulate_many([Job(s, 10, ["g0", "g2"], start=-1, name="x")], G)
    with pytest.raises(CommsimError, match=r"jobs\[1\]: placement"):
        simulate_many([Job(s, 10, ["g0", "g2"]), Job(s, 10, ["g0", "a"])], G)
    with pytest.raises(CommsimError, match=r"jobs\[0\]: size"):
        simulate_many([Job(s, -1, ["g0", "g2"])], G)
    with pytest.raises(CommsimError, match="not a Job"):
        simulate_many([(s, 10)], G)
    with pytest.raises(CommsimError, match="mode"):
        simulate_many([Job(s, 10, ["g0", "g2"])], G, mode="nope")
