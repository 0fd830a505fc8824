"""Chrome/Perfetto traces: one track per rank and per busy link, consistent with the run."""

from __future__ import annotations

import json

import numpy as np
import pytest

from commsim import collectives
from commsim.errors import CommsimError
from commsim.sim import simulate, trace
from commsim.topology import builders


def _load(result, tmp_path):
    path = tmp_path / "t.json"
    result.to_chrome_trace(path)
    return json.loads(path.read_text())


def _threads(data, pid):
    return {e["tid"]: e["args"]["name"] for e in data["traceEvents"]
            if e["ph"] == "M" and e["name"] == "thread_name" and e["pid"] == pid}


def test_trace_has_rank_and_link_tracks(tmp_path):
    G = builders.leaf_spine(2, 1, 2, host_bw=10e9, spine_bw=10e9)
    s = collectives.build("allreduce", "ring", 4)
    r = simulate(s, G, 4 * 10**6, placement=["gpu0", "gpu2", "gpu1", "gpu3"])
    data = _load(r, tmp_path)
    procs = {e["args"]["name"]: e["pid"] for e in data["traceEvents"]
             if e["ph"] == "M" and e["name"] == "process_name"}
    assert set(procs) == {"ranks", "links"}
    ranks = _threads(data, procs["ranks"])
    assert sorted(ranks.values()) == [f"rank {i}" for i in range(4)]
    links = _threads(data, procs["links"])
    assert len(links) == int((r.link_bytes > 0).sum())          # only busy links
    slices = [e for e in data["traceEvents"] if e["ph"] == "X"]
    assert all(e["ts"] >= 0 and e["dur"] >= 0 for e in slices)
    end_us = max(e["ts"] + e["dur"] for e in slices)
    assert end_us == pytest.approx(r.time * 1e6)
    per_rank = [e for e in slices if e["pid"] == procs["ranks"]]
    assert len(per_rank) == 4 * s.nsteps                        # a slice per rank and step
    # busy intervals on a link never overlap and add up to the link's busy time
    for lid in links:
        mine = sorted((e["ts"], e["dur"]) for e in slices
                      if e["pid"] == procs["links"] and e["tid"] == lid)
        for (a, da), (b, _) in zip(mine, mine[1:]):
            assert a + da <= b + 1e-9
        assert sum(d for _, d in mine) == pytest.approx(r.link_busy[lid] * 1e6, rel=1e-6)


def test_dataflow_overlaps_go_to_separate_lanes(tmp_path):
    G = builders.star(7, bandwidth=10e9, latency=1e-6)
    s = collectives.build("allreduce", "tree", 7, 4)
    r = simulate(s, G, 4 * 10**6, mode="dataflow")
    data = _load(r, tmp_path)
    by_tid: dict = {}
    for e in data["traceEvents"]:
        if e["ph"] == "X" and e["pid"] == 1:
            by_tid.setdefault(e["tid"], []).append((e["ts"], e["ts"] + e["dur"]))
    for spans in by_tid.values():
        spans.sort()
        for (_, end), (start, _) in zip(spans, spans[1:]):
            assert end <= start + 1e-9


def test_lanes():
    lanes = trace._lanes(np.array([0.0, 1.0, 2.0, 5.0]), np.array([3.0, 2.0, 4.0, 6.0]))
    assert lanes.tolist() == [0, 1, 1, 0]


def test_trace_refuses_huge_or_unrecorded_runs(tmp_path, monkeypatch):
    G = builders.star(4)
    s = collectives.build("allreduce", "ring", 4)
    with pytest.raises(CommsimError, match="record_transfers"):
        simulate(s, G, 4096, record_transfers=False).to_chrome_trace(tmp_path / "x.json")
    monkeypatch.setattr(trace, "MAX_TRACE_TRANSFERS", 5)
    with pytest.raises(CommsimError, match="too many"):
        simulate(s, G, 4096).to_chrome_trace(tmp_path / "x.json")
