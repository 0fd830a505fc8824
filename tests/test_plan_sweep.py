"""commsim.plan.sweep: study parsing, grid expansion, stable keys, resuming, and results
that do not depend on how many workers ran them."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from commsim.cli import main
from commsim.errors import CommsimError
from commsim.plan import pool, sweep

ROOT = Path(__file__).resolve().parent.parent

TINY = {
    "name": "tiny",
    "kind": "simulate",
    "topology": {"builder": "fat_tree", "params": {"k": 4, "bandwidth": "200Gb/s",
                                                   "latency": "500ns"}},
    "algorithm": ["ring", "dbt", "hierarchical"],
    "size": ["64K", "1M"],
    "nranks": [4, "all"],
    "group_size": "switch",
    "what_if": [{}, {"bandwidth": "2x"}],
}


def write_study(tmp_path, study=TINY, name="study.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(study, sort_keys=False))
    return path


def rows_of(path) -> list[dict]:
    """The rows of a results file sorted by key, without wall_s (which varies)."""
    rows = [json.loads(line) for line in Path(path).read_text().splitlines() if line]
    for r in rows:
        r.pop("wall_s")
    return sorted(rows, key=lambda r: r["key"])


# -- grid expansion -------------------------------------------------------------------------

def test_grid_is_the_product_of_the_axes_in_the_study_order():
    study = sweep.parse_study(TINY)
    scenarios = sweep.expand(study)
    assert len(scenarios) == 3 * 2 * 2 * 2
    first = scenarios[0].params
    assert (first["algorithm"], first["size"], first["nranks"], first["what_if"]) == \
        ("ring", 64 << 10, 4, {})
    # the first axis varies slowest, the last fastest
    assert [sc.params["what_if"] for sc in scenarios[:2]] == [{}, {"bandwidth": "2x"}]
    assert [sc.params["algorithm"] for sc in scenarios[::8]] == ["ring", "dbt",
                                                                 "hierarchical"]
    # defaults are filled in, so every row carries every parameter
    assert first["collective"] == "allreduce" and first["mode"] == "step"
    assert first["placement"] == "linear" and first["chunks"] == "auto"
    assert [sc.index for sc in scenarios] == list(range(24))
    assert len({sc.key for sc in scenarios}) == 24


def test_lists_inside_mappings_are_axes_and_labels_name_them():
    study = sweep.parse_study({
        "name": "x", "topology": [{"builder": "fat_tree", "params": {"k": [4, 6]}},
                                  "ring-8"],
        "algorithm": "ring", "size": "1M:4M",
        "what_if": {"bandwidth": ["2x", "4x"], "latency": "1us"}})
    scenarios = sweep.expand(study)
    assert len(scenarios) == 3 * 3 * 2
    assert [sc.params["size"] for sc in scenarios[:6:2]] == [1 << 20, 2 << 20, 4 << 20]
    assert {sc.topology_name for sc in scenarios} == {"fat_tree k=4", "fat_tree k=6",
                                                      "ring-8"}
    assert scenarios[0].params["what_if"] == {"bandwidth": "2x", "latency": "1us"}
    assert sweep.what_if_label(scenarios[0].params["what_if"]) == "bandwidth=2x,latency=1us"


def test_algorithm_all_expands_per_collective_and_duplicates_collapse():
    study = sweep.parse_study({"name": "x", "topology": "ring-8",
                               "collective": ["allreduce", "allgather"], "algorithm": "all",
                               "size": ["1M", 1048576]})
    scenarios = sweep.expand(study)
    from commsim import collectives

    want = sum(len(collectives.algorithms(c)) for c in ("allreduce", "allgather"))
    assert len(scenarios) == want   # 1M and 1048576 are the same scenario


def test_keys_are_stable_spelling_proof_and_change_with_any_parameter():
    base = sweep.expand(sweep.parse_study({"name": "a", "topology": "fat-tree-k8",
                                           "algorithm": "dbt", "size": "1M"}))[0]
    # the same scenario written differently, in a study of another name
    same = sweep.expand(sweep.parse_study({"name": "b", "topology": "fat-tree-k8",
                                           "collective": "all-reduce",
                                           "algorithm": "double_binary_tree",
                                           "size": 1048576, "nranks": "all",
                                           "what_if": {}}))[0]
    assert same.key == base.key
    # the key is a function of the parameters alone: pinned, so that results files
    # written by earlier versions keep resuming
    assert base.key == sweep.scenario_key("simulate", base.params)
    assert base.key == "4fc221f4d14137a2", base.key
    spelled_out = {"kind": "simulate", "topology": "fat-tree-k8", "collective": "allreduce",
                   "algorithm": "dbt", "size": 1048576, "nranks": "all",
                   "placement": "linear", "what_if": {}, "mode": "step", "routing": "ecmp",
                   "sharing": "maxmin", "chunks": "auto", "channels": "auto",
                   "group_size": "auto", "gamma": None}
    text = json.dumps(spelled_out, sort_keys=True, separators=(",", ":"))
    assert base.key == hashlib.sha256(text.encode()).hexdigest()[:16]
    other = sweep.expand(sweep.parse_study({"name": "a", "topology": "fat-tree-k8",
                                            "algorithm": "dbt", "size": "1M",
                                            "placement": "random"}))[0]
    assert other.key != base.key


def test_keys_do_not_depend_on_the_process(tmp_path):
    code = ("from commsim.plan import sweep; import yaml, sys; "
            "s = sweep.parse_study(yaml.safe_load(open(sys.argv[1]))); "
            "print(','.join(sc.key for sc in sweep.expand(s)))")
    path = write_study(tmp_path)
    keys = []
    for seed in ("0", "12345"):
        env = dict(os.environ, PYTHONHASHSEED=seed,
                   PYTHONPATH=os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
        out = subprocess.run([sys.executable, "-c", code, str(path)], env=env,
                             capture_output=True, text=True, check=True, timeout=60)
        keys.append(out.stdout.strip())
    assert keys[0] == keys[1]
    assert keys[0].split(",") == [sc.key for sc in sweep.expand(sweep.parse_study(TINY))]


@pytest.mark.parametrize("study,match", [
    ({"name": "x", "topology": "ring-8", "sizes": ["1M"]}, "did you mean 'size'"),
    ({"name": "x", "kind": "simulat", "topology": "ring-8"}, "did you mean 'simulate'"),
    ({"name": "x", "topology": "ring-8", "workload": "tp8-dp32"}, "belongs to a workload"),
    ({"name": "x", "topology": "ring-8", "algorithm": []}, "grid empty"),
    ({"name": "x", "topology": "ring-8", "size": True}, "not a size"),
    ({"name": "x", "topology": "ring-8", "nranks": 1}, "nranks"),
    ({"name": "x", "topology": "ring-8", "algorithm": "rign"}, "did you mean 'ring'"),
    ({"name": "x", "topology": "ring-8", "mode": "fast"}, "unknown mode"),
    ({"name": "x", "topology": {"builder": "fat_tree", "params": {"kk": 4}}},
     "did you mean 'k'"),
    ({"name": "x", "topology": "ring-8", "what_if": {"bandwidth": [1, []]}}, "must be"),
    ({"name": "x", "kind": "plan", "topology": "dgx-h100-32node", "model": "llama3-7b0",
      "gpus": 8}, "did you mean"),
    ({"name": "x", "kind": "plan", "topology": "dgx-h100-32node", "model": "70B",
      "gpus": 8, "training": {"strateg": "ddp"}}, "did you mean 'strategy'"),
    ({"name": "x", "kind": "workload", "topology": "ring-8"}, "workload: missing"),
    (["not", "a", "mapping"], "must be a YAML mapping"),
])
def test_bad_studies_are_one_line_naming_the_key(study, match):
    with pytest.raises(CommsimError, match=match) as info:
        sweep.expand(sweep.parse_study(study, source="s.yaml"))
    assert str(info.value).startswith("s.yaml: ") and "\n" not in str(info.value)


@pytest.mark.parametrize("study,match", [
    ({"name": "x", "topology": "ring-8", "nranks": 16}, "16 ranks need 16 gpus"),
    ({"name": "x", "topology": "ring-8", "what_if": {"bandwith": "2x"}},
     "did you mean 'bandwidth'"),
    ({"name": "x", "topology": "ring-8", "algorithm": "hierarchical", "group_size": 3},
     "does not divide 8"),
    ({"name": "x", "kind": "plan", "topology": "dgx-h100-32node", "model": "70B",
      "gpus": 64, "layout": {"tp": 3}}, "does not divide 64 gpus"),
    ({"name": "x", "kind": "workload", "topology": "ring-8", "workload": "tp8-dp32"},
     "256 ranks need"),
])
def test_scenarios_that_cannot_run_are_refused_before_any_work(study, match):
    scenarios = sweep.expand(sweep.parse_study(study))
    with pytest.raises(CommsimError, match=match) as info:
        sweep.check_scenarios(scenarios)
    assert str(info.value).startswith("scenario ")


def test_what_if_scales_values_with_units_and_defaults():
    data = {"name": "t", "builder": "leaf_spine", "params": {"host_bw": "200Gb/s",
                                                             "oversubscription": 2}}
    out = sweep.apply_what_if(data, {"host_bw": "2x", "host_latency": "0.5x",
                                     "spine_bw": "100GB/s"})
    assert out["params"]["host_bw"] == pytest.approx(50e9)
    assert out["params"]["host_latency"] == pytest.approx(0.5e-6)   # the builder's 1us
    assert "oversubscription" not in out["params"]     # builders take one of the two
    assert data["params"]["host_bw"] == "200Gb/s"      # the original is left alone
    out = sweep.apply_what_if(data, {"oversubscription": "4:1"})
    assert out["params"]["oversubscription"] == 4.0


# -- runs: workers, resuming -----------------------------------------------------------------

def test_one_and_two_workers_give_the_same_rows(tmp_path, capsys):
    study = write_study(tmp_path)
    for n in (1, 2):
        rc = main(["sweep", str(study), "--out", str(tmp_path / f"w{n}.jsonl"),
                   "--workers", str(n)])
        assert rc == 0
    capsys.readouterr()
    one, two = rows_of(tmp_path / "w1.jsonl"), rows_of(tmp_path / "w2.jsonl")
    assert len(one) == 24 and one == two
    row = one[0]
    for key in ("study", "kind", "key", "topology", "algorithm", "size", "nranks",
                "what_if", "time_us", "busbw_gbps", "algbw_gbps", "bottleneck", "events"):
        assert key in row
    assert row["study"] == "tiny" and row["time_us"] > 0 and row["events"] > 0
    # a what-if that doubles every link is faster, and hierarchical found its groups
    by = {(r["algorithm"], r["size"], str(r["nranks"]), json.dumps(r["what_if"])): r
          for r in one}
    base = by[("ring", 1 << 20, "all", "{}")]
    fast = by[("ring", 1 << 20, "all", json.dumps({"bandwidth": "2x"}))]
    assert fast["time_us"] < base["time_us"]
    assert by[("hierarchical", 1 << 20, "all", "{}")]["group"] == 2   # k/2 hosts a switch


def test_interrupted_sweep_resumes_to_the_rows_of_one_run(tmp_path, capsys, monkeypatch):
    study = write_study(tmp_path)
    whole, part = tmp_path / "whole.jsonl", tmp_path / "part.jsonl"
    assert main(["sweep", str(study), "--out", str(whole), "--workers", "1"]) == 0
    real = sweep.run_scenario
    calls = []

    def interrupted(task):
        if len(calls) == 7:
            raise KeyboardInterrupt
        calls.append(task)
        return real(task)

    monkeypatch.setattr(sweep, "run_scenario", interrupted)
    assert main(["sweep", str(study), "--out", str(part), "--workers", "1"]) == 130
    err = capsys.readouterr().err
    assert "7 rows kept" in err and "run again to resume" in err
    assert len(part.read_text().splitlines()) == 7
    # a kill in the middle of a write leaves half a line: it is dropped on resume
    with open(part, "a") as fh:
        fh.write('{"study": "tiny", "kind": "simulate", "key": "0123')
    monkeypatch.setattr(sweep, "run_scenario", real)
    assert main(["sweep", str(study), "--out", str(part), "--workers", "2"]) == 0
    out = capsys.readouterr()
    assert "7 already in" in out.err and "17 to run" in out.err
    assert rows_of(part) == rows_of(whole)
    # and once everything is there, nothing runs again
    monkeypatch.setattr(sweep, "run_scenario", lambda task: pytest.fail("ran again"))
    assert main(["sweep", str(study), "--out", str(part)]) == 0
    assert "0 to run" in capsys.readouterr().err


def test_a_grown_study_runs_only_its_new_scenarios(tmp_path, capsys):
    small = dict(TINY, algorithm=["ring"], size=["64K"], nranks=[4], what_if=[{}])
    out = tmp_path / "r.jsonl"
    assert main(["sweep", str(write_study(tmp_path, small)), "--out", str(out)]) == 0
    bigger = dict(small, size=["64K", "128K"])
    assert main(["sweep", str(write_study(tmp_path, bigger)), "--out", str(out)]) == 0
    err = capsys.readouterr().err
    assert "1 already in" in err and "1 to run" in err
    assert len(rows_of(out)) == 2


def test_workload_and_plan_scenarios_run():
    work = sweep.parse_study({
        "name": "w", "kind": "workload",
        "topology": {"builder": "dgx_cluster", "params": {"nodes": 2, "gpus_per_node": 4}},
        "workload": "tp8-dp32", "layout": {"tp": [2, 4]},
        "compute": {"forward": "1ms", "backward": "2ms"}})
    rows = [sweep.run_scenario(sc.task()) for sc in sweep.expand(work)]
    assert [(r["tp"], r["dp"], r["world"]) for r in rows] == [(2, 4, 8), (4, 2, 8)]
    for r in rows:   # dp fills what the study's tp leaves, not the file's dp 32
        assert r["time_us"] > r["compute_us"] > 0 and r["events"] > 0
        assert r["busbw_gbps"] is None and r["bottleneck"] and "dp" in r["dims"]
    plan = sweep.parse_study({
        "name": "p", "kind": "plan", "topology": "dgx-a100-4node", "model": "llama3-8b",
        "gpus": 8, "layout": {"tp": 8}, "training": {"global_batch": 8, "seq_len": 1024},
        "what_if": [{}, {"tp": 4}], "simulate": [True, False]})
    scenarios = sweep.expand(plan)
    rows = [sweep.run_scenario(sc.task()) for sc in scenarios]
    assert [r["source"] for r in rows] == ["simulator", "model", "simulator", "model"]
    assert [r["tp"] for r in rows] == [8, 8, 4, 4]
    for r in rows:
        assert r["time_us"] == pytest.approx(r["step_time_s"] * 1e6)
        assert 0 < r["mfu"] < 1 and r["fits"] in (True, False)
        json.dumps(sweep.make_row(plan, scenarios[0], r), allow_nan=False)


def test_local_pool_reports_which_task_failed():
    tasks = [1, 2, 0, 4]
    with pytest.raises(pool.TaskFailed) as info:
        dict(pool.run_unordered(_inverse, tasks, workers=2))
    assert info.value.index == 2 and isinstance(info.value.error, ZeroDivisionError)
    assert dict(pool.run_unordered(_inverse, [1, 2], workers=2)) == {0: 1.0, 1: 0.5}
    assert dict(pool.run_unordered(_inverse, [4], workers=1)) == {0: 0.25}


def _inverse(x):
    return 1 / x
