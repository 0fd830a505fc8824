"""Calls whose data stays in a profile's cache: the share of it they find there, and the
view of the profile their predictions use (faster links inside hosts, the warm gamma)."""

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from commsim import topology
from commsim.errors import CommsimError
from commsim.topology import spec, warm

MiB = 1 << 20
COLD_GAMMA = 1 / 4e9
WARM_GAMMA = 1 / 20e9


def _profile(hosts=1, ranks=2, cache="8M", speedup=1.5, warm_bw="20GB/s"):
    """A profile-shaped topology: ``ranks`` ranks on each of ``hosts`` hosts, 4 GB/s
    links to a host's capacity of 8 GB/s, 2 GB/s between hosts."""
    nodes, links, names = [], [], []
    for h in range(hosts):
        nodes += [{"name": f"host{h}.in", "kind": "switch"},
                  {"name": f"host{h}.out", "kind": "switch"}]
        links.append({"src": f"host{h}.in", "dst": f"host{h}.out", "bandwidth": "8GB/s",
                      "latency": "0us", "duplex": False, "class": warm.CAPACITY_CLASS})
        for r in range(ranks):
            name = f"rank{h * ranks + r}"
            names.append(name)
            links += [{"src": name, "dst": f"host{h}.in", "bandwidth": "4GB/s",
                       "latency": "5us", "duplex": False},
                      {"src": f"host{h}.out", "dst": name, "bandwidth": "4GB/s",
                       "latency": "5us", "duplex": False}]
    if hosts > 1:
        nodes.append({"name": "fabric", "kind": "switch"})
        for h in range(hosts):
            links += [{"src": f"host{h}.out", "dst": "fabric", "bandwidth": "2GB/s",
                       "latency": "10us", "duplex": False},
                      {"src": "fabric", "dst": f"host{h}.in", "bandwidth": "2GB/s",
                       "latency": "10us", "duplex": False}]
    model = {"reduce_bandwidth": "4GB/s"}
    if cache is not None:
        model["cache_bytes"] = cache
    if speedup is not None:
        model["warm_link_speedup"] = speedup
    if warm_bw is not None:
        model["warm_reduce_bandwidth"] = warm_bw
    nodes = [{"name": n, "kind": "gpu"} for n in names] + nodes
    return spec.parse({"name": "p", "nodes": nodes, "links": links, "model": model,
                       "profile": {"hosts": [f"h{h}" for h in range(hosts)],
                                   "nranks": hosts * ranks}})


def test_the_share_in_cache_is_the_cache_over_the_working_set():
    G = _profile()   # 8 MiB shared by 2 ranks, 4 buffers a rank
    assert warm.hit_fraction(G, 1 * MiB, 2) == 1.0       # 8 MiB: all of it
    assert warm.hit_fraction(G, 512 << 10, 2) == 1.0
    assert warm.hit_fraction(G, 2 * MiB, 2) == 0.5       # 16 MiB
    assert warm.hit_fraction(G, 8 * MiB, 2) == 0.125
    assert warm.hit_fraction(G, 3 * MiB, 2) == round(64 / 3) / 64   # rounded to 1/64
    # ranks spread over hosts: each host's share of the ranks counts
    two_hosts = _profile(hosts=2)
    assert warm.ranks_per_host(two_hosts.graph["profile"], 4) == 2
    assert warm.hit_fraction(two_hosts, 1 * MiB, 4) == 1.0


def test_out_of_place_the_input_is_one_buffer_more():
    G = _profile()   # 8 MiB shared by 2 ranks
    apart = warm.call_buffers(out_of_place=True)
    assert (warm.call_buffers(), apart) == (warm.CALL_BUFFERS, warm.CALL_BUFFERS + 1)
    assert warm.hit_fraction(G, 1 * MiB, 2, apart) == round(64 * 8 / 10) / 64   # 10 MiB
    assert warm.hit_fraction(G, 512 << 10, 2, apart) == 1.0                     # 5 MiB
    view, gamma = warm.call(G, 1 * MiB, 2, COLD_GAMMA, apart)
    assert view.graph["warm"] == warm.hit_fraction(G, 1 * MiB, 2, apart)
    assert WARM_GAMMA < gamma < COLD_GAMMA


