"""Node layout options of the NCCL-style algorithms: checking them, and filling them in.

``ring`` and ``nccl_tree`` take two layout options:

- ``channels`` (``c >= 1``): the buffer is cut into ``c`` parts, each carried by its own
  ring (or pair of trees) at the same time, as NCCL's channels are;
- ``gpus_per_node`` (``g``, default None: no node structure): ranks are numbered node
  by node, node ``n`` holding ranks ``n*g .. n*g+g-1``; local rank ``l`` of a node is the
  gpu that sits on NIC (rail) ``l``, as on rail-optimized DGX fabrics.

:func:`auto_options` is the rule the verbs apply when a topology is known; the
builders themselves stay pure functions of their options.
"""

from __future__ import annotations

from commsim.errors import CommsimError

LAYOUT_ALGORITHMS = ("ring", "nccl_tree")


def _whole(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check(nranks: int, channels=1, gpus_per_node=None) -> tuple[int, int | None]:
    """``(channels, gpus_per_node)`` validated; a one-line CommsimError naming the fix."""
    c = 1 if channels is None else channels
    if not _whole(c) or c < 1:
        raise CommsimError(f"channels: {channels!r} must be a whole number >= 1 "
                           "(1 = one ring; NCCL uses about one a NIC)")
    g = gpus_per_node
    if g is None:
        return c, None
    if not _whole(g) or g < 1:
        raise CommsimError(f"gpus_per_node: {g!r} must be a whole number >= 1, or leave it "
                           "out for ranks without a node structure")
    if nranks % g:
        raise CommsimError(f"gpus_per_node: {g} does not divide nranks={nranks}; use whole "
                           "nodes (a divisor of nranks) or leave gpus_per_node out")
    return c, g


def auto_options(G, nranks: int, algorithm: str) -> dict:
    """The layout options ``auto`` fills in for ``algorithm`` on topology ``G``.

    The rule: for ``ring`` and ``nccl_tree`` on a node-structured topology (one whose
    ``G.graph["params"]["gpus_per_node"]`` is set, as :func:`dgx_cluster` sets it) that
    ``nranks`` fills with whole nodes, ``gpus_per_node`` is that count and ``channels``
    is the number of NICs (rails) of one node (the ``nic`` nodes whose ``node``
    attribute is the first gpu's node), or ``gpus_per_node`` when the topology names no
    NICs per node; ``ring`` on a topology built with PXN also gets ``pxn=True`` (the
    rail-strict layout). Anything else (other algorithms, flat topologies, a partial
    node): ``{}``. It assumes the default placement, the topology's gpus in order (node by
    node); a different placement should not use these options.
    """
    name = str(algorithm).lower().replace("-", "_")
    if name not in LAYOUT_ALGORITHMS:
        return {}
    params = G.graph.get("params") or {}
    try:
        g = int(params.get("gpus_per_node"))
    except (TypeError, ValueError):
        return {}
    if g < 1 or nranks < g or nranks % g:
        return {}
    node = None
    for _, d in G.nodes(data=True):
        if d.get("kind") == "gpu":
            node = d.get("node")
            break
    nics = 0
    if node is not None:
        nics = sum(1 for _, d in G.nodes(data=True)
                   if d.get("kind") == "nic" and d.get("node") == node)
    out = {"gpus_per_node": g, "channels": nics or g}
    if name == "ring" and params.get("pxn") is True:
        out["pxn"] = True   # rail-strict rings: the exit gpu reaches rail b through PXN
    return out
