"""Effective link rates: the one place where a link's efficiency becomes its bandwidth.

A link's ``efficiency`` is the fraction of its line rate that collectives reach on that
hardware (NCCL's protocol overhead, the 128-byte NVLink payloads of SM copies, InfiniBand
headers): a number in (0, 1], 1 meaning line rate. The graph keeps three attributes on
such a link:

- ``bandwidth`` (bytes/s): line rate x efficiency, the rate routing, the simulator and the
  model use, so they see effective rates without knowing about efficiencies;
- ``line_rate`` (bytes/s): the vendor's rate of the link;
- ``efficiency``: the fraction.

A link at line rate (efficiency 1, the default) carries only ``bandwidth``, like any
graph made by hand; :func:`line_rate` and :func:`efficiency` read both kinds.
``topology.load(name, ideal=True)`` ignores every efficiency (bandwidth = line rate), by
dropping the ``efficiency`` of YAML links and the efficiency parameters of builders
(:func:`is_efficiency_param`) before the graph is made.
"""

from __future__ import annotations

import math
from collections import defaultdict

import networkx as nx

from commsim.errors import CommsimError

__all__ = ["efficiency", "is_efficiency_param", "line_rate", "link", "link_classes",
           "parse_efficiency"]

HINT = "the fraction of line rate collectives reach, e.g. 0.8; 1 is line rate"


def parse_efficiency(value, field: str = "efficiency") -> float:
    """An efficiency as a float in (0, 1]; a one-line CommsimError naming ``field``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise CommsimError(f"{field}: {value!r} is not a number; write a number in (0, 1], "
                           f"{HINT}")
    value = float(value)
    if not math.isfinite(value) or not 0 < value <= 1:
        raise CommsimError(f"{field}: {value!r} must be in (0, 1], {HINT}")
    return value


def is_efficiency_param(name: str) -> bool:
    """True for a builder parameter that is an efficiency (``efficiency``, ``*_efficiency``)."""
    return name == "efficiency" or name.endswith("_efficiency")


def link(rate: float, latency: float, eff: float = 1.0, cls: str | None = None) -> dict:
    """The attributes of one directed link of line rate ``rate`` (bytes/s), ``latency`` (s)
    and efficiency ``eff``: ``bandwidth`` = rate x eff, plus ``line_rate`` and
    ``efficiency`` when ``eff`` is below 1, and ``class`` when ``cls`` is given."""
    attr = {"bandwidth": rate, "latency": latency} if eff == 1 else \
        {"bandwidth": rate * eff, "latency": latency, "line_rate": rate, "efficiency": eff}
    if cls is not None:
        attr["class"] = cls
    return attr


def line_rate(attr: dict) -> float:
    """A link's line rate in bytes/s (its ``bandwidth`` when it has no efficiency)."""
    return attr.get("line_rate", attr["bandwidth"])


def efficiency(attr: dict) -> float:
    """A link's efficiency (1.0 when it has none)."""
    return attr.get("efficiency", 1.0)


def _end(G: nx.DiGraph, n) -> tuple:
    """A node's place in a link class: its kind, and its level for switches that have one."""
    kind = G.nodes[n].get("kind")
    level = G.nodes[n].get("level") if kind == "switch" else None
    return kind, level


_ORDER = {"gpu": 0, "nic": 1, "host": 2, "switch": 3}


def _label(end: tuple) -> str:
    kind, level = end
    return kind if level is None else f"{kind}(L{level})"


def link_classes(G: nx.DiGraph) -> list[dict]:
    """Links grouped by class, either direction, and by line rate and efficiency. A link's
    class is its ``class`` attribute (builders set one: ``nvlink``, ``nic`` ...), else the
    kinds (and switch levels) of its two ends (``gpu-switch(L1)``).

    One dict a class, fastest line rate first: ``link_class``,
    ``links`` (directed links), ``line_rate`` and ``bandwidth`` (bytes/s, effective) and
    ``efficiency``.
    """
    groups: dict[tuple, int] = defaultdict(int)
    ends = {n: _end(G, n) for n in G}
    for u, v, attr in G.edges(data=True):
        cls = attr.get("class")
        if not cls:
            a, b = sorted((ends[u], ends[v]), key=lambda e: (_ORDER.get(e[0], 9), str(e[1])))
            cls = f"{_label(a)}-{_label(b)}"
        groups[(str(cls), line_rate(attr), efficiency(attr), attr["bandwidth"])] += 1
    rows = [{"link_class": cls, "links": n, "line_rate": rate, "efficiency": eff,
             "bandwidth": bw} for (cls, rate, eff, bw), n in groups.items()]
    return sorted(rows, key=lambda r: (-r["line_rate"], r["link_class"]))
