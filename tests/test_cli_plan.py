"""commsim plan on the command line: output files, HTML with images, bad input exit 2."""

import json

import pytest

from commsim.cli import main


def test_plan_json_markdown_html(tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(["plan", "--model", "llama2-7b", "--topology", "dgx-h100-32node", "--gpus",
               "8,16", "--tp", "2", "--global-batch", "32", "--seq-len", "2048",
               "--what-if", "nic_bw=2x", "--json", str(out), "--markdown",
               str(tmp_path / "p.md"), "--report", str(tmp_path / "p.html"), "--tokens", "1e9"])
    assert rc == 0
    rows = json.loads(out.read_text())
    assert len(rows) == 4
    for key in ("scenario", "gpus", "tp", "pp", "dp", "ep", "cp", "step_time_s", "compute_s",
                "comm_exposed_s", "bubble_s", "mfu", "tflops_per_gpu", "tokens_per_s",
                "memory_gb_per_gpu", "fits", "bottleneck", "source"):
        assert key in rows[0]
    assert rows[0]["scenario"] == "baseline" and rows[0]["source"] == "simulator"
    html = (tmp_path / "p.html").read_text()
    assert html.startswith("<!DOCTYPE html>") and html.count("data:image/png;base64,") >= 2
    assert "http://" not in html and "<script" not in html
    assert (tmp_path / "p.md").read_text().count("![") >= 2
    text = capsys.readouterr().out
    assert "what-ifs against the baseline" in text


def test_plan_search(capsys):
    rc = main(["plan", "--model", "13B", "--topology", "dgx-h100-32node", "--gpus", "64",
               "--search", "--no-simulate", "--global-batch", "128"])
    assert rc == 0
    assert "--search at 64 gpus" in capsys.readouterr().out


@pytest.mark.parametrize("argv,match", [
    (["--model", "llama3-7b0"], "did you mean"),
    (["--model", "70B", "--strategy", "zero4"], "did you mean"),
    (["--model", "70B", "--gpu", "H10"], "unknown gpu"),
    (["--model", "70B", "--what-if", "nvlink_bww=2x"], "did you mean 'nvlink_bw'"),
    (["--model", "70B", "--tp", "8", "--dp", "3", "--gpus", "64"], "not the 64 gpus"),
    (["--model", "70B", "--gpus", "4096", "--no-extrapolate"], "--no-extrapolate"),
    (["--model", "70B", "--gpus", "abc"], "--gpus"),
    ([], "--model"),
    (["--model", "70B", "--fp8-comm", "tp"], "needs --dtype fp8"),
    (["--model", "70B", "--dtype", "fp8", "--fp8-comm", "al"], "did you mean 'all'"),
    (["--model", "70B", "--tp", "8", "--no-sequence-parallel", "--tp-comm-overlap"],
     "needs sequence parallelism"),
    (["--model", "70B", "--what-if", "tp_comm_overlap=maybe"], "true or false"),
    (["--model", "70B", "--workers", "0"], "--workers: must be 1 or more"),
])
def test_bad_input_one_line_exit_2(argv, match, capsys):
    rc = main(["plan", "--topology", "dgx-h100-32node", "--no-simulate"] + argv)
    assert rc == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_plan_overlap_and_fp8_flags(tmp_path, capsys):
    out = tmp_path / "p.json"
    rc = main(["plan", "--model", "llama2-7b", "--topology", "dgx-h100-32node", "--gpus",
               "64", "--tp", "4", "--pp", "4", "--interleave", "2", "--global-batch", "64",
               "--seq-len", "2048", "--dtype", "fp8", "--fp8-comm", "all",
               "--tp-comm-overlap", "--overlap-param-gather", "--no-flash-attention",
               "--no-simulate", "--what-if", "overlap_p2p=false", "--json", str(out)])
    assert rc == 0, capsys.readouterr().err
    base, blocking = json.loads(out.read_text())
    assert base["overlaps"] == ["grad-reduce", "tp-comm", "param-gather", "p2p"]
    assert blocking["overlaps"] == ["grad-reduce", "tp-comm", "param-gather"]
    assert base["fp8_comm"] == "all" and 0 < base["compute_memory_s"] < base["compute_s"]
    assert blocking["comm_exposed_s"] >= base["comm_exposed_s"]
