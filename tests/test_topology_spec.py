"""YAML topology files: presets, the explicit and builder forms, errors, round trips."""

from __future__ import annotations

import textwrap

import networkx as nx
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from commsim import topology
from commsim.errors import CommsimError
from commsim.topology import builders as B
from commsim.topology import spec

REQUIRED_PRESETS = ["ring-8", "torus-4x4", "fat-tree-k8", "leaf-spine-2to1", "dgx-a100-4node",
                    "dgx-h100-32node", "dragonfly-small"]


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


def test_required_presets_exist():
    assert set(REQUIRED_PRESETS) <= set(topology.presets())


@pytest.mark.parametrize("name", topology.presets())
def test_every_preset_loads_validates_and_documents_itself(name):
    G = topology.load(name)
    topology.check(G)
    assert G.graph["name"] == name
    assert G.graph.get("description") and G.graph.get("notes")
    assert len(topology.gpus(G)) >= 2


DGX_PRESETS = ["dgx-a100-4node", "dgx-h100-32node", "dgx-h100-superpod"]


@pytest.mark.parametrize("name", [n for n in REQUIRED_PRESETS if n not in DGX_PRESETS])
def test_vendor_rate_presets_state_their_efficiency(name):
    G = topology.load(name)
    notes = G.graph["notes"]
    text = notes if isinstance(notes, str) else " ".join(notes)
    assert "efficiency 1.0" in text
    assert all("efficiency" not in attr for _, _, attr in G.edges(data=True))


def test_preset_line_rates():
    a100 = topology.load("dgx-a100-4node", ideal=True)
    h100 = topology.load("dgx-h100-32node", ideal=True)
    assert a100.edges["gpu0_0", "nvs0"]["bandwidth"] == 300e9
    assert h100.edges["gpu0_0", "nvs0"]["bandwidth"] == 450e9
    assert a100.edges["nic0_0", "leaf0"]["bandwidth"] == 25e9     # HDR 200 Gb/s
    assert h100.edges["nic0_0", "leaf0"]["bandwidth"] == 50e9     # NDR 400 Gb/s
    assert len(topology.gpus(h100)) == 256
    a100 = topology.load("dgx-a100-4node")  # effective rates: line rate x efficiency
    assert a100.edges["gpu0_0", "nvs0"]["line_rate"] == 300e9
    assert a100.edges["gpu0_0", "nvs0"]["bandwidth"] == pytest.approx(230e9, rel=1e-3)


def test_explicit_form_with_units_and_duplex(tmp_path):
    path = write(tmp_path, """
        name: tiny
        description: two gpus on a switch
        nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu, slot: 3}, {name: sw, kind: switch}]
        links:
          - {src: g0, dst: sw, bandwidth: 400Gb/s, latency: 500ns}
          - {src: g1, dst: sw, bandwidth: 25GB/s, latency: 1us, duplex: true}
          - {src: sw, dst: g0, bandwidth: 1GB/s, latency: 0, duplex: false}
    """)
    with pytest.raises(CommsimError, match=r"links\[2\]: link 'sw' -> 'g0' is defined twice"):
        topology.load(path)
    path = write(tmp_path, """
        nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu, slot: 3}, {name: sw, kind: switch}]
        links:
          - {src: g0, dst: sw, bandwidth: 400Gb/s, latency: 500ns, duplex: false}
          - {src: sw, dst: g0, bandwidth: 1GB/s, latency: 0, duplex: false}
          - {src: g1, dst: sw, bandwidth: 25GB/s, latency: 1us}
    """, name="tiny2.yaml")
    G = topology.load(str(path))
    assert G.graph["name"] == "tiny2"
    assert G.edges["g0", "sw"] == {"bandwidth": 50e9, "latency": pytest.approx(5e-7)}
    assert G.edges["sw", "g0"]["bandwidth"] == 1e9
    assert G.edges["sw", "g1"]["bandwidth"] == 25e9
    assert G.nodes["g1"]["slot"] == 3
    assert G.number_of_edges() == 4


