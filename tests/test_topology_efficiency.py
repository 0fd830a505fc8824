"""Link efficiencies: effective = line rate x efficiency, in YAML, builders, presets, the
simulator, ideal=True and --ideal, topo show, and benchmarks/vs_published.py."""

from __future__ import annotations

import json
import math
import re
import subprocess
import sys
import textwrap
from pathlib import Path

import networkx as nx
import pytest

from commsim import collectives, topology
from commsim.cli import main
from commsim.errors import CommsimError
from commsim.sim import simulate
from commsim.topology import builders as B
from commsim.topology import efficiency as E
from commsim.topology import spec

ROOT = Path(__file__).resolve().parent.parent
DGX_PRESETS = ["dgx-a100-4node", "dgx-h100-32node", "dgx-h100-superpod"]


def write(tmp_path, text, name="t.yaml"):
    path = tmp_path / name
    path.write_text(textwrap.dedent(text))
    return path


TWO_GPUS = """
    name: two
    nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}, {name: sw, kind: switch}]
    links:
      - {src: g0, dst: sw, bandwidth: 100GB/s, latency: 1us, efficiency: 0.8, class: nvlink}
      - {src: g1, dst: sw, bandwidth: 100GB/s, latency: 1us}
    """


# -- YAML links ----------------------------------------------------------------------------

def test_yaml_efficiency_gives_effective_bandwidth_and_keeps_line_rate(tmp_path):
    G = topology.load(write(tmp_path, TWO_GPUS))
    for u, v in (("g0", "sw"), ("sw", "g0")):
        attr = G.edges[u, v]
        assert attr["bandwidth"] == 100e9 * 0.8
        assert attr["line_rate"] == 100e9 and attr["efficiency"] == 0.8
        assert attr["class"] == "nvlink"
        assert E.line_rate(attr) == 100e9 and E.efficiency(attr) == 0.8
    plain = G.edges["g1", "sw"]  # no efficiency: line rate, no extra attributes
    assert plain == {"bandwidth": 100e9, "latency": 1e-6}
    assert E.line_rate(plain) == 100e9 and E.efficiency(plain) == 1.0


def test_ideal_restores_line_rate(tmp_path):
    path = write(tmp_path, TWO_GPUS)
    G = topology.load(path, ideal=True)
    assert G.edges["g0", "sw"]["bandwidth"] == 100e9
    assert "efficiency" not in G.edges["g0", "sw"] and G.graph["ideal"] is True
    assert topology.summary(G)["ideal"] is True
    assert topology.summary(topology.load(path))["ideal"] is False


@pytest.mark.parametrize("value", ["0", "-0.5", "1.5", "fast", "true", ".nan", "80%", "null"])
def test_bad_yaml_efficiency_is_one_line_naming_link_and_fix(tmp_path, value):
    text = TWO_GPUS.replace("efficiency: 0.8", f"efficiency: {value}")
    path = write(tmp_path, text)
    for ideal in (False, True):  # a bad value fails even when it would be ignored
        with pytest.raises(CommsimError) as err:
            topology.load(path, ideal=ideal)
        msg = str(err.value)
        assert "\n" not in msg and "links[0].efficiency" in msg and "(0, 1]" in msg


def test_bad_link_class_is_refused(tmp_path):
    path = write(tmp_path, TWO_GPUS.replace("class: nvlink", "class: 3"))
    with pytest.raises(CommsimError, match=r"links\[0\]\.class"):
        topology.load(path)


# -- builders ------------------------------------------------------------------------------

