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
    out = capsys.readouterr().out
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
    assert {r["algorithm"] for r in rows} == {"ring", "tree", "dbt", "rhd", "hierarchical"}
    assert len(rows) == 5 * 11
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
