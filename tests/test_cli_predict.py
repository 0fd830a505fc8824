"""``commsim algorithms`` and ``commsim predict``: output, JSON lines and bad input."""

import json

import pytest

from commsim import model
from commsim.cli import main


def test_help_lists_verbs(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    assert exc.value.code == 0
    out = capsys.readouterr().out
    for verb in ("algorithms", "predict"):
        assert verb in out


def test_algorithms_lists_every_pair_with_a_formula(capsys):
    assert main(["algorithms"]) == 0
    out = capsys.readouterr().out.replace("_", " ")  # piped: a cell's spaces become _
    for name in ("ring", "rhd", "dbt", "hierarchical", "binomial", "chain", "2(p-1) a"):
        assert name in out


def test_predict_single(capsys, tmp_path):
    path = tmp_path / "p.jsonl"
    argv = ["predict", "--collective", "allreduce", "--algorithm", "ring", "--nranks", "64",
            "--size", "256M", "--alpha", "5us", "--bandwidth", "25GB/s", "--json", str(path)]
    assert main(argv) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert len(rows) == 1
    row = rows[0]
    want = model.predict("allreduce", "ring", 64, 256 * 2**20, 5e-6, 1 / 25e9)
    assert row["time_us"] == pytest.approx(want * 1e6)
    assert row["algbw_gbps"] == pytest.approx(256 * 2**20 / want / 1e9)
    assert row["busbw_gbps"] == pytest.approx(row["algbw_gbps"] * 2 * 63 / 64)
    out = capsys.readouterr().out
    assert f"{want * 1e6:,.0f}" in out
    assert f"{row['algbw_gbps']:.4g}" in out and f"{row['busbw_gbps']:.4g}" in out


def test_predict_sweeps_every_algorithm(tmp_path):
    path = tmp_path / "p.jsonl"
    assert main(["predict", "--alpha", "2us", "--bandwidth", "100Gb/s", "--nranks", "16",
                 "--size", "1K:1M", "--json", str(path)]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    assert {r["algorithm"] for r in rows} == {"ring", "tree", "dbt", "rhd", "hierarchical",
                                               "nccl_tree"}
    assert len(rows) == 6 * 11
    tree = [r for r in rows if r["algorithm"] == "tree"]
    assert tree[-1]["nchunks"] > tree[0]["nchunks"]  # auto chunking pipelines large sizes


@pytest.mark.parametrize("argv,fragment", [
    (["--size", "12Q"], "--size"),
    (["--alpha", "5us"], "both --alpha and --bandwidth"),
    (["--alpha", "fast", "--bandwidth", "1GB/s"], "--alpha"),
    (["--alpha", "1us", "--bandwidth=-3GB/s"], "--bandwidth"),
    (["--algorithm", "rign", "--alpha", "1us", "--bandwidth", "1GB/s"], "did you mean 'ring'"),
    (["--collective", "allreduse", "--alpha", "1us", "--bandwidth", "1GB/s"], "allreduce"),
    (["--chunks", "zero", "--alpha", "1us", "--bandwidth", "1GB/s"], "--chunks"),
])
def test_predict_bad_input_is_one_line_exit_2(capsys, argv, fragment):
    assert main(["predict", *argv]) == 2
    err = capsys.readouterr().err
    assert fragment in err
    assert len(err.strip().splitlines()) == 1
    assert "Traceback" not in err


def test_argparse_errors_are_one_line_too(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["predict", "--nranks", "many"])
    assert exc.value.code == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "--nranks" in err


# -- hardening: output paths, degenerate and unit-less values, help -----------------------

FLAGS = ["predict", "--algorithm", "ring", "--nranks", "8", "--size", "1M",
         "--alpha", "5us", "--bandwidth", "25GB/s"]


def test_json_creates_a_missing_folder(tmp_path, capsys):
    path = tmp_path / "new" / "deeper" / "p.jsonl"
    assert main([*FLAGS, "--json", str(path)]) == 0
    assert json.loads(path.read_text())["algorithm"] == "ring"


@pytest.mark.parametrize("kind", ["folder", "under-a-file", "read-only-folder"])
def test_bad_json_paths_are_refused_before_the_work(tmp_path, capsys, kind):
    import os
    (tmp_path / "plain").write_text("a file")
    if kind == "folder":
        path = tmp_path
    elif kind == "under-a-file":
        path = tmp_path / "plain" / "p.jsonl"
    else:
        if os.geteuid() == 0:
            pytest.skip("root writes anywhere")
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        path = locked / "sub" / "p.jsonl"
    before = sorted(tmp_path.rglob("*"))
    assert main([*FLAGS, "--json", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1 and "--json" in err
    assert sorted(tmp_path.rglob("*")) == before


@pytest.mark.parametrize("argv,fragment", [
    (["--nranks", "1"], "--nranks: 1 rank has nothing to communicate; give 2 or more"),
    (["--nranks", "0"], "--nranks: 0"),   # not quietly 8
    (["--alpha", "5"], "--alpha: '5' has no unit; write 5us, 5ms or 5s"),
    (["--bandwidth", "25"], "--bandwidth: '25' has no unit; write 25GB/s"),
    (["--gamma", "0.01"], "--gamma: '0.01' has no unit; write 0.01ns"),
    (["--bandwidth", "1e-300B/s", "--size", "1G"], "--bandwidth"),   # would be inf
    (["--group-size", "2"], "--group-size: only the hierarchical algorithm"),
    (["--algorithm", "hierarchical", "--group-size", "3"], "--group-size: 3 does not divide"),
    (["--algorithm", "hierarchical", "--group-size", "0"], "--group-size: 0"),
])
def test_degenerate_and_unitless_values_are_refused(tmp_path, capsys, argv, fragment):
    path = tmp_path / "p.jsonl"
    argv = FLAGS + argv   # argparse: the later flag wins
    assert main([*argv, "--json", str(path)]) == 2
    out, err = capsys.readouterr()
    assert out == "" and fragment in err and len(err.strip().splitlines()) == 1
    assert not path.exists()


def test_one_rank_from_the_topology_is_refused_too(tmp_path, capsys):
    path = tmp_path / "one.yaml"
    path.write_text("builder: star\nparams: {n: 1, bandwidth: 10GB/s}\n")
    assert main(["predict", "--topology", str(path), "--size", "1K"]) == 2
    err = capsys.readouterr().err
    assert "nothing to communicate" in err and len(err.strip().splitlines()) == 1


def test_zero_needs_no_unit(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    assert main([*FLAGS, "--alpha", "0", "--gamma", "0", "--json", str(path)]) == 0
    row = json.loads(path.read_text())
    assert row["alpha_us"] == 0 and row["time_us"] > 0


def test_help_renders_a_single_percent_sign(capsys):
    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    out = capsys.readouterr().out
    assert "75-85%" in out and "%%" not in out


# -- parity with bench: --collective all and comma lists; hierarchical of one level --------

def _predict(tmp_path, *argv):
    path = tmp_path / "p.jsonl"
    rc = main(["predict", "--topology", "ring-8", "--size", "1M", *argv, "--json", str(path)])
    rows = [json.loads(line) for line in path.read_text().splitlines()] if rc == 0 else []
    return rc, rows


def test_predict_collective_all_is_one_row_per_collective_and_algorithm(tmp_path, capsys):
    from commsim import collectives

    rc, rows = _predict(tmp_path, "--collective", "all")
    out = capsys.readouterr().out
    assert rc == 0
    assert [(r["collective"], r["algorithm"]) for r in rows] == collectives.available()
    for r in rows:
        assert r["busbw_gbps"] == pytest.approx(
            r["algbw_gbps"] * model.busbw_factor(r["collective"], 8))
    lines = out.splitlines()
    header = next(line for line in lines if line.startswith("#collective"))
    assert header.split()[:2] == ["#collective", "algorithm"]
    for coll, algo in collectives.available():
        assert any(line.split()[:2] == [coll, algo] for line in lines)
    # one fastest (*) per collective, not one overall
    cells = [line.split() for line in lines if line.startswith(" ")]   # table rows
    starred = {c[0] for c in cells if any(x.endswith("*") for x in c)}
    assert starred == set(collectives.COLLECTIVES)


def test_predict_a_comma_list_over_sizes_has_a_collective_column(tmp_path, capsys):
    path = tmp_path / "p.jsonl"
    assert main(["predict", "--alpha", "2us", "--bandwidth", "25GB/s", "--nranks", "8",
                 "--collective", "allreduce,allgather", "--algorithm", "ring,tree",
                 "--size", "1K,1M", "--json", str(path)]) == 0
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    # tree is allreduce's only: used where it exists
    assert [(r["collective"], r["algorithm"], r["size"]) for r in rows] == [
        ("allreduce", "ring", 1024), ("allreduce", "tree", 1024),
        ("allreduce", "ring", 2**20), ("allreduce", "tree", 2**20),
        ("allgather", "ring", 1024), ("allgather", "ring", 2**20)]
    out = capsys.readouterr().out
    assert "#collective  size  ring  tree".split() == next(
        line for line in out.splitlines() if line.startswith("#collective")).split()
    allgather = [line.split() for line in out.splitlines() if line.startswith(" allgather")]
    assert allgather and all(cells[-1] == "-" for cells in allgather)   # no tree there


@pytest.mark.parametrize("argv,fragment", [
    (["--collective", "allreduce,alltoal"], "unknown collective 'alltoal'; did you mean "
                                            "'alltoall'"),
    (["--collective", "allreduce,alltoall", "--algorithm", "pairwize"],
     "did you mean 'pairwise'?"),
    (["--collective", "allgather,reduce_scatter", "--algorithm", "rhd", "--group-size", "2"],
     "--group-size: only the hierarchical algorithm"),
])
def test_predict_bad_collective_lists_are_one_line_exit_2(tmp_path, capsys, argv, fragment):
    rc, _ = _predict(tmp_path, *argv)
    out, err = capsys.readouterr()
    assert rc == 2 and out == ""
    assert fragment in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "p.jsonl").exists()


@pytest.mark.parametrize("where,group,note", [
    (["--topology", "ring-8"], "8",
     "hierarchical with groups of 8 on 8 ranks is one group: the schedule is a ring"),
    (["--topology", "ring-8"], None, "hierarchical with groups of 8 on 8 ranks is one group"),
    (["--alpha", "5us", "--bandwidth", "25GB/s", "--nranks", "8"], "1",
     "hierarchical with groups of 1 on 8 ranks has one rank a group: the schedule is a ring"),
    (["--alpha", "5us", "--bandwidth", "25GB/s", "--nranks", "8"], "4", None),
    (["--topology", "dgx-a100-4node"], None, None),     # groups of 8 (a node) on 32 ranks
])
def test_predict_hierarchical_that_is_one_level_says_so(tmp_path, capsys, where, group, note):
    path = tmp_path / "p.jsonl"
    assert main(["predict", *where, "--algorithm", "ring,hierarchical", "--size", "1M",
                 *(["--group-size", group] if group else []), "--json", str(path)]) == 0
    out = capsys.readouterr().out
    if note is None:
        assert "hierarchical with groups" not in out
        return
    assert f"note: {note}" in out
    ring, hier = (json.loads(line) for line in path.read_text().splitlines())
    assert hier["time_us"] == pytest.approx(ring["time_us"], rel=1e-9)


def test_predict_the_note_for_alltoall_says_pairwise(tmp_path, capsys):
    rc, rows = _predict(tmp_path, "--collective", "alltoall,allreduce", "--algorithm",
                        "hierarchical,pairwise,ring")
    out = capsys.readouterr().out
    assert rc == 0
    assert ("note: alltoall hierarchical with groups of 8 on 8 ranks is one group: the "
            "schedule is pairwise") in out
    assert "note: allreduce hierarchical with groups of 8 on 8 ranks is one group" in out
    times = {(r["collective"], r["algorithm"]): r["time_us"] for r in rows}
    assert times["alltoall", "hierarchical"] == pytest.approx(times["alltoall", "pairwise"])
