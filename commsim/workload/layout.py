"""Parallel layouts: which global rank does which part of the work, and on which gpu.

A :class:`Layout` cuts ``world = tp * cp * pp * dp`` ranks into a grid of five
coordinates, Megatron-style. Expert parallelism is carved out of data parallelism
(``ep`` divides ``dp``): the dense data-parallel index is split into an ``ep`` part
and an ``edp = dp / ep`` part. ``order`` names the five grid tokens from the fastest
varying to the slowest; its token ``ep`` is the ep-sized part and its token ``dp`` the
remaining ``dp / ep`` part. Megatron's default ``tp-cp-ep-dp-pp`` makes a TP group
consecutive ranks (inside one node) and strides DP groups across nodes::

    rank = sum(coord[token] * stride[token]),  stride = product of the earlier sizes

Group dimensions (:data:`DIMS`): ``tp``, ``cp``, ``pp``, ``ep`` (one grid token each),
``edp`` (the expert-data-parallel ranks that reduce expert gradients: the ``dp`` token),
``dp`` (the whole dense data-parallel group: ``ep`` and ``edp`` together). A group of a
dimension holds the ranks that share every other coordinate. Dimensions combine with
``-``: ``dp-cp`` is Megatron's data-parallel group with context parallelism (the ranks
that hold the same parameters when ``cp > 1``).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import networkx as nx

from commsim.errors import CommsimError, unknown

TOKENS = ("tp", "cp", "ep", "dp", "pp")
DEFAULT_ORDER = "tp-cp-ep-dp-pp"
DIMS = ("tp", "cp", "pp", "dp", "ep", "edp")
# the grid tokens each group dimension varies
_VARIES = {"tp": ("tp",), "cp": ("cp",), "pp": ("pp",), "ep": ("ep",), "edp": ("dp",),
           "dp": ("ep", "dp")}


def _degree(name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CommsimError(f"layout.{name}: {value!r} must be a whole number >= 1 "
                           f"(1 = no {name.upper()} parallelism)")
    return value


def parse_order(order: str) -> tuple[str, ...]:
    """The tokens of ``order`` (``"tp-cp-ep-dp-pp"``), fastest first; validated."""
    if not isinstance(order, str):
        raise CommsimError(f"layout.order: {order!r} must be a string like {DEFAULT_ORDER!r}")
    tokens = tuple(t.strip().lower() for t in order.split("-"))
    for t in tokens:
        if t not in TOKENS:
            err = unknown("layout.order token", t, TOKENS)
            raise CommsimError(f"{err}; write the five tokens joined by '-', e.g. "
                               f"{DEFAULT_ORDER}")
    if sorted(tokens) != sorted(TOKENS):
        missing = [t for t in TOKENS if t not in tokens]
        twice = sorted({t for t in tokens if tokens.count(t) > 1})
        what = (f"repeats {', '.join(twice)}" if twice else "") + \
            ("; " if twice and missing else "") + \
            (f"lacks {', '.join(missing)}" if missing else "")
        raise CommsimError(f"layout.order: {order!r} {what}; name each of "
                           f"{', '.join(TOKENS)} once, e.g. {DEFAULT_ORDER}")
    return tokens


@dataclass(frozen=True)
class Layout:
    """Degrees of tensor (``tp``), context (``cp``), pipeline (``pp``), data (``dp``) and
    expert (``ep``, a divisor of ``dp``) parallelism, and the rank ``order`` (fastest
    varying token first). ``world = tp * cp * pp * dp`` ranks."""

    tp: int = 1
    cp: int = 1
    pp: int = 1
    dp: int = 1
    ep: int = 1
    order: str = DEFAULT_ORDER
    _tokens: tuple = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        for name in ("tp", "cp", "pp", "dp", "ep"):
            _degree(name, getattr(self, name))
        if self.dp % self.ep:
            raise CommsimError(f"layout.ep: {self.ep} does not divide dp={self.dp}; expert "
                               "parallelism is carved out of data parallelism, so choose an "
                               "ep that divides dp")
        tokens = parse_order(self.order)
        object.__setattr__(self, "_tokens", tokens)
        object.__setattr__(self, "order", "-".join(tokens))  # canonical: lower case

    # -- sizes ---------------------------------------------------------------------------

    @property
    def world(self) -> int:
        """Ranks in all: ``tp * cp * pp * dp``."""
        return self.tp * self.cp * self.pp * self.dp

    @property
    def edp(self) -> int:
        """Ranks of an expert-data-parallel group: ``dp / ep``."""
        return self.dp // self.ep

    def token_size(self, token: str) -> int:
        """The extent of a grid token (the ``dp`` token is ``dp / ep`` long)."""
        return self.edp if token == "dp" else getattr(self, token)

    @cached_property
    def strides(self) -> dict[str, int]:
        """Rank stride of each grid token: the product of the sizes of the tokens before."""
        out, stride = {}, 1
        for t in self._tokens:
            out[t] = stride
            stride *= self.token_size(t)
        return out

    def size(self, dim: str) -> int:
        """Ranks in one group of ``dim`` (a :data:`DIMS` entry or a ``-`` combination)."""
        n = 1
        for t in _tokens_of(dim):
            n *= self.token_size(t)
        return n

    # -- coordinates and groups ----------------------------------------------------------

    def coords(self, rank: int) -> dict[str, int]:
        """The coordinates of ``rank``: ``tp``, ``cp``, ``pp``, ``ep``, ``edp`` (the
        ``dp`` token) and ``dp``, the dense data-parallel index (``ep`` and ``edp``
        combined in rank order, 0 .. dp-1)."""
        if isinstance(rank, bool) or not isinstance(rank, int) or not 0 <= rank < self.world:
            raise CommsimError(f"rank: {rank!r} must be a whole number in 0..{self.world - 1}")
        c = {t: (rank // self.strides[t]) % self.token_size(t) for t in TOKENS}
        if self.strides["ep"] < self.strides["dp"]:
            dense = c["ep"] + self.ep * c["dp"]
        else:
            dense = c["dp"] + self.edp * c["ep"]
        return {"tp": c["tp"], "cp": c["cp"], "pp": c["pp"], "ep": c["ep"], "edp": c["dp"],
                "dp": dense}

    def groups(self, dim: str) -> list[list[int]]:
        """Every group of ``dim`` as a list of global ranks in increasing coordinate order
        (which is increasing rank order); groups sorted by their first rank. Each rank is
        in exactly one group of each dimension."""
        varies = _tokens_of(dim)
        fixed = [t for t in TOKENS if t not in varies]
        offsets = [0]
        for t in varies:
            offsets = [o + i * self.strides[t] for i in range(self.token_size(t)) for o in offsets]
        offsets.sort()
        bases = [0]
        for t in fixed:
            bases = [b + i * self.strides[t] for i in range(self.token_size(t)) for b in bases]
        bases.sort()
        return [[b + o for o in offsets] for b in bases]

    def describe(self) -> str:
        """``tp 8 x cp 1 x pp 4 x dp 16 (ep 1) = 512 ranks, order tp-cp-ep-dp-pp``."""
        return (f"tp {self.tp} x cp {self.cp} x pp {self.pp} x dp {self.dp} (ep {self.ep}) "
                f"= {self.world} ranks, order {'-'.join(self._tokens)}")

    def as_dict(self) -> dict:
        return {"tp": self.tp, "cp": self.cp, "pp": self.pp, "dp": self.dp, "ep": self.ep,
                "order": "-".join(self._tokens), "world": self.world}


def _tokens_of(dim: str) -> tuple[str, ...]:
    """The grid tokens a group dimension (or a ``-`` combination) varies."""
    out: list[str] = []
    for part in str(dim).lower().split("-"):
        if part not in _VARIES:
            raise unknown("layout dimension", part, DIMS)
        out.extend(t for t in _VARIES[part] if t not in out)
    return tuple(out)


def place_layout(G: nx.DiGraph, layout: Layout, how: str = "linear") -> list:
    """The gpu node of every global rank of ``layout`` (rank ``r`` on ``out[r]``), placed
    by :func:`commsim.topology.placement.place` (``linear``, ``spread``, ``random[:SEED]``)."""
    from commsim.topology import gpus
    from commsim.topology.placement import place

    have = len(gpus(G))
    if layout.world > have:
        raise CommsimError(f"layout: {layout.world} ranks (tp {layout.tp} x cp {layout.cp} "
                           f"x pp {layout.pp} x dp {layout.dp}) need {layout.world} gpus; "
                           f"topology {G.graph.get('name', '')!r} has {have}; lower a degree "
                           "(dp first) or use a bigger topology")
    return place(G, layout.world, how)


def link_class(G: nx.DiGraph, u, v) -> str:
    """A link's class: the edge's ``class`` attribute, else the kinds of its ends
    (``gpu->switch``), as :meth:`commsim.sim.SimResult.link_class` names it."""
    attrs = G.edges[u, v]
    if attrs.get("class"):
        return str(attrs["class"])
    return f"{G.nodes[u].get('kind', '?')}->{G.nodes[v].get('kind', '?')}"


def group_links(G: nx.DiGraph, placement, groups: list[list[int]], router=None,
                routing: str = "ecmp", ring: bool = True) -> dict[str, int]:
    """The classes of link the traffic of ``groups`` crosses: ``{class: distinct directed
    links}``, classes in the order routes first meet them.

    Cheap: one route per ordered neighbour pair in ring order (rank ``i`` of a group to
    rank ``i+1``, the last back to the first; ``ring=False``: a chain, without the way
    back, as PP stages send), enough to tell "nvlink only" from "crosses the NICs and
    spines". ``placement[r]`` is global rank ``r``'s gpu; ``router`` a
    :class:`commsim.topology.routing.Router` over that placement (built from ``routing``
    when absent). Single-rank groups send nothing.
    """
    import numpy as np

    from commsim.topology.routing import Router

    src, dst = [], []
    for g in groups:
        if len(g) > 1:
            src.extend(g if ring else g[:-1])
            dst.extend(g[1:] + g[:1] if ring else g[1:])
    if not src:
        return {}
    if router is None:
        router = Router(G, placement, routing)
    rids = router.route_ids(np.asarray(src, dtype=np.int64), np.asarray(dst, dtype=np.int64))
    seen: dict[int, None] = {}
    for rid in dict.fromkeys(rids.tolist()):
        for e in router.route_edges[router.route_ptr[rid]:router.route_ptr[rid + 1]].tolist():
            seen.setdefault(e, None)
    out: dict[str, int] = {}
    for e in seen:
        cls = link_class(G, *router.links[e])
        out[cls] = out.get(cls, 0) + 1
    return out
