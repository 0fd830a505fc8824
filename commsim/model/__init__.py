"""Closed-form costs: the Hockney alpha-beta-gamma model of every registered algorithm.

``p`` ranks, ``S`` bytes (REFERENCE.md's size convention), ``alpha`` seconds per
message, ``beta`` seconds per byte on one link, ``gamma`` seconds per byte reduced.
Each formula counts the steps on the algorithm's critical path and the bytes the
busiest rank moves in each, for the schedule that :func:`commsim.collectives.build`
returns with the same ``nchunks``. They are exact (and the simulator reproduces them)
where every step is symmetric: rings, Rabenseifner allreduce, binomial trees and
chains for every ``p``; recursive halving/doubling reduce-scatter and allgather for
powers of two; the binary and double binary trees for complete trees (``p = 2**m - 1``).
For other ``p`` the recursive forms are the sum of each step's maximum, and the tree
forms charge two busy children in every step, so both are upper bounds that the
simulator may beat by a little.
"""

from __future__ import annotations

import math

import networkx as nx
import numpy as np

from commsim.collectives import chunk_unit, nccl_tree, resolve, resolve_collective
from commsim.collectives.alltoall import bruck_counts
from commsim.collectives.hierarchical import default_group_size
from commsim.collectives.layout import check as check_layout
from commsim.collectives.rhd import core_size
from commsim.collectives.tree import tree_height
from commsim.errors import CommsimError
from commsim.topology import gpus as gpu_nodes
from commsim.topology.routing import Router

__all__ = ["FORMULAS", "alpha_beta", "best_nchunks", "busbw_factor", "chunk_unit",
           "default_nchunks", "lower_bound", "nchunks_for", "predict"]

FORMULAS: dict[tuple[str, str], str] = {
    ("reduce_scatter", "ring"): "(p-1) a + (p-1)/p S b + (p-1)/p S g  (any channels)",
    ("reduce_scatter", "rhd"): "log p a + (p-1)/p S b + (p-1)/p S g  (p a power of 2)",
    ("allgather", "ring"): "(p-1) a + (p-1)/p S b  (any channels)",
    ("allgather", "rhd"): "log p a + (p-1)/p S b  (p a power of 2)",
    ("allreduce", "ring"): "2(p-1) a + 2(p-1)/p S b + (p-1)/p S g  (any channels)",
    ("allreduce", "tree"): "2(H+k-1) (a + 2 S/k b) + (H+k-1) 2 S/k g  (H tree height, k chunks)",
    ("allreduce", "dbt"): "2(H+k-1) (a + S/k b) + (H+k-1) S/k g  (k chunks per tree)",
    ("allreduce", "nccl_tree"): "2(H+k-1) (a + m S/K b) + (H+k-1) r S/K g  (K = 2ck chunks, "
                                "H = G-1+H_N, m, r: busiest rank's msgs)",
    ("allreduce", "rhd"): "2 log p' a + 2(p'-1)/p' S b + (p'-1)/p' S g  [+ 2a + 2 S b + S g "
                          "if p != p' = 2^floor(log p)]",
    ("allreduce", "hierarchical"): "2(G-1)(a + S/G b) + 2(N-1)(a' + S/(G N) b')  "
                                   "(G ranks a group, N groups)",
    ("broadcast", "chain"): "(p+k-2) (a + S/k b)",
    ("broadcast", "binomial"): "ceil(log p) (a + S b)",
    ("reduce", "chain"): "(p+k-2) (a + S/k b + S/k g)",
    ("reduce", "binomial"): "ceil(log p) (a + S b + S g)",
    ("alltoall", "pairwise"): "(p-1) a + (p-1)/p S b",
    ("alltoall", "bruck"): "ceil(log p) a + B/p S b  (B = set bits of 1..p-1, "
                           "about p log p / 2)",
    ("alltoall", "hierarchical"): "(G-1)(a + S/G b) + (N-1)(a' + S/N b')  "
                                  "(G ranks a group, N groups)",
}

