"""Collective algorithms as schedule builders, and the registry of them.

Every algorithm is a pure function ``(nranks, nchunks, **options) -> Schedule``; this
module maps ``(collective, algorithm)`` names to them::

    from commsim import collectives
    collectives.available()                       # [("allreduce", "ring"), ...]
    s = collectives.build("allreduce", "ring", 8)  # a validated-by-tests Schedule
    collectives.build("allreduce", "ring", 32, channels=8, gpus_per_node=8)  # rail-aligned
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from commsim.collectives import alltoall, chain, hierarchical, layout, nccl_tree, rhd, ring, tree
from commsim.collectives.layout import auto_options
from commsim.collectives.schedule import (
    COLLECTIVES,
    Schedule,
    ScheduleBuilder,
    ScheduleError,
    Transfer,
)
from commsim.errors import CommsimError, unknown

__all__ = ["COLLECTIVES", "Algorithm", "Schedule", "ScheduleBuilder", "ScheduleError",
           "Transfer", "algorithms", "auto_options", "available", "build", "chunk_unit",
           "in_flight", "resolve"]


@dataclass(frozen=True)
class Algorithm:
    """A registered algorithm: its builder, the options it takes, and a one-line summary."""

    collective: str
    name: str
    builder: Callable[..., Schedule]
    summary: str
    options: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()


_REGISTRY: dict[tuple[str, str], Algorithm] = {}


def _register(*algos: Algorithm) -> None:
    for a in algos:
        _REGISTRY[(a.collective, a.name)] = a


_LAYOUT = ("channels", "gpus_per_node")
_RING_LAYOUT = _LAYOUT + ("pxn",)

_register(
    Algorithm("reduce_scatter", "ring", ring.reduce_scatter,
              "ring: p-1 steps, each rank sends (p-1)/p of the buffer", options=_RING_LAYOUT),
    Algorithm("reduce_scatter", "rhd", rhd.reduce_scatter,
              "recursive halving: log p steps of halving messages (fold for non-powers of 2)",
              aliases=("recursive_halving", "halving")),
    Algorithm("allgather", "ring", ring.allgather,
              "ring: p-1 steps, each rank sends (p-1)/p of the gathered buffer",
              options=_RING_LAYOUT),
    Algorithm("allgather", "rhd", rhd.allgather,
              "recursive doubling: log p steps of doubling messages (fold for non-powers of 2)",
              aliases=("recursive_doubling", "doubling")),
    Algorithm("allreduce", "ring", ring.allreduce,
              "ring reduce-scatter then ring allgather: 2(p-1) steps; channels: rail-aligned "
              "rings", options=_RING_LAYOUT),
    Algorithm("allreduce", "tree", tree.allreduce_tree,
              "binary tree: pipelined reduce to the root, then pipelined broadcast",
              aliases=("binary_tree", "btree")),
    Algorithm("allreduce", "dbt", tree.allreduce_double_tree,
              "double binary tree (NCCL-style): two complementary trees, half the data each",
              aliases=("double_binary_tree", "double_tree")),
    Algorithm("allreduce", "nccl_tree", nccl_tree.allreduce,
              "NCCL's Tree: a chain in each node, a double binary tree across nodes, pipelined",
              options=_LAYOUT, aliases=("nccltree",)),
    Algorithm("allreduce", "rhd", rhd.allreduce,
              "recursive halving-doubling (Rabenseifner), with a fold for non-powers of 2",
              aliases=("rabenseifner", "halving_doubling")),
    Algorithm("allreduce", "hierarchical", hierarchical.allreduce,
              "2-level: ring reduce-scatter in groups, ring allreduce across, ring allgather",
              options=("group_size",), aliases=("hier", "2level")),
    Algorithm("broadcast", "chain", chain.broadcast,
              "pipelined chain from the root", options=("root",), aliases=("pipeline",)),
    Algorithm("broadcast", "binomial", tree.broadcast_binomial,
              "binomial tree: ceil(log p) rounds of the whole buffer", options=("root",)),
    Algorithm("reduce", "chain", chain.reduce,
              "pipelined chain into the root", options=("root",), aliases=("pipeline",)),
    Algorithm("reduce", "binomial", tree.reduce_binomial,
              "binomial tree: ceil(log p) rounds of the whole buffer", options=("root",)),
    Algorithm("alltoall", "pairwise", alltoall.pairwise,
              "pairwise exchange: p-1 steps, one block to one peer each",
              aliases=("direct", "linear")),
    Algorithm("alltoall", "bruck", alltoall.bruck,
              "Bruck: ceil(log p) steps of about half the buffer (small messages)"),
    Algorithm("alltoall", "hierarchical", alltoall.hierarchical,
              "2-level: pairwise in groups, then pairwise across groups (same local rank)",
              options=("group_size",), aliases=("hier", "2level")),
)


def available() -> list[tuple[str, str]]:
    """Every registered ``(collective, algorithm)`` pair."""
    return sorted(_REGISTRY, key=lambda ca: (COLLECTIVES.index(ca[0]), ca[1]))


def algorithms(collective: str | None = None) -> list[Algorithm]:
    """The registered algorithms, of one collective or of all."""
    if collective is not None:
        collective = resolve_collective(collective)
    return [_REGISTRY[k] for k in available() if collective in (None, k[0])]


def resolve_collective(collective: str) -> str:
    """The canonical collective name (``all-reduce`` and ``allReduce`` work too)."""
    name = str(collective).lower().replace("-", "_")
    name = {"allreduce": "allreduce", "all_reduce": "allreduce",
            "all_gather": "allgather", "reducescatter": "reduce_scatter",
            "bcast": "broadcast", "all_to_all": "alltoall"}.get(name, name)
    if name not in COLLECTIVES:
        raise unknown("collective", collective, COLLECTIVES)
    return name


def resolve(collective: str, algorithm: str) -> Algorithm:
    """The registered algorithm for a name or alias, or a CommsimError with suggestions."""
    collective = resolve_collective(collective)
    name = str(algorithm).lower().replace("-", "_")
    for (coll, algo), entry in _REGISTRY.items():
        if coll == collective and (name == algo or name in entry.aliases):
            return entry
    names = [a for c, a in _REGISTRY if c == collective]
    raise unknown(f"{collective} algorithm", algorithm, names)


def build(collective: str, algorithm: str, nranks: int, nchunks: int | None = None,
          **options) -> Schedule:
    """The schedule of ``algorithm`` for ``collective`` on ``nranks`` ranks.

    ``nchunks`` defaults to the algorithm's natural chunking (``nranks`` for rings, the
    power-of-two core for recursive algorithms, 1 for trees and chains, which are then
    not pipelined). ``options`` are the algorithm's own (``root``, ``group_size``,
    ``channels``, ``gpus_per_node``; see :mod:`commsim.collectives.layout`).
    """
    entry = resolve(collective, algorithm)
    unknown_opts = set(options) - set(entry.options)
    if unknown_opts:
        opt = sorted(unknown_opts)[0]
        raise unknown(f"option for {entry.collective}/{entry.name}", opt,
                      entry.options or ["(none)"])
    if not isinstance(nranks, int) or isinstance(nranks, bool) or nranks < 1:
        raise CommsimError(f"nranks: {nranks!r} must be a whole number >= 1")
    if nchunks is not None and (not isinstance(nchunks, int) or nchunks < 1):
        raise CommsimError(f"nchunks: {nchunks!r} must be a whole number >= 1")
    try:
        return entry.builder(nranks, nchunks, **options)
    except ScheduleError:
        raise
    except ValueError as exc:
        raise CommsimError(f"{entry.collective}/{entry.name}: {exc}") from None


def chunk_unit(collective: str, algorithm: str, nranks: int, **options) -> int:
    """The builder's default ``nchunks``, which every ``nchunks`` must be a multiple of.

    ``nranks`` for rings (``nranks * channels`` with channels) and ``hierarchical``, the
    power-of-two core ``p'`` for rhd allreduce and ``nranks`` for rhd reduce-scatter and
    allgather, 2 for ``dbt`` (one chunk per tree), ``2 * channels`` for ``nccl_tree``
    (two trees a channel), 1 for trees and chains, ``nranks**2`` for alltoall (one
    chunk a block of every rank's buffer). ``nchunks / unit`` is the pipeline
    depth: the pieces each message of the natural schedule is cut into. ``options`` are
    the algorithm's (``channels``; others, such as ``root``, do not change the unit).
    """
    entry = resolve(collective, algorithm)
    if entry.collective == "alltoall":
        return nranks * nranks
    if entry.name in layout.LAYOUT_ALGORITHMS:
        c, _ = layout.check(nranks, options.get("channels"), options.get("gpus_per_node"))
        return nranks * c if entry.name == "ring" else 2 * c
    if entry.name == "hierarchical":
        return nranks
    if entry.name == "rhd":
        return rhd.core_size(nranks) if entry.collective == "allreduce" else nranks
    return 2 if entry.name == "dbt" else 1


def in_flight(schedule: Schedule, k: int) -> Schedule:
    """``schedule`` with the pieces of every message dealt in turn over ``k`` connections
    between each pair of ranks: piece ``i`` (of the ``nchunks / unit`` pieces a message
    is cut into, :func:`chunk_unit`) on connection ``i mod k``, as gloo's ring keeps two
    segments in flight, each on a buffer of its own. The connections queue apart, so one
    piece's posting overlaps another's bytes (:meth:`Schedule.connection_keys`). A
    schedule that already names connections (channels) keeps them, ``k`` slots each."""
    if k < 1 or int(k) != k:
        raise CommsimError(f"in_flight: {k!r} must be a whole number of connections >= 1")
    m = schedule.nchunks // chunk_unit(schedule.collective, schedule.algorithm,
                                       schedule.nranks, **(schedule.options or {}))
    if k == 1 or m < 2:
        return schedule
    chunk = np.arange(schedule.nchunks, dtype=np.int64)
    base = (np.zeros(schedule.nchunks, dtype=np.int64) if schedule.connection is None
            else np.asarray(schedule.connection, dtype=np.int64))
    return dataclasses.replace(schedule, connection=base * k + (chunk % m) % k)
