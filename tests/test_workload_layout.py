"""commsim.workload.layout: rank order, groups, placement and the links groups cross."""

from __future__ import annotations

import itertools

import networkx as nx
import pytest
from hypothesis import given
from hypothesis import strategies as st

from commsim.errors import CommsimError
from commsim.topology import builders, gpus
from commsim.workload.layout import (
    DIMS,
    TOKENS,
    Layout,
    group_links,
    link_class,
    place_layout,
)


def test_default_order_is_megatrons_tp_fastest():
    """tp=2, pp=2, dp=4, ep=2 (16 ranks). Strides in tp-cp-ep-dp-pp: tp 1, cp 2, ep 2,
    dp-part (dp/ep = 2) 4, pp 8. So TP pairs are consecutive ranks, EP pairs stride 2, the
    expert-data-parallel pairs stride 4, the dense DP group is ep and dp-part together
    (0, 2, 4, 6), and PP stages stride 8."""
    lay = Layout(tp=2, pp=2, dp=4, ep=2)
    assert lay.world == 16 and lay.edp == 2
    assert lay.strides == {"tp": 1, "cp": 2, "ep": 2, "dp": 4, "pp": 8}
    assert lay.groups("tp")[:3] == [[0, 1], [2, 3], [4, 5]]
    assert lay.groups("ep")[:3] == [[0, 2], [1, 3], [4, 6]]
    assert lay.groups("edp")[:3] == [[0, 4], [1, 5], [2, 6]]
    assert lay.groups("dp")[:3] == [[0, 2, 4, 6], [1, 3, 5, 7], [8, 10, 12, 14]]
    assert lay.groups("pp")[:2] == [[0, 8], [1, 9]]
    assert lay.groups("cp") == [[r] for r in range(16)]
    assert lay.coords(13) == {"tp": 1, "cp": 0, "pp": 1, "ep": 0, "edp": 1, "dp": 2}


def test_tp8_dp32_groups_stride_across_nodes():
    lay = Layout(tp=8, dp=32)
    assert lay.groups("tp")[0] == list(range(8))
    assert lay.groups("dp")[0] == list(range(0, 256, 8))
    assert len(lay.groups("dp")) == 8


def test_order_changes_the_strides():
    """dp fastest: a DP group is consecutive ranks; the dense index still follows rank."""
    lay = Layout(tp=2, dp=4, ep=2, order="dp-ep-tp-cp-pp")
    assert lay.strides == {"dp": 1, "ep": 2, "tp": 4, "cp": 8, "pp": 8}
    assert lay.groups("dp")[0] == [0, 1, 2, 3]
    assert lay.groups("edp")[0] == [0, 1]
    assert lay.groups("ep")[0] == [0, 2]
    assert [lay.coords(r)["dp"] for r in (0, 1, 2, 3)] == [0, 1, 2, 3]


def test_combined_dims():
    """dp-cp: the ranks that hold the same parameters when cp > 1 (Megatron's data parallel
    group with context parallelism): tp=2, cp=2, dp=2 -> ranks sharing tp and pp."""
    lay = Layout(tp=2, cp=2, dp=2)
    assert lay.groups("dp-cp") == [[0, 2, 4, 6], [1, 3, 5, 7]]
    assert lay.size("dp-cp") == 4 and lay.size("edp-cp") == 4


@st.composite
def layouts(draw):
    tp, cp, pp = (draw(st.integers(1, 4)) for _ in range(3))
    ep = draw(st.integers(1, 3))
    dp = ep * draw(st.integers(1, 3))
    order = "-".join(draw(st.permutations(TOKENS)))
    return Layout(tp=tp, cp=cp, pp=pp, dp=dp, ep=ep, order=order)


@given(layouts())
def test_every_rank_is_in_exactly_one_group_per_dim(lay):
    for dim in DIMS + ("dp-cp", "edp-cp"):
        groups = lay.groups(dim)
        members = sorted(r for g in groups for r in g)
        assert members == list(range(lay.world)), dim
        assert all(len(g) == lay.size(dim) for g in groups)
        assert all(g == sorted(g) for g in groups)


