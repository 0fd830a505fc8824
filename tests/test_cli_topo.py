"""``commsim topo``: list, show, draw, export; bad input exits 2 with one line."""

from __future__ import annotations

import json
import sys
import xml.etree.ElementTree as ET

import pytest

from commsim import topology
from commsim.cli import main


def run(capsys, *argv):
    code = main(["topo", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list_shows_every_preset_with_gpu_counts(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    for name in topology.presets():
        assert name in out
    assert "256" in out  # dgx-h100-32node


def test_show_prints_summary_with_units(capsys):
    code, out, _ = run(capsys, "show", "leaf-spine-2to1")
    assert code == 0
    for piece in ("ranks", "32", "switches", "GB/s", "diameter", "hops", "us", "bisection",
                  "200", "oversubscription"):
        assert piece in out


def test_show_json(capsys):
    code, out, _ = run(capsys, "show", "fat-tree-k8", "--json")
    assert code == 0
    s = json.loads(out)
    assert s["gpus"] == 128 and s["switches"] == 80 and s["diameter_hops"] == 6
    assert s["bisection_bandwidth"] == pytest.approx(64 * 25e9)
    assert s["link_speeds"] == [{"bandwidth": 25e9, "links": 768}]


def test_show_a_yaml_file(capsys, tmp_path):
    path = tmp_path / "mine.yaml"
    path.write_text("builder: star\nparams: {n: 3, bandwidth: 10GB/s}\n")
    code, out, _ = run(capsys, "show", str(path))
    assert code == 0 and "mine" in out and "10" in out


@pytest.mark.parametrize("argv, piece", [
    (["show", "fat-tree-k9"], "did you mean 'fat-tree-k8'"),
    (["show", "missing/topo.yaml"], "no such file"),
    (["export", "ring-9", "--format", "simgrid"], "unknown topology"),
    (["draw", "dgx-h100-superpod", "--summarize-above", "5000", "-o", "x.png"],
     "too many to draw"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, piece):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert err.count("\n") == 1 and piece in err
    assert "Traceback" not in err


def test_bad_file_exits_2(capsys, tmp_path):
    path = tmp_path / "bad.yaml"
    path.write_text("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}]\n"
                    "links: [{src: g0, dst: g1, bandwidth: -1GB/s, latency: 1us}]\n")
    code, _, err = run(capsys, "show", str(path))
    assert code == 2 and "links[0].bandwidth" in err and err.count("\n") == 1


DRAWN_AS = {"dgx-a100-4node": "dgx layout", "dgx-h100-32node": "dgx layout, summarized",
            "dgx-h100-superpod": "dgx layout, summarized", "dragonfly-small": "dragonfly layout",
            "fat-tree-k8": "fat-tree layout, summarized", "leaf-spine-2to1": "leaf-spine layout",
            "localhost": "star layout", "ring-8": "ring layout", "torus-4x4": "torus layout"}


@pytest.mark.parametrize("name", topology.presets())
def test_every_preset_draws_to_a_png_in_its_family_layout(capsys, tmp_path, name):
    pytest.importorskip("matplotlib")
    out_file = tmp_path / f"{name}.png"
    code, out, err = run(capsys, "draw", name, "-o", str(out_file), "--dpi", "30")
    assert code == 0 and err == "" and out.startswith(f"wrote {out_file}")
    if name in DRAWN_AS:
        assert f"; {DRAWN_AS[name]})" in out
    assert out_file.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_draw_summarize_above_sets_the_threshold(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "a.png"
    code, out, _ = run(capsys, "draw", "dgx-a100-4node", "-o", str(png), "--dpi", "30",
                       "--summarize-above", "0")
    assert code == 0 and "dgx layout, summarized" in out
    code, out, _ = run(capsys, "draw", "fat-tree-k8", "-o", str(png), "--dpi", "30",
                       "--summarize-above", "128")
    assert code == 0 and out.rstrip().endswith("; fat-tree layout)")


def test_draw_without_matplotlib_says_install_plot_extra(capsys, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "matplotlib", None)
    code, _, err = run(capsys, "draw", "ring-8", "-o", str(tmp_path / "r.png"))
    assert code == 2 and "plot" in err


def test_export_simgrid_and_yaml(capsys, tmp_path):
    xml_file = tmp_path / "platform.xml"
    code, _, _ = run(capsys, "export", "dragonfly-small", "--format", "simgrid",
                     "-o", str(xml_file))
    assert code == 0
    root = ET.fromstring(xml_file.read_text().split("\n", 2)[2])
    assert len(root.find("zone").findall("host")) == 40
    assert len(root.find("zone").findall("route")) == 40 * 39

    yaml_file = tmp_path / "copy.yaml"
    code, _, _ = run(capsys, "export", "dgx-a100-4node", "-o", str(yaml_file))
    assert code == 0
    G, H = topology.load("dgx-a100-4node"), topology.load(str(yaml_file))
    assert list(G.nodes(data=True)) == list(H.nodes(data=True))
    assert dict(G.edges) == dict(H.edges)

    code, out, _ = run(capsys, "export", "ring-8", "--builder-form")
    assert code == 0 and "builder: ring" in out


# -- hardening: output folders, formats and flags a verb cannot honour --------------------

def test_draw_and_export_create_a_missing_folder(capsys, tmp_path):
    pytest.importorskip("matplotlib")
    png = tmp_path / "new" / "ring.png"
    code, out, _ = run(capsys, "draw", "ring-8", "-o", str(png))
    assert code == 0 and png.read_bytes()[:4] == b"\x89PNG"
    yml = tmp_path / "other" / "deeper" / "ring.yaml"
    code, _, _ = run(capsys, "export", "ring-8", "-o", str(yml))
    assert code == 0 and topology.load(str(yml)).number_of_nodes() == 16


@pytest.mark.parametrize("verb", ["draw", "export"])
@pytest.mark.parametrize("kind", ["folder", "under-a-file"])
def test_bad_output_paths_are_refused_before_the_work(capsys, tmp_path, verb, kind):
    if verb == "draw":
        pytest.importorskip("matplotlib")
    (tmp_path / "plain").write_text("a file")
    if kind == "folder":
        (tmp_path / "dir.png").mkdir()
        path = tmp_path / "dir.png"
    else:
        path = tmp_path / "plain" / "x.png"
    before = sorted(tmp_path.rglob("*"))
    code, out, err = run(capsys, verb, "ring-8", "-o", str(path))
    assert code == 2 and out == "" and "Traceback" not in err
    assert err.count("\n") == 1 and "--output" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv, piece", [
    (["draw", "ring-8", "-o", "ring"], "--output: 'ring' needs an image suffix"),
    (["draw", "ring-8", "-o", "ring.xyz"], "--output: 'ring.xyz' needs an image suffix"),
    (["export", "ring-8", "--format", "simgrid", "--builder-form"], "--builder-form"),
    (["draw", "ring-8", "-o", "ring.png", "--dpi", "0"], "--dpi: 0 must be at least 10"),
    (["draw", "ring-8", "-o", "ring.png", "--max-nodes", "0"], "--max-nodes"),
    (["draw", "ring-8", "-o", "ring.png", "--summarize-above", "-1"], "--summarize-above"),
])
def test_values_a_verb_cannot_honour_are_refused(capsys, tmp_path, monkeypatch, argv, piece):
    if argv[0] == "draw":
        pytest.importorskip("matplotlib")
    monkeypatch.chdir(tmp_path)
    code, out, err = run(capsys, *argv)
    assert code == 2 and out == "" and err.count("\n") == 1 and piece in err
    assert list(tmp_path.iterdir()) == []


def test_a_topology_file_may_still_use_bare_numbers(capsys, tmp_path):
    path = tmp_path / "bare.yaml"
    path.write_text("nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}]\n"
                    "links: [{src: g0, dst: g1, bandwidth: 1.0e+9, latency: 0}]\n")
    G = topology.load(str(path))
    assert G.edges["g0", "g1"]["bandwidth"] == 1e9 and G.edges["g0", "g1"]["latency"] == 0


def test_list_as_json_lines(capsys):
    import json

    from commsim.cli import main as cli_main

    assert cli_main(["topo", "list", "--json"]) == 0
    records = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    by_name = {r["name"]: r for r in records}
    assert by_name["localhost"]["gpus"] == 16 and by_name["fat-tree-k8"]["gpus"] == 128
    assert all(r["path"].endswith(".yaml") for r in records)
