"""``commsim simulate``: tables with units, JSON lines, links, traces, one-line errors."""

from __future__ import annotations

import json

import pytest

from commsim import topology
from commsim.cli import main
from commsim.cli import simulate as cli_simulate

KEYS = {"collective", "algorithm", "nranks", "size", "time_us", "algbw_gbps", "busbw_gbps",
        "t_model_us", "bottleneck"}


@pytest.fixture(autouse=True)
def wide(monkeypatch):
    monkeypatch.setenv("COLUMNS", "220")


def _rows(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_table_and_json_lines(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    rc = main(["simulate", "--topology", "ring-8", "--algorithm", "ring,rhd", "--size", "1M",
               "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    # piped (not a terminal): plain columns, one header line, no box drawing
    header = next(line for line in text.splitlines() if line.startswith("#algorithm"))
    for unit in ("time_(us)", "algbw_(GB/s)", "busbw_(GB/s)", "model_(us)", "size_(B)",
                 "util_(%)"):
        assert unit in header.split()
    assert not any(c in text for c in "┏━│└")
    rows = _rows(out)
    assert [r["algorithm"] for r in rows] == ["ring", "rhd"]
    for r in rows:
        assert KEYS <= set(r)
        assert r["nranks"] == 8 and r["size"] == 2**20 and r["time_us"] > 0
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * 2 * 7 / 8)
        assert r["algbw_gbps"] == pytest.approx(2**20 / (r["time_us"] * 1e-6) / 1e9)


def test_a_ring_on_a_star_matches_the_model(tmp_path, capsys):
    out = tmp_path / "r.jsonl"
    assert main(["simulate", "--topology", "localhost", "--algorithm", "ring",
                 "--nranks", "6", "--size", "6M",
                 "--collective", "reduce_scatter", "--json", str(out)]) == 0
    (row,) = _rows(out)
    assert row["time_us"] == pytest.approx(row["t_model_us"], rel=1e-9)


def test_size_sweep_links_and_traces(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli_simulate, "PROGRESS_AFTER_S", 0.0)   # the bar shows at once
    out, tr = tmp_path / "r.jsonl", tmp_path / "trace.json"
    rc = main(["simulate", "--topology", "leaf-spine-2to1", "--algorithm", "ring",
               "--nranks", "8", "--sizes",
               "1K:4K", "--links", "--trace", str(tr), "--json", str(out)])
    text = capsys.readouterr().out
    assert rc == 0
    rows = _rows(out)
    assert [r["size"] for r in rows] == [1024, 2048, 4096]
    assert "held the run up" in text and "bytes_(MB)" in text
    for r in rows:
        assert r["links"] and r["links"][0]["bytes"] > 0
        trace = json.loads(open(r["trace"]).read())
        assert trace["traceEvents"]
    assert (tmp_path / "trace-ring-1K.json").exists()


def test_single_trace_keeps_its_name(tmp_path, capsys):
    tr = tmp_path / "one.json"
    assert main(["simulate", "--topology", "ring-8", "--algorithm", "ring",
                 "--size", "64K", "--trace", str(tr)]) == 0
    assert json.loads(tr.read_text())["traceEvents"]


@pytest.mark.parametrize("argv, words", [
    (["--algorithm", "bogus"], "unknown allreduce algorithm"),
    (["--nranks", "99"], "99 ranks need 99 gpus"),
    (["--size", "12Q"], "is not a size"),
    (["--collective", "allscatter"], "unknown collective"),
    (["--chunks", "0"], "--chunks"),
])
def test_bad_input_is_one_line_and_exit_2(argv, words, capsys):
    rc = main(["simulate", "--topology", "ring-8"] + argv)
    err = capsys.readouterr().err.strip()
    assert rc == 2
    assert len(err.splitlines()) == 1 and words in err


def test_unreachable_gpus_are_one_line_and_exit_2(tmp_path, capsys):
    path = tmp_path / "line.yaml"
    path.write_text("""name: line
nodes: [{name: g0, kind: gpu}, {name: g1, kind: gpu}, {name: g2, kind: gpu}]
links:
  - {src: g0, dst: g1, bandwidth: 10GB/s, latency: 1us}
  - {src: g1, dst: g2, bandwidth: 10GB/s, latency: 1us}
""")
    rc = main(["simulate", "--topology", str(path), "--algorithm", "ring", "--size", "1K"])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1
    assert "g0" in err or "g2" in err or "reach" in err


@pytest.mark.parametrize("name", topology.presets())
def test_every_preset_simulates(name, capsys, tmp_path):
    # at most 64 ranks: rail-misaligned ring traffic on the big DGX presets collides under
    # ECMP, and a contended 1024-rank ring takes the event engine minutes
    out = tmp_path / "r.jsonl"
    n = min(64, len(topology.gpus(topology.load(name))))
    assert main(["simulate", "--topology", name, "--algorithm", "ring",
                 "--nranks", str(n), "--size", "1M",
                 "--json", str(out)]) == 0
    (row,) = _rows(out)
    assert row["time_us"] > 0 and row["bottleneck"]


def test_a_late_rank_delays_a_ring_by_exactly_its_lateness(tmp_path):
    """On a star the ring is contention-free; every rank waits on its neighbours, so a
    rank entering 100 us late delays the whole reduce-scatter by exactly 100 us."""
    out = tmp_path / "r.jsonl"
    assert main(["simulate", "--topology", "localhost", "--algorithm", "ring",
                 "--nranks", "6", "--size", "6M", "--collective", "reduce_scatter",
                 "--late", "2:100us", "--json", str(out)]) == 0
    (row,) = _rows(out)
    assert row["time_us"] == pytest.approx(row["t_model_us"] + 100, rel=1e-9)


def test_a_slow_reducer_slows_the_run(tmp_path):
    times = []
    for extra in ([], ["--slow-reduce", "0:8"]):
        out = tmp_path / f"r{len(extra)}.jsonl"
        assert main(["simulate", "--topology", "localhost", "--algorithm", "ring",
                     "--nranks", "4", "--size", "4M", "--gamma", "0.1ns", "--json", str(out),
                     *extra]) == 0
        times.append(_rows(out)[0]["time_us"])
    assert times[1] > times[0] * 1.05


@pytest.mark.parametrize("argv,fragment", [
    (["--late", "3200us"], "RANK:VALUE"),
    (["--late", "3:soon"], "--late"),
    (["--late", "30:1us"], "--late: rank 30 does not exist"),
    (["--slow-reduce", "0:fast"], "--slow-reduce"),
])
def test_bad_straggler_flags(capsys, argv, fragment):
    assert main(["simulate", "--topology", "ring-8", "--algorithm", "ring", "--size", "1K",
                 *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err and len(err.strip().splitlines()) == 1


# -- hardening: output paths, degenerate and unit-less values, errors before output --------

ARGS = ["simulate", "--topology", "ring-8", "--algorithm", "ring", "--size", "1K"]


def test_json_and_traces_create_missing_folders(tmp_path, capsys):
    js, tr = tmp_path / "new" / "deeper" / "r.jsonl", tmp_path / "traces" / "t.json"
    assert main([*ARGS, "--sizes", "1K,2K", "--json", str(js), "--trace", str(tr)]) == 0
    assert len(_rows(js)) == 2
    assert (tmp_path / "traces" / "t-ring-1K.json").exists()
    assert (tmp_path / "traces" / "t-ring-2K.json").exists()


@pytest.mark.parametrize("flag", ["--json", "--trace"])
@pytest.mark.parametrize("kind", ["folder", "under-a-file"])
def test_bad_output_paths_are_refused_before_the_run(tmp_path, capsys, flag, kind):
    (tmp_path / "plain").write_text("a file")
    path = tmp_path if kind == "folder" else tmp_path / "plain" / "x.json"
    before = sorted(tmp_path.rglob("*"))
    assert main([*ARGS, flag, str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and flag in err
    assert sorted(tmp_path.rglob("*")) == before


def test_json_and_trace_may_not_be_one_file(tmp_path, capsys):
    path = tmp_path / "same.json"
    assert main([*ARGS, "--json", str(path), "--trace", str(path)]) == 2
    err = capsys.readouterr().err
    assert "--json and --trace" in err and not path.exists()


@pytest.mark.parametrize("argv,fragment", [
    (["--nranks", "1"], "--nranks: 1 rank has nothing to communicate; give 2 or more"),
    (["--nranks", "0"], "--nranks: 0"),
    (["--late", "3:200"], "--late: '200' has no unit; write 200us"),
    (["--gamma", "0.01"], "--gamma: '0.01' has no unit"),
    (["--late", "1:1us", "--late", "1:2us"], "--late: rank 1 is given twice"),
    (["--root", "2"], "--root: allreduce has no root"),
])
def test_degenerate_and_unitless_values_are_refused(capsys, argv, fragment):
    assert main([*ARGS, *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and fragment in err and len(err.strip().splitlines()) == 1


def test_zero_needs_no_unit_and_no_inf_or_nan_is_printed(tmp_path, capsys):
    path = tmp_path / "r.jsonl"
    assert main([*ARGS, "--gamma", "0", "--late", "3:0", "--json", str(path)]) == 0
    out = capsys.readouterr().out
    assert "inf" not in out and "nan" not in out
    assert "Infinity" not in path.read_text() and "NaN" not in path.read_text()


@pytest.mark.parametrize("argv,fragment", [
    (["--late", "99:10us"], "--late: rank 99 does not exist on 8 ranks"),
    (["--slow-reduce", "9:2"], "--slow-reduce: rank 9 does not exist on 8 ranks"),
    (["--collective", "broadcast", "--algorithm", "binomial", "--root", "9"],
     "--root: rank 9 does not exist on 8 ranks"),
    (["--gamma", "1e300s"], "--gamma"),
])
def test_errors_come_before_any_output(capsys, argv, fragment):
    rc = main(["simulate", "--topology", "ring-8", "--size", "1K",
               *(["--algorithm", "ring"] if "--algorithm" not in argv else []), *argv])
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert "start_offsets" not in err and "reduce_slowdown" not in err


def test_help_renders_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    out = capsys.readouterr().out
    assert "75-85%" in out and "%%" not in out


def test_the_same_inputs_give_byte_identical_json_and_traces(tmp_path):
    from commsim.cli import main as cli_main

    outs = []
    json_path, trace = tmp_path / "run.jsonl", tmp_path / "trace.json"
    for _ in range(2):
        assert cli_main(["simulate", "--topology", "leaf-spine-2to1", "--algorithm", "ring",
                         "--size", "4M", "--placement", "random:3", "--links", "--json",
                         str(json_path), "--trace", str(trace)]) == 0
        outs.append((json_path.read_bytes(), trace.read_bytes()))
    assert outs[0] == outs[1] and b"ring" in outs[0][0]


def test_group_size_reaches_the_hierarchical_schedule(tmp_path, capsys):
    import json

    from commsim.cli import main as cli_main

    times = {}
    for group in (4, 8):
        path = tmp_path / f"g{group}.jsonl"
        assert cli_main(["simulate", "--topology", "dgx-a100-4node", "--algorithm",
                         "hierarchical", "--group-size", str(group), "--size", "16M",
                         "--json", str(path)]) == 0
        times[group] = json.loads(path.read_text())["time_us"]
    assert times[4] != times[8]
    capsys.readouterr()
    assert cli_main(["simulate", "--topology", "dgx-a100-4node", "--algorithm",
                     "hierarchical", "--group-size", "3"]) == 2
    assert "--group-size: 3 does not divide 32" in capsys.readouterr().err


# -- parity with bench: --collective all and comma lists; hierarchical of one level --------

def _json_run(tmp_path, *argv):
    path = tmp_path / "r.jsonl"
    rc = main(["simulate", "--topology", "ring-8", "--size", "64K", *argv, "--json", str(path)])
    return rc, (_rows(path) if rc == 0 else [])


def test_collective_all_is_one_row_per_collective_and_algorithm(tmp_path, capsys):
    from commsim import collectives

    rc, rows = _json_run(tmp_path, "--collective", "all")
    text = capsys.readouterr().out
    assert rc == 0
    assert [(r["collective"], r["algorithm"]) for r in rows] == collectives.available()
    assert {r["collective"] for r in rows} == set(collectives.COLLECTIVES)
    header = next(line for line in text.splitlines() if line.startswith("#collective"))
    assert header.split()[:2] == ["#collective", "algorithm"]
    for r in rows:
        assert r["time_us"] > 0 and r["size"] == 64 * 1024
        line = next(line for line in text.splitlines()
                    if line.split()[:2] == [r["collective"], r["algorithm"]])
        assert line


def test_a_comma_list_of_collectives_and_names_some_of_them_lack(tmp_path, capsys):
    rc, rows = _json_run(tmp_path, "--collective", "allreduce,all-gather,allreduce",
                         "--algorithm", "ring,rhd")
    assert rc == 0
    assert [(r["collective"], r["algorithm"]) for r in rows] == [
        ("allreduce", "ring"), ("allreduce", "rhd"), ("allgather", "ring"),
        ("allgather", "rhd")]
    capsys.readouterr()
    # chain is broadcast's and reduce's only, ring theirs not: each where it exists
    rc, rows = _json_run(tmp_path, "--collective", "allreduce,broadcast",
                         "--algorithm", "ring,chain", "--root", "3")
    assert rc == 0
    assert [(r["collective"], r["algorithm"]) for r in rows] == [
        ("allreduce", "ring"), ("broadcast", "chain")]
    # a listed collective that has none of the names gives no rows, and a note says so
    rc, rows = _json_run(tmp_path, "--collective", "allreduce,broadcast", "--algorithm", "ring")
    assert rc == 0 and [r["collective"] for r in rows] == ["allreduce"]
    assert "note: broadcast: none of the algorithms asked for (ring)" in capsys.readouterr().out


def test_one_collective_keeps_its_table_without_a_collective_column(tmp_path, capsys):
    rc, rows = _json_run(tmp_path, "--collective", "allgather", "--algorithm", "ring")
    text = capsys.readouterr().out
    assert rc == 0 and rows[0]["collective"] == "allgather"
    assert "#algorithm" in text and "#collective" not in text


@pytest.mark.parametrize("argv,fragment", [
    (["--collective", "allreduce,allgathr"], "unknown collective 'allgathr'; did you mean "
                                             "'allgather'"),
    (["--collective", "al"], "did you mean 'all'"),
    (["--collective", "allreduce,allgather", "--algorithm", "rign"],
     "unknown allreduce/allgather algorithm 'rign'; did you mean 'ring'?"),
    (["--collective", "all", "--algorithm", "pairwize"],
     "unknown algorithm 'pairwize'; did you mean 'pairwise'?"),
    (["--collective", ","], "--collective: give at least one name"),
    (["--collective", "allreduce,allgather", "--root", "1"],
     "--root: allreduce, allgather have no root"),
    (["--collective", "all", "--algorithm", "ring", "--group-size", "4"],
     "--group-size: only the hierarchical algorithm"),
])
def test_bad_collective_lists_are_one_line_exit_2_before_any_output(capsys, argv, fragment):
    assert main(["simulate", "--topology", "ring-8", "--size", "1K", *argv]) == 2
    out, err = capsys.readouterr()
    assert out == "" and fragment in err and len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_traces_are_named_per_collective_when_there_are_several(tmp_path, capsys):
    tr = tmp_path / "t.json"
    assert main(["simulate", "--topology", "ring-8", "--collective", "allreduce,alltoall",
                 "--algorithm", "ring,pairwise", "--size", "1K", "--trace", str(tr)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [
        "t-allreduce-ring-1K.json", "t-alltoall-pairwise-1K.json"]
    with pytest.raises(SystemExit):
        main(["simulate", "--help"])
    assert "FILE-COLLECTIVE-ALGORITHM-SIZE.json" in capsys.readouterr().out


@pytest.mark.parametrize("p", [8, 6])
@pytest.mark.parametrize("group", ["p", 1])
def test_hierarchical_of_one_level_is_the_one_level_schedule(p, group):
    """What the note says: groups of 1 or of every rank build ring's (allreduce) and
    pairwise's (alltoall) transfers exactly."""
    from commsim import collectives

    def transfers(s):
        return sorted(zip(s.step.tolist(), s.src.tolist(), s.dst.tolist(), s.chunk.tolist(),
                          s.reduce.tolist()))

    g = p if group == "p" else group
    for coll, flat in (("allreduce", "ring"), ("alltoall", "pairwise")):
        hier = collectives.build(coll, "hierarchical", p, group_size=g)
        assert transfers(hier) == transfers(collectives.build(coll, flat, p))


@pytest.mark.parametrize("group,note", [
    ("8", "hierarchical with groups of 8 on 8 ranks is one group: the schedule is a ring"),
    ("1", "hierarchical with groups of 1 on 8 ranks has one rank a group: the schedule is "
          "a ring"),
    (None, "hierarchical with groups of 8 on 8 ranks is one group"),   # the default: gcd(8, 8)
    ("4", None),
])
def test_hierarchical_that_is_one_level_says_so(tmp_path, capsys, group, note):
    argv = ["--algorithm", "ring,hierarchical"] + (["--group-size", group] if group else [])
    rc, rows = _json_run(tmp_path, *argv)
    out = capsys.readouterr().out
    assert rc == 0
    if note is None:
        assert "hierarchical with groups" not in out
        return
    assert f"note: {note}" in out
    ring, hier = rows
    # the same transfers on the same routes: the same time, to rounding
    assert hier["time_us"] == pytest.approx(ring["time_us"], rel=1e-9)


def test_the_note_names_the_collective_when_there_are_several(tmp_path, capsys):
    rc, _ = _json_run(tmp_path, "--collective", "allreduce,alltoall", "--algorithm",
                      "hierarchical", "--group-size", "8")
    out = capsys.readouterr().out
    assert rc == 0
    assert ("note: allreduce hierarchical with groups of 8 on 8 ranks is one group: the "
            "schedule is a ring") in out
    assert ("note: alltoall hierarchical with groups of 8 on 8 ranks is one group: the "
            "schedule is pairwise") in out
