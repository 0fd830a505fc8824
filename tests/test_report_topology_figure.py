"""commsim.report.topology_figure: each family picks its layout, large fabrics are
summarized, the labels say speeds and oversubscription, every preset draws."""

from __future__ import annotations

import ast
import time
from pathlib import Path

import networkx as nx
import pytest

from commsim import topology
from commsim.report import topology_figure as tf
from commsim.topology import builders as b

PNG = b"\x89PNG\r\n\x1a\n"

FAMILY_CASES = [
    (lambda: b.ring(8), "ring"),
    (lambda: b.torus((4, 4)), "torus"),
    (lambda: b.torus((2, 3, 2)), "torus"),
    (lambda: b.fat_tree(4), "fat_tree"),
    (lambda: b.leaf_spine(leaves=4, spines=2, hosts_per_leaf=8), "leaf_spine"),
    (lambda: b.star(8), "star"),
    (lambda: b.dgx_cluster(nodes=2), "dgx"),
    (lambda: b.dgx_cluster(nodes=4, rail_optimized=False, nodes_per_leaf=2), "dgx"),
    (lambda: b.dragonfly(), "dragonfly"),
    (lambda: b.fully_connected(6), "full_mesh"),
]


@pytest.mark.parametrize("make, expected", FAMILY_CASES)
def test_each_builder_picks_its_family(make, expected):
    G = make()
    assert tf.family(G) == expected
    assert tf.scene(G).family == expected


@pytest.mark.parametrize("make, expected", FAMILY_CASES)
def test_the_family_is_read_from_the_structure_without_a_builder(make, expected):
    G = make()
    H = nx.DiGraph(G)
    H.graph = {"name": "explicit"}   # as an exported explicit YAML file reads back
    assert tf.family(H) == expected


def test_presets_pick_their_families():
    expected = {"dgx-a100-4node": "dgx", "dgx-h100-32node": "dgx", "dgx-h100-superpod": "dgx",
                "dragonfly-small": "dragonfly", "fat-tree-k8": "fat_tree",
                "leaf-spine-2to1": "leaf_spine", "localhost": "star", "ring-8": "ring",
                "torus-4x4": "torus"}
    for name, fam in expected.items():
        assert tf.family(topology.load(name)) == fam, name


def test_a_graph_that_does_not_fit_its_builder_falls_back_and_still_draws_every_node():
    G = b.dgx_cluster(nodes=2)
    G.add_node("storage", kind="host")           # no node/level: the DGX layout cannot place it
    G.add_edge("storage", "leaf0", bandwidth=1e9, latency=0)
    G.add_edge("leaf0", "storage", bandwidth=1e9, latency=0)
    sc = tf.scene(G)
    assert sc.family not in ("dgx",)
    assert set(G) <= set(sc.marks)


def test_a_plain_graph_gets_the_spring_layout():
    G = nx.DiGraph(name="plain")
    G.add_nodes_from(["a", "b", "c"], kind="gpu")
    for u, v in (("a", "b"), ("b", "c"), ("c", "a"), ("a", "c")):
        G.add_edge(u, v, bandwidth=1e9, latency=0)
    assert tf.family(G) == "full_mesh"
    G.add_node("s", kind="switch")
    G.add_edge("a", "s", bandwidth=1e9, latency=0)
    assert tf.family(G) == "other"
    sc = tf.scene(G)
    assert sc.family == "other" and set(G) <= set(sc.marks)


# -- layouts ---------------------------------------------------------------------------------

def test_torus_is_a_grid_with_dashed_wrap_around_arcs():
    sc = tf.scene(b.torus((4, 4)))
    routers = {(round(m.x, 6), round(m.y, 6)) for n, m in sc.marks.items()
               if str(n).startswith("r")}
    assert routers == {(c, -r) for r in range(4) for c in range(4)}
    wraps = [link for link in sc.links if link.dashed]
    assert len(wraps) == 8 and all(len(link.points) > 2 for link in wraps)


def test_ring_is_a_circle():
    sc = tf.scene(b.ring(8))
    radii = {round((m.x ** 2 + m.y ** 2) ** 0.5, 6) for n, m in sc.marks.items()
             if str(n).startswith("r")}
    assert radii == {1.0}


def test_trees_are_in_layers_gpus_at_the_bottom():
    sc = tf.scene(b.fat_tree(4))
    ys = {kind: {sc.marks[n].y for n in sc.marks if str(n).startswith(kind)}
          for kind in ("gpu", "edge", "agg", "core")}
    assert all(len(v) == 1 for v in ys.values())   # one row a layer
    y = {kind: v.pop() for kind, v in ys.items()}
    assert y["gpu"] < y["edge"] < y["agg"] < y["core"]
    assert sorted(box.label for box in sc.boxes) == ["pod 0", "pod 1", "pod 2", "pod 3"]