_BUSBW = {"allreduce": lambda p: 2 * (p - 1) / p, "reduce_scatter": lambda p: (p - 1) / p,
          "allgather": lambda p: (p - 1) / p, "alltoall": lambda p: (p - 1) / p,
          "broadcast": lambda p: 1.0, "reduce": lambda p: 1.0, "sendrecv": lambda p: 1.0}


def busbw_factor(collective: str, nranks: int) -> float:
    """nccl-tests' bus bandwidth factor: ``busbw = algbw * factor``."""
    name = collective if collective in _BUSBW else resolve_collective(collective)
    return _BUSBW[name](nranks)


def default_nchunks(collective: str, algorithm: str, nranks: int, **options) -> int:
    """The ``nchunks`` that :func:`commsim.collectives.build` uses when given none."""
    return chunk_unit(collective, algorithm, nranks, **options)


def best_nchunks(collective: str, algorithm: str, nranks: int, nbytes: float, alpha: float,
                 beta: float, gamma: float = 0.0, max_chunks: int = 1 << 16,
                 min_chunk_bytes: float = 1.0, mode: str = "step", **options) -> int:
    """The chunk count that minimizes :func:`predict` in ``mode``.

    Searches ``unit * 2**i`` (``unit`` = :func:`chunk_unit`) while chunks stay at
    least ``min_chunk_bytes`` and the count at most ``max_chunks``: the pipeline depth
    of trees and chains, and in ``dataflow`` mode the pieces that rings and rhd cut
    their messages into (in step mode they gain nothing from more and keep their unit).
    """
    unit = chunk_unit(collective, algorithm, nranks, **options)
    name = resolve(collective, algorithm).name
    if name not in ("tree", "dbt", "chain", "nccl_tree") and not (mode == "dataflow"
                                                      and name in PIPELINED_IN_DATAFLOW):
        return unit
    best, best_t, k = unit, math.inf, unit
    while k <= max_chunks and nbytes / k >= min_chunk_bytes:
        t = predict(collective, algorithm, nranks, nbytes, alpha, beta, gamma, nchunks=k,
                    mode=mode, **options)
        if t < best_t:
            best, best_t = k, t
        k *= 2
    return best


def nchunks_for(setting, collective: str, algorithm: str, nranks: int, nbytes: float,
                alpha: float, beta: float, gamma: float = 0.0, mode: str = "step",
                **options) -> int | None:
    """The ``nchunks`` a ``--chunks`` setting asks for.

    ``None``: the builder's default; ``"auto"``: :func:`best_nchunks` for this size and
    execution ``mode``; a number ``K``: ``K`` times the algorithm's :func:`chunk_unit`
    (pipeline depth for trees and chains, pieces per message for rings and rhd).
    """
    if setting is None:
        return None
    if setting == "auto":
        return best_nchunks(collective, algorithm, nranks, nbytes, alpha, beta, gamma,
                            mode=mode, **options)
    return int(setting) * chunk_unit(collective, algorithm, nranks, **options)


def _check(nranks: int, nbytes: float, alpha: float, beta: float, gamma: float) -> None:
    if not isinstance(nranks, int) or nranks < 1:
        raise CommsimError(f"nranks: {nranks!r} must be a whole number >= 1")
    for name, value in (("size", nbytes), ("alpha", alpha), ("beta", beta), ("gamma", gamma)):
        if not value >= 0 or not math.isfinite(value):
            raise CommsimError(f"{name}: {value!r} must be a finite number >= 0")


