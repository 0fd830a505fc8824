"""The model that reads the topology: equal to the simulator wherever no step's own flows
share a link (a property over random topologies and placements), an estimate that says
so where they do, and `predict` whose fastest mark agrees with `simulate`."""

import json

import numpy as np
import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from commsim import collectives, model
from commsim.cli import main
from commsim.errors import CommsimError
from commsim.model.on_topology import TopologyModel, predict_on
from commsim.sim import simulate
from commsim.topology import builders, gpus

TOPOLOGIES = {
    "star": lambda bw: builders.star(8, bandwidth=bw, latency=1e-6),
    "ring": lambda bw: builders.ring(8, bandwidth=bw, latency=2e-6),
    "torus": lambda bw: builders.torus((3, 3), bandwidth=bw, latency=1e-6),
    "full": lambda bw: builders.fully_connected(6, bandwidth=bw, latency=3e-6),
    "leaf_spine": lambda bw: builders.leaf_spine(2, 2, 4, host_bw=bw, spine_bw=bw / 2),
}
CASES = [("allreduce", "ring"), ("allreduce", "rhd"), ("allreduce", "tree"),
         ("allreduce", "dbt"), ("reduce_scatter", "ring"), ("allgather", "rhd"),
         ("broadcast", "binomial"), ("broadcast", "chain")]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.sampled_from(sorted(TOPOLOGIES)), st.sampled_from(CASES), st.integers(2, 6),
       st.sampled_from([1e9, 10e9, 25e9]), st.sampled_from([0.0, 1e-10]),
       st.randoms(use_true_random=False), st.sampled_from(["ecmp", "static"]))
def test_the_model_equals_the_simulator_wherever_no_link_is_shared(
        topo, case, p, bw, gamma, rnd, routing):
    G = TOPOLOGIES[topo](bw)
    nodes = gpus(G)
    p = min(p, len(nodes))
    placement = rnd.sample(nodes, p)
    collective, algorithm = case
    s = collectives.build(collective, algorithm, p)
    nbytes = 720720 * 8  # every chunk count here divides it: equal chunks, no rounding
    r = simulate(s, G, nbytes, placement=placement, gamma=gamma, routing=routing)
    e = predict_on(s, G, nbytes, placement=placement, gamma=gamma, routing=routing)
    if r.engine == "sweep" or not e.shared:   # contention-free: the model is exact
        assert e.time == pytest.approx(r.time, rel=1e-9)
    if r.engine == "sweep":
        assert not e.shared


@pytest.mark.parametrize("m", [1, 2, 4])
def test_pipelined_rings_in_dataflow_mode_agree_with_the_simulator(m):
    G = builders.star(6, bandwidth=4e9, latency=10e-6)
    s = collectives.build("allreduce", "ring", 6, 6 * m)
    for overlap in (True, False):
        kw = dict(mode="dataflow", gamma=1 / 8e9, message_overhead=3e-6, overlap=overlap)
        sim = simulate(s, G, 3 * 2**24, **kw).time
        assert predict_on(s, G, 3 * 2**24, **kw).time == pytest.approx(sim, rel=1e-9)


def test_ring_neighbours_pay_one_hop_not_the_diameter():
    """On a ring of 8 the flat model charges every ring step the diameter's latency;
    the model on the topology charges the one hop a ring's neighbours are apart."""
    G = builders.ring(8, bandwidth=25e9, latency=1e-6)
    s = collectives.build("allreduce", "ring", 8)
    size = 8 * 1024
    a, b = model.alpha_beta(G, 8)
    flat = model.predict("allreduce", "ring", 8, size, a, b)
    e = predict_on(s, G, size)
    assert not e.shared
    assert e.time == pytest.approx(simulate(s, G, size).time, rel=1e-9)
    assert e.time < 0.5 * flat


def test_rhd_partners_that_share_an_uplink_make_it_slow_and_say_so():
    """Two leaves joined by one 12.5 GB/s link: rhd's far partners all cross it at once
    and the model sees them share it (an estimate, flagged); the ring crosses it once a
    direction and is exact. So the model ranks them as the simulator does."""
    G = builders.leaf_spine(2, 1, 4, host_bw=50e9, spine_bw=12.5e9)
    size = 64 << 20
    ring, rhd = (collectives.build("allreduce", a, 8) for a in ("ring", "rhd"))
    tm = TopologyModel(G, 8)
    e_ring, e_rhd = tm.estimate(ring, size), tm.estimate(rhd, size)
    assert not e_ring.shared and e_rhd.shared
    s_ring, s_rhd = simulate(ring, G, size).time, simulate(rhd, G, size).time
    assert e_ring.time == pytest.approx(s_ring, rel=1e-9)
    assert (e_ring.time < e_rhd.time) == (s_ring < s_rhd)


