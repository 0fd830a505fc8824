"""The cores a host gives each of its ranks (a profile's ``cores_per_rank``), and what
follows from them.

**Overlap.** With two cores a rank or more, a rank reduces on one while another moves
its bytes (gloo's I/O thread, or the peer's copy under MPI): reductions overlap
transfers (:func:`reductions_overlap`). Below that, a rank's one core does both in turn:
the model and the simulator run with ``overlap=False``.

**Cores shared by ranks.** Where a host runs more ranks than it has cores (a profile's
``cores_per_rank`` below 1: 4 ranks on the 2-core machine), every core is busy for the
whole collective: the ranks with nothing to do poll for messages. The cores then do
the host's copies and its reductions one after another, whichever algorithm asks for
them, so no schedule finishes before

    W_H = bytes_H / capacity_H + reduced_H * gamma / n_H

for every host ``H``: ``bytes_H`` the bytes its ranks send or receive (each crosses the
host's shared-capacity link once), ``capacity_H`` that link's bandwidth (what the ring
shift of every rank at once moved through the host), ``reduced_H`` the bytes its ranks
reduce and ``n_H`` its ranks (``gamma`` was measured with all of them reducing at once,
so together they reduce ``n_H / gamma`` bytes a second).

A ring's steps keep every rank busy and already cost about that. A pipelined tree's
levels, which the model and the simulator let work side by side, do not: on the 2-core
machine a 4-rank MPI tree allreduce measured about what the ring did at 16 and 64 MiB,
whatever its pipeline depth (docs/calibrate.md), where the model without this bound put
a 16-piece tree 24% to 28% below the ring. With a core per rank or more, the bound is not
applied: ranks' cores work side by side.

The host's shared-capacity link is found as a profile lays it out
(:mod:`commsim.calibrate.profile`): each rank's only successor ``hostH.in`` has one
out-link, to ``hostH.out``, shared by the ranks attached to it. A topology that gives
``cores_per_rank`` below 1 but has no such link gets no bound.
"""

from __future__ import annotations

import networkx as nx
import numpy as np

from commsim import topology
from commsim.collectives.schedule import Schedule

OVERLAP_CORES_PER_RANK = 2  # a rank reduces on one core while another moves its bytes


def reductions_overlap(cores_per_rank: float) -> bool:
    """Whether the ranks' reductions can overlap their transfers, given the cores each
    rank has (the host's usable cores over its ranks; the fewest of any host)."""
    return cores_per_rank >= OVERLAP_CORES_PER_RANK


def shared_cores(G: nx.DiGraph | None) -> bool:
    """Whether ``G``'s ranks share cores (its ``cores_per_rank`` below 1)."""
    cores = topology.model_parameter(G, "cores_per_rank")
    return cores is not None and float(cores) < 1.0


def host_links(G: nx.DiGraph, placement: list) -> tuple[np.ndarray, list] | None:
    """``(host of each rank, (src, dst) shared-capacity link of each host)``, or None when
    some rank has no such link (see the module docstring)."""
    host_of, links = [], []
    for gpu in placement:
        after = list(G.successors(gpu))
        if len(after) != 1 or G.out_degree(after[0]) != 1:
            return None
        link = (after[0], next(iter(G.successors(after[0]))))
        if link not in links:
            links.append(link)
        host_of.append(links.index(link))
    return np.array(host_of, dtype=np.int64), links


def host_work(s: Schedule, nbytes: int, router, gamma: float, slowdown=None) -> float:
    """Seconds: the largest ``W_H`` of the module docstring over the hosts of
    ``router``'s topology and placement (a :class:`commsim.topology.routing.Router`), where
    its ranks share cores; 0 where they do not (or it has no host links). ``slowdown``:
    per rank, how many times slower than ``gamma`` it reduces (the simulator's
    ``reduce_slowdown``; default 1)."""
    G = router.G
    if not len(s) or not shared_cores(G):
        return 0.0
    found = host_links(G, router.placement)
    if found is None:
        return 0.0
    host_of, links = found
    size = s.transfer_sizes(int(nbytes)).astype(np.float64)
    src, dst = host_of[s.src], host_of[s.dst]
    nh = len(links)
    moved = np.bincount(src, weights=size, minlength=nh)
    moved += np.bincount(dst[dst != src], weights=size[dst != src], minlength=nh)
    red = size * (1.0 if slowdown is None else np.asarray(slowdown, np.float64)[s.dst])
    reduced = np.bincount(dst[s.reduce], weights=red[s.reduce], minlength=nh)
    ranks = np.bincount(host_of, minlength=nh)
    index = {link: i for i, link in enumerate(router.links)}
    capacity = np.array([router.link_bandwidth[index[link]] for link in links],
                        dtype=np.float64)
    work = moved / capacity + reduced * float(gamma) / np.maximum(ranks, 1)
    return float(work.max())
