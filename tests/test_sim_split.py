"""simulate_many split into components of jobs that share links (commsim.sim.split):
each simulated on its own, identical ones once, results kept across calls in a memo."""

from __future__ import annotations

import os

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim import collectives
from commsim.errors import CommsimError
from commsim.sim import Job, simulate_many
from commsim.sim.jobs import ManyResult
from commsim.topology import builders, gpus, load

GB = 1e9
_DGX = load("dgx-h100-32node")
_FAT = builders.fat_tree(8)   # 8 pods of 16 gpus; traffic inside a pod stays in it

PER_TRANSFER = ("start", "end", "limit", "limit_s")
PER_LINK = ("link_bytes", "link_busy", "link_peak")


def _same(r, alone) -> None:
    """Job result ``r`` equals ``alone`` to the bit, transfer by transfer and link by link."""
    assert r.time == alone.time
    assert np.array_equal(r.rank_end, alone.rank_end)
    for name in PER_TRANSFER + PER_LINK:
        assert np.array_equal(getattr(r, name), getattr(alone, name)), name


def _same_links(res, alone) -> None:
    """The run ``res``'s link figures on the links of run ``alone`` equal its, to the bit
    (the run's own sums, not a job's: the sweep sums them route by route)."""
    mine = np.flatnonzero(alone.link_bytes + alone.link_busy + alone.link_peak)
    assert len(mine)
    for name in PER_LINK:
        assert np.array_equal(getattr(res, name)[mine], getattr(alone, name)[mine]), name


def _alone(job: Job, G, **kw):
    return simulate_many([job], G, **kw)[0]


def _mixed_dgx_jobs() -> list[Job]:
    """Ring, rhd and tree allreduces of 4 to 8 ranks, each inside its own DGX node."""
    gs = gpus(_DGX)
    algos = [("ring", 8), ("rhd", 8), ("tree", 8), ("ring", 4), ("rhd", 4), ("tree", 6)]
    return [Job(collectives.build("allreduce", a, p), (k + 1) << 20, gs[8 * k:8 * k + p],
                start=2e-6 * k, name=f"{a}{p}") for k, (a, p) in enumerate(algos)]


def _pod_jobs(seed: int = 1, pods: int = 4) -> list[Job]:
    """An rhd allreduce of 8 ranks at random gpus of each fat-tree pod: ECMP collisions
    inside the pod make each contended (the event engine), and pods share no link."""
    rng = np.random.default_rng(seed)
    gs = gpus(_FAT)
    s = collectives.build("allreduce", "rhd", 8)
    return [Job(s, 1 << 20, [gs[16 * p + int(i)] for i in rng.permutation(16)[:8]],
                start=1e-6 * p) for p in range(pods)]


@pytest.mark.parametrize("mode", ["step", "dataflow"])
def test_jobs_on_disjoint_links_equal_their_runs_alone_to_the_bit(mode):
    jobs = _mixed_dgx_jobs()
    res = simulate_many(jobs, _DGX, mode=mode, gamma=1e-11)
    assert (res.components, res.simulated) == (len(jobs), len(jobs))
    total = np.zeros(len(res.links))
    for job, r in zip(jobs, res):
        alone = simulate_many([job], _DGX, mode=mode, gamma=1e-11)
        _same(r, alone[0])
        _same_links(res, alone)
        total += alone.link_bytes
        assert alone.components == 1
    assert np.array_equal(res.link_bytes, total)
    assert res.time == max(job.start + r.time for job, r in zip(jobs, res))


@pytest.mark.parametrize("mode", ["step", "dataflow"])
def test_contended_jobs_in_separate_pods_equal_their_runs_alone(mode):
    jobs = _pod_jobs()
    res = simulate_many(jobs, _FAT, mode=mode)
    assert res.engine == "events" and res.components == len(jobs)
    events = 0
    rid = res._run.all_route_ids()
    for k, (job, r) in enumerate(zip(jobs, res)):
        alone = simulate_many([job], _FAT, mode=mode)
        assert alone.engine == "events"
        _same(r, alone[0])
        _same_links(res, alone)
        events += alone.events
        # the run's router gives each transfer the route the job's own router gives it
        a, b = len(job.schedule) * k, len(job.schedule) * (k + 1)
        mine = res.router.route_links(rid[a:b])
        own = alone.router.route_links(alone._run.all_route_ids())
        assert all(np.array_equal(x, y) for x, y in zip(mine, own))
    assert (r.limit >= 0).any()
    assert res.events == events     # the components' events, summed