def test_predict_s_fastest_mark_agrees_with_simulate_where_no_link_is_shared(tmp_path):
    star = tmp_path / "star.yaml"
    star.write_text("builder: star\nparams: {n: 8, bandwidth: 25GB/s, latency: 2us}\n")
    common = ["--topology", str(star), "--algorithm", "ring,rhd", "--sizes", "1K,1M,256M"]
    assert main(["predict", *common, "--json", str(tmp_path / "p.jsonl")]) == 0
    assert main(["simulate", *common, "--json", str(tmp_path / "s.jsonl")]) == 0

    def fastest(path):
        rows = [json.loads(line) for line in path.read_text().splitlines()]
        out = {}
        for r in rows:
            if r["size"] not in out or r["time_us"] < out[r["size"]][1]:
                out[r["size"]] = (r["algorithm"], r["time_us"])
        return {size: algo for size, (algo, _) in out.items()}, rows

    pred, prow = fastest(tmp_path / "p.jsonl")
    sim, srow = fastest(tmp_path / "s.jsonl")
    assert pred == sim
    assert all(r["model"] == "topology" and not r["estimate"] for r in prow)
    simulated = {(r["algorithm"], r["size"]): r for r in srow}
    assert len(simulated) == len(prow) == 6
    for p_row in prow:
        s_row = simulated[p_row["algorithm"], p_row["size"]]
        assert p_row["time_us"] == pytest.approx(s_row["time_us"], rel=1e-9)
        assert s_row["t_model_us"] == pytest.approx(s_row["time_us"], rel=1e-9)
        assert not s_row["model_estimate"]


def test_an_empty_schedule_takes_no_time():
    s = collectives.build("allreduce", "ring", 2)
    G = builders.star(2)
    assert predict_on(s, G, 0).time == pytest.approx(2 * 2 * 1e-6)  # latency only
    assert np.isfinite(predict_on(s, G, 4096).time)


def _full_mesh(p: int, bandwidth: float = 10e9, latency: float = 2e-6):
    """Every pair of ranks on its own link: no two connections ever share one."""
    from commsim.topology import spec

    return spec.parse({"name": "mesh", "nodes": [{"name": f"g{i}", "kind": "gpu"}
                                                  for i in range(p)],
                       "links": [{"src": f"g{i}", "dst": f"g{j}", "bandwidth": bandwidth,
                                  "latency": latency} for i in range(p)
                                 for j in range(i + 1, p)]})


UNPIPELINED = [(c, a) for c, a in collectives.available()
               if a not in model.PIPELINED_IN_DATAFLOW]


@settings(max_examples=80, deadline=None)
@given(p=st.integers(2, 9), pieces=st.integers(1, 4), case=st.sampled_from(UNPIPELINED),
       gamma=st.sampled_from([0.0, 1 / 6e9]), overlap=st.booleans(),
       overhead=st.sampled_from([0.0, 4e-6]))
def test_dataflow_mode_is_the_simulator_s_where_no_link_is_shared(
        p, pieces, case, gamma, overlap, overhead):
    """Trees, binomial trees, hierarchical and alltoall schedules in dataflow mode (a
    tree's reduce and broadcast overlap; a connection's pieces of one step stream down
    it one after another): the model follows the simulator's rules (a transfer waits for
    its data and its connection) and, where no two connections share a link, gives its
    time exactly."""
    collective, algorithm = case
    G = _full_mesh(p)
    try:
        s = collectives.build(collective, algorithm, p,
                              pieces * collectives.chunk_unit(collective, algorithm, p))
    except (CommsimError, ValueError):
        assume(False)   # not defined at this rank count
    # a pair's two connections (dbt's two trees at 2 ranks) share its link
    assume(np.unique(s.connection_keys()).size
           == np.unique(s.src.astype(np.int64) * p + s.dst).size)
    kw = dict(mode="dataflow", gamma=gamma, overlap=overlap, message_overhead=overhead,
              overhead=overhead)
    size = 720720 * 8
    e = predict_on(s, G, size, **kw)
    assert not e.shared
    assert e.time == pytest.approx(simulate(s, G, size, **kw).time, rel=1e-9)


@pytest.mark.parametrize("p", [4, 8, 16])
@pytest.mark.parametrize("algorithm, k", [("tree", 1), ("tree", 4), ("tree", 8), ("dbt", 4),
                                          ("dbt", 8)])
def test_trees_in_dataflow_mode_on_shared_links_stay_near_the_simulator(p, algorithm, k):
    """Ranks on a star: a tree's overlapping steps share the ranks' links, which the
    even split of a step's own flows does not see; the busiest link's bytes bound the
    time from below. Within 25% of the simulator (-22% to +7% here; step semantics,
    before, were 20% to 124% slower than it)."""
    G = builders.star(p, bandwidth=8e9, latency=20e-6)
    s = collectives.build("allreduce", algorithm, p, k)
    for overlap in (True, False):
        kw = dict(mode="dataflow", gamma=1 / 4e9, overlap=overlap, message_overhead=5e-6)
        sim = simulate(s, G, 16 << 20, **kw).time
        e = predict_on(s, G, 16 << 20, **kw)
        assert e.shared and e.time == pytest.approx(sim, rel=0.25)