def predict(collective: str, algorithm: str, nranks: int, nbytes: float, alpha: float,
            beta: float, gamma: float = 0.0, nchunks: int | None = None, *,
            group_size: int | None = None, alpha_inter: float | None = None,
            beta_inter: float | None = None, mode: str = "step", overlap: bool = True,
            message_overhead: float = 0.0, channels: int = 1, gpus_per_node: int | None = None,
            **_ignored) -> float:
    """Predicted time in seconds of ``algorithm`` for ``collective``.

    ``nbytes`` follows REFERENCE.md's size convention; ``alpha`` is seconds per
    message, ``beta`` seconds per byte (1 / link bandwidth), ``gamma`` seconds per
    byte reduced. ``nchunks`` is the schedule's (default: the builder's default).
    The hierarchical algorithm takes ``group_size`` and, for its inter-group phase,
    ``alpha_inter`` and ``beta_inter`` (default: ``alpha`` and ``beta``). Options
    that do not change the time (such as ``root``) are accepted and ignored.

    ``mode`` is the executors' (``step`` or ``dataflow``). In ``dataflow`` mode rings and
    rhd cut each step's message into ``m = nchunks / unit`` pieces and forward each piece
    once it is reduced (:func:`pipelined`; ``overlap=False`` when a rank's transfers and
    reductions share one core); with ``m = 1`` that is the step-mode time. Trees and
    chains are pipelined by their schedule in both modes: one formula.

    ``message_overhead`` (seconds) is what posting one message costs the executor: a
    piece streaming down a connection pays it (its latency overlaps the piece before);
    where every step sends one message it simply adds to alpha.

    ``channels`` and ``gpus_per_node`` (ring, nccl_tree) are the layout options of
    :mod:`commsim.collectives.layout`. A ring with ``c`` channels sends ``c`` messages
    of ``S/(p c)`` a step, ``S/p`` in all: on this flat view (every rank one link of
    ``1/beta``, channels sharing it) it costs what one ring does; in dataflow mode its
    ``nchunks / p`` pieces a step count those of every channel. ``nccl_tree`` charges
    every one of its ``2(H + k - 1)`` steps the busiest rank's messages of ``S/K`` bytes
    with all its trees busy (:func:`commsim.collectives.nccl_tree.busiest`): exact in
    a full pipeline, an upper bound for its fill and drain, like ``tree`` and ``dbt``.
    """
    _check(nranks, nbytes, alpha, beta, gamma)
    o = float(message_overhead)
    if not (math.isfinite(o) and o >= 0):
        raise CommsimError(f"message_overhead: {o!r} must be a finite number of seconds >= 0")
    if mode not in ("step", "dataflow"):
        raise CommsimError(f"mode: {mode!r} is not 'step' or 'dataflow'")
    algo = resolve(collective, algorithm)
    p, S, a, b, g = nranks, float(nbytes), alpha, beta, gamma
    layout = {}
    if algo.name in ("ring", "nccl_tree"):
        layout = dict(zip(("channels", "gpus_per_node"),
                          check_layout(p, channels, gpus_per_node)))
    if p == 1:
        return 0.0
    k = nchunks or default_nchunks(algo.collective, algo.name, p, **layout)
    key = (algo.collective, algo.name)
    if mode == "dataflow" and algo.name in PIPELINED_IN_DATAFLOW:
        m = k // chunk_unit(algo.collective, algo.name, p)
        return pipelined(step_bytes(algo.collective, algo.name, p, S), m, a, b, g, overlap, o)
    a += o
    if algo.name == "ring":
        steps = 2 * (p - 1) if algo.collective == "allreduce" else p - 1
        reduced = (p - 1) / p * S if algo.collective != "allgather" else 0.0
        return steps * (a + S / p * b) + reduced * g
    if algo.name == "rhd":
        return pipelined(step_bytes(algo.collective, "rhd", p, S), 1, a, b, g)
    if key == ("allreduce", "tree"):
        H = tree_height(p)
        fan = 2 if p >= 3 else 1
        steps = H + k - 1
        return 2 * steps * (a + fan * S / k * b) + steps * fan * S / k * g
    if key == ("allreduce", "dbt"):
        if k % 2:
            raise CommsimError(f"nchunks: dbt needs an even number, got {k}")
        half = k // 2
        H = tree_height(p)
        steps = H + half - 1
        per_step = S / half if p >= 3 else S / (2 * half)
        return 2 * steps * (a + per_step * b) + steps * per_step * g
    if key == ("allreduce", "nccl_tree"):
        unit = chunk_unit(algo.collective, algo.name, p, **layout)
        if k % unit:
            raise CommsimError(f"nchunks: nccl_tree needs a multiple of 2*channels={unit}, "
                               f"got {k}")
        steps = nccl_tree.height(p, layout["gpus_per_node"]) + k // unit - 1
        io, red = nccl_tree.busiest(p, layout["channels"], layout["gpus_per_node"])
        return 2 * steps * (a + io * S / k * b) + steps * red * S / k * g
    if key == ("allreduce", "hierarchical"):
        G, N, ai, bi = _groups(p, a, b, group_size, alpha_inter, beta_inter)
        return (2 * (G - 1) * (a + S / G * b) + (G - 1) / G * S * g
                + 2 * (N - 1) * (ai + S / (G * N) * bi) + (N - 1) / N * S / G * g)
    if algo.collective == "alltoall":
        return _alltoall(algo.name, p, S, a, b, group_size, alpha_inter, beta_inter)
    if algo.name == "chain":
        red = S / k * g if algo.collective == "reduce" else 0.0
        return (p + k - 2) * (a + S / k * b + red)
    if algo.name == "binomial":
        red = S * g if algo.collective == "reduce" else 0.0
        return math.ceil(math.log2(p)) * (a + S * b + red)
    raise CommsimError(f"no cost model for {algo.collective}/{algo.name}")


