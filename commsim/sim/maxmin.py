"""Max-min fair rates by progressive filling (weighted for ``sharing="rtt"``)."""

from __future__ import annotations

from itertools import chain

import numpy as np

_INF = np.inf

# Progressive filling: raise every flow's rate together, each in proportion to its weight
# (all 1 under max-min), until a link is full (within 1e-12), freeze the flows on it,
# repeat. Both versions below do the same arithmetic in the same order (rates, then each
# link's load summed flow by flow), so they agree to the bit; numpy pays off above this
# many flow-link incidences.
NUMPY_FILL = 128
RTT_FLOOR = 1e-9  # s: under rtt sharing a route of no latency weighs as one of 1 ns


def fill_python(flows: list, link_bw) -> tuple[list, list, list]:
    """Weighted max-min fair rates (B/s) of ``flows``, ``(link, load B/s)`` of their
    links, and each flow's limit: the lowest-numbered full link that froze it.
    ``link_bw[link]``: the capacity the flows share on each link (B/s; a list over all
    links, or a dict over theirs)."""
    cap: dict[int, float] = {}
    nfl: dict[int, float] = {}   # the weight of the flows still rising, per link
    rising: dict[int, int] = {}  # and how many they are
    for f in flows:
        for link in f.links:
            if link in nfl:
                nfl[link] += f.weight
                rising[link] += 1
            else:
                nfl[link] = f.weight
                rising[link] = 1
                cap[link] = link_bw[link]
    rate = [0.0] * len(flows)
    limit = [-1] * len(flows)
    live = list(range(len(flows)))
    while live:
        share = {link: max(cap[link], 0.0) / n for link, n in nfl.items() if rising[link]}
        m = min(share.values())
        full = {link for link, v in share.items() if v <= m * (1 + 1e-12)}
        frozen: dict[int, float] = {}
        still = []
        for i in live:
            if full.isdisjoint(flows[i].links):
                still.append(i)
                continue
            w = flows[i].weight
            rate[i] = w * m
            limit[i] = min(full.intersection(flows[i].links))
            for link in flows[i].links:
                frozen[link] = frozen.get(link, 0.0) + w
                rising[link] -= 1
        for link, k in frozen.items():
            cap[link] -= k * m
            nfl[link] -= k
        live = still
    load = dict.fromkeys(nfl, 0.0)
    for f, r in zip(flows, rate):
        for link in f.links:
            load[link] += r
    return rate, list(load.items()), limit


def fill_numpy(flows: list, link_bw: np.ndarray) -> tuple[list, list, list]:
    """:func:`fill_python` over the flow-link incidence in numpy, for big components."""
    counts = [len(f.links) for f in flows]
    inc_l = np.fromiter(chain.from_iterable(f.links for f in flows), np.int64, sum(counts))
    inc_f = np.repeat(np.arange(len(flows)), counts)
    links, inv = np.unique(inc_l, return_inverse=True)
    if isinstance(link_bw, dict):
        cap = np.fromiter((link_bw[k] for k in links.tolist()), np.float64, len(links))
    else:
        cap = link_bw[links].copy()
    weight = np.fromiter((f.weight for f in flows), np.float64, len(flows))
    w_inc = weight[inc_f]
    nfl = np.bincount(inv, weights=w_inc, minlength=len(links))
    rising = np.bincount(inv, minlength=len(links))
    rate = np.zeros(len(flows))
    limit = np.full(len(flows), np.iinfo(np.int64).max)
    frozen = np.zeros(len(flows), dtype=bool)
    live = np.ones(len(inc_f), dtype=bool)
    while live.any():
        with np.errstate(divide="ignore", invalid="ignore"):
            share = np.where(rising > 0, np.maximum(cap, 0.0) / nfl, _INF)
        m = share.min()
        hit = live & (share <= m * (1 + 1e-12))[inv]
        rate[inc_f[hit]] = weight[inc_f[hit]] * m
        np.minimum.at(limit, inc_f[hit], inc_l[hit])
        frozen[inc_f[hit]] = True
        now = live & frozen[inc_f]
        k = np.bincount(inv[now], weights=w_inc[now], minlength=len(links))
        cap -= k * m
        nfl -= k
        rising -= np.bincount(inv[now], minlength=len(links))
        live &= ~now
    load = np.bincount(inv, weights=rate[inc_f], minlength=len(links))
    return rate.tolist(), list(zip(links.tolist(), load.tolist())), limit.tolist()

