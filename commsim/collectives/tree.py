"""Tree algorithms: binary and double binary tree allreduce, binomial broadcast/reduce.

The binary tree is NCCL's in-order tree: with ``v = rank + 1``, a node with ``t``
trailing zero bits sits at level ``t``; its parent is ``(v ^ 2**t) | 2**(t+1)`` (or
``v ^ 2**t`` when that is past ``p``). Odd ``v`` (even ranks) are the leaves, so the
second tree of the double binary tree (the first mirrored for even ``p``, shifted by
one for odd ``p``) has its interior nodes among the first tree's leaves: every rank
is interior in at most one tree.

Pipelined allreduce over ``k`` chunks on a tree of height ``H`` runs a reduce then a
broadcast, ``H + k - 1`` steps each. In the reduce, a node sends chunk ``j`` to its
parent in step ``j + height(parent) - 1``; in the broadcast, a node at depth ``l``
sends chunk ``j`` to its children in step ``R + j + l`` (``R`` = reduce steps).
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np

from commsim.collectives.schedule import Schedule, ScheduleBuilder


@lru_cache(maxsize=64)
def inorder_tree(nranks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """NCCL's in-order binary tree on ranks ``0..p-1``.

    Returns ``(parent, height, depth)`` arrays: ``parent[root] == -1``; a leaf has
    height 0; the root has depth 0.
    """
    p = nranks
    parent = np.full(p, -1, dtype=np.int64)
    for v in range(1, p + 1):
        bit = v & -v
        up = (v ^ bit) | (bit << 1)
        if up > p:
            up = v ^ bit
        if up != 0:
            parent[v - 1] = up - 1
    height = np.zeros(p, dtype=np.int64)
    depth = np.zeros(p, dtype=np.int64)
    order = np.argsort([(v & -v) for v in range(1, p + 1)], kind="stable")  # leaves first
    for r in order.tolist():
        if parent[r] >= 0:
            height[parent[r]] = max(height[parent[r]], height[r] + 1)
    for r in order[::-1].tolist():  # root first
        if parent[r] >= 0:
            depth[r] = depth[parent[r]] + 1
    return parent, height, depth


def _relabel(tree: tuple[np.ndarray, ...], perm: np.ndarray) -> tuple[np.ndarray, ...]:
    """The tree with node ``i`` renamed ``perm[i]``."""
    parent, height, depth = tree
    new_parent = np.full_like(parent, -1)
    new_height, new_depth = np.empty_like(height), np.empty_like(depth)
    has = parent >= 0
    new_parent[perm[has]] = perm[parent[has]]
    new_height[perm] = height
    new_depth[perm] = depth
    return new_parent, new_height, new_depth


def second_tree(nranks: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The double binary tree's second tree: mirrored (even ``p``) or shifted (odd ``p``)."""
    ranks = np.arange(nranks)
    perm = (nranks - 1 - ranks) if nranks % 2 == 0 else (ranks + 1) % nranks
    return _relabel(inorder_tree(nranks), perm)


def tree_height(nranks: int) -> int:
    """Height ``H`` of the in-order tree on ``nranks`` ranks (0 for one rank)."""
    return int(inorder_tree(nranks)[1].max())


def _add_tree_allreduce(b: ScheduleBuilder, tree, chunks: np.ndarray, nsteps_half: int):
    parent, height, depth = tree
    child = np.flatnonzero(parent >= 0)
    par = parent[child]
    c, j = np.meshgrid(np.arange(len(child)), np.arange(len(chunks)), indexing="ij")
    b.add(j + height[par][c] - 1, child[c], par[c], chunks[j], True)
    b.add(nsteps_half + j + depth[par][c], par[c], child[c], chunks[j], False)


def allreduce_tree(nranks: int, nchunks: int | None = None) -> Schedule:
    """Binary tree: pipelined reduce to the root then pipelined broadcast, ``2(H+k-1)`` steps."""
    k = nchunks or 1
    b = ScheduleBuilder()
    if nranks > 1:
        _add_tree_allreduce(b, inorder_tree(nranks), np.arange(k), tree_height(nranks) + k - 1)
    return b.build("allreduce", "tree", nranks, k)


def allreduce_double_tree(nranks: int, nchunks: int | None = None) -> Schedule:
    """Double binary tree: chunks ``0..k-1`` on the first tree, ``k..2k-1`` on the second.

    Both trees run in the same ``2(H + k - 1)`` steps; ``nchunks = 2k`` must be even.
    """
    nchunks = nchunks or 2
    if nchunks % 2:
        raise ValueError(f"dbt needs an even nchunks (half per tree), got {nchunks}")
    k = nchunks // 2
    b = ScheduleBuilder()
    if nranks > 1:
        half = tree_height(nranks) + k - 1
        _add_tree_allreduce(b, inorder_tree(nranks), np.arange(k), half)
        _add_tree_allreduce(b, second_tree(nranks), np.arange(k, 2 * k), half)
    # the two trees run on channels of their own (NCCL's double binary tree)
    return b.build("allreduce", "dbt", nranks, nchunks, connection=np.arange(nchunks) // k)


def _binomial_rounds(nranks: int) -> int:
    return (nranks - 1).bit_length()


def broadcast_binomial(nranks: int, nchunks: int | None = None, root: int = 0) -> Schedule:
    """Round ``i``: relative ranks ``v < 2**i`` send the whole buffer to ``v + 2**i``."""
    if not 0 <= root < nranks:
        raise ValueError(f"root {root} is out of range for {nranks} ranks")
    k = nchunks or 1
    b = ScheduleBuilder()
    for i in range(_binomial_rounds(nranks)):
        v = np.arange(min(2**i, nranks - 2**i))
        s, c = np.meshgrid(v, np.arange(k), indexing="ij")
        b.add(i, (s + root) % nranks, (s + 2**i + root) % nranks, c, False)
    return b.build("broadcast", "binomial", nranks, k, root=root, options={"root": root})


def reduce_binomial(nranks: int, nchunks: int | None = None, root: int = 0) -> Schedule:
    """Round ``i``: relative ranks ``v`` with ``v mod 2**(i+1) == 2**i`` add into ``v - 2**i``."""
    if not 0 <= root < nranks:
        raise ValueError(f"root {root} is out of range for {nranks} ranks")
    k = nchunks or 1
    b = ScheduleBuilder()
    for i in range(_binomial_rounds(nranks)):
        v = np.arange(2**i, nranks, 2 ** (i + 1))
        s, c = np.meshgrid(v, np.arange(k), indexing="ij")
        b.add(i, (s + root) % nranks, (s - 2**i + root) % nranks, c, True)
    return b.build("reduce", "binomial", nranks, k, root=root, options={"root": root})
