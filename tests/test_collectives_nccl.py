"""NCCL-style layouts: multi-channel rail-aligned rings, NCCL's tree, and auto_options."""

import networkx as nx
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from multiproc import assert_all_ok, run_torch_ranks
from test_model import step_count_time

from commsim import collectives, model, topology
from commsim.backends import reference
from commsim.collectives import layout, nccl_tree
from commsim.collectives.ring import channel_rings
from commsim.errors import CommsimError
from commsim.sim import simulate
from commsim.topology import builders

LAYOUT_PAIRS = [("allreduce", "ring"), ("reduce_scatter", "ring"), ("allgather", "ring"),
                ("allreduce", "nccl_tree")]


@st.composite
def layouts(draw, max_ranks=24):
    """``(collective, algorithm, p, nchunks, options)`` with channels and a node size."""
    collective, algorithm = draw(st.sampled_from(LAYOUT_PAIRS))
    p = draw(st.integers(2, max_ranks))
    c = draw(st.integers(1, 4))
    g = draw(st.sampled_from([None] + [d for d in range(1, p + 1) if p % d == 0]))
    opts = {"channels": c, "gpus_per_node": g}
    unit = collectives.chunk_unit(collective, algorithm, p, **opts)
    return collective, algorithm, p, unit * draw(st.integers(1, 3)), opts


@settings(max_examples=150, deadline=None)
@given(layouts(), st.integers(1, 120), st.integers(0, 2**32 - 1))
def test_any_layout_gives_the_exact_result(inst, n, seed):
    collective, algorithm, p, k, opts = inst
    schedule = collectives.build(collective, algorithm, p, k, **opts).validate()
    rng = np.random.default_rng(seed)
    inputs = [rng.integers(-50, 50, size=n).astype(np.float64) for _ in range(p)]
    got = reference.run(schedule, inputs)
    want = reference.expected(collective, inputs)
    for r in range(p):
        np.testing.assert_array_equal(got[r], want[r], err_msg=f"rank {r}")


@pytest.mark.parametrize("collective", ["allreduce", "reduce_scatter", "allgather"])
@pytest.mark.parametrize("p", [1, 2, 5, 8, 13])
def test_one_channel_is_todays_ring(collective, p):
    """channels=1 (and no node size) is the plain ring 0..p-1, array for array: in step
    s of a phase rank i sends segment (i - s - 1) mod p (reduce) or (i - s) mod p to i+1."""
    for m in (1, 3):
        plain = collectives.build(collective, "ring", p, p * m)
        explicit = collectives.build(collective, "ring", p, p * m, channels=1)
        for name in ("step", "src", "dst", "chunk", "reduce"):
            a, b = getattr(plain, name), getattr(explicit, name)
            assert a.dtype == b.dtype and np.array_equal(a, b), name
        assert plain.options == explicit.options == {}
        src, dst = plain.src.astype(int), plain.dst.astype(int)
        np.testing.assert_array_equal(dst, (src + 1) % p)
        step = plain.step.astype(int)
        phase_step = step % (p - 1) if p > 1 else step
        lead = np.where(plain.reduce, 1, 0)
        np.testing.assert_array_equal(plain.chunk.astype(int) // m,
                                      (src - phase_step - lead) % p)


