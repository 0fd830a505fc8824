"""NCCL's Tree allreduce: a chain inside each node, a double binary tree across nodes.

``p = N g`` ranks, node ``n`` holding ranks ``n*g .. n*g+g-1`` (``gpus_per_node = g``;
default None means one gpu a node: a plain double binary tree over all ranks). Channel
``j`` (of ``channels = c``) has its chain head at local rank ``h = j mod g``, and its
chain runs ``h, h+1, ..., h+g-1 (mod g)`` in every node: reductions flow up the chain
into the head, which talks to the heads of the parent and child nodes, so all the
channel's inter-node traffic is on rail ``h`` at both ends (NCCL's ``TREE`` pattern;
NCCL's default ``BALANCED_TREE`` puts the children on the chain's second gpu instead).
Across nodes the heads form the double binary tree of :mod:`commsim.collectives.tree`
(NCCL's in-order tree over nodes, and its mirror for even ``N`` or shift for odd ``N``).

NCCL doubles its tree channels: channel ``j`` and channel ``j + c`` share the chain and
use the first and the second tree. Here each channel likewise carries its share of the
buffer as two halves, one on each tree (with one node both halves use the same chain).
Chunks: ``nchunks = 2 c k``; channel ``j``'s tree ``t`` gets chunks ``(2j+t) k .. +k``.

Every (channel, tree) is one tree over the ``p`` ranks, of height ``H = g - 1 + H_N``
(``H_N`` the node tree's), pipelined over its ``k`` chunks like ``tree``/``dbt``: a
reduce then a broadcast of ``H + k - 1`` steps each, all trees in the same steps. With
``c = 1`` and ``g = 1`` this is exactly ``dbt``; with one node, a chain reduce into
the head then a chain broadcast from it.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from commsim.collectives.layout import check
from commsim.collectives.schedule import Schedule, ScheduleBuilder
from commsim.collectives.tree import _add_tree_allreduce, inorder_tree, second_tree, tree_height


def height(nranks: int, gpus_per_node: int | None = None) -> int:
    """``H = g - 1 + H_N``: the height of every (channel, tree) of the layout."""
    g = gpus_per_node or 1
    return g - 1 + tree_height(nranks // g)


def channel_trees(nranks: int, channels: int = 1, gpus_per_node: int | None = None):
    """``[(parent, height, depth), ...]``: the ``2 c`` trees over all ranks, channel-major."""
    g = gpus_per_node or 1
    N = nranks // g
    pos = np.arange(g)
    out = []
    for j in range(channels):
        local = (j % g + pos) % g                      # chain order inside a node
        ranks = np.arange(N)[:, None] * g + local      # [node, chain position]
        for node_tree in (inorder_tree(N), second_tree(N)):
            npar, nh, nd = node_tree
            parent = np.empty(nranks, dtype=np.int64)
            hgt = np.empty(nranks, dtype=np.int64)
            dep = np.empty(nranks, dtype=np.int64)
            parent[ranks[:, 1:]] = ranks[:, :-1]
            parent[ranks[:, 0]] = np.where(npar >= 0, ranks[npar, 0], -1)
            hgt[ranks] = g - 1 - pos[None, :]
            hgt[ranks[:, 0]] = g - 1 + nh
            dep[ranks] = nd[:, None] + pos[None, :]
            out.append((parent, hgt, dep))
    return out


@lru_cache(maxsize=64)
def busiest(nranks: int, channels: int = 1, gpus_per_node: int | None = None,
            ) -> tuple[int, int]:
    """``(io, red)``: chunks the busiest rank moves and reduces in a full pipeline step.

    ``io`` is the largest, over ranks, of the messages it sends or receives when every
    tree is busy (its children in all ``2 c`` trees, or the trees it has a parent in);
    ``red`` the most children any rank reduces from. The cost model charges every step
    that much, an upper bound for the pipeline's fill and drain.
    """
    if nranks < 2:
        return 0, 0
    children = np.zeros(nranks, dtype=np.int64)
    parents = np.zeros(nranks, dtype=np.int64)
    for parent, _, _ in channel_trees(nranks, channels, gpus_per_node):
        has = parent >= 0
        children += np.bincount(parent[has], minlength=nranks)
        parents += has
    return int(np.maximum(children, parents).max()), int(children.max())


def allreduce(nranks: int, nchunks: int | None = None, channels: int = 1,
              gpus_per_node: int | None = None) -> Schedule:
    """NCCL's tree: ``2(H + k - 1)`` steps, ``H = g - 1 + H_N``, ``k = nchunks / (2c)``."""
    c, g = check(nranks, channels, gpus_per_node)
    nchunks = nchunks or 2 * c
    if nchunks % (2 * c):
        raise ValueError(f"nccl_tree needs nchunks to be a multiple of 2*channels={2 * c} "
                         f"(two trees a channel), got {nchunks}")
    k = nchunks // (2 * c)
    b = ScheduleBuilder()
    if nranks > 1:
        half = height(nranks, g) + k - 1
        for i, tree in enumerate(channel_trees(nranks, c, g)):
            _add_tree_allreduce(b, tree, np.arange(i * k, (i + 1) * k), half)
    options = {} if (c, g) == (1, None) else {"channels": c, "gpus_per_node": g}
    # every (channel, tree) its own connection, as each NCCL channel has its own
    return b.build("allreduce", "nccl_tree", nranks, nchunks, options=options,
                   connection=np.arange(nchunks) // k)