def test_dgx_builder_applies_each_class_efficiency():
    G = B.dgx_cluster(2, 4, nvlink_bw="300GB/s", pcie_bw="32GB/s", nic_bw="200Gb/s",
                      nvlink_efficiency=0.75, pcie_efficiency=0.9, nic_efficiency=0.96,
                      spine_efficiency=0.5, rail_optimized=False, nodes_per_leaf=1)
    want = {"nvlink": (300e9, 0.75), "pcie": (32e9, 0.9), "nic": (25e9, 0.96),
            "spine": (None, 0.5)}
    seen = set()
    for _, _, attr in G.edges(data=True):
        rate, eff = want[attr["class"]]
        seen.add(attr["class"])
        assert attr["efficiency"] == eff
        assert attr["bandwidth"] == pytest.approx(attr["line_rate"] * eff, rel=1e-15)
        if rate is not None:
            assert attr["line_rate"] == rate
    assert seen == set(want)
    # oversubscription (and the derived spine rate) is a ratio of line rates
    assert G.graph["oversubscription"] == pytest.approx(1.0)
    spine = next(a for _, _, a in G.edges(data=True) if a["class"] == "spine")
    assert spine["line_rate"] == pytest.approx(4 * 25e9 / 2)  # 4 NICs a leaf, 2 spines


def test_builders_default_to_line_rate_and_take_their_efficiencies():
    assert all("efficiency" not in a for _, _, a in B.dgx_cluster(2, 2).edges(data=True))
    cases = [
        (B.ring, {"n": 4, "efficiency": 0.5}),
        (B.torus, {"dims": (2, 3), "efficiency": 0.5}),
        (B.fully_connected, {"n": 4, "efficiency": 0.5}),
        (B.star, {"n": 4, "efficiency": 0.5}),
        (B.fat_tree, {"k": 4, "efficiency": 0.5}),
        (B.leaf_spine, {"leaves": 2, "spines": 1, "hosts_per_leaf": 2, "host_efficiency": 0.5,
                        "spine_efficiency": 0.5}),
        (B.dragonfly, {"groups": 2, "routers_per_group": 2, "hosts_per_router": 1,
                       "host_efficiency": 0.5, "local_efficiency": 0.5,
                       "global_efficiency": 0.5}),
    ]
    for make, kwargs in cases:
        G = make(**kwargs)
        H = make(**{k: v for k, v in kwargs.items() if not E.is_efficiency_param(k)})
        for u, v, attr in G.edges(data=True):
            assert attr["efficiency"] == 0.5, make.__name__
            assert attr["bandwidth"] == H.edges[u, v]["bandwidth"] * 0.5
        if "bisection_bandwidth" in H.graph:  # bisection counts effective rates
            assert G.graph["bisection_bandwidth"] == pytest.approx(
                H.graph["bisection_bandwidth"] * 0.5)


@pytest.mark.parametrize("kwargs, field", [
    ({"nvlink_efficiency": 0}, "nvlink_efficiency"),
    ({"nic_efficiency": 1.01}, "nic_efficiency"),
    ({"pcie_efficiency": "x"}, "pcie_efficiency"),
    ({"spine_efficiency": math.inf}, "spine_efficiency"),
])
def test_builder_efficiency_errors_name_the_parameter(kwargs, field):
    with pytest.raises(CommsimError) as err:
        B.dgx_cluster(2, 2, **kwargs)
    assert str(err.value).startswith(f"{field}:") and "(0, 1]" in str(err.value)


def test_yaml_builder_params_and_ideal(tmp_path):
    path = write(tmp_path, """
        builder: star
        params: {n: 3, bandwidth: 10GB/s, efficiency: 0.5}
        """)
    assert topology.load(path).edges["gpu0", "sw"]["bandwidth"] == 5e9
    assert topology.load(path, ideal=True).edges["gpu0", "sw"]["bandwidth"] == 10e9
    bad = write(tmp_path, "builder: star\nparams: {n: 3, efficiency: 2}\n", "bad.yaml")
    for ideal in (False, True):
        with pytest.raises(CommsimError, match=r"params\.efficiency: 2"):
            topology.load(bad, ideal=ideal)


# -- check() -------------------------------------------------------------------------------

