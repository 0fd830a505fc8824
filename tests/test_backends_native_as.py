"""native_as: which algorithm a backend's own collective runs, and its commsim schedule.

The rules are the ones docs/native.md tabulates (torch 2.13's gloo, Open MPI 4.1/5.0's
coll/tuned fixed decisions, a simplified NCCL tuning model); these tests pin each
threshold from both sides and build every answer.
"""

import subprocess
import sys

import numpy as np
import pytest

from commsim import collectives
from commsim.backends.native_as import (
    BACKENDS,
    NativeChoice,
    gloo_ring_segments,
    native_as,
    nccl_model,
    ompi_tuned_rule,
)
from commsim.bench.predictions import native_schedule
from commsim.errors import CommsimError

COLLS = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")
SIZES = (4, 100, 4096, 65536, 1 << 20, 1 << 25)
REGISTERED = {(c, a) for c, a in collectives.available()}


def mpi(coll, p, nbytes, **kw):
    return native_as("mpi", coll, p, nbytes, **kw)


# ---------------------------------------------------------------------------------------
# every answer is a registered algorithm that builds, for 2..17 ranks
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("coll", COLLS)
def test_every_choice_builds(backend, coll):
    for p in range(2, 18):
        for nbytes in SIZES:
            for nnodes in sorted({1, 2 if p % 2 == 0 else 1}):
                c = native_as(backend, coll, p, nbytes, root=p - 1, nnodes=nnodes,
                              versions={"mpi": "5.0.11"})
                assert isinstance(c, NativeChoice) and c.backend == backend
                assert "\n" not in c.note and c.note
                if c.algorithm is None:
                    continue
                assert (c.collective, c.algorithm) in REGISTERED, c
                assert c.source
                s = collectives.build(c.collective, c.algorithm, p, **c.options)
                assert s.nranks == p and s.collective == c.collective
                if "root" in c.options:
                    assert c.options["root"] == (p - 1 if c.collective == coll else 0)
                # gloo's rings keep two segments in flight; nothing else is modelled so
                assert c.in_flight == (2 if (backend, c.algorithm) == ("gloo", "ring") else 1)


def test_one_rank_and_empty_buffers():
    for backend in BACKENDS:
        for coll in COLLS:
            c = native_as(backend, coll, 1, 1 << 20)
            assert c.algorithm is None and c.note == "one rank: nothing to communicate"
            assert native_as(backend, coll, 4, 0).algorithm is None
    # Open MPI decides on one rank's block: none at all is nothing to do
    assert mpi("allgather", 8, 4).algorithm is None


# ---------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("args, kw, match", [
    (("glooo", "allreduce", 4, 64), {}, "unknown backend 'glooo'; did you mean 'gloo'"),
    (("ucc", "allreduce", 4, 64), {}, "unknown backend"),
    (("gloo", "alltoall", 4, 64), {}, "no model of gloo's own alltoall"),
    (("gloo", "alltoal", 4, 64), {}, "unknown collective 'alltoal'"),
    (("mpi", "allreduce", 0, 64), {}, "nranks"),
    (("mpi", "allreduce", 4, -1), {}, "nbytes"),
    (("mpi", "allreduce", 4, 64), {"dtype_size": 0}, "dtype_size"),
    (("mpi", "broadcast", 4, 64), {"root": 4}, "root: 4 is out of range"),
    (("nccl", "allreduce", 4, 64), {"nnodes": 5}, "nnodes"),
    (("nccl", "allreduce", 4.0, 64), {}, "nranks"),
])
def test_errors_are_one_line(args, kw, match):
    with pytest.raises(CommsimError, match=match) as info:
        native_as(*args, **kw)
    assert "\n" not in str(info.value)


def test_collective_aliases():
    assert native_as("mpi", "bcast", 4, 64).collective == "broadcast"
    assert native_as("nccl", "all-reduce", 4, 64).collective == "allreduce"


def test_pure_no_torch_or_mpi4py_import():
    code = ("import sys; import commsim.backends.native_as as m; "
            "m.native_as('nccl', 'allreduce', 8, 1 << 20); "
            "assert not {'torch', 'mpi4py'} & set(sys.modules), sys.modules.keys()")
    subprocess.run([sys.executable, "-c", code], check=True)


