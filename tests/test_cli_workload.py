"""``commsim workload``: list, show (tables and JSON), flags over the file, bad input."""

from __future__ import annotations

import json

import pytest

from commsim.cli import main


def run(capsys, *argv):
    code = main(["workload", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_list(capsys):
    code, out, _ = run(capsys, "list")
    assert code == 0
    assert "gpt3-175b-tp8-pp4" in out and "tp8-dp32" in out


def test_show_tables(capsys):
    code, out, _ = run(capsys, "show", "--topology", "dgx-h100-32node", "--workload",
                       "tp8-dp32")
    assert code == 0
    assert "tp 8 x cp 1 x pp 1 x dp 32 (ep 1) = 256 ranks" in out
    lines = out.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("# groups")) + 2
    end = lines.index("", start)
    rows = {line.split()[0]: line.split() for line in lines[start:end]}
    # dim, groups, size, first group, second group, links
    assert rows["tp"][1:3] == ["32", "8"] and rows["tp"][-1] == "nvlink"
    assert rows["tp"][3] == "0:gpu0_0,1:gpu0_1,2:gpu0_2,...,7:gpu0_7"
    assert rows["dp"][1:3] == ["8", "32"] and rows["dp"][-1] == "pcie,nic"
    assert rows["dp"][3].startswith("0:gpu0_0,8:gpu1_0,16:gpu2_0,...,248:gpu31_0")
    # dimensions of degree 1 have no traffic, and edp is dp without experts: not shown
    assert set(rows) == {"tp", "dp"}
    assert "allreduce" in out and "traffic/GPU/step" in out


def test_show_json_matches_the_step(capsys):
    """tp 8, dp 32: TP allreduce of b s h w = 4096 x 5120 x 2 = 40 MiB, 2 x 40 layers x 4
    micro-batches = 320 a step in each direction; DP gradients 12 L h^2 + V h over tp 8."""
    code, out, _ = run(capsys, "show", "--topology", "dgx-h100-32node", "--workload",
                       "tp8-dp32", "--json")
    assert code == 0
    data = json.loads(out)
    assert data["layout"] == {"tp": 8, "cp": 1, "pp": 1, "dp": 32, "ep": 1,
                              "order": "tp-cp-ep-dp-pp", "world": 256}
    dims = {d["dim"]: d for d in data["dims"]}
    assert dims["tp"]["link_classes"] == {"nvlink": 512}
    assert dims["tp"]["first_groups"][1][0] == {"rank": 8, "gpu": "gpu1_0"}
    assert list(dims["dp"]["link_classes"]) == ["pcie", "nic"]
    tp = [op for op in data["ops"] if op["dim"] == "tp"]
    assert [(op["nbytes"], op["count"]) for op in tp] == [(40 << 20, 320)] * 2
    assert data["traffic_per_gpu"]["tp"] == pytest.approx(640 * 2 * 7 / 8 * (40 << 20))
    grads = (12 * 40 * 5120**2 + 32000 * 5120) // 8 * 2
    dp_bytes = sum(op["nbytes"] * op["count"] for op in data["ops"] if op["dim"] == "dp")
    assert dp_bytes == grads


def test_flags_override_the_file_and_dp_fills_the_rest(capsys):
    code, out, _ = run(capsys, "show", "--topology", "dgx-h100-32node", "--workload",
                       "gpt3-175b-tp8-pp4", "--pp", "8", "--json")
    assert code == 0
    layout = json.loads(out)["layout"]
    assert (layout["tp"], layout["pp"], layout["dp"]) == (8, 8, 4)


def test_show_a_file_with_cp_and_ep(capsys, tmp_path):
    path = tmp_path / "moe.yaml"
    path.write_text("layout: {tp: 2, cp: 2, ep: 2}\n"
                    "model: {layers: 4, hidden: 512, seq_len: 1024, experts: 4, top_k: 2}\n"
                    "training: {sequence_parallel: true, strategy: zero1}\n")
    code, out, _ = run(capsys, "show", "--topology", "dgx-a100-4node", "--workload",
                       str(path), "--json")
    assert code == 0
    data = json.loads(out)
    assert data["layout"]["dp"] == 8
    dims = {d["dim"] for d in data["dims"]}
    assert {"tp", "cp", "ep", "edp", "dp", "pp", "dp-cp", "edp-cp"} == dims
    assert {op["dim"] for op in data["ops"]} == {"tp", "cp", "ep", "dp-cp", "edp-cp"}


@pytest.mark.parametrize("argv, piece", [
    (["--workload", "tp8-dp31"], "did you mean 'tp8-dp32'"),
    (["--workload", "tp8-dp32", "--ep", "3"], "layout.ep: 3 does not divide dp=32"),
    (["--workload", "tp8-dp32", "--dp", "64"], "need 512 gpus"),
    (["--workload", "tp8-dp32", "--order", "tp-cp-ep-dq-pp"], "did you mean 'dp'"),
    (["--workload", "tp8-dp32", "--pp", "3"], "model.layers: 40 layers do not split"),
    (["--workload", "tp8-dp32", "--placement", "diagonal"], "unknown placement"),
])
def test_bad_input_exits_2_with_one_line(capsys, argv, piece):
    code, out, err = run(capsys, "show", "--topology", "dgx-h100-32node", *argv)
    assert code == 2 and out == ""
    assert piece in err and err.count("\n") == 1 and "Traceback" not in err


def test_missing_topology_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["workload", "show", "--workload", "tp8-dp32"])
    assert exc.value.code == 2
    assert "--topology" in capsys.readouterr().err


def test_groups_lists_every_group_with_its_links(capsys):
    """TP 8 x PP 2 x DP 2 on dgx-a100-4node: 4 TP groups (one a node, NVLink only), 16 PP
    pairs and 16 DP pairs (PP and DP pairs cross nodes: PCIe and NIC), every rank in one group
    of each."""
    code, out, _ = run(capsys, "show", "--topology", "dgx-a100-4node", "--workload",
                       "gpt3-175b-tp8-pp4", "--pp", "2", "--groups", "--json")
    assert code == 0
    data = json.loads(out)
    by_dim: dict = {}
    for g in data["groups"]:
        by_dim.setdefault(g["dim"], []).append(g)
    assert {d: len(v) for d, v in by_dim.items() if d in ("tp", "pp", "dp")} == \
        {"tp": 4, "pp": 16, "dp": 16}
    for dim in ("tp", "pp", "dp"):
        ranks = sorted(m["rank"] for g in by_dim[dim] for m in g["members"])
        assert ranks == list(range(32))
    assert all(set(g["link_classes"]) == {"nvlink"} for g in by_dim["tp"])
    assert all("nic" in g["link_classes"] for g in by_dim["pp"])