def test_builder_form_and_extra_links(tmp_path):
    path = write(tmp_path, """
        name: star-plus
        builder: star
        params: {n: 4, bandwidth: 100Gb/s, latency: 2us}
        links: [{src: gpu0, dst: gpu1, bandwidth: 300GB/s, latency: 100ns}]
    """)
    G = topology.load(path)
    assert G.graph["name"] == "star-plus" and G.graph["builder"] == "star"
    assert G.edges["gpu0", "sw"]["bandwidth"] == 12.5e9
    assert G.edges["gpu1", "gpu0"]["bandwidth"] == 300e9


@pytest.mark.parametrize("text, pieces", [
    ("nodes: [{name: g0}]\nlinks: []", ["nodes[0]", "missing field 'kind'"]),
    (("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}]\n"
     "links: [{src: g0, dst: g1, latency: 1us}]"), ["links[0]", "missing field 'bandwidth'"]),
    (("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}]\n"
     "links: [{src: g0, dst: g1, bandwidth: 0, latency: 1us}]"),
     ["links[0].bandwidth", "positive"]),
    (("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}]\n"
     "links: [{src: g0, dst: g1, bandwidth: -5, latency: 1us}]"),
     ["links[0].bandwidth", "positive"]),
    (("nodes: [{name: gpu0, kind: gpu}, {name: gpu1, kind: gpu}]\n"
     "links: [{src: gpu0, dst: gpu2, bandwidth: 1GB/s, latency: 1us}]"),
     ["links[0].dst", "unknown node 'gpu2'", "did you mean"]),
    (("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}, {name: g2, kind: gpu}]\n"
     "links: [{src: g0, dst: g1, bandwidth: 1GB/s, latency: 1us}]"),
     ["cannot reach"]),
    ("builder: fat_tre\nparams: {k: 4}", ["unknown builder 'fat_tre'", "'fat_tree'"]),
    ("builder: fat_tree\nparams: {k: 4, bandwith: 1GB/s}",
     ["params.bandwith", "did you mean 'bandwidth'"]),
    ("builder: fat_tree\nparams: {k: 5}", ["params.k", "even"]),
    ("builder: star\nparams: {n: 4}\ndecription: x", ["unknown field 'decription'"]),
    ("name: x", ["missing field 'builder'"]),
    ("- just a list", ["mapping"]),
    ("nodes: [{name: g0, kind: gpu}\n", ["not valid YAML"]),
    ("nodes: [{name: g0, kind: router}]", ["unknown kind", "nodes[0].kind"]),
])
def test_bad_files_give_one_clear_line(tmp_path, text, pieces):
    path = write(tmp_path, text)
    with pytest.raises(CommsimError) as info:
        topology.load(path)
    message = str(info.value)
    assert "\n" not in message
    assert message.startswith(str(path))
    for piece in pieces:
        assert piece in message


def test_unknown_preset_suggests_close_names():
    with pytest.raises(CommsimError, match="unknown topology 'fat-tree-k9'.*'fat-tree-k8'"):
        topology.load("fat-tree-k9")
    with pytest.raises(CommsimError, match="no such file"):
        topology.load("nowhere/missing.yaml")


def test_topology_path_env_is_searched_first(tmp_path, monkeypatch):
    write(tmp_path, "name: ring-8\nbuilder: star\nparams: {n: 3}\n", name="ring-8.yaml")
    write(tmp_path, "builder: star\nparams: {n: 5}\n", name="my-lab.yaml")
    monkeypatch.setenv("COMMSIM_TOPOLOGY_PATH", str(tmp_path))
    assert "my-lab" in topology.presets() and "fat-tree-k8" in topology.presets()
    assert len(topology.gpus(topology.load("ring-8"))) == 3
    assert topology.load("my-lab").graph["name"] == "my-lab"


