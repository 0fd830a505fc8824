"""SimResult: headline figures, link statistics and the critical path."""

from __future__ import annotations

import numpy as np
import pytest

from commsim import collectives
from commsim.errors import CommsimError
from commsim.model import busbw_factor
from commsim.sim import simulate
from commsim.topology import builders


@pytest.fixture(scope="module")
def ring_on_star():
    G = builders.star(8, bandwidth=10e9, latency=1e-6)
    s = collectives.build("allreduce", "ring", 8)
    return simulate(s, G, 8 * 10**6)


def test_rates_follow_nccl_tests(ring_on_star):
    r = ring_on_star
    assert r.algbw == pytest.approx(8 * 10**6 / r.time)
    assert r.busbw == pytest.approx(r.algbw * busbw_factor("allreduce", 8))
    assert r.busbw == pytest.approx(r.algbw * 2 * 7 / 8)


def test_link_statistics(ring_on_star):
    r = ring_on_star
    # every gpu sends 2*7 chunks of 1e6 bytes, each alone on its uplink at full rate
    up = r.links.index(("gpu0", "sw"))
    assert r.link_bytes[up] == pytest.approx(14e6)
    assert r.link_busy[up] == pytest.approx(14e6 / 10e9)
    assert r.link_peak[up] == pytest.approx(1.0)
    assert r.link_utilization[up] == pytest.approx(14e6 / 10e9 / r.time)
    busiest = r.busiest_links(3)
    assert len(busiest) == 3
    assert busiest[0]["busy_s"] >= busiest[1]["busy_s"] >= busiest[2]["busy_s"]
    # the bottleneck is the link that held the critical path up, not the busiest one
    crit = {r.link_name(i) for i, _ in r.critical_path.links}
    assert r.bottleneck["link"] in crit and 0 < r.bottleneck["share"] <= 1
    assert set(r.summary()) >= {"collective", "algorithm", "nranks", "size", "time_s",
                                "algbw", "busbw", "bottleneck"}


def test_critical_path_of_a_ring_walks_every_step(ring_on_star):
    r = ring_on_star
    s = r.schedule
    cp = r.critical_path.transfers
    assert len(cp) == s.nsteps                       # one transfer per step, 2(p-1)
    assert s.step[cp].tolist() == list(range(s.nsteps))
    assert r.end[cp[-1]] == pytest.approx(r.time)
    for a, b in zip(cp, cp[1:]):                     # each starts when the last ended
        assert r.start[b] == pytest.approx(r.end[a])
        assert {int(s.src[b]), int(s.dst[b])} & {int(s.src[a]), int(s.dst[a])}
    links = dict(r.critical_path.links)
    assert links and all(t > 0 for t in links.values())
    # each critical transfer's byte time goes to one link: its route's narrowest
    assert sum(links.values()) == pytest.approx(len(cp) * 1e6 / 10e9)


def test_critical_path_starts_at_a_straggler():
    G = builders.star(8, bandwidth=10e9, latency=1e-6)
    s = collectives.build("allreduce", "ring", 8)
    r = simulate(s, G, 8 * 10**6, start_offsets={5: 1e-4})
    first = r.critical_path.transfers[0]
    assert 5 in (int(s.src[first]), int(s.dst[first]))
    assert r.start[first] == pytest.approx(1e-4)


def test_critical_path_names_the_contended_link():
    G = builders.leaf_spine(2, 1, 2, host_bw=10e9, spine_bw=10e9)
    s = collectives.build("allreduce", "ring", 4)
    r = simulate(s, G, 4 * 10**6, placement=["gpu0", "gpu2", "gpu1", "gpu3"])
    top_link = r.critical_path.links[0][0]
    assert "spine0" in r.link_name(top_link)


@pytest.mark.parametrize("mode", ["step", "dataflow"])
def test_one_slow_link_on_the_ring_s_path_is_named_first(mode):
    """Eight gpus on a switch, one uplink at a fifth of the others: it sets the ring's
    pace in every step, so it is the bottleneck, with most of the run to its name."""
    G = builders.star(8, bandwidth=10e9, latency=1e-6)
    G.edges["gpu5", "sw"]["bandwidth"] = 2e9
    s = collectives.build("allreduce", "ring", 8)
    r = simulate(s, G, 8 * 10**6, mode=mode)
    assert r.bottleneck["link"] == "gpu5->sw"
    assert r.bottlenecks(3)[0]["link"] == "gpu5->sw"
    assert r.bottleneck["share"] > 0.5
    assert r.bottleneck["link_class"] == "host"   # the builder tags its links


def test_a_link_shared_by_two_flows_is_credited_over_the_idle_narrow_one():
    """Two flows share a 10 GB/s trunk while each crosses its own 8 GB/s access links:
    the trunk gives each 5 GB/s (max-min), so the trunk is the bottleneck although the
    access links are the narrowest on the route."""
    from commsim.collectives.schedule import Schedule

    G = builders.leaf_spine(2, 1, 2, host_bw=8e9, spine_bw=10e9)
    s = Schedule.from_transfers("broadcast", "hand", 4, 2, [(0, 0, 2, 0, False),
                                                           (0, 1, 3, 1, False)])
    r = simulate(s, G, 2 * 10**6, placement=["gpu0", "gpu1", "gpu2", "gpu3"])
    assert "spine0" in r.bottleneck["link"]


def test_dataflow_critical_path():
    G = builders.star(7, bandwidth=10e9, latency=1e-6)
    s = collectives.build("allreduce", "tree", 7, 4)
    r = simulate(s, G, 4 * 10**6, mode="dataflow")
    cp = r.critical_path.transfers
    assert len(cp) >= 2
    assert r.end[cp[-1]] == pytest.approx(r.time)
    assert (np.diff(r.start[cp]) > 0).all()


def test_without_per_transfer_times():
    G = builders.star(4)
    s = collectives.build("allreduce", "ring", 4)
    r = simulate(s, G, 4096, record_transfers=False)
    full = simulate(s, G, 4096)
    assert r.start is None and r.end is None
    assert r.time == full.time
    np.testing.assert_array_equal(r.link_bytes, full.link_bytes)
    with pytest.raises(CommsimError, match="record_transfers"):
        _ = r.critical_path