@given(st.integers(1, 24), st.integers(1, 32), st.integers(1, 10))
def test_ring_orders_are_permutations_and_rail_aligned(g, c, nodes):
    p = g * nodes
    rings = channel_rings(p, c, g)
    assert rings.shape == (c, p)
    for j, order in enumerate(rings):
        assert sorted(order.tolist()) == list(range(p))
        if g == 1 or nodes == 1:
            continue
        src, dst = order, np.roll(order, -1)
        inter = src // g != dst // g
        assert inter.sum() == nodes                        # one run per node
        # every inter-node hop stays on one rail (one local rank on both ends)...
        crossing = (src[inter] % g != dst[inter] % g).sum()
        assert crossing == (1 if g == 2 and nodes % 2 else 0)
        # ...and the ring enters node 0 through local rank j mod g, on its base rail
        entry = dst[inter & (dst // g == 0)] if (j // g) % 2 == 0 else src[inter & (src // g == 0)]
        assert entry.tolist() == [j % g]


def test_flat_channels_alternate_directions():
    rings = channel_rings(6, 4)
    np.testing.assert_array_equal(rings[0], np.arange(6))
    np.testing.assert_array_equal(rings[1], np.arange(6)[::-1])
    np.testing.assert_array_equal(rings[2], np.roll(np.arange(6), -1))
    assert (channel_rings(8, 3, 8) == channel_rings(8, 3)).all()   # one node: flat
    assert (channel_rings(8, 3, 1) == channel_rings(8, 3)).all()   # one gpu a node: flat


def test_channels_split_the_bytes_evenly():
    p, c, g = 16, 4, 8
    S = p * c * 64
    for collective, factor in (("allreduce", 2), ("reduce_scatter", 1), ("allgather", 1)):
        s = collectives.build(collective, "ring", p, channels=c, gpus_per_node=g)
        np.testing.assert_allclose(s.bytes_sent(S), factor * (p - 1) / p * S)
        assert s.nsteps == factor * (p - 1)
        assert s.options == {"channels": c, "gpus_per_node": g}


# --- on the DGX preset -------------------------------------------------------------------

@pytest.fixture(scope="module")
def dgx():
    return topology.load("dgx-a100-4node")


def _node_rail(G, name):
    d = G.nodes[name]
    return d.get("node"), d.get("rail")


def test_rail_aligned_rings_keep_every_ring_on_its_rails(dgx):
    p, c, g, S = 32, 8, 8, 1 << 24
    s = collectives.build("allreduce", "ring", p, channels=c, gpus_per_node=g)
    r = simulate(s, dgx, S)
    spine = [i for i, (u, v) in enumerate(r.links) if "spine" in u + v]
    assert r.link_bytes[spine].sum() == 0                  # no hop leaves its rail's leaf
    nic_up = [i for i, (u, v) in enumerate(r.links)
              if dgx.nodes[u]["kind"] == "nic" and v.startswith("leaf")]
    # every NIC sends one ring's chunk a step: 2(p-1) steps of S/(p c) bytes
    np.testing.assert_allclose(r.link_bytes[nic_up], 2 * (p - 1) * S / (p * c))
    chunk_channel = (np.arange(s.nchunks) % c)             # chunk = segment * c + channel
    for j in range(c):
        mine = chunk_channel[s.chunk.astype(int)] == j
        sub = collectives.Schedule("allreduce", "ring", p, s.nchunks, s.step[mine],
                                   s.src[mine], s.dst[mine], s.chunk[mine], s.reduce[mine],
                                   segments=p)
        rj = simulate(sub, dgx, S)
        rails = {_node_rail(dgx, u)[1] for (u, v), b in zip(rj.links, rj.link_bytes)
                 if b > 0 and dgx.nodes[u]["kind"] == "nic" and v.startswith("leaf")}
        assert rails == {j, (j + 1) % g}, j                  # base rail j and its partner
        for (u, v), b in zip(rj.links, rj.link_bytes):     # one rail at both ends
            if b > 0 and u.startswith("leaf"):
                assert _node_rail(dgx, v)[1] == int(u[4:]), (j, u, v)


def test_eight_rail_aligned_channels_are_several_times_one_ring(dgx):
    p, S = 32, 1 << 30
    one = simulate(collectives.build("allreduce", "ring", p), dgx, S)
    opts = collectives.auto_options(dgx, p, "ring")
    assert opts == {"gpus_per_node": 8, "channels": 8}
    eight = simulate(collectives.build("allreduce", "ring", p, **opts), dgx, S)
    assert eight.busbw > 4 * one.busbw
    tree = collectives.build("allreduce", "nccl_tree", p, 16 * 16, **opts)
    assert simulate(tree, dgx, S).busbw > 4 * one.busbw


def test_nccl_tree_crosses_nodes_only_between_chain_heads():
    p, c, g, k = 32, 8, 8, 3
    s = collectives.build("allreduce", "nccl_tree", p, 2 * c * k, channels=c, gpus_per_node=g)
    src, dst, chunk = (a.astype(int) for a in (s.src, s.dst, s.chunk))
    inter = src // g != dst // g
    channel = chunk[inter] // (2 * k)
    np.testing.assert_array_equal(src[inter] % g, channel % g)
    np.testing.assert_array_equal(dst[inter] % g, channel % g)
    assert s.nsteps == 2 * (nccl_tree.height(p, g) + k - 1)
    assert nccl_tree.height(p, g) == g - 1 + collectives.tree.tree_height(p // g)


@pytest.mark.parametrize("p", [2, 3, 6, 16, 17])
def test_nccl_tree_on_one_gpu_a_node_is_dbt(p):
    for k in (2, 6):
        a = collectives.build("allreduce", "nccl_tree", p, k)
        b = collectives.build("allreduce", "dbt", p, k)
        for name in ("step", "src", "dst", "chunk", "reduce"):
            np.testing.assert_array_equal(getattr(a, name), getattr(b, name))


@pytest.mark.parametrize("p,k", [(2, 1), (5, 1), (8, 3)])
def test_nccl_tree_on_one_node_is_a_chain_reduce_then_broadcast(p, k):
    s = collectives.build("allreduce", "nccl_tree", p, 2 * k, gpus_per_node=p)
    half = p - 1 + k - 1
    red = collectives.build("reduce", "chain", p, k)
    bc = collectives.build("broadcast", "chain", p, k)
    want = {tuple(t) for t in red.transfers} | {
        (t.step + half, t.src, t.dst, t.chunk, t.reduce) for t in bc.transfers}
    for tree in (0, 1):                                    # both halves on the same chain
        got = {(t.step, t.src, t.dst, t.chunk - tree * k, t.reduce) for t in s.transfers
               if t.chunk // k == tree}
        assert got == want


# --- options, chunking, errors -----------------------------------------------------------

def test_chunk_units_fit_the_builders():
    for p, c, g in ((8, 1, None), (8, 3, None), (16, 4, 8), (12, 2, 3), (1, 2, None)):
        opts = {"channels": c, "gpus_per_node": g}
        for coll, algo in LAYOUT_PAIRS:
            unit = collectives.chunk_unit(coll, algo, p, **opts)
            assert unit == (p * c if algo == "ring" else 2 * c)
            assert collectives.build(coll, algo, p, **opts).nchunks == unit
            collectives.build(coll, algo, p, 3 * unit, **opts).validate()
    assert collectives.chunk_unit("broadcast", "chain", 4, root=2) == 1


@pytest.mark.parametrize("algorithm", ["ring", "nccl_tree"])
@pytest.mark.parametrize("opts,match", [
    ({"channels": 0}, r"channels: 0 must be a whole number >= 1"),
    ({"channels": 1.5}, r"channels: 1\.5"),
    ({"channels": True}, r"channels: True"),
    ({"gpus_per_node": 3}, r"gpus_per_node: 3 does not divide nranks=8.*divisor"),
    ({"gpus_per_node": 0}, r"gpus_per_node: 0 must be"),
])
def test_bad_layout_options_are_one_line_errors(algorithm, opts, match):
    for call in (lambda: collectives.build("allreduce", algorithm, 8, **opts),
                 lambda: model.predict("allreduce", algorithm, 8, 1e6, 1e-6, 1e-9, **opts)):
        with pytest.raises(CommsimError, match=match) as err:
            call()
        assert "\n" not in str(err.value)
    if "channels" in opts:
        with pytest.raises(CommsimError, match="channels"):
            collectives.chunk_unit("allreduce", algorithm, 8, **opts)


def test_nchunks_that_do_not_fit_the_channels_are_refused():
    with pytest.raises(CommsimError, match=r"multiple of nranks\*channels=16"):
        collectives.build("allreduce", "ring", 8, 8, channels=2)
    with pytest.raises(CommsimError, match=r"multiple of 2\*channels=4"):
        collectives.build("allreduce", "nccl_tree", 8, 6, channels=2)
    with pytest.raises(CommsimError, match="option"):
        collectives.build("allreduce", "dbt", 8, channels=2)


def test_registry_lists_the_layout_options():
    for coll, algo in LAYOUT_PAIRS:
        entry = collectives.resolve(coll, algo)
        want = ("channels", "gpus_per_node") + (("pxn",) if algo == "ring" else ())
        assert entry.options == want and entry.summary
    assert collectives.resolve("all-reduce", "nccl-tree").name == "nccl_tree"
    assert ("allreduce", "nccl_tree") in model.FORMULAS


# --- auto_options ------------------------------------------------------------------------

def test_auto_options_follow_the_topology():
    G = builders.dgx_cluster(nodes=2, gpus_per_node=4)
    assert layout.auto_options(G, 8, "ring") == {"gpus_per_node": 4, "channels": 4}
    assert layout.auto_options(G, 8, "nccl-tree") == {"gpus_per_node": 4, "channels": 4}
    assert layout.auto_options(G, 4, "ring") == {"gpus_per_node": 4, "channels": 4}
    assert layout.auto_options(G, 6, "ring") == {}        # not whole nodes
    assert layout.auto_options(G, 2, "ring") == {}        # part of a node
    assert layout.auto_options(G, 8, "rhd") == {}
    assert layout.auto_options(topology.load("fat-tree-k8"), 16, "ring") == {}
    H = nx.DiGraph(params={"gpus_per_node": "2"})         # no NICs named: one a gpu
    H.add_nodes_from(f"g{i}" for i in range(4))
    assert layout.auto_options(H, 4, "ring") == {"gpus_per_node": 2, "channels": 2}
    opts = layout.auto_options(G, 8, "ring")
    collectives.build("allreduce", "ring", 8, **opts).validate()


# --- cost model --------------------------------------------------------------------------

@given(layouts(max_ranks=20), st.floats(0, 1e-4), st.floats(1e-12, 1e-8), st.floats(0, 1e-9))
def test_models_bound_the_schedules_own_step_count(inst, alpha, beta, gamma):
    collective, algorithm, p, k, opts = inst
    s = collectives.build(collective, algorithm, p, k, **opts)
    S = k * p * 8
    want = step_count_time(s, S, alpha, beta, gamma)
    got = model.predict(collective, algorithm, p, S, alpha, beta, gamma, nchunks=k, **opts)
    if algorithm == "ring":
        assert got == pytest.approx(want, rel=1e-9, abs=1e-15)
        plain = model.predict(collective, "ring", p, S, alpha, beta, gamma)
        assert got == pytest.approx(plain, rel=1e-12)        # channels: the same time
    else:  # full-pipeline load every step: an upper bound for fill and drain, a loose
        # one where channels pile onto one chain head (5x at p=20, g=5, c=4, k=8)
        assert want * (1 - 1e-9) - 1e-15 <= got <= 5.5 * want + 1e-15
    assert got >= model.lower_bound(collective, p, S, alpha, beta) * (1 - 1e-12)


@settings(max_examples=30, deadline=None)
@given(st.sampled_from(["allreduce", "reduce_scatter", "allgather"]), st.integers(2, 12),
       st.integers(1, 4), st.integers(0, 10**5))
def test_channel_rings_are_exact_on_a_star(collective, p, c, per):
    G = builders.star(p, bandwidth=25e9, latency=1e-6)
    s = collectives.build(collective, "ring", p, channels=c)
    n = s.nchunks * per
    want = model.predict(collective, "ring", p, n, 2e-6, 1 / 25e9, nchunks=s.nchunks,
                         channels=c)
    assert simulate(s, G, n).time == pytest.approx(want, rel=1e-9, abs=1e-300)


@settings(max_examples=20, deadline=None)
@given(st.integers(1, 4), st.integers(1, 4), st.integers(1, 3), st.integers(1, 4),
       st.integers(1, 10**5))
def test_nccl_tree_never_exceeds_its_model_on_a_star(g, nodes, c, k, per):
    p = g * nodes
    G = builders.star(p, bandwidth=25e9, latency=1e-6)
    s = collectives.build("allreduce", "nccl_tree", p, 2 * c * k, channels=c, gpus_per_node=g)
    n = s.nchunks * per
    want = model.predict("allreduce", "nccl_tree", p, n, 2e-6, 1 / 25e9, nchunks=s.nchunks,
                         channels=c, gpus_per_node=g)
    assert simulate(s, G, n).time <= want * (1 + 1e-9)


def test_nccl_tree_model_is_dbt_on_one_gpu_a_node():
    for p in (2, 3, 7, 12):
        for k in (2, 8):
            assert model.predict("allreduce", "nccl_tree", p, 1e8, 1e-6, 1e-10, nchunks=k) == \
                pytest.approx(model.predict("allreduce", "dbt", p, 1e8, 1e-6, 1e-10, nchunks=k))


def test_best_chunks_fit_the_layout():
    opts = {"channels": 4, "gpus_per_node": 8}
    for algo, mode in (("ring", "step"), ("ring", "dataflow"), ("nccl_tree", "step")):
        k = model.best_nchunks("allreduce", algo, 32, 1 << 28, 5e-6, 1 / 25e9, mode=mode,
                               **opts)
        assert k % collectives.chunk_unit("allreduce", algo, 32, **opts) == 0
        collectives.build("allreduce", algo, 32, k, **opts)
    assert model.nchunks_for(2, "allreduce", "ring", 32, 1e6, 1e-6, 1e-9, **opts) == 2 * 128


# --- a real backend ----------------------------------------------------------------------

WORKER = """
import numpy as np
import torch
import torch.distributed as dist

from commsim import collectives
from commsim.backends import reference, torch_dist

dist.init_process_group("gloo")
rank, p = dist.get_rank(), dist.get_world_size()
checked = 0
for collective, algorithm in (("allreduce", "ring"), ("reduce_scatter", "ring"),
                              ("allgather", "ring"), ("allreduce", "nccl_tree")):
    for opts in ({"channels": 2, "gpus_per_node": 2}, {"channels": 3}):
        unit = collectives.chunk_unit(collective, algorithm, p, **opts)
        schedule = collectives.build(collective, algorithm, p, 2 * unit, **opts)
        for n in (5, 37):
            rng = np.random.default_rng(n)
            inputs = [rng.integers(-8, 8, size=n).astype(np.float64) for _ in range(p)]
            want = reference.expected(collective, inputs)[rank]
            for mode in ("step", "dataflow"):
                buf = torch_dist.logical_buffer(schedule, torch.from_numpy(inputs[rank]))
                torch_dist.run(schedule, buf, mode=mode)
                got = torch_dist.result_view(schedule, buf).numpy()
                assert np.array_equal(got, want), (collective, algorithm, opts, n, mode)
                checked += 1
dist.destroy_process_group()
print(f"checked {checked}")
"""


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_layouts_run_on_gloo(tmp_path):
    out = assert_all_ok(run_torch_ranks(WORKER, 4, tmp_path, timeout=110))
    assert out.count("checked 32") == 4


def test_with_pxn_ring_j_crosses_between_nodes_on_rail_j_only():
    """The rail-strict layout on a PXN topology: every inter-node hop of ring j leaves its
    node through NIC j (its exit gpu reaches it over the NVSwitch) and enters the next
    node through NIC j, so ring j's inter-node bytes use rail j's leaf and nothing else;
    no spine carries a byte; and the result is still right."""
    from commsim.topology.routing import Router

    g, nodes = 4, 4
    p = g * nodes
    G = builders.dgx_cluster(nodes, gpus_per_node=g, pxn=True, spines=2)
    opts = layout.auto_options(G, p, "ring")
    assert opts == {"gpus_per_node": g, "channels": g, "pxn": True}
    s = collectives.build("allreduce", "ring", p, **opts)
    s.validate()
    router = Router(G, topology.gpus(G), routing="static")
    m = s.nchunks // (p * g)
    channel = (s.chunk.astype(np.int64) // m) % g
    for j in range(g):
        leaves = set()
        for i in np.flatnonzero(channel == j).tolist():
            hops = router.path(int(s.src[i]), int(s.dst[i]))
            leaves |= {v for _, v in hops if v.startswith(("leaf", "spine"))}
        assert leaves == {f"leaf{j}"}, (j, leaves)
    data = [np.arange(24.0) * (r + 1) for r in range(p)]
    want = sum(data)
    for out in reference.run(s, data):
        np.testing.assert_allclose(out, want)
    r = simulate(s, G, 64 << 20)
    spine = [i for i, (u, v) in enumerate(r.links) if "spine" in str(u) + str(v)]
    assert r.link_bytes[spine].sum() == 0
