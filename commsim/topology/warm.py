"""Calls whose data stays in the host's cache: a profile's warm rates.

A benchmark calls a collective on the same buffers again and again. Where what the
host's ranks touch in a call fits in the cache their cores share, the next call's copies
and adds read the cache, not memory: on the 2-core development machine (8 MiB of L3) two
ranks added 1 MiB warm at about 20 GB/s and cold at 4 GB/s, and their ring shift moved
2 MiB at 5.2 GB/s where 8 MiB and more moved at 3.8 GB/s. A profile (``commsim
calibrate``) says so in three model parameters:

- ``cache_bytes``: the cache the host's ranks share (a CPU's last-level caches over the
  cores they may run on; a GPU's L2, once per rank);
- ``warm_link_speedup``: how much faster the ring shift ran, at the sizes whose send and
  receive buffers fit in that cache, than the line fitted to the other sizes says (at
  least 1);
- ``warm_reduce_bandwidth``: an in-place add on the same two buffers again and again, at
  the sizes where they fit (``warm_gamma``, seconds a byte).

The rule (:func:`hit_fraction`): a call of ``nbytes`` (one rank's buffer, as ``bench``
sizes it) touches :data:`CALL_BUFFERS` times that on each rank in place, and one buffer
more out of place (its input apart from its result: :func:`call_buffers`); of that working set on
its busiest host, the share ``h = min(1, cache_bytes / working set)`` is found in the
cache. Its predictions use :func:`for_call`'s view of the profile: each host's shared
capacity (the link the ring shift sets) takes ``h / warm_link_speedup + (1 - h)`` of its
cold time a byte (a pair's own links keep theirs: one pair alone, the ping-pong, moved
2 MiB no faster than 64 MiB; nor does a cache speed a wire between hosts), and
``gamma`` is ``h * warm_gamma + (1 - h) * gamma``. A share rather than a cliff is an
assumption: that a cache keeps part of a working set larger than itself
(docs/calibrate.md). Topologies without these parameters are never warm.
"""

from __future__ import annotations

import math
import weakref

import networkx as nx

from commsim.topology import model_parameter

CAPACITY_CLASS = "host_capacity"  # a profile's link of a host's shared capacity
CALL_BUFFERS = 4  # a rank's buffer, what it receives, and as much again (the transport's
# copies, scratch); chosen on the 2-core machine, where 2 buffers priced allreduces of
# 2 MiB at 2 ranks all warm and far below what they measured (docs/calibrate.md)
OUT_OF_PLACE_BUFFERS = CALL_BUFFERS + 1  # the input, read apart from the result
HIT_STEPS = 64  # views are made for hit fractions rounded to 1/64

_VIEWS: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def working_set(nbytes: int, ranks_per_host: int, buffers: int = CALL_BUFFERS) -> int:
    """Bytes that ``ranks_per_host`` ranks touch in one call, ``buffers`` of ``nbytes``
    each."""
    return int(buffers) * int(nbytes) * int(ranks_per_host)


def call_buffers(out_of_place: bool = False) -> int:
    """Buffers of a call's size that one rank touches: :data:`CALL_BUFFERS` in place,
    :data:`OUT_OF_PLACE_BUFFERS` out of place."""
    return OUT_OF_PLACE_BUFFERS if out_of_place else CALL_BUFFERS


def ranks_per_host(profile: dict | None, nranks: int) -> int:
    """The most ranks one host holds when ``nranks`` are spread over the hosts of a
    profile's ``profile`` block (one host without one)."""
    hosts = len((profile or {}).get("hosts") or []) or 1
    return max(1, math.ceil(nranks / hosts))