PIPELINED_IN_DATAFLOW = ("ring", "rhd")


def _groups(p: int, a: float, b: float, group_size: int | None, alpha_inter: float | None,
            beta_inter: float | None) -> tuple[int, int, float, float]:
    """A two-level algorithm's ``(G, N, a', b')``: ranks a group, groups, and the latency
    (s) and cost per byte (s) across groups (default: ``a`` and ``b``)."""
    G = group_size or default_group_size(p)
    if p % G:
        raise CommsimError(f"group_size: {G} does not divide nranks={p}; use a divisor")
    return (G, p // G, a if alpha_inter is None else alpha_inter,
            b if beta_inter is None else beta_inter)


def _alltoall(name: str, p: int, S: float, a: float, b: float, group_size: int | None,
              alpha_inter: float | None, beta_inter: float | None) -> float:
    """Seconds of an alltoall of ``S`` bytes a rank (blocks of ``S/p``), step mode."""
    if name == "pairwise":
        return (p - 1) * (a + S / p * b)
    if name == "bruck":
        return sum(a + c * S / p * b for c in bruck_counts(p))
    G, N, ai, bi = _groups(p, a, b, group_size, alpha_inter, beta_inter)
    return (G - 1) * (a + S / G * b) + (N - 1) * (ai + S / N * bi)


def step_bytes(collective: str, algorithm: str, p: int, S: float) -> list[tuple[float, bool]]:
    """``[(bytes, reduces), ...]``: per step of a ring or rhd schedule (natural chunking),
    the bytes the busiest rank sends and whether the receiver reduces them.

    rhd's core step ``i`` moves ``2**j`` owners' segments (``j = L-1-i`` halving, ``j = i``
    doubling), and the busiest rank's share holds ``min(2**j, rem)`` owners with a second
    (folded) segment each; allreduce folds the whole buffer of each extra rank in first
    and hands it back last.
    """
    name = resolve(collective, algorithm).name
    if name == "ring":
        rs, ag = [(S / p, True)] * (p - 1), [(S / p, False)] * (p - 1)
        return {"allreduce": rs + ag, "reduce_scatter": rs, "allgather": ag}[collective]
    if name != "rhd":
        raise CommsimError(f"no step list for {collective}/{algorithm}")
    pc, L = core_size(p), int(math.log2(core_size(p)))
    rem = p - pc
    if collective == "allreduce":
        halving = [(S / 2 ** (i + 1), True) for i in range(L)]
        doubling = [(S / 2 ** (L - i), False) for i in range(L)]
        return ([(S, True)] if rem else []) + halving + doubling + ([(S, False)] if rem else [])
    seg = S / p
    reduce = collective == "reduce_scatter"
    core = []
    for i in range(L):
        owners = 2 ** (L - 1 - i) if reduce else 2**i
        core.append(((owners + min(owners, rem)) * seg, reduce))
    if not rem:
        return core
    if reduce:  # fold the whole buffer in, hand one segment out
        return [(S, True)] + core + [(seg, False)]
    return [(seg, False)] + core + [((p - 1) * seg, False)]  # fold one in, hand all but one out