@given(layouts())
def test_groups_vary_only_their_own_coordinate_in_order(lay):
    others = {"tp": ("cp", "pp", "ep", "edp"), "cp": ("tp", "pp", "ep", "edp"),
              "pp": ("tp", "cp", "ep", "edp"), "ep": ("tp", "cp", "pp", "edp"),
              "edp": ("tp", "cp", "pp", "ep"), "dp": ("tp", "cp", "pp")}
    for dim in DIMS:
        for g in lay.groups(dim):
            coords = [lay.coords(r) for r in g]
            assert [c[dim] for c in coords] == list(range(len(g))), dim
            for key in others[dim]:
                assert len({c[key] for c in coords}) == 1, (dim, key)


@given(layouts())
def test_coords_rebuild_the_rank(lay):
    for r in range(lay.world):
        c = lay.coords(r)
        grid = {"tp": c["tp"], "cp": c["cp"], "ep": c["ep"], "dp": c["edp"], "pp": c["pp"]}
        assert sum(grid[t] * lay.strides[t] for t in TOKENS) == r


@pytest.mark.parametrize("kwargs, piece", [
    ({"tp": 0}, "layout.tp: 0 must be a whole number >= 1"),
    ({"pp": 2.0}, "layout.pp"),
    ({"dp": True}, "layout.dp"),
    ({"dp": 4, "ep": 3}, "layout.ep: 3 does not divide dp=4"),
    ({"order": "tp-cp-ep-dq-pp"}, "did you mean 'dp'"),
    ({"order": "tp-cp-ep-dp"}, "lacks pp"),
    ({"order": "tp-tp-ep-dp-pp"}, "repeats tp"),
])
def test_bad_layouts_name_the_field(kwargs, piece):
    with pytest.raises(CommsimError, match="layout") as exc:
        Layout(**kwargs)
    assert piece in str(exc.value)
    assert "\n" not in str(exc.value)


def test_bad_dim_and_rank():
    lay = Layout(tp=2)
    with pytest.raises(CommsimError, match="did you mean 'tp'"):
        lay.groups("tq")
    with pytest.raises(CommsimError, match="rank"):
        lay.coords(2)


def test_place_layout_linear_and_too_few_gpus():
    G = builders.dgx_cluster(nodes=2, gpus_per_node=4)
    assert place_layout(G, Layout(tp=4, dp=2)) == gpus(G)
    with pytest.raises(CommsimError, match="16 ranks .* need 16 gpus; topology .* has 8"):
        place_layout(G, Layout(tp=4, dp=4))


def test_group_links_tell_nvlink_from_the_fabric():
    """2 DGX-style nodes of 4 gpus: a TP group of 4 stays on NVLink; a DP group (one gpu a
    node, same rail) crosses PCIe to the NIC and the NIC link to the rail leaf."""
    G = builders.dgx_cluster(nodes=2, gpus_per_node=4)
    lay = Layout(tp=4, dp=2)
    place = place_layout(G, lay)
    assert group_links(G, place, lay.groups("tp")) == {"nvlink": 16}  # 8 gpus, up and down
    dp = group_links(G, place, lay.groups("dp"))
    assert list(dp) == ["pcie", "nic"]
    assert group_links(G, place, lay.groups("cp")) == {}
    # a chain (PP) uses only one direction between two stages
    assert sum(group_links(G, place, [[0, 4]], ring=False).values()) == 4


def test_link_class_falls_back_to_kinds():
    G = nx.DiGraph()
    G.add_node("a", kind="gpu")
    G.add_node("s", kind="switch")
    G.add_edge("a", "s", bandwidth=1.0, latency=0.0)
    G.add_edge("s", "a", bandwidth=1.0, latency=0.0, **{"class": "host"})
    assert link_class(G, "a", "s") == "gpu->switch"
    assert link_class(G, "s", "a") == "host"


def test_layout_is_frozen_and_hashable():
    lay = Layout(tp=2)
    with pytest.raises(AttributeError):
        lay.tp = 4
    assert hash(lay) == hash(Layout(tp=2)) and lay == Layout(tp=2)
    assert list(itertools.chain(*lay.groups("tp"))) == [0, 1]
