"""The contention-free sweep: step mode in numpy when no link is ever shared."""

from __future__ import annotations

import numpy as np

from commsim.sim.run import Run


def sweep_uncontended(run: Run) -> bool:
    """Simulate step mode assuming no link is ever shared; False if that turns out wrong.

    Each step: start = max(arrival of src, arrival of dst); end = start + message
    overhead + bytes / narrowest bandwidth + latency; a rank's next arrival = max(end
    of its transfers) + its reductions. The assumption holds if no two byte phases
    ``[start + message overhead, end - latency)`` overlap on a link. Links next to a
    gpu carry only that gpu's own sends (or receives), which step semantics already
    serialize from one step to the next, so they only need checking inside a step: no
    rank may send (or receive) twice in one step (with several jobs' ranks on one gpu,
    every link is checked). Links between switches are checked
    flow by flow: a byte phase must begin no earlier than the last one on each of its
    links ended (in step order, which is stricter than time order, so the check can
    only fail safe), and two flows of one step must not share one.

    Link figures are summed per route and spread over the routes' links at the end:
    with no sharing, a link's busy time and bytes are the sums over the flows on it.
    """
    s, R, P = run.s, run.router, run.P
    A = run.offsets.copy()
    nl = len(run.link_bw)
    busy_until = np.zeros(nl)
    stamp = np.zeros(nl, dtype=np.int64)
    gamma = run.gamma
    sizes = run.chunk_bytes
    uniform = len(sizes) > 0 and bool((sizes == sizes[0]).all()) and sizes[0] > 0
    # per route: how many transfers took it (uniform sizes), or their bytes and busy time
    route_count = np.zeros(0)
    route_bytes = np.zeros(0)
    route_busy = np.zeros(0)
    route_time = np.zeros(0)        # latency + transfer time of one uniform chunk
    for st in range(run.nsteps):
        a, b = int(run.step_ptr[st]), int(run.step_ptr[st + 1])
        if a == b:
            continue
        src = s.src[a:b].astype(np.intp)   # numpy gathers 3x faster with intp indices
        dst = s.dst[a:b].astype(np.intp)
        t0 = np.maximum(A[src], A[dst])
        rid = run.route_ids(src, dst, a, b, st)
        if len(route_count) < R.nroutes:
            grow = np.zeros(R.nroutes - len(route_count))
            route_count = np.concatenate((route_count, grow))
            route_bytes = np.concatenate((route_bytes, grow))
            route_busy = np.concatenate((route_busy, grow))
            if uniform:   # per-transfer overheads are added below instead
                base = run.overhead if run.per_transfer is None else 0.0
                route_time = (R.route_latency + base + run.message_overhead
                              + sizes[0] / R.route_bandwidth)
        added = run.overheads(a, b)
        if uniform:
            te = t0 + route_time[rid]
            if run.per_transfer is not None:
                te += added
            np.add.at(route_count, rid, 1.0)
            size = sizes[0]
        else:
            size = sizes[s.chunk[a:b]]
            dur = size / R.route_bandwidth[rid]
            te = (t0 + (R.route_latency[rid] + added + run.message_overhead)) + dur
            np.add.at(route_bytes, rid, size)
            np.add.at(route_busy, rid, dur)
        if run.record:
            run.start[a:b] = t0
            run.end[a:b] = te
        if (run.shared_gpus or np.bincount(src, minlength=P).max() > 1
                or np.bincount(dst, minlength=P).max() > 1):
            # a rank sends or receives twice in this step: check every link
            sel = np.arange(b - a) if uniform else np.flatnonzero(size > 0)
            edges, cnt = R.route_links(rid[sel])
        else:
            fab = R.route_has_fabric[rid]
            if not uniform:
                fab &= size > 0
            sel = np.flatnonzero(fab)
            edges, cnt = R.route_fabric_links(rid[sel])
        if len(edges):
            tb_e = np.repeat(t0[sel] + run.message_overhead, cnt)
            if (tb_e < busy_until[edges]).any():
                return False
            pos = np.arange(len(edges))
            stamp[edges] = pos
            if (stamp[edges] != pos).any():   # two flows of this step on one link
                return False
            sent = te[sel] - (R.route_latency[rid[sel]]
                              + (added if run.per_transfer is None else added[sel]))
            busy_until[edges] = np.repeat(sent, cnt)
        np.maximum.at(A, src, te)
        np.maximum.at(A, dst, te)
        if gamma:
            red = s.reduce[a:b]
            if red.any():
                d = dst[red]
                got = size if uniform else size[red]
                np.add.at(A, d, gamma * run.slow[d] * got)
        run.events += 1
    if uniform:
        route_bytes = route_count * sizes[0]
        route_busy = route_count * (sizes[0] / R.route_bandwidth[:len(route_count)])
    used = np.flatnonzero(route_bytes > 0)
    edges, cnt = R.route_links(used)
    run.link_busy = np.bincount(edges, weights=np.repeat(route_busy[used], cnt), minlength=nl)
    run.link_bytes = np.bincount(edges, weights=np.repeat(route_bytes[used], cnt), minlength=nl)
    util = np.repeat(R.route_bandwidth[used], cnt) / run.link_bw[edges]
    np.maximum.at(run.link_peak, edges, util)
    run.rank_end = A
    return True