def pipelined(steps: list[tuple], m: int, a: float, b: float, g: float,
              overlap: bool = True, o: float = 0.0) -> float:
    """Seconds for steps of ``(bytes, reduces)`` run in dataflow mode in ``m`` pieces each
    (a step given as ``(bytes, reduces, a, b)`` has its own latency and cost per byte).

    A piece holds its link for ``X = o + (bytes/m) b`` (``o``: the executor's cost of
    posting a message) and arrives ``a`` later: pieces stream down a connection, their
    latencies overlapping, as in the simulator. It costs ``R = (bytes/m) g`` to reduce.
    The next step's first piece leaves once this step's first piece is reduced and the
    link has sent this step's pieces, so a step lasts ``max(a + X + R, m max(X, R))``;
    the last one ``a + X + R + (m-1) max(X, R)``. With ``m = 1`` every step costs ``a +
    o + bytes (b + g)``: step mode. ``overlap=False``: the rank's transfers and
    reductions share one core (as many ranks as cores on a host), so a piece's transfer
    and reduction never overlap: ``max(X, R)`` becomes ``X + R``.
    """
    t = 0.0
    for i, (nbytes, reduces, *own) in enumerate(steps):
        lat, per_byte = own if own else (a, b)
        X = o + nbytes / m * per_byte
        R = nbytes / m * g if reduces else 0.0
        gap = max(X, R) if overlap else X + R
        if i == len(steps) - 1:
            t += lat + X + R + (m - 1) * gap
        else:
            t += max(lat + X + R, m * gap)
    return t


def lower_bound(collective: str, nranks: int, nbytes: float, alpha: float,
                beta: float) -> float:
    """No algorithm on ranks with one link of ``1/beta`` bytes/s can be faster (seconds).

    Patarasuk and Yuan: the transfer term ``busbw_factor * S * beta`` (allreduce
    ``2(p-1)/p S beta``; reduce_scatter and allgather ``(p-1)/p S beta``; broadcast
    and reduce ``S beta``; alltoall ``(p-1)/p S beta``) plus ``ceil(log2 p)`` message
    latencies. The latency term holds for ranks that run one step at a time (the step
    semantics); the simulator's dataflow mode lets a rank forward before its step ends
    and can beat it there.
    """
    _check(nranks, nbytes, alpha, beta, 0.0)
    if nranks == 1:
        return 0.0
    return (math.ceil(math.log2(nranks)) * alpha
            + busbw_factor(collective, nranks) * nbytes * beta)


def alpha_beta(topology: nx.DiGraph, nranks: int, placement: list | None = None,
               ) -> tuple[float, float]:
    """The ``(alpha, beta)`` a flat alpha-beta model should assume on a topology.

    ``alpha`` is the largest path latency (seconds) from rank 0 to another rank;
    ``beta`` is ``1 / bandwidth`` (seconds per byte) of the narrowest link on the
    slowest of those paths. Ranks sit on ``placement`` (default: the topology's gpus
    in order). A rough flat view: hierarchical topologies are better simulated.
    """
    gpus = placement or gpu_nodes(topology)
    if len(gpus) < nranks:
        raise CommsimError(f"nranks: {nranks} ranks need {nranks} gpus; the topology "
                           f"{topology.graph.get('name', '')!r} has {len(gpus)}")
    if nranks == 1:
        out = [d["bandwidth"] for _, _, d in topology.out_edges(gpus[0], data=True)]
        return 0.0, 1.0 / max(out) if out else 0.0
    router = Router(topology, gpus[:nranks], routing="static")
    rid = router.route_ids(np.zeros(nranks - 1, dtype=np.int64), np.arange(1, nranks))
    return (float(router.route_latency[rid].max()),
            1.0 / float(router.route_bandwidth[rid].min()))
