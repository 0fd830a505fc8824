"""Chrome / Perfetto traces of a simulation (open in ui.perfetto.dev or chrome://tracing).

Two processes: "ranks" with one track per rank, a slice per step the rank took part
in (from its first transfer's start to its last transfer's end, listing what it sent
and received), and "links" with one track per link that carried bytes, a slice per
busy interval (a link is busy while at least one flow is moving bytes over it:
from a flow's start plus its route latency to its end). Times are microseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from commsim.errors import CommsimError

MAX_TRACE_TRANSFERS = 2_000_000
_PID_RANKS, _PID_LINKS = 1, 2


def _lanes(starts: np.ndarray, ends: np.ndarray) -> np.ndarray:
    """Assign overlapping intervals to lanes so that each lane's slices never overlap."""
    order = np.argsort(starts, kind="stable")
    lane_end: list[float] = []
    lane = np.zeros(len(starts), dtype=np.int64)
    for i in order.tolist():
        for j, e in enumerate(lane_end):
            if e <= starts[i]:
                lane[i] = j
                lane_end[j] = ends[i]
                break
        else:
            lane[i] = len(lane_end)
            lane_end.append(ends[i])
    return lane


def rank_slices(result) -> list[dict]:
    """One slice per (rank, step): ``rank, step, start, end`` (s), ``sends``, ``recvs``."""
    s = result.schedule
    out = []
    step = s.step.astype(np.int64)
    for role, ranks in (("send", s.src.astype(np.int64)), ("recv", s.dst.astype(np.int64))):
        key = ranks * (s.nsteps + 1) + step
        order = np.argsort(key, kind="stable")
        k = key[order]
        bounds = np.flatnonzero(np.diff(k)) + 1
        for grp in np.split(order, bounds):
            if len(grp):
                out.append((int(ranks[grp[0]]), int(step[grp[0]]), role, grp))
    merged: dict[tuple[int, int], dict] = {}
    for r, st, role, grp in out:
        d = merged.setdefault((r, st), dict(rank=r, step=st, start=np.inf, end=-np.inf,
                                            sends=[], recvs=[]))
        d["start"] = min(d["start"], float(result.start[grp].min()))
        d["end"] = max(d["end"], float(result.end[grp].max()))
        peers = s.dst[grp] if role == "send" else s.src[grp]
        d["sends" if role == "send" else "recvs"].extend(
            f"{int(p)}:c{int(c)}" for p, c in zip(peers, s.chunk[grp]))
    return sorted(merged.values(), key=lambda d: (d["rank"], d["start"]))


def link_intervals(result) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Busy intervals of every link: ``(link_ids, starts, ends)`` in seconds."""
    s, R = result.schedule, result.router
    rid = R.route_ids(s.src, s.dst, s.chunk, s.step)
    t0 = result.start + R.route_latency[rid]
    moving = result.end > t0
    edges, cnt = R.route_links(rid[moving])
    a = np.repeat(t0[moving], cnt)
    b = np.repeat(result.end[moving], cnt)
    order = np.lexsort((a, edges))
    edges, a, b = edges[order], a[order], b[order]
    ids, starts, ends = [], [], []
    for lo, hi in _runs(edges):
        cur_a, cur_b = a[lo], b[lo]
        for j in range(lo + 1, hi):
            if a[j] <= cur_b:
                cur_b = max(cur_b, b[j])
            else:
                ids.append(edges[lo])
                starts.append(cur_a)
                ends.append(cur_b)
                cur_a, cur_b = a[j], b[j]
        ids.append(edges[lo])
        starts.append(cur_a)
        ends.append(cur_b)
    return np.array(ids, dtype=np.int64), np.array(starts), np.array(ends)


def _runs(sorted_keys: np.ndarray):
    if not len(sorted_keys):
        return []
    cut = np.flatnonzero(np.diff(sorted_keys)) + 1
    lo = np.concatenate(([0], cut))
    hi = np.concatenate((cut, [len(sorted_keys)]))
    return zip(lo.tolist(), hi.tolist())


def chrome_trace(result) -> dict:
    """The trace as a dict in the Chrome trace-event format."""
    if result.start is None:
        raise CommsimError("trace: the run kept no per-transfer times; simulate with "
                           "record_transfers=True")
    if result.ntransfers > MAX_TRACE_TRANSFERS:
        raise CommsimError(f"trace: {result.ntransfers} transfers is too many to trace "
                           f"(at most {MAX_TRACE_TRANSFERS}); trace fewer ranks or chunks")
    us = 1e6
    ev: list[dict] = [
        dict(ph="M", pid=_PID_RANKS, name="process_name", args=dict(name="ranks")),
        dict(ph="M", pid=_PID_LINKS, name="process_name", args=dict(name="links")),
    ]
    slices = rank_slices(result)
    by_rank: dict[int, list[dict]] = {}
    for d in slices:
        by_rank.setdefault(d["rank"], []).append(d)
    for r in range(result.schedule.nranks):
        mine = by_rank.get(r, [])
        lanes = _lanes(np.array([d["start"] for d in mine]),
                       np.array([d["end"] for d in mine])) if mine else []
        nlanes = int(max(lanes) + 1) if len(lanes) else 1
        for lane in range(nlanes):
            tid = r * 64 + lane
            name = f"rank {r}" if lane == 0 else f"rank {r} ({lane + 1})"
            ev.append(dict(ph="M", pid=_PID_RANKS, tid=tid, name="thread_name",
                           args=dict(name=name)))
            ev.append(dict(ph="M", pid=_PID_RANKS, tid=tid, name="thread_sort_index",
                           args=dict(sort_index=tid)))
        for d, lane in zip(mine, lanes):
            ev.append(dict(ph="X", pid=_PID_RANKS, tid=r * 64 + int(lane),
                           name=f"step {d['step']}", ts=d["start"] * us,
                           dur=max(d["end"] - d["start"], 0.0) * us,
                           args=dict(sends=" ".join(d["sends"]) or "-",
                                     recvs=" ".join(d["recvs"]) or "-")))
    ids, a, b = link_intervals(result)
    for lid in np.unique(ids).tolist():
        ev.append(dict(ph="M", pid=_PID_LINKS, tid=lid, name="thread_name",
                       args=dict(name=result.link_name(lid))))
    for lid, x, y in zip(ids.tolist(), a.tolist(), b.tolist()):
        ev.append(dict(ph="X", pid=_PID_LINKS, tid=lid, name="busy", ts=x * us,
                       dur=(y - x) * us))
    meta = result.summary()
    return dict(traceEvents=ev, displayTimeUnit="ns",
                otherData={k: (v if isinstance(v, (str, int, float)) or v is None else str(v))
                           for k, v in meta.items()})


def write_chrome_trace(result, path) -> None:
    """Write :func:`chrome_trace` as JSON to ``path``."""
    Path(path).write_text(json.dumps(chrome_trace(result)))