def _chain() -> nx.DiGraph:
    """Switches s0 - s1 - s2 in a line, two gpus on each."""
    G = nx.DiGraph(name="chain")
    for i in range(3):
        G.add_node(f"s{i}", kind="switch")
        for j in range(2):
            g = f"g{i}{j}"
            G.add_node(g, kind="gpu")
            G.add_edge(g, f"s{i}", bandwidth=100 * GB, latency=1e-6)
            G.add_edge(f"s{i}", g, bandwidth=100 * GB, latency=1e-6)
    for u, v in (("s0", "s1"), ("s1", "s2")):
        G.add_edge(u, v, bandwidth=10 * GB, latency=1e-6)
        G.add_edge(v, u, bandwidth=10 * GB, latency=1e-6)
    return G


def test_jobs_that_share_links_transitively_are_one_run():
    """a (s0 -> s1) and c (s1 -> s2) share no link, but each shares one with b
    (s0 -> s2): one component, played as one run, as before the split."""
    G = _chain()
    send = collectives.build("broadcast", "binomial", 2)
    a = Job(send, 4_000_000, ["g00", "g10"], name="a")
    b = Job(send, 4_000_000, ["g01", "g20"], name="b")
    c = Job(send, 4_000_000, ["g11", "g21"], name="c")
    res = simulate_many([a, b, c], G)
    assert (res.components, res.simulated) == (1, 1)
    assert res.engine == "events"
    # b shares each of its spine links with one other flow: half rate while they run
    assert res[1].time > _alone(b, G).time
    # without b, a and c are two components, each as alone
    two = simulate_many([a, c], G)
    assert two.components == 2
    _same(two[0], _alone(a, G))
    _same(two[1], _alone(c, G))


def _stars() -> nx.DiGraph:
    """Two stars a and b: gpu 0 of each reaches gpus 1, 2, 3 through its switch at 10,
    5 and 10/3 B/s, so one byte to each is 0.1, 0.2 and 0.3 s of its uplink."""
    G = nx.DiGraph(name="stars")
    for tag in "ab":
        G.add_node(f"s{tag}", kind="switch")
        for i, bw in enumerate((100.0, 10.0, 5.0, 10 / 3)):
            g = f"g{tag}{i}"
            G.add_node(g, kind="gpu")
            G.add_edge(g, f"s{tag}", bandwidth=100.0, latency=1e-3)
            G.add_edge(f"s{tag}", g, bandwidth=bw, latency=1e-3)
    return G


def test_a_link_is_summed_route_by_route_in_the_order_alone():
    """The sweep sums a link's busy time route by route, in the router's order of
    routes, and 0.1 + 0.2 + 0.3 depends on the order: the component's view of the run's
    router keeps the order its own router gives, and a copy gets the same bits."""
    from commsim.collectives.schedule import Schedule

    assert (0.1 + 0.2) + 0.3 != (0.3 + 0.2) + 0.1
    G = _stars()
    s = Schedule.from_transfers("broadcast", "custom", 4, 3, [(0, 0, 1, 0, False),
                                                              (1, 0, 2, 1, False),
                                                              (2, 0, 3, 2, False)])
    jobs = [Job(s, 3, [f"g{tag}{i}" for i in range(4)]) for tag in "ab"]
    res = simulate_many(jobs, G)
    assert (res.components, res.simulated, res.engine) == (2, 1, "sweep")
    for job, r in zip(jobs, res):
        alone = simulate_many([job], G)
        _same(r, alone[0])
        _same_links(res, alone)
        uplink = res.links.index((job.placement[0], "s" + job.placement[0][1]))
        assert res.link_busy[uplink] == (0.1 + 0.2) + 0.3