@pytest.mark.parametrize("kwargs", [dict(cache=None), dict(speedup=None, warm_bw=None)])
def test_a_profile_without_a_cache_or_warm_rates_is_never_warm(kwargs):
    G = _profile(**kwargs)
    assert warm.hit_fraction(G, 8, 2) == 0.0
    assert warm.for_call(G, 8, 2) is G
    assert warm.for_call(None, 8, 2) is None
    assert warm.for_call(topology.load("dgx-a100-4node"), 8, 8).graph.get("warm") is None


def test_the_warm_view_speeds_a_host_s_capacity_and_mixes_gamma_by_the_share():
    G = _profile(hosts=2)
    cold = {(u, v): bw for u, v, bw in G.edges(data="bandwidth")}
    full = warm.for_call(G, 1 * MiB, 4)
    assert full.graph["warm"] == 1.0
    for (u, v), bw in cold.items():
        # the ring shift's gain is the host's shared capacity's: a pair's own links and
        # the wires between hosts keep their rates
        capacity = u.endswith(".in") and v.endswith(".out")
        assert full.edges[u, v]["bandwidth"] == pytest.approx(bw * 1.5 if capacity else bw)
    assert full.graph["model"]["gamma"] == pytest.approx(WARM_GAMMA)
    half = warm.for_call(G, 2 * MiB, 4)
    # half the bytes at the warm time a byte, half at the cold
    assert half.edges["host1.in", "host1.out"]["bandwidth"] == pytest.approx(
        cold["host1.in", "host1.out"] / (0.5 / 1.5 + 0.5))
    assert half.graph["model"]["gamma"] == pytest.approx(0.5 * WARM_GAMMA + 0.5 * COLD_GAMMA)
    # the profile itself is untouched, and each view is made once
    assert G.graph["model"]["gamma"] == pytest.approx(COLD_GAMMA)
    assert {(u, v): bw for u, v, bw in G.edges(data="bandwidth")} == cold
    assert warm.for_call(G, 1 * MiB, 4) is full


@given(st.integers(1, 1 << 30), st.integers(2, 16))
def test_a_call_is_never_slower_warm_and_more_data_is_never_warmer(nbytes, nranks):
    G = _profile(ranks=nranks)
    share = warm.hit_fraction(G, nbytes, nranks)
    assert 0.0 <= share <= 1.0
    assert warm.hit_fraction(G, 2 * nbytes, nranks) <= share
    view = warm.for_call(G, nbytes, nranks)
    assert view.graph["model"]["gamma"] <= G.graph["model"]["gamma"]
    for u, v, bw in G.edges(data="bandwidth"):
        assert view.edges[u, v]["bandwidth"] >= bw


@pytest.mark.parametrize("block,match", [
    ({"warm_link_speedup": 0.5}, "warm_link_speedup: 0.5 must be a number from 1"),
    ({"warm_link_speedup": "fast"}, "warm_link_speedup"),
    ({"warm_link_speedup": True}, "warm_link_speedup"),
    ({"cache_bytes": "lots"}, "cache_bytes"),
    ({"cache_bytes": 0}, "cache_bytes"),
    ({"warm_reduce_bandwidth": "quick"}, "warm_reduce_bandwidth"),
    ({"warm_bandwidth": "5GB/s"}, "warm_reduce_bandwidth"),   # a close match is named
])
def test_bad_warm_parameters_are_one_line_errors(tmp_path, block, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"builder": "star", "params": {"n": 2}, "model": block}))
    with pytest.raises(CommsimError, match=match):
        topology.load(path)


def test_warm_parameters_load_in_si_units():
    G = _profile(cache="8M", speedup=1.25, warm_bw="20GB/s")
    params = G.graph["model"]
    assert params["cache_bytes"] == 8 * MiB
    assert params["warm_link_speedup"] == 1.25
    assert params["warm_gamma"] == pytest.approx(WARM_GAMMA)


def test_a_reduction_written_apart_loads_as_seconds_a_byte(tmp_path):
    """``apart_reduce_bandwidth`` (calibrate's add into a third buffer) is a model
    parameter like the others: ``gamma_apart`` in s/byte, a bad value one line."""
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump({"builder": "star", "params": {"n": 2},
                                    "model": {"apart_reduce_bandwidth": "3GB/s"}}))
    assert topology.load(path).graph["model"]["gamma_apart"] == pytest.approx(1 / 3e9)
    path.write_text(yaml.safe_dump({"builder": "star", "params": {"n": 2},
                                    "model": {"apart_reduce_bandwidth": "quick"}}))
    with pytest.raises(CommsimError, match="model.apart_reduce_bandwidth"):
        topology.load(path)
