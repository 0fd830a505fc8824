"""``commsim simulate --workload``: one training step's communication on a topology."""

from __future__ import annotations

import json

import pytest

from commsim.cli import main


def _run(capsys, *argv):
    code = main(["simulate", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_a_tp_x_dp_step_reports_dims_phases_links_and_a_trace(capsys, tmp_path):
    trace, rows = tmp_path / "step.json", tmp_path / "step.jsonl"
    code, out, err = _run(capsys, "--topology", "dgx-a100-4node", "--workload", "tp8-dp32",
                          "--dp", "4", "--compute", "forward=1ms,backward=2ms",
                          "--trace", str(trace), "--json", str(rows))
    assert code == 0, err
    assert "time per parallel dimension" in out and "whose traffic crosses them" in out
    row = json.loads(rows.read_text())
    assert set(row["dims"]) == {"tp", "dp"}
    # the step is its phases, each count times; compute as given (40 layers x 4 micro-batches)
    total = sum(p["count"] * p["time_s"] for p in row["phases"])
    assert row["time_s"] == pytest.approx(total, rel=1e-12)
    assert row["compute_s"] == pytest.approx(40 * 4 * (1e-3 + 2e-3), rel=1e-12)
    assert row["comm_s"] == pytest.approx(row["dims"]["tp"]["time_s"]
                                          + row["dims"]["dp"]["time_s"], rel=1e-12)
    # TP stays on NVLink, DP crosses the NICs: the links say whose traffic they carry
    for link in row["links"]:
        assert set(link["crossing"]) <= {"tp", "dp"}
    nic = [d for d in row["links"] if "nic" in d["name"]]
    assert all(set(d["crossing"]) == {"dp"} for d in nic)
    events = json.loads(trace.read_text())["traceEvents"]
    tracks = {e["args"]["name"] for e in events
              if e.get("name") == "thread_name" and e.get("pid") == 1}
    assert tracks == {f"tp {i}" for i in range(4)} | {f"dp {i}" for i in range(8)}


def test_the_dp_phase_is_all_dp_groups_at_once(capsys, tmp_path):
    """Eight DP groups of 4 (one gpu per node each) share the nodes' NICs. Their phase
    takes what simulate_many says for the eight rings at once, and no less than one
    ring alone."""
    from commsim import collectives, topology
    from commsim.sim import Job, simulate, simulate_many
    from commsim.workload import load_workload, place_layout

    rows = tmp_path / "step.jsonl"
    code, _, err = _run(capsys, "--topology", "dgx-a100-4node", "--workload", "tp8-dp32",
                        "--dp", "4", "--json", str(rows))
    assert code == 0, err
    row = json.loads(rows.read_text())
    grad = next(p for p in row["phases"] if p["name"].startswith("grad-sync")
                and p["count"] > 1)
    nbytes = grad["ops"][0]["nbytes"]
    G = topology.load("dgx-a100-4node")
    layout, _ = load_workload("tp8-dp32", 32, dp=4)
    placement = place_layout(G, layout)
    s = collectives.build("allreduce", "ring", 4)
    groups = layout.groups("dp")
    many = simulate_many([Job(s, nbytes, [placement[r] for r in g]) for g in groups], G)
    assert grad["comm_s"] == pytest.approx(max(r.time for r in many), rel=1e-12)
    alone = simulate(s, G, nbytes, [placement[r] for r in groups[0]])
    assert grad["comm_s"] >= alone.time * (1 - 1e-12)


@pytest.mark.parametrize("argv, message", [
    (["--compute", "sideways=1ms"], "unknown --compute key 'sideways'"),
    (["--compute", "forward=1"], "--compute forward"),
    (["--algorithms", "allreduce=nope"], "unknown allreduce algorithm 'nope'"),
    (["--algorithms", "allreduse=ring"], "did you mean 'allreduce'"),
    (["--tp", "3"], "does not split over tp=3"),
    (["--workers", "0"], "--workers: must be 1 or more"),
])
def test_bad_step_options_get_one_line(capsys, argv, message):
    code, out, err = _run(capsys, "--topology", "dgx-a100-4node", "--workload", "tp8-dp32",
                          "--dp", "4", *argv)
    assert code == 2
    assert message in err and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    assert out == ""


def test_a_step_on_a_topology_with_executor_costs_charges_each_kind_of_step(capsys,
                                                                          tmp_path):
    """A model block's ``exchange_overhead`` is what a ring's exchange steps pay in a
    step's collectives too (as ``simulate`` charges one collective), not the one-way
    ``step_overhead``."""
    import yaml

    from commsim.topology.spec import find_preset

    spec = yaml.safe_load(find_preset("dgx-a100-4node").read_text())
    times = {}
    for name, model in (("one", {"step_overhead": "10us"}),
                        ("both", {"step_overhead": "10us", "exchange_overhead": "500us"})):
        path, rows = tmp_path / f"{name}.yaml", tmp_path / f"{name}.jsonl"
        path.write_text(yaml.safe_dump({**spec, "name": name, "model": model}))
        code, out, err = _run(capsys, "--topology", str(path), "--workload", "tp8-dp32",
                              "--dp", "4", "--json", str(rows))
        assert code == 0, err
        times[name] = json.loads(rows.read_text())["comm_s"]
    assert times["both"] > times["one"] * 1.5