def hit_fraction(G: nx.DiGraph | None, nbytes: int, nranks: int,
                 buffers: int = CALL_BUFFERS) -> float:
    """The share of a call's working set (``buffers`` of ``nbytes`` a rank:
    :func:`call_buffers`) found in the cache (the rule above), rounded to
    1/:data:`HIT_STEPS`: 0 for a topology without ``cache_bytes`` or warm rates."""
    cache = model_parameter(G, "cache_bytes")
    if not cache or not has_warm_rates(G) or nbytes <= 0:
        return 0.0
    share = min(1.0, cache / working_set(nbytes, ranks_per_host(G.graph.get("profile"),
                                                                 nranks), buffers))
    return round(share * HIT_STEPS) / HIT_STEPS


def has_warm_rates(G: nx.DiGraph | None) -> bool:
    """Does the profile measure anything faster for warm calls?"""
    return (float(model_parameter(G, "warm_link_speedup", 1.0)) > 1.0
            or model_parameter(G, "warm_gamma") is not None)


def for_call(G: nx.DiGraph | None, nbytes: int, nranks: int,
             buffers: int = CALL_BUFFERS) -> nx.DiGraph | None:
    """The topology to predict a call of ``nbytes`` a rank on: :func:`warm_view` of ``G``
    at the call's :func:`hit_fraction`, or ``G`` itself where that is 0."""
    share = hit_fraction(G, nbytes, nranks, buffers)
    return warm_view(G, share) if share > 0 else G


def call(G: nx.DiGraph | None, nbytes: int, nranks: int, gamma: float,
         buffers: int = CALL_BUFFERS) -> tuple:
    """``(topology, gamma)`` for a call of ``nbytes`` a rank: :func:`for_call`'s view,
    and ``gamma`` (s/byte, the profile's cold rate) or, on a warm view, the view's."""
    view = for_call(G, nbytes, nranks, buffers)
    return view, gamma if view is G else float(model_parameter(view, "gamma", gamma))


def mixed_gamma(share: float, cold: float, hot: float) -> float:
    """Seconds a byte reduced when ``share`` of a call's data is in the cache: ``share``
    of the way from the ``cold`` rate to the ``hot`` one (both s/byte)."""
    return share * hot + (1.0 - share) * cold


def call_gamma(cold: float, share: float = 0.0, hot: float | None = None,
               apart_share: float = 0.0, apart: float | None = None) -> float:
    """Seconds a byte a call reduces at: ``apart_share`` of its reductions written apart
    from their operands at ``apart`` and the rest at ``cold`` (an out-of-place call of
    commsim's executor, :func:`commsim.backends.plan.apart_share`), then ``share`` of
    the way to ``hot`` for the share of its data in the cache. All rates s/byte; a rate
    that is None is not measured and leaves the rate as it is."""
    if apart_share and apart is not None:
        cold = mixed_gamma(apart_share, cold, apart)
    return mixed_gamma(share, cold, hot) if share and hot is not None else cold


def warm_view(G: nx.DiGraph, share: float = 1.0) -> nx.DiGraph:
    """A copy of profile ``G`` for calls of which ``share`` is in the cache: each host's
    shared capacity (links of class :data:`CAPACITY_CLASS`) taking ``share /
    warm_link_speedup + 1 - share`` of its time a byte, and the model's ``gamma``
    ``share`` of the way to ``warm_gamma``. Made once per ``G`` and share."""
    views = _VIEWS.setdefault(G, {})
    if share in views:
        return views[share]
    speedup = float(model_parameter(G, "warm_link_speedup", 1.0))
    slower = share / speedup + 1.0 - share
    view = G.copy()   # its own graph, node and edge attribute dicts
    for _, _, data in view.edges(data=True):
        if data.get("class") == CAPACITY_CLASS:
            data["bandwidth"] = data["bandwidth"] / slower
    model = dict(G.graph.get("model") or {})
    cold, hot = model.get("gamma"), model.get("warm_gamma")
    if cold is not None and hot is not None:
        model["gamma"] = mixed_gamma(share, cold, hot)
    view.graph["model"] = model
    view.graph["warm"] = share
    views[share] = view
    return view
