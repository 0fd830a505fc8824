"""Which algorithm a backend's own ("native") collective runs, as a commsim schedule.

``commsim bench`` measures the backend's collective beside commsim's schedules; to say
whether the native one is as fast as it should be, its row needs a prediction for the
algorithm the backend really runs at that size and rank count. :func:`native_as` names
it and the registered commsim algorithm (with build options) that models it::

    c = native_as("mpi", "allreduce", 8, 1 << 20)
    c.name, c.algorithm, c.exact          # ('rabenseifner', 'rhd', True)
    collectives.build(c.collective, c.algorithm, 8, **c.options)

Build with ``c.collective``, not the collective asked for: torch's gloo backend has no
reduce-scatter and runs an allreduce of the whole buffer, so that choice is an
allreduce (of ``nbytes``, the whole reduce-scatter buffer). ``exact`` is True when the
commsim schedule has the backend's steps, message sizes and partners, up to a fixed
renaming of ranks that ``note`` names; otherwise the schedule is the nearest stand-in and
``note`` says how it differs. The rules, their sources and versions are in
``docs/native.md``. Pure Python: nothing here imports torch, mpi4py or NCCL.

Sizes follow nccl-tests, as everywhere in commsim: ``nbytes`` is one rank's buffer for
allreduce, broadcast and reduce and the whole gathered buffer for allgather and
reduce_scatter. ``versions`` may carry ``torch``, ``gloo``, ``mpi`` (a version, or
``MPI.Get_library_version()``'s text) and ``nccl``; ``nnodes`` (an addition to the
documented signature, default 1) is the number of hosts, which Open MPI 5 and NCCL use.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass, field

from commsim.collectives import resolve_collective
from commsim.errors import CommsimError, unknown

__all__ = ["BACKENDS", "NCCL_ASSUMED", "NativeChoice", "native_as"]

BACKENDS = ("gloo", "mpi", "nccl")
MMAP_THRESHOLD_MAX = 32 << 20  # glibc, 64-bit: larger mallocs are always fresh mmaps


@dataclass(frozen=True)
class NativeChoice:
    """The backend's algorithm for one call, and the commsim schedule that models it."""

    backend: str           # "gloo" | "mpi" | "nccl"
    collective: str        # the commsim collective to build (see the module docstring)
    name: str              # what the backend calls it ("ring", "rabenseifner", ...)
    algorithm: str | None  # registered commsim algorithm, or None when none models it
    options: dict = field(default_factory=dict)  # build options: root, nchunks, group_size
    exact: bool = False    # the commsim schedule IS the backend's algorithm
    source: str = ""       # file and function read, with the version
    note: str = ""         # one line: why, or how the stand-in differs
    scratch: int = 0       # bytes of freshly mapped memory it writes each call (first touch)
    copy_out_of_place: int = 0  # bytes it copies locally, input into result, out of place
    in_flight: int = 1     # a pair's messages in flight at once, each on its own buffer
    # (gloo's rings: two); the schedule deals its pieces over that many connections


def native_as(backend: str, collective: str, nranks: int, nbytes: int, *, dtype_size: int = 4,
              versions: dict | None = None, root: int = 0, nnodes: int = 1) -> NativeChoice:
    """The algorithm ``backend``'s own ``collective`` runs for ``nbytes`` on ``nranks`` ranks.

    Raises :class:`CommsimError` for an unknown backend or collective and bad numbers.
    """
    name = str(backend).lower()
    if name not in BACKENDS:
        raise unknown("backend", backend, BACKENDS)
    coll = resolve_collective(collective)
    p = _whole("nranks", nranks, 1)
    size = _whole("nbytes", nbytes, 0)
    dsize = _whole("dtype_size", dtype_size, 1)
    nodes = _whole("nnodes", nnodes, 1)
    root = _whole("root", root, 0)
    if root >= p:
        raise CommsimError(f"root: {root} is out of range for {p} ranks")
    if nodes > p:
        raise CommsimError(f"nnodes: {nodes} is more than the {p} ranks")
    versions = dict(versions or {})
    if coll == "alltoall":
        raise CommsimError(f"collective: no model of {name}'s own alltoall yet; compare it "
                           "with commsim's pairwise or bruck rows instead")
    if p == 1 or size // dsize == 0:
        why = "one rank: nothing to communicate" if p == 1 else \
            "empty buffer: nothing to communicate"
        return NativeChoice(name, coll, "none", None, {}, False, "", why)
    rules = {"gloo": _gloo, "mpi": _mpi, "nccl": _nccl}[name]
    return rules(coll, p, size, dsize, root, nodes, versions)


