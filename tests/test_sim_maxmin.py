"""Progressive filling (commsim/sim/maxmin.py): the heap fill and the fill of flow
classes give fill_python's answer to the bit."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim import collectives, topology
from commsim.sim import events, simulate, simulate_many
from commsim.sim.events import _Flow
from commsim.sim.jobs import Job
from commsim.sim.maxmin import fill_heap, fill_python
from commsim.topology import builders
from commsim.topology.placement import place

BWS = [1e9, 3.3e9, 25e9, 46.875e9, 7e9]


@st.composite
def flows_and_links(draw, weights=(1.0, 1.0, 1e6, 3.3e5, 1 / 7e-6)):
    nlinks = draw(st.integers(1, 12))
    bw = draw(st.lists(st.sampled_from(BWS), min_size=nlinks, max_size=nlinks))
    # a few distinct routes, each taken by one or more flows (as ECMP routes are)
    routes = draw(st.lists(st.sets(st.integers(0, nlinks - 1), min_size=1, max_size=4),
                           min_size=1, max_size=12))
    picks = draw(st.lists(st.integers(0, len(routes) - 1), min_size=1, max_size=40))
    ws = draw(st.lists(st.sampled_from(weights), min_size=len(routes), max_size=len(routes)))
    flows = [_Flow(i, 0, 1.0, tuple(sorted(routes[k])), 0.0, 0.0, weight=ws[k])
             for i, k in enumerate(picks)]
    return flows, bw


@settings(max_examples=100, deadline=None)
@given(flows_and_links())
def test_heap_fill_is_fill_python_to_the_bit(case):
    flows, bw = case
    want = fill_python(flows, bw)
    assert fill_heap(flows, bw) == want
    assert fill_heap(flows, dict(enumerate(bw))) == want    # capacities as a dict


class _Class:
    """A fill item standing for ``count`` flows over ``links`` (as events._Class)."""

    def __init__(self, links, weight, count):
        self.links, self.weight, self.count = links, weight, count


@settings(max_examples=100, deadline=None)
@given(flows_and_links(weights=(1.0,)))
def test_classes_fill_as_their_flows_to_the_bit(case):
    # max-min (weight 1): the flows over one link set filled once, as a class counting
    # them, get the rates and limits the flows get filled one by one, in every fill
    flows, bw = case
    rates, load, limits = fill_python(flows, bw)
    by_route: dict = {}
    for f in flows:
        by_route[f.links] = by_route.get(f.links, 0) + 1
    classes = [_Class(links, 1.0, n) for links, n in by_route.items()]
    for fill in (fill_python, fill_heap):
        c_rates, c_load, c_limits = fill(classes, bw)
        got = {c.links: (r, lim) for c, r, lim in zip(classes, c_rates, c_limits)}
        assert [got[f.links] for f in flows] == list(zip(rates, limits))
        assert dict(c_load) == pytest.approx(dict(load), rel=1e-12)


def _contended_runs():
    """Runs whose byte phases share links, with many flows a route (chunks of one pair
    on one ECMP path): rhd and ring allreduce of several chunks a rank, on a fat-tree
    with ranks scattered, under both sharings, in step and dataflow mode."""
    G = builders.fat_tree(4)
    n = len(topology.gpus(G))
    for algorithm, mult, mode in (("rhd", 4, "step"), ("ring", 2, "dataflow")):
        s = collectives.build("allreduce", algorithm, n,
                              collectives.chunk_unit("allreduce", algorithm, n) * mult)
        for sharing in ("maxmin", "rtt"):
            yield dict(schedule=s, topology=G, nbytes=3 << 20,
                       placement=place(G, n, "random:3"), sharing=sharing, mode=mode)


def test_flow_classes_change_no_bit_of_a_run(monkeypatch):
    # the engine with its flow classes against the engine with one class a flow (the
    # per-flow re-rating it replaced): the same times, ends, links and peaks, to the bit
    for kw in _contended_runs():
        grouped = simulate(engine="events", **kw)
        monkeypatch.setattr(events, "_class_key", lambda f: f.tid)
        alone = simulate(engine="events", **kw)
        monkeypatch.undo()
        assert grouped.events > 20                      # contended: many re-ratings
        assert grouped.time == alone.time
        assert np.array_equal(grouped.end, alone.end)
        assert np.array_equal(grouped.link_peak, alone.link_peak)
        assert np.array_equal(grouped.link_busy, alone.link_busy)


def test_flow_classes_change_no_bit_of_jobs(monkeypatch):
    # several jobs on shared spines (simulate_many), as a training step's phases run
    G = builders.fat_tree(4)
    gpus = topology.gpus(G)
    s = collectives.build("reduce_scatter", "rhd", 8, 8 * 4)
    order = place(G, len(gpus), "random:5")
    jobs = [Job(s, 1 << 20, order[:8]), Job(s, 1 << 20, order[8:])]
    grouped = simulate_many(jobs, G, engine="events")
    monkeypatch.setattr(events, "_class_key", lambda f: f.tid)
    alone = simulate_many(jobs, G, engine="events")
    assert [r.time for r in grouped] == [r.time for r in alone]
    assert np.array_equal(grouped.link_peak, alone.link_peak)