def test_sharing_jobs_stay_one_component_beside_disjoint_ones():
    """Two jobs on the same gpus of one pod (a ring and an rhd) share their links:
    together they equal their merged run alone; the other pods' jobs equal theirs."""
    gs = gpus(_FAT)
    ring, rhd = (collectives.build("allreduce", a, 8) for a in ("ring", "rhd"))
    shared = [Job(ring, 1 << 20, gs[0:16:2]), Job(rhd, 1 << 19, gs[0:16:2])]
    others = _pod_jobs(pods=4)[1:]
    res = simulate_many(shared + others, _FAT)
    assert res.components == 1 + len(others)
    pair = simulate_many(shared, _FAT)
    assert pair.components == 1 and pair.engine == "events"
    for r, p in zip(res[:2], pair):
        _same(r, p)
    for job, r in zip(others, res[2:]):
        alone = simulate_many([job], _FAT)
        _same(r, alone[0])
        _same_links(res, alone)
    _same_links(res, pair)


@pytest.mark.parametrize("algo", ["ring", "rhd"])
def test_identical_jobs_on_isomorphic_nodes_are_simulated_once(algo):
    gs = gpus(_DGX)
    s = collectives.build("allreduce", algo, 8)
    n = 6
    jobs = [Job(s, 1 << 22, gs[8 * k:8 * k + 8], start=1e-6, name=f"tp{k}")
            for k in range(n)]
    res = simulate_many(jobs, _DGX)
    assert (res.components, res.simulated) == (n, 1)
    for k in (0, 3, n - 1):   # each copy is what simulating it alone gives
        alone = simulate_many([jobs[k]], _DGX)
        _same(res[k], alone[0])
        _same_links(res, alone)
    for r in res[1:]:
        assert r.time == res[0].time
        assert np.array_equal(r.end, res[0].end)
    if algo == "rhd":
        assert res.engine == "events" and (res[2].limit >= 0).all()
    # every node's links carry the same figures, moved over by the node
    assert np.count_nonzero(res.link_bytes) == n * np.count_nonzero(res[0].link_bytes)
    assert res.events == n * _alone(jobs[0], _DGX).events


def test_a_memo_reuses_results_across_calls():
    gs = gpus(_DGX)
    s = collectives.build("allreduce", "rhd", 8)
    jobs = [Job(s, 1 << 22, gs[8 * k:8 * k + 8]) for k in range(4)]
    memo: dict = {}
    first = simulate_many(jobs, _DGX, memo=memo)
    assert first.simulated == 1 and len(memo) == 1
    again = simulate_many(jobs, _DGX, memo=memo)
    assert (again.components, again.simulated) == (4, 0)
    for a, b in zip(first, again):
        _same(a, b)
    assert np.array_equal(first.link_busy, again.link_busy)
    assert again.engine == first.engine and again.events == first.events
    # other nodes, and a call of one job (one component), reuse it too
    moved = [Job(s, 1 << 22, gs[8 * k:8 * k + 8]) for k in range(10, 12)]
    got = simulate_many(moved, _DGX, memo=memo)
    assert got.simulated == 0
    _same(got[1], _alone(moved[1], _DGX))
    one = simulate_many(moved[:1], _DGX, memo=memo)
    assert (one.components, one.simulated) == (1, 0)
    _same(one[0], got[0])
    # another topology of the same nodes: other link ids, the same links
    G = load("dgx-h100-superpod")
    far = [Job(s, 1 << 22, gpus(G)[8 * k:8 * k + 8]) for k in (5, 100)]
    got = simulate_many(far, G, memo=memo)
    assert got.simulated == 0
    _same(got[1], _alone(far[1], G))