# ---------------------------------------------------------------------------------------
# gloo (torch 2.x ProcessGroupGloo, CPU dense tensors)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("nbytes, p, segments", [
    (4 << 20, 4, 8),             # 4 segments of 1 MiB < 2p: two a rank
    ((8 << 20), 4, 8),           # exactly 2p segments of 1 MiB
    ((8 << 20) + 4, 4, 12),      # one byte-element more: 9 segments, rounded up to 12
    (16 << 20, 4, 16),
    (7 << 20, 3, 9),             # 7 rounded up to a multiple of 3
    (5 << 20, 3, 6),             # below 2p
    (64, 17, 34),
])
def test_gloo_allreduce_ring_segments(nbytes, p, segments):
    assert gloo_ring_segments(nbytes, 4, p) == segments
    c = native_as("gloo", "allreduce", p, nbytes)
    assert (c.name, c.algorithm, c.exact) == ("ring", "ring", True)
    assert c.options == {"nchunks": segments}
    assert "gloo/allreduce.cc" in c.source and "AsyncAllreduceWork" in c.source
    # two segments in flight: a message's segments alternate over two connections
    s = native_schedule(c, p)
    m = segments // p   # at least two a rank
    np.testing.assert_array_equal(s.connection, (np.arange(segments) % m) % 2)