def _whole(what: str, value, low: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CommsimError(f"{what}: {value!r} must be a whole number >= {low}")
    return value


def _pow2(n: int) -> bool:
    return n & (n - 1) == 0


def _core(n: int) -> int:
    """The largest power of two not above ``n``."""
    return 1 << (n.bit_length() - 1)


def _version(text) -> tuple[int, ...] | None:
    """``(major, minor, ...)`` from ``"2.21.5"``, ``(2, 21)`` or a library banner."""
    if text is None:
        return None
    if isinstance(text, (tuple, list)):
        return tuple(int(x) for x in text)
    found = re.search(r"(\d+)\.(\d+)(?:\.(\d+))?", str(text))
    return tuple(int(g) for g in found.groups() if g is not None) if found else None


def _dotted(v: tuple[int, ...] | None) -> str:
    return ".".join(map(str, v)) if v else "unknown"


# --------------------------------------------------------------------------------------
# gloo, as torch.distributed's ProcessGroupGloo calls it on CPU dense tensors
# --------------------------------------------------------------------------------------

GLOO_MAX_SEGMENT = 1 << 20  # gloo/allreduce.h AllreduceOptionsImpl::kMaxSegmentSize
_TORCH = "torch 2.13.0 (installed headers) and pytorch main"
_GLOO = "pytorch/gloo main 2026-04 (the algorithm files unchanged since 2023)"


def gloo_ring_segments(nbytes: int, dtype_size: int, nranks: int) -> int:
    """How many segments gloo's ring allreduce cuts the buffer into (gloo/allreduce.cc ring).

    Segments of at most 1 MiB, at least two a rank, rounded up to a multiple of the rank
    count: ``roundUp(max(ceil(bytes / 1 MiB), 2 p), p)``.
    """
    total = (nbytes // dtype_size) * dtype_size
    seg = dtype_size * max(1, GLOO_MAX_SEGMENT // dtype_size)
    n = max(-(-total // seg), 2 * nranks)
    return -(-n // nranks) * nranks


def _gloo(coll, p, size, dsize, root, nodes, versions):
    torch_v = _version(versions.get("torch"))
    caveat = "" if torch_v is None or torch_v[0] >= 2 else \
        f"; torch {_dotted(torch_v)} not checked (rules read from torch 2.x)"

    def choice(c, name, algo, options, exact, source, note):
        # gloo's rings and its allgather post a segment's send and receive while the one
        # before is still moving: two in flight (gloo/allreduce.cc ring, gloo/allgather.cc)
        return NativeChoice("gloo", c, name, algo, options, exact, source, note + caveat,
                            in_flight=2 if algo == "ring" else 1)

    if coll in ("allreduce", "reduce_scatter"):
        segs = gloo_ring_segments(size, dsize, p)
        ring_src = (f"{_GLOO}: gloo/allreduce.cc allreduce() -> ring() (algorithm UNSPECIFIED "
                    f"= ring, segments <= kMaxSegmentSize 1 MiB); {_TORCH}: "
                    "ProcessGroupGlooDetail.hpp AsyncAllreduceWork::allreduce (no setAlgorithm)")
        ring_note = (f"ring reduce-scatter then allgather in {segs} segments ({segs // p} a "
                     "rank, <= 1 MiB, two in flight); gloo's ring sends to rank-1: the same "
                     "schedule with rank r renamed -r mod p; segment edges differ by rounding")
        if coll == "allreduce":
            return choice("allreduce", "ring", "ring", {"nchunks": segs}, True, ring_src,
                          ring_note)
        return choice("allreduce", "allreduce(ring)+copy", "ring", {"nchunks": segs}, True,
                      f"{_TORCH}: ProcessGroupGloo.cpp _reduce_scatter_base -> "
                      f"reduce_scatter_tensor_coalesced; {ring_src}",
                      "gloo has no reduce-scatter: torch clones the input, ring-allreduces all "
                      "of it and copies its part out: build the allreduce of the whole buffer, "
                      "twice a ring reduce-scatter's traffic; " + ring_note)
    if coll == "allgather":
        return choice("allgather", "ring", "ring", {"nchunks": 2 * p}, True,
                      f"{_GLOO}: gloo/allgather.cc allgather(); {_TORCH}: ProcessGroupGloo.cpp "
                      "_allgather_base -> allgather -> AsyncAllgatherWork",
                      "ring to rank+1, each rank's block sent as two halves with two operations "
                      "in flight: commsim's ring allgather with nchunks 2p (torch adds a "
                      "flatten and a copy out)")
    if coll == "broadcast":
        return choice("broadcast", "binomial", "binomial", {"root": root}, True,
                      f"{_GLOO}: gloo/broadcast.cc broadcast(); {_TORCH}: ProcessGroupGloo.cpp "
                      "AsyncBroadcastWork::broadcast",
                      "binomial tree of the whole buffer: in round i relative ranks < 2^i send "
                      "to +2^i, as commsim's; a sender posts its sends back to back (the "
                      "dataflow mode does too)")
    return choice("reduce", "ring reduce-scatter + gather", "chain",
                  {"root": root, "nchunks": p}, False,
                  f"{_GLOO}: gloo/reduce.cc reduce(); {_TORCH}: ProcessGroupGlooDetail.hpp / "
                  "ProcessGroupGloo.cpp AsyncReduceWork::reduce",
                  "gloo runs a ring reduce-scatter (segments <= 1 MiB) and every rank sends its "
                  "part straight to the root; commsim has no such reduce: the chain in p "
                  "pieces moves the same 2(p-1)/p of the buffer on its critical path, with "
                  "2(p-1) latencies instead of about p")


# --------------------------------------------------------------------------------------
# Open MPI: coll/tuned's fixed decision rules (identical in v4.1.0 .. v5.0.x)
# --------------------------------------------------------------------------------------

# (communicator size below which the row applies, or None; [(bytes below, algorithm id),
# ..., (None, id)]): the commutative-op branch of each ompi_coll_tuned_*_dec_fixed.
_OMPI_ALLREDUCE = [
    (4, [(8, 4), (4096, 3), (8192, 4), (16384, 3), (65536, 4), (262144, 5), (None, 6)]),
    (8, [(16, 4), (8192, 3), (None, 6)]),
    (16, [(8192, 3), (None, 6)]),
    (32, [(64, 5), (4096, 3), (None, 6)]),
    (64, [(128, 5), (None, 6)]),
    (128, [(262144, 3), (None, 6)]),
    (256, [(131072, 2), (262144, 3), (None, 6)]),
    (512, [(4096, 2), (None, 6)]),
    (2048, [(2048, 2), (16384, 3), (None, 6)]),
    (4096, [(2048, 2), (4096, 5), (16384, 3), (None, 6)]),
    (None, [(2048, 2), (16384, 5), (32768, 3), (None, 6)]),
]
_OMPI_BCAST = [
    (4, [(32, 3), (256, 5), (512, 3), (1024, 7), (32768, 1), (131072, 5), (262144, 2),
         (524288, 1), (1048576, 6), (None, 5)]),
    (8, [(64, 5), (128, 6), (2048, 5), (8192, 6), (1048576, 1), (None, 2)]),
    (16, [(8, 7), (64, 5), (4096, 7), (16384, 5), (32768, 6), (None, 1)]),
    (32, [(4096, 7), (1048576, 6), (None, 8)]),
    (64, [(2048, 6), (None, 7)]),
    (128, [(None, 7)]),
    (256, [(2, 6), (16384, 5), (32768, 1), (65536, 5), (None, 7)]),
    (1024, [(16384, 7), (32768, 4), (None, 7)]),
    (2048, [(524288, 7), (None, 8)]),
    (4096, [(262144, 7), (None, 8)]),
    (None, [(8192, 7), (16384, 5), (262144, 7), (None, 8)]),
]
_OMPI_REDUCE = [
    (4, [(8, 7), (16, 4), (32, 3), (262144, 1), (524288, 3), (1048576, 2), (None, 3)]),
    (8, [(4096, 4), (65536, 2), (262144, 5), (524288, 1), (1048576, 5), (None, 1)]),
    (16, [(8192, 4), (None, 5)]),
    (32, [(4096, 4), (None, 5)]),
    (256, [(None, 5)]),
    (512, [(8192, 5), (16384, 6), (None, 5)]),
    (2048, [(None, 5)]),
    (4096, [(512, 5), (1024, 6), (8192, 5), (16384, 6), (None, 5)]),
    (None, [(16, 5), (32, 6), (1024, 5), (2048, 6), (8192, 5), (16384, 6), (None, 5)]),
]
# Decided on one rank's block (rcount * type size), not on the whole buffer.
_OMPI_RSB = [
    (4, [(4, 2), (8, 4), (16, 3), (128, 4), (256, 3), (4096, 4), (8192, 3), (131072, 4),
         (None, 1)]),
    (8, [(8, 3), (32, 2), (256, 4), (8192, 3), (16384, 4), (1048576, 3), (None, 1)]),
    (16, [(4, 1), (32, 3), (128, 4), (524288, 3), (4194304, 1), (None, 4)]),
    (32, [(32, 1), (524288, 3), (2097152, 1), (4194304, 3), (None, 4)]),
    (None, [(4, 3), (16, 1), (65536, 4), (262144, 1), (None, 4)]),
]
# Decided on one rank's block (scount * type size); 2 ranks always use two_proc (6).
_OMPI_ALLGATHER = [
    (32, [(None, 3)]),
    (64, [(1024, 3), (65536, 5), (None, 4)]),
    (128, [(512, 3), (65536, 5), (None, 4)]),
    (256, [(512, 3), (131072, 5), (524288, 4), (1048576, 5), (None, 4)]),
    (512, [(32, 3), (128, 2), (1024, 3), (131072, 5), (524288, 4), (1048576, 5), (None, 4)]),
    (1024, [(64, 3), (256, 2), (2048, 3), (None, 5)]),
    (2048, [(4, 3), (8, 2), (16, 3), (32, 2), (256, 3), (512, 2), (4096, 3), (None, 5)]),
    (4096, [(32, 2), (128, 3), (512, 2), (4096, 3), (None, 5)]),
    (None, [(2, 3), (8, 2), (16, 3), (512, 2), (4096, 3), (None, 5)]),
]

_OMPI_NAMES = {
    "allreduce": {1: "basic_linear", 2: "nonoverlapping", 3: "recursive_doubling", 4: "ring",
                  5: "segmented_ring", 6: "rabenseifner"},
    "broadcast": {1: "basic_linear", 2: "chain", 3: "pipeline", 4: "split_binary_tree",
                  5: "binary_tree", 6: "binomial", 7: "knomial", 8: "scatter_allgather"},
    "reduce": {1: "linear", 2: "chain", 3: "pipeline", 4: "binary", 5: "binomial",
               6: "in-order_binary", 7: "rabenseifner"},
    "reduce_scatter": {1: "basic_linear", 2: "recursive_doubling", 3: "recursive_halving",
                       4: "butterfly"},
    "allgather": {1: "linear", 2: "bruck", 3: "recursive_doubling", 4: "ring", 5: "neighbor",
                  6: "two_proc"},
}
_OMPI_FUNC = {"allreduce": "allreduce", "broadcast": "bcast", "reduce": "reduce",
              "reduce_scatter": "reduce_scatter_block", "allgather": "allgather"}
_OMPI_BASE = {"allreduce": "coll_base_allreduce.c", "broadcast": "coll_base_bcast.c",
              "reduce": "coll_base_reduce.c", "reduce_scatter": "coll_base_reduce_scatter_block.c",
              "allgather": "coll_base_allgather.c"}
_OMPI_IMPL = {  # the ompi_coll_base_<collective>_intra_<name> function each id calls
    "allreduce": ("basic_linear", "nonoverlapping", "recursivedoubling", "ring",
                  "ring_segmented", "redscat_allgather"),
    "broadcast": ("basic_linear", "chain", "pipeline", "split_bintree", "bintree", "binomial",
                  "knomial", "scatter_allgather"),
    "reduce": ("basic_linear", "chain", "pipeline", "binary", "binomial", "in_order_binary",
               "redscat_gather"),
    "reduce_scatter": ("basic_linear", "intra_recursivedoubling", "intra_recursivehalving",
                       "intra_butterfly"),
    "allgather": ("basic_linear", "bruck", "recursivedoubling", "ring", "neighborexchange",
                  "two_procs"),
}


def _ompi_function(coll: str, alg: int) -> str:
    impl = _OMPI_IMPL[coll][alg - 1]
    if coll == "reduce_scatter":
        return f"ompi_coll_base_reduce_scatter_block_{impl}"
    return f"ompi_coll_base_{_OMPI_FUNC[coll]}_intra_{impl}"


def ompi_tuned_rule(collective: str, nranks: int, nbytes: int, dtype_size: int = 4) -> int:
    """The algorithm id coll/tuned's fixed rules pick for a commutative op (sum).

    ``nbytes`` in commsim's convention; allgather and reduce_scatter (as
    ``MPI_Reduce_scatter_block``) decide on one rank's block, ``nbytes / nranks``.
    """
    coll = resolve_collective(collective)
    count = nbytes // dtype_size
    if coll in ("allgather", "reduce_scatter"):
        count = nbytes // (dtype_size * nranks)
        if coll == "allgather" and nranks == 2:
            return 6
    table = {"allreduce": _OMPI_ALLREDUCE, "broadcast": _OMPI_BCAST, "reduce": _OMPI_REDUCE,
             "reduce_scatter": _OMPI_RSB, "allgather": _OMPI_ALLGATHER}[coll]
    total = count * dtype_size
    for below, row in table:
        if below is None or nranks < below:
            for limit, alg in row:
                if limit is None or total < limit:
                    return alg
    raise AssertionError("unreachable: every table ends with a None row")


def _mpi(coll, p, size, dsize, root, nodes, versions):
    banner = versions.get("mpi")
    text = str(banner or "").lower()
    if any(w in text for w in ("mpich", "intel", "mvapich", "cray", "spectrum", "microsoft")):
        return NativeChoice("mpi", coll, "unknown", None, {}, False, "",
                            f"no rules for {str(banner).splitlines()[0][:60]!r}: only Open "
                            "MPI's coll/tuned decisions are encoded")
    v = _version(banner)
    caveat = "" if v is None or (4, 1) <= v[:2] < (6, 0) else \
        f"; Open MPI {_dotted(v)} not checked (rules read from 4.1/5.0)"
    if coll in ("allgather", "reduce_scatter") and size // (dsize * p) == 0:
        return NativeChoice("mpi", coll, "none", None, {}, False, "",
                            "empty per-rank block (count 0): nothing to communicate")
    if nodes > 1 and v is not None and v[0] >= 5 and coll != "reduce_scatter":
        return _ompi_han(coll, p, root, nodes, caveat)
    alg = ompi_tuned_rule(coll, p, size, dsize)
    choice = _ompi_map(coll, alg, p, size, dsize, root)
    src = (f"open-mpi/ompi v4.1.x and v5.0.x (identical; read at v5.0.10): "
           f"ompi/mca/coll/tuned/coll_tuned_decision_fixed.c "
           f"ompi_coll_tuned_{_OMPI_FUNC[coll]}_intra_dec_fixed; ompi/mca/coll/base/"
           f"{_OMPI_BASE[coll]} {_ompi_function(coll, alg)}")
    where = "one node: coll/han steps aside (5.0) or is off (4.1), " if nodes == 1 else \
        "" if v is not None else "version unknown: assumed coll/tuned (Open MPI 5 would run " \
        "coll/han across nodes), "
    scratch = 0
    if coll == "allreduce" and choice.name == "rabenseifner" and size > MMAP_THRESHOLD_MAX:
        # redscat_allgather mallocs a buffer of the whole message each call; above glibc's
        # largest mmap threshold that is fresh memory, whose pages the halving steps'
        # receives write first: (p'-1)/p' of it
        pc = _core(p)
        scratch = size * (pc - 1) // pc
    # ring, segmented ring and redscat_allgather copy sbuf into rbuf first when not
    # MPI_IN_PLACE, then work in rbuf; their fallbacks (named "a->b") decide before it.
    # Recursive doubling copies through its own buffer in either place, at the small
    # sizes it runs: not charged
    copy = size if coll == "allreduce" and alg in (4, 5, 6) and "->" not in choice.name \
        else 0
    return NativeChoice("mpi", choice.collective, choice.name, choice.algorithm,
                        choice.options, choice.exact, src,
                        f"{where}tuned rule {alg}; {choice.note}{caveat}", scratch,
                        copy_out_of_place=copy)


def _c(coll, name, algo, options, exact, note) -> NativeChoice:
    return NativeChoice("mpi", coll, name, algo, options, exact, "", note)


def _ompi_map(coll, alg, p, size, dsize, root) -> NativeChoice:
    """The commsim schedule for Open MPI's algorithm ``alg`` (fallbacks included)."""
    name = _OMPI_NAMES[coll][alg]
    count = size // dsize
    pc = _core(p)
    twist = ("; Open MPI pairs distance 1 first, commsim p'/2 first: the same schedule with "
             "rank v renamed bit-reverse(v)")
    if coll == "allreduce":
        if alg in (4, 5):
            if count < p:
                return _c(coll, f"{name}->recursive_doubling", "rhd", {}, False,
                          "count < p: the ring falls back to recursive doubling; " + _RD_NOTE)
            seg = ("the fixed rules pass segsize 0, so the segmented ring runs the plain "
                   "ring; " if alg == 5 else "")
            return _c(coll, name, "ring", {}, True,
                      seg + "ring reduce-scatter then allgather to rank+1, blocks split like "
                      "commsim's segments")
        if alg == 3:
            return _c(coll, name, "rhd", {}, False, _RD_NOTE)
        if alg == 6:
            if count < pc:
                return _c(coll, f"{name}->basic_linear", "tree", {}, False,
                          "count < p': Rabenseifner falls back to basic_linear (linear reduce "
                          "to rank 0, linear bcast); stand-in: the binary tree")
            if _pow2(p):
                return _c(coll, name, "rhd", {}, True,
                          "recursive halving reduce-scatter then doubling allgather" + twist)
            return _c(coll, name, "rhd", {}, False,
                      "Open MPI folds the 2r extra ranks pairwise (2i, 2i+1) by exchanging "
                      "halves (two steps of S/2), commsim folds rank p'+i into i whole (one "
                      "step of S); the power-of-two core is the same up to renaming")
        what = "reduce to rank 0 then bcast, each with tuned's own rule" if alg == 2 else \
            "linear reduce to rank 0 then linear bcast"
        return _c(coll, name, "tree", {}, False,
                  f"{what}; stand-in: the binary tree (reduce then broadcast)")
    if coll == "broadcast":
        whole = {"root": root}
        if alg == 8 and count < p:
            alg, name = 1, f"{name}->basic_linear"
        if alg in (2, 3):
            return _c(coll, name, "chain", whole, True,
                      "one chain root, root+1, ... (fanout forced to 1); the fixed rules pass "
                      "segsize 0, so the whole buffer moves in one piece")
        if alg == 6:
            return _c(coll, name, "binomial", whole, True,
                      "binomial tree of the whole buffer (segsize 0), children v+2^i, as "
                      "commsim's; a parent posts its sends at once (the dataflow mode does "
                      "too)")
        if alg == 1:
            return _c(coll, name, "chain", whole, False,
                      "the root sends the whole buffer to every rank; stand-in: the "
                      "unpipelined chain, with the same p-1 buffers on the critical path")
        if alg == 8:
            return _c(coll, name, "chain", {"root": root, "nchunks": p}, False,
                      "binomial scatter then recursive-doubling allgather; stand-in: the "
                      "chain in p pieces, the same 2(p-1)/p of the buffer, 2(p-1) latencies "
                      "instead of 2 log p")
        tree = {4: "split binary tree", 5: "binary tree", 7: "4-nomial tree"}[alg]
        return _c(coll, name, "binomial", whole, False,
                  f"{tree} of the whole buffer (segsize 0); stand-in: the binomial tree, "
                  "also about log p levels of the whole buffer")
    if coll == "reduce":
        whole = {"root": root}
        if alg == 7 and (count < pc or p < 2):
            alg, name = 1, f"{name}->linear"
        if alg in (2, 3):
            return _c(coll, name, "chain", whole, True,
                      "one chain into the root (fanout forced to 1), whole buffer (segsize 0)")
        if alg == 5:
            return _c(coll, name, "binomial", whole, True,
                      "in-order binomial tree (parent v - lowbit(v)), whole buffer (segsize 0),"
                      " as commsim's")
        if alg == 1:
            return _c(coll, name, "chain", whole, False,
                      "every rank sends its whole buffer to the root; stand-in: the "
                      "unpipelined chain, with the same p-1 buffers on the critical path")
        if alg == 7:
            return _c(coll, name, "binomial", whole, False,
                      "recursive-halving reduce-scatter then binomial gather; picked only "
                      "below 8 bytes, where the binomial tree's log p latencies dominate alike")
        tree = {4: "binary tree", 6: "in-order binary tree"}[alg]
        return _c(coll, name, "binomial", whole, False,
                  f"{tree} of the whole buffer (segsize 0); stand-in: the binomial tree")
    if coll == "reduce_scatter":
        if alg == 1:
            sub = _ompi_map("reduce", ompi_tuned_rule("reduce", p, size, dsize), p, size,
                            dsize, 0)
            return _c("reduce", f"{name} (reduce: {sub.name})", sub.algorithm, sub.options,
                      False, f"a reduce of the whole buffer to rank 0 then a scatter: build "
                      f"the reduce (tuned picks {sub.name}); the scatter of (p-1)/p of the "
                      f"buffer from rank 0 is left out")
        if alg == 2:
            return _c(coll, name, "rhd", {}, False,
                      "recursive doubling sends more than halving (m(log p - (p-1)/p) a rank); "
                      "stand-in: recursive halving")
        if _pow2(p):
            note = ("recursive halving, distance p'/2 first, lower rank keeps the lower half: "
                    "commsim's rhd exactly" if alg == 3 else
                    "Traff's butterfly: halving at distance 1 first on mirror-permuted blocks" +
                    twist)
            return _c(coll, name, "rhd", {}, True, note)
        fold = ("the extra ranks fold as pairs (2i -> 2i+1) where commsim folds p'+i into i; "
                "same steps and bytes" if alg == 3 else
                "fold, butterfly on p', then a mirror-permutation exchange: an extra step")
        return _c(coll, name, "rhd", {}, False, fold)
    # allgather
    if alg == 3 and not _pow2(p):
        alg, name = 2, f"{name}->bruck"
    if alg == 3:
        return _c(coll, name, "rhd", {}, True,
                  "recursive doubling, distance 1 first, as commsim's")
    if alg == 2:
        return _c(coll, name, "rhd", {}, False,
                  "Bruck: ceil(log p) steps, no fold; stand-in: recursive doubling with the "
                  "extra ranks folded in and served (two more steps), same (p-1)/p volume")
    if alg == 6:
        return _c(coll, name, "ring", {}, True, "two ranks swap blocks: one step, as the ring")
    if alg == 5 and p % 2:
        return _c(coll, f"{name}->ring", "ring", {}, True,
                  "odd rank count: neighbor exchange falls back to the ring (to rank+1)")
    if alg == 5:
        return _c(coll, name, "ring", {}, False,
                  "neighbor exchange: p/2 steps of two blocks with alternating neighbours; "
                  "stand-in: the ring, same volume in p-1 steps")
    if alg == 4:
        return _c(coll, name, "ring", {}, True, "ring to rank+1, one block a step")
    return _c(coll, name, "ring", {}, False,
              "every rank sends its block to every other; stand-in: the ring, same volume")


_RD_NOTE = ("recursive doubling exchanges the whole buffer log p' times; commsim has no "
            "such allreduce: rhd pairs the same partners but halves the messages, so it "
            "takes 2 log p' steps where Open MPI takes log p' (about twice the latency at "
            "the small sizes where it is picked)")


def _ompi_han(coll, p, root, nodes, caveat) -> NativeChoice:
    src = ("open-mpi/ompi v5.0.10: ompi/mca/coll/han/coll_han_component.c (priority 35 > "
           "tuned's 30), coll_han_module.c mca_coll_han_comm_query")
    ppn = p // nodes if p % nodes == 0 else None
    if coll == "allreduce" and ppn:
        return NativeChoice("mpi", coll, "han", "hierarchical", {"group_size": ppn}, False, src,
                            "coll/han (several nodes, Open MPI 5): reduce in the node, "
                            "allreduce across node leaders, bcast in the node; stand-in: "
                            f"commsim's 2-level ring with groups of {ppn}" + caveat)
    algo = {"allreduce": "tree", "broadcast": "binomial", "reduce": "binomial",
            "allgather": "ring"}[coll]
    options = {"root": root} if coll in ("broadcast", "reduce") else {}
    return NativeChoice("mpi", coll, "han", algo, options, False, src,
                        "coll/han (several nodes, Open MPI 5): a node-level step and a "
                        f"leaders' step; stand-in: commsim's {algo}" + caveat)


# --------------------------------------------------------------------------------------
# NCCL: a simplified ncclTopoTuneModel + ncclTopoGetAlgoTime (src/graph/tuning.cc)
# --------------------------------------------------------------------------------------

# The hardware the approximation assumes (NCCL reads these from the topology it detects).
NCCL_ASSUMED = {
    "compute_capability": 90,   # Hopper: the per-channel caps of HOPPER_COMPCAP_IDX
    "intra": "NVLink",          # hwLat row NCCL_HW_NVLINK inside a node, LL128 enabled
    "cpu": "Intel x86",         # llMaxBws row for several nodes, net overhead 1 us
    "nchannels": 16,            # rings and trees
    "busbw_node_gbs": 240.0,    # nChannels * bwIntra inside one node, GB/s
    "busbw_net_gbs": 50.0,      # nChannels * bw a GPU across nodes (one 400 Gb/s NIC), GB/s
}
_LL, _LL128, _SIMPLE = 0, 1, 2
_PROTO = ("LL", "LL128", "Simple")
_TREE_CORRECTION = (  # treeCorrectionFactor[protocol][log2(bytes / 64)], 64 B .. 256 MiB
    (1.0, 1.0, 1.0, 1.0, .9, .8, .7, .7, .7, .7, .6, .5, .4, .4, .5, .6, .7, .8, .9, 1.0, 1.0,
     1.0, 1.0),
    (1.0, 1.0, 1.0, 1.0, 1.0, .9, .8, .8, .8, .7, .6, .6, .6, .6, .6, .6, .8, .9, .9, .9, .9,
     1.0, 1.0),
    (.9, .9, .9, .9, .9, .9, .9, .8, .7, .6, .6, .5, .5, .5, .5, .6, .7, .8, .7, .7, .8, .9,
     .9),
)
# Pipeline piece a channel moves per step (NCCL_STEPS = 8 slots of the protocol's buffer):
# LL 64 KiB lines, half flags; LL128 ~600 KB, 120/128 data; Simple 4 MiB / 8 = 512 KiB
# times ALLREDUCE/ALLGATHER/REDUCESCATTER_CHUNKSTEPS (4) or BROADCAST/REDUCE (1).
_PIECE = {_LL: 32 << 10, _LL128: 512 << 10, _SIMPLE: 2 << 20}
_MAX_PIPELINE = 64


def _nccl_era(v: tuple[int, ...] | None) -> str:
    """Which constants of tuning.cc apply: the tags read were 2.18.6, 2.21.5 and 2.23.4."""
    if v is None or v[:2] >= (2, 23):
        return "2.23"
    if v[:2] >= (2, 21):
        return "2.21"
    return "2.19" if v[:2] >= (2, 19) else "2.18"


def nccl_model(collective: str, nranks: int, nnodes: int, nbytes: int,
               version: str = "2.23") -> dict[tuple[str, str], float]:
    """Microseconds NCCL's (simplified) model gives each enabled (algorithm, protocol).

    ``version`` is a constants era: ``"2.18"``, ``"2.19"`` (to 2.20), ``"2.21"`` (to 2.22)
    or ``"2.23"`` (and later). Ring for every collective, Tree for allreduce only; NVLS,
    CollNet and PAT are assumed unavailable. Hardware: :data:`NCCL_ASSUMED`.
    """
    coll = resolve_collective(collective)
    p, n = nranks, nnodes
    ppn = p / n
    new = version == "2.23"
    hopper = version in ("2.21", "2.23")
    nch = NCCL_ASSUMED["nchannels"]
    busbw = NCCL_ASSUMED["busbw_node_gbs" if n == 1 else "busbw_net_gbs"]
    index2 = min(n, 3) - 1
    ll_max = ((141.0, 45.0, 35.0) if hopper else (87.7, 22.5, 19.0)) if n == 1 else \
        (39.0, 39.0, 20.4)
    ll_max = ll_max[0] if n == 1 else ll_max[index2]
    tree_simple_lat = 28.0 if version in ("2.19", "2.21") else None
    base = {("Tree", _LL): 6.8, ("Tree", _LL128): 14.0, ("Tree", _SIMPLE): 8.4 if new else 0.0,
            ("Ring", _LL): 6.6, ("Ring", _LL128): 14.0, ("Ring", _SIMPLE): 8.4}
    nvl = {("Tree", _LL): .6, ("Tree", _LL128): 1.25, ("Tree", _SIMPLE): tree_simple_lat or 4.0,
           ("Ring", _LL): .6, ("Ring", _LL128): 1.9, ("Ring", _SIMPLE): 3.4}
    net = {("Tree", _LL): 5.0, ("Tree", _LL128): 8.5, ("Tree", _SIMPLE): tree_simple_lat or 14.0,
           ("Ring", _LL): 2.7, ("Ring", _LL128): 4.0, ("Ring", _SIMPLE): 14.0}
    nsteps = {"allreduce": 2 * (p - 1), "reduce_scatter": p - 1, "allgather": p - 1}.get(coll, p)
    if n == 1:
        inter_steps = 0
    elif coll == "allreduce":
        inter_steps = 2 * (n - 1) if new else 2 * n
    else:
        inter_steps = n - 1 if coll in ("reduce_scatter", "allgather") else n
    times = {}
    for algo in ("Tree", "Ring") if coll == "allreduce" else ("Ring",):
        for proto in (_LL, _LL128, _SIMPLE):
            bw = busbw
            if algo == "Ring" and proto == _LL:
                factor = .5 if new else (.25 if n > 1 or coll in ("allreduce", "reduce")
                                         else 1 / 3)
                bw = min(ll_max, bw * factor)
            if algo == "Ring" and proto == _LL128:
                bw = min(bw * (.7 if ppn < 2 and not new else .92), nch * 36.7)
            if algo == "Tree":
                bw = min(bw * .92, nch * (38.7, 41.4, 36.0)[index2])
                if proto == _LL:
                    bw = min(bw / 3.8, ll_max)
                if proto == _LL128:
                    bw = min(bw * (7 / 9 if n == 1 else 120 / 128),
                             nch * (36.7, 36.7, 29.0)[index2])
            bw *= p / nsteps if algo == "Ring" else .5
            lat = base[(algo, proto)]
            intra = nvl[(algo, proto)]
            inter = net[("Tree" if new and ppn == 1 else algo, proto)]
            if algo == "Ring" and coll in ("broadcast", "reduce"):
                lat += nsteps * (nvl if n == 1 else net)[
                    ("Tree" if proto == _SIMPLE else "Ring", proto)]
            elif algo == "Ring":
                overhead = (3.0 if proto == _SIMPLE else 1.0) if n > 1 else 0.0
                lat += (nsteps - inter_steps) * max(intra, overhead) + inter_steps * inter
            else:
                lat += 2 * ((p // n - 1) * intra + (n.bit_length() - 1) * inter)
            log_size = max((nbytes >> 6).bit_length() - 1, 0)  # log2i(nBytes >> 6)
            if algo == "Tree" and log_size < 23:
                bw *= _TREE_CORRECTION[proto][log_size]
            if (algo == "Ring" and proto == _SIMPLE and n > 1 and coll == "allreduce"
                    and nbytes // (nch * p) >= 64):
                lat *= 1.4  # "plateau effect of ring", compute capability >= 80
            times[(algo, _PROTO[proto])] = lat + nbytes / (1000.0 * bw)
    return times


def _nccl(coll, p, size, dsize, root, nodes, versions):
    v = _version(versions.get("nccl"))
    era = _nccl_era(v)
    times = nccl_model(coll, p, nodes, size, era)
    (algo, proto), t = min(times.items(), key=lambda kv: kv[1])
    tag = {"2.18": "v2.18.6-1", "2.19": "v2.19.4-1", "2.21": "v2.21.5-1", "2.23": "v2.23.4-1"}[era]
    src = (f"NVIDIA/nccl {tag} src/graph/tuning.cc ncclTopoTuneModel + ncclTopoGetAlgoTime, "
           "simplified (approximate)")
    caveat = "" if v is None or v[:2] >= (2, 18) else f"; NCCL {_dotted(v)} < 2.18 not checked"
    hw = (f"approximate: NCCL {era}-era tuning model on assumed hardware (H100, NVLink, "
          f"{NCCL_ASSUMED['nchannels']} channels, {NCCL_ASSUMED['busbw_node_gbs']:g} GB/s in a "
          f"node, {NCCL_ASSUMED['busbw_net_gbs']:g} GB/s a GPU across nodes, no NVLS/CollNet/"
          f"PAT) predicts {t:.1f} us")
    piece = _PIECE[_PROTO.index(proto)]
    if coll in ("broadcast", "reduce") and proto == "Simple":
        piece = 512 << 10
    per_channel = size / NCCL_ASSUMED["nchannels"]
    name = f"NCCL {algo}/{proto}"
    if algo == "Tree":
        k = max(1, min(_MAX_PIPELINE, math.ceil(per_channel / 2 / piece)))
        return NativeChoice("nccl", coll, name, "dbt", {"nchunks": 2 * k}, False, src,
                            f"{hw}; NCCL's tree is a double binary tree across nodes with a "
                            "chain inside each node, commsim's dbt spans all ranks" + caveat)
    if coll in ("broadcast", "reduce"):
        k = max(1, min(_MAX_PIPELINE, math.ceil(per_channel / piece)))
        return NativeChoice("nccl", coll, name, "chain", {"root": root, "nchunks": k}, False,
                            src, f"{hw}; NCCL's ring {coll} is a chain from the root along "
                            "its ring order, pipelined in protocol steps; commsim's chain "
                            "follows rank order" + caveat)
    m = max(1, min(_MAX_PIPELINE, math.ceil(per_channel / p / piece)))
    return NativeChoice("nccl", coll, name, "ring", {"nchunks": p * m}, False, src,
                        f"{hw}; NCCL runs one ring a channel in its topology's order, pipelined "
                        "in protocol steps; commsim's one ring in rank order" + caveat)
