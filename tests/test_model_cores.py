"""Cores shared by ranks: the host's copies and reductions one after another bound the
model on the topology and the simulator alike, only where ranks share cores."""

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commsim import collectives
from commsim.model.cores import host_links, host_work, shared_cores
from commsim.model.on_topology import TopologyModel
from commsim.sim import simulate
from commsim.topology import gpus, spec
from commsim.topology.routing import Router

PAIR, HOST, INTER = 8e9, 6e9, 2e9    # B/s: one pair alone, a host's shared capacity, fabric
GAMMA = 1 / 4e9


def profile_like(hosts: list[int], cores_per_rank: float | None) -> object:
    """A topology laid out as ``commsim calibrate`` writes one: ``hosts[h]`` ranks on
    host ``h``, each host's ranks joined through its shared-capacity link."""
    nodes, links, r = [], [], 0
    for h, n in enumerate(hosts):
        nodes += [{"name": f"host{h}.in", "kind": "switch"},
                  {"name": f"host{h}.out", "kind": "switch"}]
        links.append({"src": f"host{h}.in", "dst": f"host{h}.out", "bandwidth": f"{HOST}B/s",
                      "latency": "0us", "duplex": False})
        for _ in range(n):
            nodes.append({"name": f"rank{r}", "kind": "gpu"})
            links += [{"src": f"rank{r}", "dst": f"host{h}.in", "bandwidth": f"{PAIR}B/s",
                       "latency": "10us", "duplex": False},
                      {"src": f"host{h}.out", "dst": f"rank{r}", "bandwidth": f"{PAIR}B/s",
                       "latency": "10us", "duplex": False}]
            r += 1
    if len(hosts) > 1:
        nodes.append({"name": "fabric", "kind": "switch"})
        for h in range(len(hosts)):
            links += [{"src": f"host{h}.out", "dst": "fabric", "bandwidth": f"{INTER}B/s",
                       "latency": "5us", "duplex": False},
                      {"src": "fabric", "dst": f"host{h}.in", "bandwidth": f"{INTER}B/s",
                       "latency": "5us", "duplex": False}]
    model = {"reduce_bandwidth": f"{1 / GAMMA}B/s"}
    if cores_per_rank is not None:
        model["cores_per_rank"] = cores_per_rank
    return spec.parse({"name": "p", "nodes": nodes, "links": links, "model": model})


def _router(G):
    return Router(G, gpus(G))


def test_the_bound_is_the_host_s_bytes_then_its_reductions():
    G = profile_like([4], 0.5)
    S = 16 << 20
    for algorithm in ("ring", "tree"):
        s = collectives.build("allreduce", algorithm, 4, 8 if algorithm == "tree" else None)
        size = s.transfer_sizes(S)
        # allreduce: every rank sends and receives 2(P-1)/P of S, and reduces (P-1)/P of S
        assert size.sum() == pytest.approx(6 * S) and size[s.reduce].sum() == \
            pytest.approx(3 * S)
        want = 6 * S / HOST + 3 * S * GAMMA / 4
        assert host_work(s, S, _router(G), GAMMA) == pytest.approx(want, rel=1e-12)
    # a rank that reduces three times slower counts three times its reduced bytes
    s = collectives.build("allreduce", "tree", 4, 8)
    slow = [1.0, 3.0, 1.0, 1.0]
    red1 = s.transfer_sizes(S)[s.reduce & (s.dst == 1)].sum()
    assert host_work(s, S, _router(G), GAMMA, slow) == pytest.approx(
        6 * S / HOST + (3 * S + 2 * red1) * GAMMA / 4, rel=1e-12)


def test_a_pipelined_tree_is_bound_like_a_ring_in_the_model_and_the_simulator():
    """Ranks sharing cores: a deep pipeline cannot beat the host's work (the 2-core
    machine measured tree and ring alike); with a core per rank it does."""
    S = 64 << 20
    s = collectives.build("allreduce", "tree", 4, 32)
    for cores, bound in ((0.5, True), (1.0, False), (None, False)):
        G = profile_like([4], cores)
        assert shared_cores(G) is bound
        work = host_work(s, S, _router(G), GAMMA)
        assert (work > 0) is bound
        t_model = TopologyModel(G, 4).estimate(s, S, GAMMA, "dataflow", False).time
        res = simulate(s, G, S, gamma=GAMMA, mode="dataflow", overlap=False)
        assert res.host_work == work
        free = simulate(s, profile_like([4], None), S, gamma=GAMMA, mode="dataflow",
                        overlap=False).time
        if bound:
            assert t_model == pytest.approx(work) and res.time == pytest.approx(work)
            assert free < 0.9 * work    # the bound is what changed the answer
        else:
            assert res.time == free and t_model < work + free


def test_hosts_count_the_bytes_that_leave_or_reach_them_once():
    G = profile_like([2, 2], 0.25)
    hosts, links = host_links(G, gpus(G))
    assert hosts.tolist() == [0, 0, 1, 1] and links == [("host0.in", "host0.out"),
                                                       ("host1.in", "host1.out")]
    s = collectives.build("allreduce", "ring", 4)
    S = 4 << 20
    size = s.transfer_sizes(S)
    h = hosts
    moved = [size[(h[s.src] == k) | (h[s.dst] == k)].sum() for k in (0, 1)]
    reduced = [size[s.reduce & (h[s.dst] == k)].sum() for k in (0, 1)]
    want = max(m / HOST + r * GAMMA / 2 for m, r in zip(moved, reduced))
    assert host_work(s, S, _router(G), GAMMA) == pytest.approx(want, rel=1e-12)


def test_no_host_links_no_bound():
    """cores_per_rank below 1 on a topology not laid out as a profile: nothing to bound."""
    G = spec.parse({"builder": "star", "params": {"n": 4}, "name": "s",
                    "model": {"cores_per_rank": 0.5}})
    assert shared_cores(G) and host_links(G, gpus(G)) is None
    s = collectives.build("allreduce", "ring", 4)
    assert host_work(s, 1 << 20, _router(G), GAMMA) == 0.0


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(job=st.sampled_from([("allreduce", "ring"), ("allreduce", "tree"),
                            ("allreduce", "rhd"), ("allreduce", "dbt"),
                            ("allreduce", "nccl_tree"), ("reduce_scatter", "ring"),
                            ("allgather", "ring"), ("broadcast", "chain")]),
       hosts=st.sampled_from([[2], [3], [4], [2, 2], [3, 2]]),
       nchunks=st.sampled_from([1, 2, 4]),
       size=st.sampled_from([4096, 1 << 20, 12 << 20]),
       mode=st.sampled_from(["step", "dataflow"]), overlap=st.booleans())
def test_neither_prediction_beats_the_host_s_work(job, hosts, nchunks, size, mode, overlap):
    G = profile_like(hosts, 0.5)
    p = sum(hosts)
    collective, algorithm = job
    unit = collectives.chunk_unit(collective, algorithm, p)
    s = collectives.build(collective, algorithm, p, unit * nchunks)
    work = host_work(s, size, _router(G), GAMMA)
    assert work > 0
    t_model = TopologyModel(G, p).estimate(s, size, GAMMA, mode, overlap).time
    t_sim = simulate(s, G, size, gamma=GAMMA, mode=mode, overlap=overlap).time
    assert t_model >= work * (1 - 1e-12) and t_sim >= work * (1 - 1e-12)
