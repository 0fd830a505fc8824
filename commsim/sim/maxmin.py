"""Max-min fair rates by progressive filling (weighted for ``sharing="rtt"``)."""

from __future__ import annotations

from heapq import heapify, heappop, heappush

# Progressive filling: raise every flow's rate together, each in proportion to its weight
# (all 1 under max-min), until a link is full (within 1e-12), freeze the flows on it,
# repeat. The two versions below do the same arithmetic in the same order (rates, then
# each link's load summed flow by flow), so they agree to the bit: fill_python is the
# reference, and fill_heap, which the event engine uses (fill_python for a few flows),
# beats it once a fill has more than a few levels.
RTT_FLOOR = 1e-9  # s: under rtt sharing a route of no latency weighs as one of 1 ns


def fill_python(flows: list, link_bw) -> tuple[list, list, list]:
    """Weighted max-min fair rates (B/s) of ``flows``, ``(link, load B/s)`` of their
    links, and each flow's limit: the lowest-numbered full link that froze it.
    ``link_bw[link]``: the capacity the flows share on each link (B/s; a list over all
    links, or a dict over theirs).

    An item may stand for ``count`` flows over the same links (the engine's flow
    classes): its rate is then each one's, and its load counts it ``count`` times. Of
    weight 1 (max-min) the sums of weights stay whole numbers, exact in any order, so
    the rates and limits are those of the flows filled one by one, bit for bit (the
    loads, summed class by class, need not be)."""
    cap: dict[int, float] = {}
    nfl: dict[int, float] = {}   # the weight of the flows still rising, per link
    rising: dict[int, int] = {}  # and how many they are
    for f in flows:
        k = f.count
        w = f.weight * k   # exact: k is 1, or the weight is 1
        for link in f.links:
            if link in nfl:
                nfl[link] += w
                rising[link] += k
            else:
                nfl[link] = w
                rising[link] = k
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
            f = flows[i]
            rate[i] = f.weight * m
            limit[i] = min(full.intersection(f.links))
            w, k = f.weight * f.count, f.count
            for link in f.links:
                frozen[link] = frozen.get(link, 0.0) + w
                rising[link] -= k
        for link, k in frozen.items():
            cap[link] -= k * m
            nfl[link] -= k
        live = still
    return rate, _loads(flows, rate, nfl), limit


def _loads(flows: list, rate: list, links) -> list:
    """``(link, load B/s)`` over ``links``: each flow's rate times its count, summed flow
    by flow in the flows' order (the order every fill sums in)."""
    load = dict.fromkeys(links, 0.0)
    for f, r in zip(flows, rate):
        r *= f.count
        for link in f.links:
            load[link] += r
    return list(load.items())


def fill_heap(flows: list, link_bw, loads: bool = True) -> tuple[list, list, list]:
    """:func:`fill_python`'s rates, loads and limits, bit for bit, in time proportional to
    the flow-link incidences (times a log), not to them times the number of levels.

    The engine's fill. A link's share changes only when flows on it freeze, so the
    shares wait in a heap and each level takes the links due from its top; every share
    is computed, and every sum formed, as :func:`fill_python` does (the flows that freeze
    at a level in their order), so nothing else can differ. Contended runs fill dozens
    of levels at every change, where the other two recompute every link each level.
    ``loads=False`` leaves the loads out (``None``).
    """
    state: dict[int, list] = {}   # link -> [cap, weight rising, flows rising, flows by index]
    for i, f in enumerate(flows):
        k = f.count
        w = f.weight * k          # exact: k is 1, or the weight is 1
        for link in f.links:
            s = state.get(link)
            if s is None:
                state[link] = [link_bw[link], w, k, [i]]
            else:
                s[1] += w
                s[2] += k
                s[3].append(i)
    share = {link: max(s[0], 0.0) / s[1] for link, s in state.items()}
    heap = [(v, link) for link, v in share.items()]
    heapify(heap)
    rate = [0.0] * len(flows)
    limit = [-1] * len(flows)
    done = [False] * len(flows)
    left = len(flows)
    while left:
        while True:   # an entry is stale once its link's share moved or its flows froze
            m, link = heap[0]
            if state[link][2] and share[link] == m:
                break
            heappop(heap)
        top = m * (1 + 1e-12)
        full = set()
        while heap and heap[0][0] <= top:
            v, link = heappop(heap)
            if state[link][2] and share[link] == v:
                full.add(link)
        now = []
        for link in full:
            for i in state[link][3]:
                if not done[i]:
                    done[i] = True
                    now.append(i)
        now.sort()
        frozen: dict[int, list] = {}   # link -> [weight, flows] frozen now
        for i in now:
            f = flows[i]
            rate[i] = f.weight * m
            limit[i] = min(full.intersection(f.links))
            k = f.count
            w = f.weight * k
            for link in f.links:
                s = frozen.get(link)
                if s is None:
                    frozen[link] = [w, k]
                else:
                    s[0] += w
                    s[1] += k
        left -= len(now)
        for link, (w, k) in frozen.items():
            s = state[link]
            s[0] -= w * m
            s[1] -= w
            s[2] -= k
            if s[2]:
                share[link] = v = max(s[0], 0.0) / s[1]
                heappush(heap, (v, link))
    if not loads:
        return rate, None, limit
    return rate, _loads(flows, rate, state), limit