def test_gloo_segment_size_is_a_whole_number_of_elements():
    # kMaxSegmentSize 1 MiB rounded down to a multiple of a 3-byte element
    seg = 3 * ((1 << 20) // 3)
    assert gloo_ring_segments(seg * 10, 3, 2) == 10
    assert gloo_ring_segments(seg * 10 + 3, 3, 2) == 12


def test_gloo_reduce_scatter_is_an_allreduce_of_the_whole_buffer():
    c = native_as("gloo", "reduce_scatter", 4, 16 << 20)
    assert c.collective == "allreduce" and c.algorithm == "ring" and c.exact
    assert c.options == {"nchunks": gloo_ring_segments(16 << 20, 4, 4)}
    assert "reduce_scatter_tensor_coalesced" in c.source


def test_gloo_other_collectives():
    ag = native_as("gloo", "allgather", 5, 5 << 20)
    assert (ag.algorithm, ag.options, ag.exact) == ("ring", {"nchunks": 10}, True)
    bc = native_as("gloo", "broadcast", 6, 1 << 20, root=2)
    assert (bc.algorithm, bc.options, bc.exact) == ("binomial", {"root": 2}, True)
    rd = native_as("gloo", "reduce", 6, 1 << 20, root=3)
    assert (rd.algorithm, rd.options, rd.exact) == ("chain", {"root": 3, "nchunks": 6}, False)


def test_gloo_old_torch_is_flagged():
    assert "not checked" in native_as("gloo", "allreduce", 4, 64,
                                      versions={"torch": "1.13.1"}).note
    assert "not checked" not in native_as("gloo", "allreduce", 4, 64,
                                          versions={"torch": "2.13.0+cpu"}).note


# ---------------------------------------------------------------------------------------
# Open MPI coll/tuned fixed rules, at their thresholds (dtype_size=1: bytes == count)
# ---------------------------------------------------------------------------------------

@pytest.mark.parametrize("coll, p, nbytes, name, algorithm, exact", [
    # allreduce, 2-3 ranks: ring below 8 K, recursive doubling to 16 K, ... rabenseifner
    ("allreduce", 3, 8191, "ring", "ring", True),
    ("allreduce", 3, 8192, "recursive_doubling", "rhd", False),
    ("allreduce", 3, 65535, "ring", "ring", True),
    ("allreduce", 3, 65536, "segmented_ring", "ring", True),
    ("allreduce", 3, 262143, "segmented_ring", "ring", True),
    ("allreduce", 3, 262144, "rabenseifner", "rhd", False),       # 3 is no power of 2
    ("allreduce", 2, 262144, "rabenseifner", "rhd", True),
    # the rank-count boundary at 4: same size, new row
    ("allreduce", 4, 100000, "rabenseifner", "rhd", True),
    ("allreduce", 4, 8191, "recursive_doubling", "rhd", False),
    ("allreduce", 4, 8192, "rabenseifner", "rhd", True),
    ("allreduce", 7, 15, "ring", "ring", True),
    ("allreduce", 7, 16, "recursive_doubling", "rhd", False),
    ("allreduce", 15, 8191, "recursive_doubling", "rhd", False),
    ("allreduce", 15, 8192, "rabenseifner", "rhd", False),
    ("allreduce", 16, 63, "segmented_ring", "ring", True),         # count 63 >= 16
    ("allreduce", 16, 64, "recursive_doubling", "rhd", False),
    ("allreduce", 16, 4095, "recursive_doubling", "rhd", False),
    ("allreduce", 16, 4096, "rabenseifner", "rhd", True),
    # bcast
    ("broadcast", 3, 31, "pipeline", "chain", True),
    ("broadcast", 3, 32, "binary_tree", "binomial", False),
    ("broadcast", 3, 32767, "basic_linear", "chain", False),
    ("broadcast", 3, 32768, "binary_tree", "binomial", False),
    ("broadcast", 3, 262143, "chain", "chain", True),
    ("broadcast", 3, 1048575, "binomial", "binomial", True),
    ("broadcast", 4, 1048575, "basic_linear", "chain", False),
    ("broadcast", 4, 1048576, "chain", "chain", True),
    ("broadcast", 8, 7, "knomial", "binomial", False),
    ("broadcast", 8, 8, "binary_tree", "binomial", False),
    ("broadcast", 16, 1048575, "binomial", "binomial", True),
    ("broadcast", 16, 1048576, "scatter_allgather", "chain", False),
    # reduce
    ("reduce", 3, 262143, "linear", "chain", False),
    ("reduce", 3, 262144, "pipeline", "chain", True),
    ("reduce", 3, 524288, "chain", "chain", True),
    ("reduce", 7, 2 << 20, "linear", "chain", False),
    ("reduce", 8, 2 << 20, "binomial", "binomial", True),
    ("reduce", 8, 8191, "binary", "binomial", False),
    ("reduce", 4, 65535, "chain", "chain", True),
    ("reduce", 4, 65536, "binomial", "binomial", True),
    ("reduce", 2, 7, "rabenseifner", "binomial", False),           # count 7 >= p' = 2
    # allgather: decided on one rank's block (nbytes / p)
    ("allgather", 2, 1 << 20, "two_proc", "ring", True),
    ("allgather", 3, 3 << 20, "recursive_doubling->bruck", "rhd", False),
    ("allgather", 16, 16 << 20, "recursive_doubling", "rhd", True),
    ("allgather", 31, 31 << 20, "recursive_doubling->bruck", "rhd", False),
    ("allgather", 32, 32 * 1023, "recursive_doubling", "rhd", True),
    ("allgather", 32, 32 * 1024, "neighbor", "ring", False),
    ("allgather", 33, 33 * 1024, "neighbor->ring", "ring", True),
    ("allgather", 32, 32 * 65536, "ring", "ring", True),
    # reduce_scatter_block: decided on one rank's block
    ("reduce_scatter", 4, 4 * 8191, "recursive_halving", "rhd", True),
    ("reduce_scatter", 4, 4 * 8192, "butterfly", "rhd", True),
    ("reduce_scatter", 4, 4 * 16384, "recursive_halving", "rhd", True),
    ("reduce_scatter", 5, 5 * 16384, "recursive_halving", "rhd", False),
    ("reduce_scatter", 3, 3 * 131071, "butterfly", "rhd", False),
    ("reduce_scatter", 8, 8 * 31, "recursive_halving", "rhd", True),
    ("reduce_scatter", 8, 8 * 32, "butterfly", "rhd", True),
    ("reduce_scatter", 5, 5 * 7, "recursive_halving", "rhd", False),
    ("reduce_scatter", 5, 5 * 8, "recursive_doubling", "rhd", False),
    ("reduce_scatter", 16, 16 * 31, "basic_linear (reduce: binary)", "binomial", False),
    ("reduce_scatter", 16, 16 * 32, "recursive_halving", "rhd", True),
])
def test_ompi_tuned_thresholds(coll, p, nbytes, name, algorithm, exact):
    c = mpi(coll, p, nbytes, dtype_size=1)
    assert (c.name, c.algorithm, c.exact) == (name, algorithm, exact), c
    assert "coll_tuned_decision_fixed.c" in c.source and "v5.0.10" in c.source


def test_ompi_rule_ids_match_the_decision_functions():
    assert ompi_tuned_rule("allreduce", 2, 7, 1) == 4
    assert ompi_tuned_rule("allreduce", 2, 8, 1) == 3
    assert ompi_tuned_rule("allreduce", 300, 4095, 1) == 2
    assert ompi_tuned_rule("allreduce", 300, 4096, 1) == 6
    assert ompi_tuned_rule("allreduce", 5000, 2047, 1) == 2
    assert ompi_tuned_rule("allreduce", 5000, 2048, 1) == 5
    assert ompi_tuned_rule("bcast", 5000, 1 << 20, 1) == 8
    assert ompi_tuned_rule("reduce", 4095, 1023, 1) == 6
    assert ompi_tuned_rule("reduce", 4096, 1023, 1) == 5
    assert ompi_tuned_rule("allgather", 2, 8, 1) == 6


def test_ompi_fallbacks():
    # the ring with fewer elements than ranks runs recursive doubling
    c = mpi("allreduce", 3, 4)
    assert c.name == "ring->recursive_doubling" and c.algorithm == "rhd"
    # Rabenseifner with count < p' runs basic_linear: the tree stands in
    c = mpi("allreduce", 8, 8192, dtype_size=2048)
    assert c.name == "rabenseifner->basic_linear" and c.algorithm == "tree"
    # scatter_allgather with count < p falls back to the linear bcast
    c = mpi("broadcast", 16, 1 << 20, dtype_size=1 << 17)
    assert c.name == "scatter_allgather->basic_linear" and c.algorithm == "chain"
    # Rabenseifner reduce with count < p' is linear
    c = mpi("reduce", 3, 4)
    assert c.name == "rabenseifner->linear" and c.algorithm == "chain"
    # a segmented ring with segsize 0 is the plain ring
    c = mpi("allreduce", 3, 100000, dtype_size=1)
    assert c.name == "segmented_ring" and c.exact and "segsize 0" in c.note


def test_ompi_reduce_scatter_linear_is_a_reduce():
    c = mpi("reduce_scatter", 4, 4 * (1 << 20), dtype_size=1)
    assert c.collective == "reduce" and c.name.startswith("basic_linear (reduce: ")
    assert c.options.get("root") == 0 and not c.exact
    # the nested reduce is tuned's own choice for the whole buffer
    assert c.algorithm == mpi("reduce", 4, 4 * (1 << 20), dtype_size=1).algorithm


def test_ompi_components_by_version_and_nodes():
    v5 = {"mpi": "Open MPI v5.0.11, package: Open MPI pip Distribution"}
    v41 = {"mpi": "4.1.6"}
    han = mpi("allreduce", 16, 1 << 20, nnodes=2, versions=v5)
    assert (han.name, han.algorithm, han.options) == ("han", "hierarchical", {"group_size": 8})
    assert "coll_han" in han.source
    # Open MPI 4.1 has han at priority 0: tuned decides across nodes too
    assert mpi("allreduce", 16, 1 << 20, nnodes=2, versions=v41).name == "rabenseifner"
    # one node: han disqualifies itself (5.0)
    one = mpi("allreduce", 16, 1 << 20, versions=v5)
    assert one.name == "rabenseifner" and "one node" in one.note
    # reduce_scatter_block is not han's: tuned
    assert mpi("reduce_scatter", 16, 16 << 20, nnodes=2, versions=v5).name != "han"
    # unknown version across nodes: tuned, said so
    assert "version unknown" in mpi("allreduce", 16, 1 << 20, nnodes=2).note
    # other versions are flagged, other MPIs have no rules
    assert "not checked" in mpi("allreduce", 4, 64, versions={"mpi": "3.1.6"}).note
    other = mpi("allreduce", 4, 64, versions={"mpi": "MPICH Version: 4.2.0"})
    assert other.algorithm is None and "MPICH" in other.note


# ---------------------------------------------------------------------------------------
# NCCL: the simplified tuning model
# ---------------------------------------------------------------------------------------

def nccl(coll, p, nbytes, nnodes=1, version=None):
    return native_as("nccl", coll, p, nbytes, nnodes=nnodes,
                     versions={"nccl": version} if version else None)


# (collective, ranks, nodes, version, crossover bytes, name below, name from there):
# the crossovers docs/native.md lists, checked at 0.8x and 1.25x.
NCCL_CROSSOVERS = [
    ("allreduce", 8, 1, "2.23.4", 3_845_225, "NCCL Ring/LL", "NCCL Ring/LL128"),
    ("allreduce", 8, 1, "2.23.4", 24_288_001, "NCCL Ring/LL128", "NCCL Ring/Simple"),
    ("allreduce", 8, 1, "2.18.6", 1_205_220, "NCCL Ring/LL", "NCCL Ring/LL128"),
    ("allreduce", 16, 2, "2.23.4", 73_867, "NCCL Tree/LL", "NCCL Ring/LL"),
    ("allreduce", 16, 2, "2.18.6", 845_792, "NCCL Tree/LL128", "NCCL Ring/LL128"),
    ("allreduce", 64, 8, "2.23.4", 22_941_566, "NCCL Tree/LL128", "NCCL Ring/LL128"),
    ("allgather", 8, 1, "2.23.4", 4_956_735, "NCCL Ring/LL", "NCCL Ring/LL128"),
    ("broadcast", 8, 1, "2.23.4", 30_912_001, "NCCL Ring/LL128", "NCCL Ring/Simple"),
]


@pytest.mark.parametrize("coll, p, nodes, version, at, below, above", NCCL_CROSSOVERS)
def test_nccl_documented_crossovers(coll, p, nodes, version, at, below, above):
    assert nccl(coll, p, int(at * 0.8), nodes, version).name == below
    assert nccl(coll, p, int(at * 1.25), nodes, version).name == above


def test_nccl_one_node_is_ring_and_trees_only_across_nodes():
    for p in (2, 3, 4, 8, 16):
        for nbytes in SIZES + (1 << 30,):
            assert nccl("allreduce", p, nbytes).name.startswith("NCCL Ring/")
    assert nccl("allreduce", 64, 4096, nnodes=8).name.startswith("NCCL Tree/")
    assert nccl("allreduce", 64, 1 << 30, nnodes=8).name == "NCCL Ring/Simple"


def test_nccl_only_allreduce_has_a_tree():
    for coll in ("reduce_scatter", "allgather", "broadcast", "reduce"):
        for nbytes in (64, 1 << 20, 1 << 30):
            assert set(nccl_model(coll, 16, 2, nbytes)) == {("Ring", "LL"), ("Ring", "LL128"),
                                                             ("Ring", "Simple")}
            assert nccl(coll, 16, nbytes, nnodes=2).name.startswith("NCCL Ring/")


def test_nccl_protocols_go_ll_then_simple_with_size():
    for coll in COLLS:
        assert nccl(coll, 8, 64).name.endswith("/LL")
        assert nccl(coll, 8, 1 << 30).name.endswith("/Simple")


def test_nccl_choice_is_the_models_fastest_and_marked_approximate():
    c = nccl("allreduce", 16, 1 << 20, nnodes=2)
    times = nccl_model("allreduce", 16, 2, 1 << 20, "2.23")
    best = min(times, key=times.get)
    assert c.name == f"NCCL {best[0]}/{best[1]}"
    assert c.note.startswith("approximate") and not c.exact
    assert "tuning.cc" in c.source and "v2.23.4-1" in c.source


def test_nccl_version_eras():
    # Tree/Simple latency constants differ: 2.19-2.22 use 28 us a hop
    t18 = nccl_model("allreduce", 16, 2, 1 << 26, "2.18")[("Tree", "Simple")]
    t21 = nccl_model("allreduce", 16, 2, 1 << 26, "2.21")[("Tree", "Simple")]
    assert t21 > t18
    assert "v2.18.6-1" in nccl("allreduce", 8, 64, version="2.18.1").source
    assert "v2.21.5-1" in nccl("allreduce", 8, 64, version="2.22.3").source
    assert "v2.19.4-1" in nccl("allreduce", 8, 64, version="2.20.5").source
    assert "not checked" in nccl("allreduce", 8, 64, version="2.17.1").note


def test_nccl_stand_ins():
    tree = nccl("allreduce", 16, 4096, nnodes=2)
    assert tree.algorithm == "dbt" and tree.options["nchunks"] % 2 == 0
    ring = nccl("allgather", 8, 1 << 30)
    assert ring.algorithm == "ring" and ring.options["nchunks"] % 8 == 0
    chain = native_as("nccl", "broadcast", 8, 1 << 30, root=5)
    assert chain.algorithm == "chain" and chain.options["root"] == 5
    assert 1 <= chain.options["nchunks"] <= 64


@pytest.mark.parametrize("p, nbytes, name, copied", [
    (2, 1 << 20, "rabenseifner", 1 << 20),      # redscat_allgather: sbuf into rbuf first
    (2, 32 << 10, "ring", 32 << 10),             # ring: the same copy
    (2, 100 << 10, "segmented_ring", 100 << 10),
    (2, 2048, "recursive_doubling", 0),          # copies in either place: not charged
    (3, 4, "ring->recursive_doubling", 0),       # the fallback decides before the copy
    (8, 8192, "rabenseifner->basic_linear", 0),
])
def test_ompi_allreduce_copies_its_input_into_its_result_out_of_place(p, nbytes, name,
                                                                     copied):
    kw = {"dtype_size": 2048} if name == "rabenseifner->basic_linear" else {}
    c = mpi("allreduce", p, nbytes, **kw)
    assert (c.name, c.copy_out_of_place) == (name, copied)


def test_no_other_native_collective_is_charged_a_copy():
    assert mpi("allgather", 4, 1 << 20).copy_out_of_place == 0
    assert mpi("reduce_scatter", 4, 1 << 20).copy_out_of_place == 0
    assert mpi("broadcast", 4, 1 << 20).copy_out_of_place == 0
    assert native_as("gloo", "allreduce", 4, 1 << 20).copy_out_of_place == 0
    assert nccl("allreduce", 4, 1 << 20).copy_out_of_place == 0