# -- round trips -------------------------------------------------------------------------

def same_graph(G, H):
    assert list(G.nodes(data=True)) == list(H.nodes(data=True))
    assert {(u, v): d for u, v, d in G.edges(data=True)} == \
        {(u, v): d for u, v, d in H.edges(data=True)}


bandwidths = st.one_of(st.sampled_from([25e9, 50e9, 12.5e9, 300e9, 1.0]),
                       st.floats(1e3, 1e13, allow_nan=False))
latencies = st.one_of(st.sampled_from([0.0, 1e-6, 5e-7, 2e-6]), st.floats(0, 1e-3))


@st.composite
def explicit_graphs(draw):
    """Random gpus on random switches, every switch on a core switch so all pairs reach."""
    n_gpus, n_sw = draw(st.integers(1, 6)), draw(st.integers(1, 4))
    G = nx.DiGraph(name=draw(st.sampled_from(["t", "my topo", "x-1"])))
    G.add_nodes_from((f"g{i}" for i in range(n_gpus)), kind="gpu")
    G.add_nodes_from((f"s{j}" for j in range(n_sw)), kind="switch")
    G.add_node("core", kind="switch", level=draw(st.integers(0, 3)))
    for i in range(n_gpus):
        sw = f"s{draw(st.integers(0, n_sw - 1))}"
        G.add_edge(f"g{i}", sw, bandwidth=draw(bandwidths), latency=draw(latencies))
        G.add_edge(sw, f"g{i}", bandwidth=draw(bandwidths), latency=draw(latencies))
    for j in range(n_sw):
        bw, lat = draw(bandwidths), draw(latencies)
        G.add_edge(f"s{j}", "core", bandwidth=bw, latency=lat)
        G.add_edge("core", f"s{j}", bandwidth=bw, latency=lat)
    return G


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(G=explicit_graphs())
def test_save_load_round_trip_explicit(tmp_path, G):
    path = tmp_path / "rt.yaml"
    topology.save(G, path)
    H = topology.load(path)
    same_graph(G, H)
    assert H.graph["name"] == G.graph["name"]


builder_graphs = st.one_of(
    st.builds(B.ring, st.integers(1, 9), st.sampled_from(["25GB/s", "100Gb/s", 3e9])),
    st.builds(B.torus, st.lists(st.integers(1, 4), min_size=1, max_size=3)),
    st.builds(B.star, st.integers(1, 9), latency=st.sampled_from(["1us", "700ns", 0])),
    st.builds(B.fat_tree, st.sampled_from([4, 6]), hosts=st.sampled_from([None, 3, 7])),
    st.builds(B.leaf_spine, st.integers(1, 3), st.integers(1, 3), st.integers(1, 3),
              oversubscription=st.sampled_from([None, 1.5, 2])),
    st.builds(B.dgx_cluster, st.integers(1, 3), st.integers(1, 4),
              rail_optimized=st.booleans(), nvlink_efficiency=st.sampled_from([1.0, 0.7667]),
              nic_efficiency=st.sampled_from([1, 0.96, 0.3])),
    st.builds(B.fat_tree, st.just(4), efficiency=st.floats(0.01, 1.0)),
    st.builds(B.dragonfly, st.integers(1, 4), st.integers(1, 3), st.integers(1, 2)),
)


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(G=builder_graphs, form=st.sampled_from(["explicit", "builder"]))
def test_save_load_round_trip_builders(tmp_path, G, form):
    path = tmp_path / "rt.yaml"
    topology.save(G, path, form=form)
    data = yaml.safe_load(path.read_text())
    assert ("builder" in data) == (form == "builder")
    same_graph(G, topology.load(path))


def test_dumps_writes_readable_units():
    text = spec.dumps(B.star(2, bandwidth="400Gb/s", latency="700ns"))
    assert "bandwidth: 50GB/s" in text and "latency: 700ns" in text