def _pair(**extra) -> nx.DiGraph:
    G = nx.DiGraph(name="t")
    G.add_nodes_from(["a", "b"], kind="gpu")
    G.add_edge("a", "b", bandwidth=1e9, latency=0.0, **extra)
    G.add_edge("b", "a", bandwidth=1e9, latency=0.0)
    return G


@pytest.mark.parametrize("extra, piece", [
    ({"efficiency": 1.2, "line_rate": 1e9}, "has efficiency 1.2; it must be a number in (0, 1]"),
    ({"efficiency": 0, "line_rate": 1e9}, "has efficiency 0"),
    ({"efficiency": 0.5}, "has efficiency alone; give both line_rate and efficiency"),
    ({"line_rate": 2e9}, "has line_rate alone"),
    ({"efficiency": 0.5, "line_rate": -1.0}, "has line_rate -1.0"),
])
def test_check_validates_efficiency_and_line_rate(extra, piece):
    with pytest.raises(CommsimError) as err:
        topology.check(_pair(**extra))
    msg = str(err.value)
    assert "\n" not in msg and "link 'a' -> 'b'" in msg and piece in msg


def test_check_accepts_a_consistent_link():
    topology.check(_pair(efficiency=0.5, line_rate=2e9))


# -- save / load ---------------------------------------------------------------------------

def test_save_writes_line_rate_and_efficiency_and_reads_back_exactly(tmp_path):
    G = B.dgx_cluster(2, 2, nvlink_efficiency=0.7667, nic_efficiency=0.96)
    text = spec.dumps(G)
    assert "efficiency: 0.7667" in text and "class: nvlink" in text
    path = tmp_path / "x.yaml"
    topology.save(G, path)
    H = topology.load(path)
    assert {(u, v): d for u, v, d in G.edges(data=True)} == \
        {(u, v): d for u, v, d in H.edges(data=True)}
    assert topology.load(path, ideal=True).edges["gpu0_0", "nvs0"]["bandwidth"] == 450e9


def test_a_bandwidth_changed_after_loading_is_saved_as_it_is_used(tmp_path):
    G = B.star(2, bandwidth="10GB/s", efficiency=0.5)
    G.edges["gpu0", "sw"]["bandwidth"] = 1e9   # a what-if edit of the effective rate
    topology.save(G, tmp_path / "w.yaml")
    H = topology.load(tmp_path / "w.yaml")
    assert H.edges["gpu0", "sw"]["bandwidth"] == 1e9
    assert H.edges["sw", "gpu0"]["bandwidth"] == 5e9


# -- the simulator sees effective rates ------------------------------------------------------

@pytest.mark.parametrize("algorithm, p", [("ring", 2), ("ring", 5), ("rhd", 4)])
def test_simulator_bandwidth_term_doubles_at_efficiency_half(algorithm, p):
    size = 64 << 20
    terms = {}
    for eff in (1.0, 0.5):
        G = B.star(p, bandwidth="25GB/s", latency="1us", efficiency=eff)
        s = collectives.build("allreduce", algorithm, p)
        t_full = simulate(s, G, size).time
        t_lat = simulate(s, G, 0).time          # the latency term alone
        terms[eff] = t_full - t_lat
        assert t_lat > 0
    assert terms[0.5] == pytest.approx(2 * terms[1.0], rel=1e-9)


# -- presets ---------------------------------------------------------------------------------

@pytest.mark.parametrize("name", DGX_PRESETS)
def test_dgx_presets_carry_cited_efficiencies(name):
    G = topology.load(name)
    notes = " ".join(G.graph["notes"])
    assert len(re.findall(r"https://github\.com/NVIDIA/nccl(?:-tests)?/issues/\d+", notes)) >= 2
    classes = {r["link_class"]: r for r in topology.link_classes(G)}
    assert set(classes) == {"nvlink", "pcie", "nic", "spine"}
    for cls in ("nvlink", "nic", "spine"):
        eff = classes[cls]["efficiency"]
        assert 0.7 < eff < 1
        assert classes[cls]["bandwidth"] == pytest.approx(classes[cls]["line_rate"] * eff)
        assert str(eff) in open(spec.find_preset(name)).read()
    assert classes["pcie"]["efficiency"] == 1.0 and "PCIe 1.0" in notes
    ideal = {r["link_class"]: r for r in topology.link_classes(topology.load(name, ideal=True))}
    for cls, row in ideal.items():
        assert row["bandwidth"] == row["line_rate"] == classes[cls]["line_rate"]