def test_layers_are_labelled_with_link_speeds_and_oversubscription():
    G = topology.load("leaf-spine-2to1")
    notes = "\n".join(n.text for n in tf.scene(G).notes)
    assert "2:1 oversubscribed" in notes
    assert "host links: 25 GB/s" in notes and "spine links: 50 GB/s" in notes
    del G.graph["oversubscription"]   # computed from the link rates when the graph has none
    assert "2:1 oversubscribed" in "\n".join(n.text for n in tf.scene(G).notes)
    notes = "\n".join(n.text for n in tf.scene(topology.load("fat-tree-k8")).notes)
    assert notes.count("1:1, non-blocking") == 2   # edge and aggregation layers


def test_dgx_nodes_are_boxes_with_rails():
    G = topology.load("dgx-a100-4node")
    sc = tf.scene(G)
    assert sorted(box.label for box in sc.boxes if box.style == "node") == \
        [f"node {i}" for i in range(4)]
    assert sum(box.label == "NVSwitch" for box in sc.boxes) == 4
    assert sc.rails == 8
    rail_colors = {link.color for link in sc.links if link.cls == "nic"}
    assert len(rail_colors) == 8 and None not in rail_colors
    assert "nvlink: 300 GB/s (eff. 230)" in sc.class_text["nvlink"]


def test_dragonfly_groups_sit_around_a_circle():
    sc = tf.scene(topology.load("dragonfly-small"))
    circles = [box for box in sc.boxes if box.style == "circle"]
    assert sorted(c.label for c in circles) == [f"group {g}" for g in range(5)]
    centres = [((c.x0 + c.x1) / 2, (c.y0 + c.y1) / 2) for c in circles]
    radii = {round((x * x + y * y) ** 0.5, 6) for x, y in centres}
    assert len(radii) == 1


# -- summaries ---------------------------------------------------------------------------------

def test_large_fabrics_are_summarized_above_the_threshold():
    G = topology.load("dgx-h100-32node")
    sc = tf.scene(G)
    assert sc.summarized and sc.drawn < 80
    labels = "\n".join(box.label for box in sc.boxes)
    assert "31 more nodes\nlike node 0" in labels
    assert not tf.scene(G, summarize_above=256).summarized
    assert tf.scene(topology.load("dgx-a100-4node"), summarize_above=0).summarized
    assert not tf.scene(topology.load("dgx-a100-4node")).summarized


@pytest.mark.parametrize("make, piece", [
    (lambda: topology.load("fat-tree-k8"), "7 more pods\nlike pod 0"),
    (lambda: b.leaf_spine(leaves=16, spines=8, hosts_per_leaf=32), "15 more leaves\nlike leaf0"),
    (lambda: topology.load("dgx-h100-superpod"), "3 more groups\nlike nodes 0-31"),
])
def test_summaries_say_what_was_collapsed(make, piece):
    sc = tf.scene(make())
    assert sc.summarized
    assert any(piece in box.label for box in sc.boxes if box.style == "more")


def test_long_rows_are_cut_with_a_count_and_groups_collapse():
    sc = tf.scene(b.star(200))
    assert sc.summarized and any(m.label == "+185 more" for m in sc.marks.values())
    sc = tf.scene(b.dragonfly(groups=9, routers_per_group=4, hosts_per_router=4))
    assert sc.summarized
    assert sum(1 for n in sc.marks if isinstance(n, tuple) and n[0] == "group") == 8


def test_rings_and_tori_are_never_summarized():
    assert not tf.scene(b.ring(100)).summarized
    assert not tf.scene(b.torus((10, 10))).summarized


def test_too_large_a_picture_is_refused_before_the_layout():
    with pytest.raises(tf.TooLarge) as info:
        tf.scene(topology.load("dgx-h100-superpod"), summarize_above=10_000, max_nodes=600)
    assert info.value.nodes == 2224
    assert tf.scene(topology.load("dgx-h100-superpod"), max_nodes=600).drawn <= 600


# -- drawing -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", topology.presets())
def test_every_preset_renders_fast(name):
    pytest.importorskip("matplotlib")
    start = time.perf_counter()
    data = tf.render(tf.scene(topology.load(name)), "png", dpi=30)
    assert data[:8] == PNG
    assert time.perf_counter() - start < 10


def test_render_writes_svg_too():
    pytest.importorskip("matplotlib")
    data = tf.render(tf.scene(b.ring(4)), "svg", dpi=30)
    assert b"<svg" in data[:400]


def test_the_module_imports_no_verb_package():
    source = Path(tf.__file__).read_text()
    imported = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module:
            imported.add(node.module)
        elif isinstance(node, ast.Import):
            imported.update(alias.name for alias in node.names)
    assert {m for m in imported if m.startswith("commsim")} == {"commsim.errors"}
