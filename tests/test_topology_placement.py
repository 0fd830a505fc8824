"""Rank placement strategies."""

import json

import pytest

from commsim import topology
from commsim.cli import main
from commsim.errors import CommsimError
from commsim.topology import builders
from commsim.topology.placement import place


def _leaf_of(G, gpu):
    return next(v for v in G.successors(gpu) if G.nodes[v]["kind"] == "switch")


def test_linear_is_the_topology_order():
    G = builders.leaf_spine(leaves=2, spines=1, hosts_per_leaf=4)
    assert place(G, 5) == topology.gpus(G)[:5]


def test_spread_puts_consecutive_ranks_on_different_switches():
    G = builders.leaf_spine(leaves=4, spines=2, hosts_per_leaf=3)
    ranks = place(G, 12, "spread")
    assert sorted(ranks) == sorted(topology.gpus(G))
    leaves = [_leaf_of(G, g) for g in ranks]
    assert all(a != b for a, b in zip(leaves, leaves[1:]))
    assert len(set(leaves[:4])) == 4


def test_random_is_seeded():
    G = builders.star(16)
    a, b, c = place(G, 8, "random:3"), place(G, 8, "random:3"), place(G, 8, "random:4")
    assert a == b and a != c
    assert len(set(a)) == 8 and set(a) <= set(topology.gpus(G))
    assert place(G, 8, "random") == place(G, 8, "random:0")


@pytest.mark.parametrize("how,match", [
    ("rondom", "did you mean 'random'"), ("random:x", "seed"), ("linear", "need 20 gpus"),
])
def test_bad_placements(how, match):
    with pytest.raises(CommsimError, match=match):
        place(builders.star(16), 20 if how == "linear" else 4, how)


def test_a_scattered_placement_is_slower_on_an_oversubscribed_fabric(tmp_path):
    for how in ("linear", "spread"):
        assert main(["simulate", "--topology", "leaf-spine-2to1", "--algorithm", "ring",
                     "--size", "16M",
                     "--placement", how, "--json", str(tmp_path / f"{how}.jsonl")]) == 0
    lin = json.loads((tmp_path / "linear.jsonl").read_text())
    spr = json.loads((tmp_path / "spread.jsonl").read_text())
    assert lin["placement"] == "linear" and spr["placement"] == "spread"
    assert spr["time_us"] > 1.5 * lin["time_us"]  # 2:1 uplinks now carry the ring
