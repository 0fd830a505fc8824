"""Rank placement: which gpu each rank runs on.

``place(G, nranks, how)`` returns the gpu node of every rank:

- ``linear`` (default): rank ``i`` on the ``i``-th gpu in the topology's order (node by
  node, so neighbouring ranks share a node or a switch);
- ``spread``: round-robin over the switches the gpus hang off, so consecutive ranks
  sit on different switches (a scattered placement, the usual what-if for contention);
- ``random`` or ``random:SEED``: a seeded random choice and order of gpus (seed 0 when
  none is given), the same on every run.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from commsim.errors import CommsimError, unknown
from commsim.topology import gpus as gpu_nodes

STRATEGIES = ("linear", "spread", "random")


def _attachment(G: nx.DiGraph, gpu):
    """The switch a gpu hangs off (else its first non-gpu neighbour, else itself)."""
    neighbours = [v for v in G.successors(gpu) if G.nodes[v].get("kind") != "gpu"]
    switches = [v for v in neighbours if G.nodes[v].get("kind") == "switch"]
    return (switches or neighbours or [gpu])[0]


def place(G: nx.DiGraph, nranks: int, how: str = "linear") -> list:
    """The gpu of each of ``nranks`` ranks, by strategy ``how`` (see the module doc)."""
    gpus = gpu_nodes(G)
    if nranks > len(gpus):
        raise CommsimError(f"nranks: {nranks} ranks need {nranks} gpus; topology "
                           f"{G.graph.get('name', '')!r} has {len(gpus)}; use fewer ranks "
                           "or a bigger topology")
    name, _, arg = str(how).partition(":")
    if name not in STRATEGIES:
        raise unknown("placement", name, STRATEGIES)
    if name == "linear":
        return gpus[:nranks]
    if name == "random":
        try:
            seed = int(arg) if arg else 0
        except ValueError:
            raise CommsimError(f"placement: {how!r}: the seed must be a whole number, "
                               "e.g. random:7") from None
        order = np.random.default_rng(seed).permutation(len(gpus))[:nranks]
        return [gpus[i] for i in order]
    groups: dict = {}
    for g in gpus:
        groups.setdefault(_attachment(G, g), []).append(g)
    columns = list(groups.values())
    out = [col[i] for i in range(max(map(len, columns))) for col in columns if i < len(col)]
    return out[:nranks]
