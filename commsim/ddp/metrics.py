"""From clock marks to the metrics of docs/ddp.md. Pure numpy: no torch here.

A step, as a rank records it (:mod:`commsim.ddp.train`), is a dict of seconds since the
step began: ``forward``, ``backward``, ``optimizer``, ``total`` (durations) and
``buckets``, one ``[index, nbytes, launch, returned, done]`` list a bucket (times since
the step began; ``launch`` is when the hook was called, ``done`` when the averaged
gradient was complete). Everything below is in seconds and bytes.

- A bucket's **interval** is ``[launch, done]``; its ``time`` is ``done - launch``,
  what DDP waits for that bucket. Buckets can be in flight together (gloo runs two
  collectives at a time on its two threads; NCCL queues them on one stream), so a
  bucket's time may include sharing the links with, or waiting behind, buckets launched
  before it: ``inflight`` is the part of its interval that overlaps theirs.
- A step's **communication** is the length of the union of its buckets' intervals.
- Its **window overlap** is the part of that union inside the backward pass's compute,
  from the backward's start to the last bucket's launch (when the last gradient was
  ready); 0 for a synchronous hook, whose communication stops the backward pass.
"""

from __future__ import annotations

import numpy as np

TIMES = ("forward", "backward", "optimizer", "total")


def service(buckets: list[list]) -> list[dict]:
    """Each bucket's ``index, nbytes, launch, done, time, inflight`` (see the module),
    in index order."""
    out, earlier = [], []
    for index, nbytes, launch, _returned, done in sorted(buckets, key=lambda b: b[2]):
        done = max(done, launch)
        out.append({"index": int(index), "nbytes": int(nbytes), "launch": launch,
                    "done": done, "time": done - launch,
                    "inflight": union_length(earlier, launch, done)})
        earlier.append((launch, done))
    return sorted(out, key=lambda b: b["index"])


def union_length(intervals: list[tuple[float, float]], lo: float = -np.inf,
                 hi: float = np.inf) -> float:
    """Length of the union of ``[a, b]`` intervals, clipped to ``[lo, hi]``."""
    total, end = 0.0, -np.inf
    for a, b in sorted((max(a, lo), min(b, hi)) for a, b in intervals):
        if b <= a:
            continue
        if a > end:
            total += b - a
        elif b > end:
            total += b - end
        end = max(end, b)
    return total


def step_metrics(step: dict, synchronous: bool) -> dict:
    """One rank's step: its times, its buckets (:func:`service`), ``comm`` (union of their
    intervals), ``ready`` (the last launch, since the backward began) and ``window``
    (communication inside the backward's compute window)."""
    buckets = service(step["buckets"])
    spans = [(b["launch"], b["done"]) for b in buckets]
    bwd = step["forward"]
    last = max((b["launch"] for b in buckets), default=bwd)
    window = 0.0 if synchronous else union_length(spans, bwd, last)
    return {**{k: step[k] for k in TIMES}, "buckets": buckets, "comm": union_length(spans),
            "ready": last - bwd, "window": window}


def across_ranks(per_rank: list[list[dict]], synchronous: bool) -> list[dict]:
    """Step ``i`` of every rank, averaged: times, ``comm``, ``window`` and each bucket's
    times are means over the ranks (bucket bytes agree on every rank)."""
    steps = []
    for i, ranks in enumerate(zip(*per_rank)):
        m = [step_metrics(s, synchronous) for s in ranks]
        row = {k: float(np.mean([s[k] for s in m])) for k in TIMES + ("comm", "ready",
                                                                       "window")}
        row["step"] = ranks[0].get("step", i)
        row["buckets"] = [
            {"index": b0["index"], "nbytes": b0["nbytes"],
             **{k: float(np.mean([s["buckets"][j][k] for s in m]))
                for k in ("launch", "done", "time", "inflight")}}
            for j, b0 in enumerate(m[0]["buckets"])]
        steps.append(row)
    return steps


def median(rows: list[dict], key: str) -> float:
    return float(np.median([r[key] for r in rows])) if rows else float("nan")


def bucket_medians(rows: list[dict]) -> list[dict]:
    """Per bucket over ``rows`` (steps with one bucket layout): median ``time``,
    ``launch``, ``done``, ``inflight`` and the bytes."""
    layout = [b["nbytes"] for b in rows[-1]["buckets"]]
    same = [r for r in rows if [b["nbytes"] for b in r["buckets"]] == layout]
    out = []
    for j, nbytes in enumerate(layout):
        out.append({"index": rows[-1]["buckets"][j]["index"], "nbytes": nbytes,
                    **{k: float(np.median([r["buckets"][j][k] for r in same]))
                       for k in ("launch", "done", "time", "inflight")}})
    return out


def pipeline(ready: list[float], durations: list[float], backward: float,
             asynchronous: bool) -> tuple[list[float], list[float], float]:
    """``(starts, ends, exposed)``: buckets ready at ``ready`` (since the backward
    began), each communicating for ``durations`` in order on one channel; ``exposed`` is
    what outlasts the ``backward`` compute (asynchronous hooks) or all of it (synchronous
    ones, which stop the compute)."""
    starts, ends, end = [], [], -np.inf
    shift = 0.0  # a synchronous hook delays everything computed after it
    for r, c in sorted(zip(ready, durations)):
        s = max(r + shift, end)
        end = s + c
        starts.append(s)
        ends.append(end)
        if not asynchronous:
            shift += c
    if not durations:
        return [], [], 0.0
    exposed = sum(durations) if not asynchronous else max(0.0, end - backward)
    return starts, ends, exposed


def busbw_factor(p: int) -> float:
    """nccl-tests' allreduce factor ``2(p-1)/p``."""
    return 2.0 * (p - 1) / p


def rates(nbytes: int, seconds: float | None, p: int) -> tuple[float | None, float | None]:
    """``(algbw, busbw)`` in GB/s (1e9 bytes/s) of an allreduce of ``nbytes`` in
    ``seconds`` on ``p`` ranks; None without a positive time."""
    if not seconds or seconds <= 0:
        return None, None
    algbw = nbytes / seconds / 1e9
    return algbw, algbw * busbw_factor(p)
