"""Chrome / Perfetto traces of a simulation (open in ui.perfetto.dev or chrome://tracing).

Two processes: "ranks" with one track per rank, a slice per step the rank took part
in (from its first transfer's start to its last transfer's end, listing what it sent
and received), and "links" with one track per link that carried bytes, a slice per
busy interval (a link is busy while at least one flow is moving bytes over it:
from a flow's start, after its message overhead, until its last byte left, its end
less its route latency). Times are microseconds.

Several jobs at once (:func:`chrome_trace_many`): a process "jobs" with one track per
job, a slice per step of the job (from its first transfer's start to its last one's
end), and the same "links" process for the run as a whole.
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
    rid = R.route_ids(s.src, s.dst, s.transfer_connections())
    t0 = result.start + result.message_overhead
    t1 = result.end - (R.route_latency[rid] + result.overhead)
    moving = t1 > t0
    edges, cnt = R.route_links(rid[moving])
    return merge_intervals(edges, np.repeat(t0[moving], cnt), np.repeat(t1[moving], cnt))


def merge_intervals(edges: np.ndarray, a: np.ndarray,
                    b: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The union of intervals ``[a, b)`` per link: ``(link_ids, starts, ends)``."""
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


def link_events(ids: np.ndarray, starts: np.ndarray, ends: np.ndarray, name_of,
                pid: int = _PID_LINKS) -> list[dict]:
    """Trace events of links' busy intervals (s): a named track per link, a "busy" slice
    per interval (microseconds). ``name_of(link)`` names a link's track."""
    us = 1e6
    ev = [dict(ph="M", pid=pid, tid=lid, name="thread_name", args=dict(name=name_of(lid)))
          for lid in np.unique(ids).tolist()]
    ev += [dict(ph="X", pid=pid, tid=lid, name="busy", ts=x * us, dur=(y - x) * us)
           for lid, x, y in zip(ids.tolist(), starts.tolist(), ends.tolist())]
    return ev


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
    ev += link_events(*link_intervals(result), result.link_name)
    meta = result.summary()
    return dict(traceEvents=ev, displayTimeUnit="ns",
                otherData={k: (v if isinstance(v, (str, int, float)) or v is None else str(v))
                           for k, v in meta.items()})


def write_chrome_trace(result, path) -> None:
    """Write :func:`chrome_trace` as JSON to ``path``."""
    Path(path).write_text(json.dumps(chrome_trace(result)))


def chrome_trace_many(many) -> dict:
    """The trace of a :class:`~commsim.sim.jobs.ManyResult`: a track per job and per link."""
    us = 1e6
    ev: list[dict] = [
        dict(ph="M", pid=_PID_RANKS, name="process_name", args=dict(name="jobs")),
        dict(ph="M", pid=_PID_LINKS, name="process_name", args=dict(name="links")),
    ]
    all_ids, all_a, all_b = [], [], []
    tid = 0
    for name, t0, r in zip(many.names, many.starts.tolist(), many):
        if r.start is None:
            raise CommsimError("trace: the run kept no per-transfer times; simulate with "
                               "record_transfers=True")
        s = r.schedule
        ptr = s.step_bounds()
        steps = [(st, float(r.start[a:b].min()) + t0, float(r.end[a:b].max()) + t0)
                 for st, (a, b) in enumerate(zip(ptr[:-1].tolist(), ptr[1:].tolist()))
                 if b > a]
        lanes = (_lanes(np.array([x for _, x, _ in steps]), np.array([y for _, _, y in steps]))
                 if steps else np.zeros(0, dtype=np.int64))
        nlanes = int(lanes.max() + 1) if len(lanes) else 1
        for lane in range(nlanes):
            ev.append(dict(ph="M", pid=_PID_RANKS, tid=tid + lane, name="thread_name",
                           args=dict(name=name if lane == 0 else f"{name} ({lane + 1})")))
            ev.append(dict(ph="M", pid=_PID_RANKS, tid=tid + lane, name="thread_sort_index",
                           args=dict(sort_index=tid + lane)))
        for (st, x, y), lane in zip(steps, lanes.tolist()):
            ev.append(dict(ph="X", pid=_PID_RANKS, tid=tid + lane, name=f"step {st}",
                           ts=x * us, dur=max(y - x, 0.0) * us,
                           args=dict(job=name, collective=s.collective,
                                     algorithm=s.algorithm)))
        tid += nlanes
        ids, a, b = link_intervals(r)
        all_ids.append(ids)
        all_a.append(a + t0)
        all_b.append(b + t0)
    if all_ids:
        ev += link_events(*merge_intervals(np.concatenate(all_ids), np.concatenate(all_a),
                                           np.concatenate(all_b)), many.link_name)
    return dict(traceEvents=ev, displayTimeUnit="ns",
                otherData=dict(jobs=len(many), time_s=many.time, engine=many.engine))


def write_chrome_trace_many(many, path) -> None:
    """Write :func:`chrome_trace_many` as JSON to ``path``."""
    Path(path).write_text(json.dumps(chrome_trace_many(many)))
