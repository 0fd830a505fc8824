"""commsim sweep on the command line: bad input is one line and exit 2 before any work; a
tiny study end to end with its HTML report; no mpi4py needed."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from commsim.cli import main
from commsim.plan import sweep

ROOT = Path(__file__).resolve().parent.parent
SMALL = {"name": "small", "kind": "simulate", "topology": "ring-8",
         "algorithm": ["ring", "rhd"], "size": ["64K", "1M"], "nranks": [4, 8]}


def study_file(tmp_path, data=SMALL, name="s.yaml") -> Path:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def test_tiny_study_end_to_end_with_report(tmp_path, capsys):
    out, report = tmp_path / "res" / "r.jsonl", tmp_path / "r.html"
    rc = main(["sweep", str(study_file(tmp_path)), "--out", str(out), "--report",
               str(report), "--workers", "2"])
    assert rc == 0
    captured = capsys.readouterr()
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert len(rows) == 8 and len({r["key"] for r in rows}) == 8
    for r in rows:
        assert r["study"] == "small" and r["kind"] == "simulate"
        for key in ("time_us", "busbw_gbps", "algbw_gbps", "bottleneck", "events", "wall_s"):
            assert key in r
    # the summary: a table of the varying axes and a fastest-algorithm table (plain text:
    # not a terminal), the progress on stderr
    assert "# small: 8 of 8 scenarios (simulate)" in captured.out
    assert "# fastest algorithm per size, ranks" in captured.out
    assert "8 to run on 2 local processes" in captured.err
    html = report.read_text()
    assert html.startswith("<!DOCTYPE html>") and "<table" in html
    assert html.count("data:image/png;base64,") >= 2      # one busbw figure per rank count
    assert "http://" not in html and "https://" not in html and "<script" not in html
    # a second run finds everything done
    assert main(["sweep", str(study_file(tmp_path)), "--out", str(out)]) == 0
    assert "8 already in" in capsys.readouterr().err


def test_workload_and_plan_studies_end_to_end(tmp_path, capsys):
    work = {"name": "w", "kind": "workload",
            "topology": {"builder": "dgx_cluster", "params": {"nodes": 2, "gpus_per_node": 4}},
            "workload": "tp8-dp32", "layout": {"tp": [2, 4]},
            "compute": {"forward": "1ms", "backward": "2ms"}}
    plan = {"name": "p", "kind": "plan", "topology": "dgx-a100-4node", "model": "llama3-8b",
            "gpus": [8, 16], "layout": {"tp": [4, 8]},
            "training": {"global_batch": 16, "seq_len": 1024}, "simulate": False}
    for data in (work, plan):
        report = tmp_path / f"{data['name']}.html"
        rc = main(["sweep", str(study_file(tmp_path, data, f"{data['name']}.yaml")), "--out",
                   str(tmp_path / f"{data['name']}.jsonl"), "--report", str(report),
                   "--workers", "1"])
        assert rc == 0
        assert report.read_text().count("data:image/png;base64,") >= 1
    text = capsys.readouterr().out
    assert "fastest layout per what-if" not in text   # what_if does not vary
    assert "fastest layout that fits per gpus" in text


def _one_line(capsys) -> str:
    err = capsys.readouterr().err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.mark.parametrize("text,match", [
    ("name: x\ntopology: ring-8\nsizes: [1M]\n", "did you mean 'size'"),
    ("name: x\ntopology: ring-8\nalgorithm: []\n", "grid empty"),
    ("name: x\ntopology: ring-8\nnranks: many\n", "nranks: 'many' must be"),
    ("name: x\ntopology: ring-8\nsize: 1Q\n", "size"),
    ("name: x\ntopology: ring-8\nsize: [1M\n", "not valid YAML at line"),
    ("name: x\ntopology: ring-9\n", "did you mean 'ring-8'"),
    ("name: x\ntopology: ring-8\nnranks: 64\n", "64 ranks need 64 gpus"),
    ("- a list\n", "must be a YAML mapping"),
    ("name: x\nkind: plan\ntopology: dgx-h100-32node\nmodel: 70B\ngpus: 48\n"
     "layout: {tp: 8, pp: 3}\n", "pp 3 does not divide the 80 layers"),
])
def test_bad_study_one_line_exit_2_and_nothing_runs(text, match, tmp_path, capsys,
                                                    monkeypatch):
    monkeypatch.setattr(sweep, "run_scenario", lambda task: pytest.fail("a scenario ran"))
    out = tmp_path / "r.jsonl"
    rc = main(["sweep", str(study_file(tmp_path, text)), "--out", str(out)])
    assert rc == 2
    line = _one_line(capsys)
    assert line.startswith("commsim sweep: error: ") and match in line, line
    assert not out.exists()


def test_outputs_are_checked_before_any_work(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(sweep, "run_scenario", lambda task: pytest.fail("a scenario ran"))
    study = study_file(tmp_path)
    blocker = tmp_path / "file"
    blocker.write_text("x")
    cases = [(["--out", str(blocker / "r.jsonl")], "is a file, not a folder"),
             (["--out", str(tmp_path)], "is a folder"),
             (["--out", str(tmp_path / "r.jsonl"), "--report", str(blocker / "r.html")],
              "--report"),
             (["--out", str(tmp_path / "r.jsonl"), "--report", str(tmp_path / "r.jsonl")],
              "same file"),
             (["--out", str(tmp_path / "r.jsonl"), "--workers", "0"], "--workers"),
             (["--out", str(tmp_path / "r.jsonl")], None)]
    if os.geteuid() != 0:   # root writes anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        cases.insert(0, (["--out", str(locked / "r.jsonl")], "not writable"))
    for flags, match in cases[:-1]:
        assert main(["sweep", str(study), *flags]) == 2, flags
        assert match in _one_line(capsys)
    assert not (tmp_path / "r.jsonl").exists()
    assert main(["sweep", "nope.yaml", "--out", str(tmp_path / "r.jsonl")]) == 2
    assert "no such file" in _one_line(capsys)


def test_results_of_another_study_are_refused(tmp_path, capsys, monkeypatch):
    out = tmp_path / "r.jsonl"
    assert main(["sweep", str(study_file(tmp_path)), "--out", str(out), "--workers", "1"]) == 0
    capsys.readouterr()
    before = out.read_text()
    monkeypatch.setattr(sweep, "run_scenario", lambda task: pytest.fail("a scenario ran"))
    other = dict(SMALL, name="other")
    assert main(["sweep", str(study_file(tmp_path, other, "o.yaml")), "--out",
                 str(out)]) == 2
    line = _one_line(capsys)
    assert "holds rows of study 'small'" in line and "not of study 'other'" in line
    out2 = tmp_path / "notes.jsonl"
    out2.write_text("hello\n")
    assert main(["sweep", str(study_file(tmp_path)), "--out", str(out2)]) == 2
    assert "line 1 is not a sweep row" in _one_line(capsys)
    assert out.read_text() == before and out2.read_text() == "hello\n"


def test_a_scenario_that_fails_keeps_the_rows_before_it(tmp_path, capsys, monkeypatch):
    from commsim.errors import CommsimError

    real = sweep.run_scenario
    calls = []

    def third_fails(task):
        calls.append(task)
        if len(calls) == 3:
            raise CommsimError("the topology melted")
        return real(task)

    monkeypatch.setattr(sweep, "run_scenario", third_fails)
    out = tmp_path / "r.jsonl"
    assert main(["sweep", str(study_file(tmp_path)), "--out", str(out), "--workers",
                 "1"]) == 2
    err = capsys.readouterr().err
    assert "Traceback" not in err
    line = err.strip().splitlines()[-1]     # after the progress lines
    assert line.startswith("commsim sweep: error: scenario ring-8, ring, 1M, nranks 4: "
                           "the topology melted")
    assert "2 rows kept" in line
    assert len(out.read_text().splitlines()) == 2


def test_runs_without_mpi4py_and_says_so_under_mpirun(tmp_path):
    code = ("import sys; sys.modules['mpi4py'] = None; from commsim.cli import main; "
            "raise SystemExit(main(sys.argv[1:]))")
    env = {k: v for k, v in os.environ.items()
           if k not in ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE",
                        "PMIX_SIZE")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")])
    study = study_file(tmp_path, dict(SMALL, size=["64K"], nranks=[4]))
    args = [sys.executable, "-c", code, "sweep", str(study), "--out",
            str(tmp_path / "r.jsonl"), "--workers", "2"]
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert len((tmp_path / "r.jsonl").read_text().splitlines()) == 2
    env["OMPI_COMM_WORLD_SIZE"] = "2"
    proc = subprocess.run(args, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "mpi4py is not installed" in proc.stderr


def test_a_second_sweep_on_the_same_file_is_refused(tmp_path, capsys, monkeypatch):
    fcntl = pytest.importorskip("fcntl")
    out = tmp_path / "r.jsonl"
    monkeypatch.setattr(sweep, "run_scenario", lambda task: pytest.fail("a scenario ran"))
    with open(out, "a") as held:
        fcntl.flock(held.fileno(), fcntl.LOCK_EX)
        assert main(["sweep", str(study_file(tmp_path)), "--out", str(out)]) == 2
    assert "another commsim sweep is writing" in _one_line(capsys)