def test_what_the_signature_captures_is_not_reused():
    """A change to the size, start, a link's bandwidth, gamma or mode is a new simulation;
    the same job on another node is not."""
    gs = gpus(_DGX)
    s = collectives.build("allreduce", "ring", 8)
    node = gs[8:16]
    base = Job(s, 1 << 22, node)
    memo: dict = {}
    ref = simulate_many([base, Job(s, 1 << 22, gs[16:24])], _DGX, memo=memo)
    assert ref.simulated == 1

    def fresh(jobs, G=_DGX, **kw) -> bool:
        return simulate_many(jobs, G, memo=memo, **kw).simulated == 1

    assert not fresh([Job(s, 1 << 22, gs[24:32])])
    assert fresh([Job(s, (1 << 22) + 8, node)])
    assert fresh([Job(s, 1 << 22, node, start=1e-6)])
    assert fresh([base], gamma=1e-11)
    assert fresh([base], mode="dataflow")
    assert fresh([base], overhead=1e-6)
    assert fresh([Job(collectives.build("allreduce", "ring", 8, nchunks=16), 1 << 22, node)])
    G = _DGX.copy()
    u, v = next((u, v) for u, v in G.edges if u == node[0])
    G.edges[u, v]["bandwidth"] *= 0.5
    assert fresh([base], G)
    lat = _DGX.copy()
    lat.edges[u, v]["latency"] *= 2
    assert fresh([base], lat)
    n = len(memo)
    assert not fresh([base], mode="dataflow")
    assert len(memo) == n


def test_progress_counts_the_whole_run():
    gs = gpus(_DGX)
    s = collectives.build("allreduce", "ring", 8)
    jobs = [Job(s, 1 << 20, gs[8 * k:8 * k + 8]) for k in range(5)]
    seen = []
    res = simulate_many(jobs, _DGX, progress=lambda done, total: seen.append((done, total)))
    total = 5 * len(s)
    assert res.simulated == 1
    assert all(t == total for _, t in seen)
    assert [d for d, _ in seen] == sorted(d for d, _ in seen)
    assert seen[-1] == (total, total)


def test_a_shared_gpu_does_not_join_jobs_whose_links_differ():
    """Ranks of two jobs on one gpu are independent streams: jobs over disjoint links
    (one over NVLink, one over the network) are two components, each as alone."""
    gs = gpus(_DGX)
    tp = Job(collectives.build("allreduce", "ring", 8), 1 << 22, gs[:8])
    dp = Job(collectives.build("allreduce", "ring", 4), 1 << 22, gs[0:32:8])
    res = simulate_many([tp, dp], _DGX)
    assert res.components == 2
    _same(res[0], _alone(tp, _DGX))
    _same(res[1], _alone(dp, _DGX))


def test_link_figures_and_traces_read_the_split_run(tmp_path):
    jobs = _pod_jobs(pods=3)
    res = simulate_many(jobs, _FAT)
    assert isinstance(res, ManyResult) and res.components == 3
    by = res.link_bytes_by(["a", "b", "a"])
    assert np.array_equal(by["a"] + by["b"], res.link_bytes)
    assert np.array_equal(by["b"], res[1].link_bytes)
    assert res.busiest_links(3)[0]["bytes"] > 0
    res.to_chrome_trace(tmp_path / "t.json")
    bare = simulate_many(jobs, _FAT, record_transfers=False)
    for r, b in zip(res, bare):
        assert b.start is None and b.time == r.time
        assert np.array_equal(b.link_busy, r.link_busy)


@settings(max_examples=12, deadline=None)
@given(seed=st.integers(0, 2**16), njobs=st.integers(2, 5),
       mode=st.sampled_from(["step", "dataflow"]),
       algo=st.sampled_from(["ring", "rhd", "tree"]))
def test_a_job_sharing_no_link_gets_its_run_alone(seed, njobs, mode, algo):
    """Random placements on a small fat-tree (most jobs inside a random pod, some
    anywhere): every job whose links meet no other job's gets what it gets alone, to the
    bit; a memo changes nothing."""
    G = builders.fat_tree(4)
    gs = gpus(G)
    rng = np.random.default_rng(seed)
    jobs = []
    for _ in range(njobs):
        p = int(rng.integers(2, 5))
        if rng.random() < 0.75:
            pick = 4 * int(rng.integers(0, 4)) + rng.permutation(4)[:p]
        else:
            pick = rng.permutation(len(gs))[:p]
        nbytes = int(rng.integers(1 << 10, 1 << 20))   # no chunk of 0 bytes
        jobs.append(Job(collectives.build("allreduce", algo, p), nbytes,
                        [gs[int(i)] for i in pick], start=float(rng.integers(0, 3)) * 1e-6))
    alone = [simulate_many([job], G, mode=mode) for job in jobs]
    used = []
    for a in alone:   # the links of a job's routes (every transfer moves bytes here)
        used.append(set(np.flatnonzero(a.link_bytes).tolist()))
    res = simulate_many(jobs, G, mode=mode)
    memo: dict = {}
    simulate_many(jobs, G, mode=mode, memo=memo)
    again = simulate_many(jobs, G, mode=mode, memo=memo)
    assert again.simulated == 0
    for name in PER_LINK:
        assert np.array_equal(getattr(again, name), getattr(res, name))
    for k, (r, a) in enumerate(zip(res, alone)):
        _same(again[k], r)
        if all(used[k].isdisjoint(used[j]) for j in range(njobs) if j != k):
            _same(r, a[0])
            _same_links(res, a)