def test_preset_effective_rates_match_published_figures():
    a100, h100 = topology.load("dgx-a100-4node"), topology.load("dgx-h100-32node")
    assert a100.edges["gpu0_0", "nvs0"]["bandwidth"] == pytest.approx(230e9, rel=1e-3)
    assert h100.edges["gpu0_0", "nvs0"]["bandwidth"] == pytest.approx(370e9, rel=1e-3)
    assert a100.edges["nic0_0", "leaf0"]["bandwidth"] == pytest.approx(24e9)
    assert h100.edges["nic0_0", "leaf0"]["bandwidth"] == pytest.approx(48e9)


# -- command line ----------------------------------------------------------------------------

def test_topo_show_prints_line_and_effective_rate_per_class(capsys):
    assert main(["topo", "show", "dgx-a100-4node"]) == 0
    out = capsys.readouterr().out
    rows = {line.split()[0]: line.split() for line in out.splitlines()
            if line.split() and line.split()[0] in ("nvlink", "pcie", "nic", "spine")}
    assert rows["nvlink"][2:] == ["300", "0.7667", "230"]
    assert rows["nic"][2:] == ["25", "0.96", "24"]
    assert rows["pcie"][2:] == ["31.5", "1", "31.5"]
    assert "line_rate" in out and "effective" in out and "nccl-tests/issues/149" in out
    assert main(["topo", "show", "dgx-a100-4node", "--json"]) == 0
    s = json.loads(capsys.readouterr().out)
    nv = next(r for r in s["link_classes"] if r["link_class"] == "nvlink")
    assert nv["line_rate"] == 300e9 and nv["efficiency"] == 0.7667


@pytest.mark.parametrize("verb", ["simulate", "predict"])
def test_ideal_flag_puts_links_at_line_rate(verb, tmp_path):
    busbw = {}
    for ideal in (False, True):
        path = tmp_path / f"{ideal}.jsonl"
        argv = [verb, "--topology", "dgx-a100-4node", "--nranks", "8", "--algorithm", "ring",
                "--size", "1G", "--json", str(path)] + (["--ideal"] if ideal else [])
        assert main(argv) == 0
        busbw[ideal] = json.loads(path.read_text().splitlines()[0])["busbw_gbps"]
    assert busbw[True] / busbw[False] == pytest.approx(300 / 230.01, rel=0.02)


# -- benchmarks/vs_published.py ---------------------------------------------------------------

def test_vs_published_runs_and_prints_every_case():
    script = ROOT / "benchmarks" / "vs_published.py"
    proc = subprocess.run([sys.executable, str(script)], capture_output=True, text=True,
                          timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    namespace: dict = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    for case in namespace["CASES"]:
        line = next(x for x in proc.stdout.splitlines() if "_".join(case.name.split()) in x)
        assert case.source in line
        assert ("ok" in line.split()) or ("n/a:_rail_ring_missing" in line)


def test_vs_published_falls_back_to_one_ring_without_the_rail_options():
    script = ROOT / "benchmarks" / "vs_published.py"
    namespace: dict = {}
    exec(compile(script.read_text(), str(script), "exec"), namespace)
    case = namespace["Case"]("x", "dgx-a100-4node", 8, 1 << 20, 1.0, "-", 0.2,
                             {"no_such_option": 1})
    sched, label, judged = namespace["schedule"](case)
    assert not judged and "rail ring missing" in label and sched.nranks == 8
