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
    assert r.bottleneck == busiest[0]
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
    assert sum(links.values()) == pytest.approx(2 * len(cp) * 1e6 / 10e9)


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