def test_run_step_passes_one_memo_to_a_simulator_that_takes_it():
    """run_step gives the simulator one memo for the step: the DP groups of a phase
    beside TP groups are copied in a later phase of the DP groups alone. A stand-in
    without a ``memo`` parameter gets none; one that names it gets the same dict."""
    from commsim.workload import Layout, Op, Phase, place_layout, run_step
    from commsim.workload.simulate import takes_memo

    lay = Layout(tp=8, dp=4)
    placement = place_layout(_DGX, lay)
    tp = Op("tp", "allreduce", 1 << 22, 1, "backward", "tp allreduce", 8)
    dp = Op("dp", "allreduce", 1 << 20, 1, "grad-sync", "dp allreduce", 4)
    timeline = [Phase("both", (tp, dp)), Phase("dp", (dp,))]
    seen = []

    def sim(jobs, G, memo=None, **options):
        res = simulate_many(jobs, G, memo=memo, **options)
        seen.append((id(memo), len(jobs), res.components, res.simulated))
        return res

    assert takes_memo(simulate_many) and takes_memo(sim)
    run_step(timeline, _DGX, lay, placement, simulate_many=sim)
    (m1, n1, c1, s1), (m2, n2, c2, s2) = seen
    # 4 TP groups (one a node) and 8 DP rings (one a gpu index), the same up to links
    assert m1 == m2 and (n1, c1, s1) == (12, 12, 2)
    assert (n2, c2, s2) == (8, 8, 0)

    calls = []

    def fake(jobs, G, **options):
        calls.append(options)
        return [type("R", (), {"time": 1.0})() for _ in jobs]

    assert not takes_memo(fake)
    run_step(timeline, _DGX, lay, placement, simulate_many=fake, routing="static")
    assert calls == [{"routing": "static"}, {"routing": "static"}]


@pytest.mark.parametrize("mode", ["step", "dataflow"])
def test_forked_workers_give_the_same_run_to_the_bit(monkeypatch, mode):
    """Components simulated in forked workers (``workers=2``) give what one process gives,
    every job and link to the bit, and count as simulated."""
    from commsim.sim import split

    jobs = _pod_jobs(seed=3)
    one = simulate_many(jobs, _FAT, mode=mode, workers=1)
    monkeypatch.setattr(split, "PARALLEL_MIN", 0)
    pids = []
    real = split._in_parallel

    def spy(*args):
        got = real(*args)
        pids.extend(d.pid for d in got.values())
        return got

    monkeypatch.setattr(split, "_in_parallel", spy)
    two = simulate_many(jobs, _FAT, mode=mode, workers=2)
    assert len(pids) == 4 and os.getpid() not in pids     # simulated in other processes
    assert (two.components, two.simulated) == (one.components, one.simulated) == (4, 4)
    assert two.engine == one.engine == "events" and two.events == one.events
    for a, b in zip(one, two):
        _same(b, a)
    for name in PER_LINK:
        assert np.array_equal(getattr(one, name), getattr(two, name)), name


def test_workers_must_be_a_whole_number():
    jobs = _pod_jobs(pods=2)
    for bad in (0, -1, 1.5, True):
        with pytest.raises(CommsimError, match="workers"):
            simulate_many(jobs, _FAT, workers=bad)
