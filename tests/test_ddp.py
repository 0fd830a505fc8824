"""``commsim ddp``: flags, metrics, models and data, and real 2-rank gloo runs."""

import json
import os
import re
import subprocess
from pathlib import Path

import pytest
from multiproc import assert_all_ok, run_torch_ranks

from commsim.cli import build_parser, main
from commsim.cli.ddp import config_from_args
from commsim.ddp import metrics, predict, scaling
from commsim.ddp.config import DdpConfig
from commsim.errors import CommsimError

ROOT = Path(__file__).resolve().parent.parent
DOC = ROOT / "docs" / "ddp.md"


def _cfg(*flags):
    return config_from_args(build_parser().parse_args(["ddp", *flags]))


# --- flags ----------------------------------------------------------------------------

def test_flags_and_presets():
    cfg = _cfg("--model", "GPT_small", "--steps", "50", "--bucket-cap-mb", "0", "--comm",
               "double_tree", "--seq-len", "128", "--batch", "2")
    assert (cfg.model, cfg.comm, cfg.bucket_cap_mb) == ("gpt-small", "dbt", 0.0)
    spec = cfg.spec()
    assert (spec.seq_len, spec.batch, spec.width, spec.heads) == (128, 2, 512, 8)
    assert _cfg().model == "gpt-tiny" and _cfg().comm == "native"


@pytest.mark.parametrize("flags,match", [
    (["--model", "gtp-small"], "did you mean 'gpt-small'"),
    (["--steps", "0"], "--steps"),
    (["--steps", "2"], "skip the first 2"),
    (["--bucket-cap-mb", "-1"], "--bucket-cap-mb: -1 is negative"),
    (["--comm", "rign"], "did you mean 'ring'"),
    (["--model", "mlp", "--heads", "4"], "only the gpt models"),
    (["--heads", "3"], "do not divide width 128"),
    (["--batch", "0"], "--batch"),
    (["--baseline-steps", "1"], "--baseline-steps"),
    (["--profile", "a.yaml", "--topology", "localhost"], "exclude each other"),
])
def test_bad_flags_are_one_line_errors(flags, match):
    with pytest.raises(CommsimError, match=match):
        _cfg(*flags)


@pytest.mark.parametrize("flags,field", [
    (["--model", "resnet50"], "--model"),
    (["--steps", "0"], "--steps"),
    (["--bucket-cap-mb", "-5"], "--bucket-cap-mb"),
    (["--comm", "butterfly"], "--comm"),
])
def test_bad_flags_exit_2_without_traceback(capsys, flags, field):
    assert main(["ddp", "--check-flags", *flags]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and field in err[0] and "Traceback" not in err[0]


def test_nccl_without_gpus_is_refused(capsys):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this host has CUDA GPUs")
    assert main(["ddp", "--check-flags", "--backend", "nccl"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "nccl needs CUDA" in err[0]


@pytest.mark.parametrize("args,field", [
    (["ddp", "--comm", "rign"], "ring"),
    (["ddp", "--steps", "0"], "--steps"),
    (["ddp", "--scaling", "1,2", "--model", "mpl"], "mlp"),
])
def test_launch_sh_refuses_bad_ddp_flags_before_the_ranks_start(tmp_path, args, field):
    proc = subprocess.run([str(ROOT / "launch.sh"), *args], cwd=tmp_path, capture_output=True,
                          text=True, timeout=120, env=dict(os.environ, NPROC="2"))
    lines = [line for line in proc.stderr.splitlines()  # a first call installs: not ours
             if line.strip() and not line.startswith("launch.sh: setting up")]
    assert proc.returncode == 2 and len(lines) == 1 and field in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr


def test_commsim_imports_without_torch():
    code = ("import sys, commsim.cli, commsim.ddp, commsim.ddp.harness, commsim.ddp.output, "
            "commsim.ddp.scaling; commsim.cli.build_parser(); "
            "print('torch' in sys.modules, 'matplotlib' in sys.modules)")
    out = subprocess.run([str(ROOT / ".venv" / "bin" / "python"), "-c", code], cwd=ROOT,
                         capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "False"]


# --- metrics --------------------------------------------------------------------------

def test_union_and_bucket_times():
    assert metrics.union_length([(0, 2), (1, 3), (5, 6)]) == 4
    assert metrics.union_length([(0, 2), (1, 3), (5, 6)], lo=1.5, hi=5.5) == 2.0
    # index, bytes, launch, returned, done: bucket 1 launched while 0 is in flight
    b = metrics.service([[0, 100, 1.0, 1.0, 4.0], [1, 50, 2.0, 2.0, 5.0], [2, 8, 6.0, 6, 6.5]])
    assert [x["time"] for x in b] == [3.0, 3.0, 0.5]
    assert [x["inflight"] for x in b] == [0.0, 2.0, 0.0]
    step = {"forward": 1.0, "backward": 5.0, "optimizer": 1.0, "total": 7.0,
            "buckets": [[0, 100, 2.0, 2.0, 4.0], [1, 50, 3.0, 3.0, 6.5]]}
    m = metrics.step_metrics(step, synchronous=False)
    assert m["comm"] == 4.5 and m["window"] == 1.0 and m["ready"] == 2.0
    assert metrics.step_metrics(step, synchronous=True)["window"] == 0.0
    assert metrics.rates(10**9, 0.5, 4) == (2.0, 3.0)
    assert metrics.rates(10, 0.0, 2) == (None, None)


def test_pipeline_and_expectation():
    starts, ends, exposed = metrics.pipeline([0.0, 1.0, 4.0], [2.0, 2.0, 1.0], 4.0, True)
    assert starts == [0.0, 2.0, 4.0] and ends == [2.0, 4.0, 5.0] and exposed == 1.0
    assert metrics.pipeline([0.0, 1.0, 4.0], [2.0, 2.0, 1.0], 4.0, False)[2] == 5.0
    base = [{"forward": 1.0, "backward": 4.0, "optimizer": 1.0, "total": 6.0,
             "buckets": [{"index": 0, "nbytes": 8, "launch": 2.0, "done": 2.0, "time": 0,
                          "inflight": 0}, {"index": 1, "nbytes": 8, "launch": 4.0,
                                           "done": 4.0, "time": 0, "inflight": 0}]}]
    e = predict.expect(base, [1.0, 0.5], synchronous=False)
    assert e["comm"] == 1.5 and e["hideable"] == 1.0 and e["exposed"] == 0.5
    assert e["step"] == 6.5 and e["starts"] == [1.0, 3.0]
    assert predict.expect(base, [1.0, 0.5], synchronous=True)["exposed"] == 1.5
    assert predict.expect(base, [None, 0.5], synchronous=False)["step"] is None


def test_weak_scaling_rows():
    def summary(step, base, exposed):
        return {"summary": [{"step_us": step, "baseline": {"total_us": base}, "comm_us": 1.0,
                             "exposed_us": step - base, "predicted": {"exposed_us": exposed},
                             "samples_per_s": 1.0, "tokens_per_s": None, "loss_last": 1.0}]}
    rows = scaling.rows([(4, summary(150.0, 110.0, 20.0)), (1, summary(100.0, 100.0, 0.0))])
    assert [r["nranks"] for r in rows] == [1, 4] and rows[1]["reference"] == 1
    assert rows[1]["efficiency"] == pytest.approx(100 / 150)
    assert rows[1]["compute_efficiency"] == pytest.approx(100 / 110)
    assert rows[1]["predicted_efficiency"] == pytest.approx(100 / 120)
    args = scaling.child_args(DdpConfig(model="mlp", steps=5).validate())
    assert args[:4] == ["--model", "mlp", "--steps", "5"] and "--json" not in args


# --- models and data ------------------------------------------------------------------

def test_model_sizes():
    pytest.importorskip("torch")
    from commsim.ddp import models

    counts = {name: models.parameter_count(models.build(DdpConfig(model=name).spec(), 0))
              for name in ("mlp", "cnn", "gpt-tiny", "gpt-small")}
    assert 1e6 < counts["mlp"] < 5e6
    assert 3e5 < counts["cnn"] < 2e6
    assert counts["gpt-tiny"] < 2e6
    assert 22e6 < counts["gpt-small"] < 28e6


def test_data_is_deterministic_per_rank_and_step():
    torch = pytest.importorskip("torch")
    from commsim.ddp import data

    for name in ("mlp", "cnn", "gpt-tiny"):
        spec = DdpConfig(model=name).spec()
        a, b = data.make(spec, 3), data.make(spec, 3)
        x0, y0 = a.batch(5, 1, 4)
        x1, y1 = b.batch(5, 1, 4)
        assert torch.equal(x0, x1) and torch.equal(y0, y1)
        assert not torch.equal(a.batch(5, 0, 4)[0], x0)  # another rank's shard
    x, y = data.make(DdpConfig(model="gpt-tiny").spec(), 0).batch(0, 0, 2)
    assert x.shape == (2, 64) and torch.equal(x[:, 1:], y[:, :-1])


# --- real runs ------------------------------------------------------------------------

RUNS = """
import sys
import torch.distributed as dist
from commsim.cli import main
dist.init_process_group("gloo")  # one group for the four runs (ddp leaves a caller's open)
out = sys.argv[1]
common = ["--steps", "5", "--skip", "2", "--baseline-steps", "3"]
runs = [
    ["--model", "mlp", "--bucket-cap-mb", "1", "--json", out + "/mlp.jsonl",
     "--plot", out + "/mlp.png", "--report", out + "/mlp.html"],
    ["--model", "gpt-tiny", "--batch", "8", "--bucket-cap-mb", "0.5", "--json",
     out + "/native.jsonl"],
    ["--model", "gpt-tiny", "--batch", "8", "--bucket-cap-mb", "0.5", "--comm", "ring",
     "--json", out + "/ring.jsonl"],
    ["--model", "gpt-tiny", "--batch", "8", "--bucket-cap-mb", "0.5", "--comm", "tree",
     "--json", out + "/tree.jsonl"],
]
for flags in runs:
    rc = main(["ddp"] + common + flags)
    if rc:
        raise SystemExit(rc)
dist.barrier()
dist.destroy_process_group()
"""


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Four 2-rank gloo runs in one pair of processes: mlp with every output, gpt-tiny
    with native, ring and tree; ``{name: (records, output)}``."""
    pytest.importorskip("torch")
    tmp = tmp_path_factory.mktemp("ddp")
    text = assert_all_ok(run_torch_ranks(RUNS, 2, tmp, timeout=200, args=(str(tmp),)))
    out = {}
    for name in ("mlp", "native", "ring", "tree"):
        records = [json.loads(line) for line in (tmp / f"{name}.jsonl").read_text().splitlines()]
        out[name] = records
    return out, text, tmp


def _of(records, kind):
    return [r for r in records if r["type"] == kind]


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_losses_fall_and_buckets_add_up(runs):
    records, text, _ = runs
    for name in ("mlp", "native"):
        (config,), (summary,) = _of(records[name], "config"), _of(records[name], "summary")
        losses = [s["loss"] for s in _of(records[name], "step")]
        assert len(losses) == 5 and losses[-1] < losses[0] - 0.1, losses
        assert config["nranks"] == 2 and config["backend"] == "gloo"
        assert config["grad_bytes"] == 4 * config["params"]
        for step in range(2, 5):  # after the rebuild: every gradient byte in one bucket
            buckets = [b for b in _of(records[name], "bucket") if b["step"] == step]
            assert len(buckets) >= 2
            assert sum(b["bytes"] for b in buckets) == config["grad_bytes"]
            assert all(b["measured"] for b in buckets)
        assert summary["bucket_bytes"] == config["grad_bytes"]
        assert summary["measured_steps"] == 3 and summary["skip"] == 2
        for b in summary["buckets"]:
            assert b["busbw_gbps"] == pytest.approx(b["algbw_gbps"] * 2 * (2 - 1) / 2)
            assert b["t_model_us"] > 0 and b["t_sim_us"] > 0
            assert b["eff_pct"] == pytest.approx(100 * b["t_sim_us"] / b["time_us"])
        assert 0 <= summary["overlap"] <= 1 and summary["exposed_us"] >= 0
        assert summary["predicted"]["step_us"] >= summary["baseline"]["total_us"]
    assert "statistics skip the first 2 steps" in text
    assert "# buckets (median of 3 steps" in text and "throughput:" in text
    assert "tokens/s" in text and "loss: " in text


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_commsim_ring_and_tree_train_the_same_losses_as_native(runs):
    records, _, _ = runs
    native = [s["loss"] for s in _of(records["native"], "step")]
    for name in ("ring", "tree"):
        (config,) = _of(records[name], "config")
        assert config["comm"] == name and config["hook"] == "synchronous"
        assert [s["loss"] for s in _of(records[name], "step")] == pytest.approx(native,
                                                                                rel=1e-5)
        assert _of(records[name], "summary")[0]["overlap_window"] == 0.0


def _documented() -> dict[str, list[str]]:
    """``{line type: [key, ...]}`` from the key tables of docs/ddp.md."""
    keys: dict[str, list[str]] = {}
    current = None
    for line in DOC.read_text().splitlines():
        heading = re.match(r"### `(\w+)` lines", line)
        if heading:
            current = keys.setdefault(heading.group(1), [])
        elif line.startswith("## "):
            current = None
        elif current is not None:
            cell = re.match(r"\| `([\w.\[\]]+)` \|", line)
            if cell:
                current.append(cell.group(1))
    return keys


def _has(row: dict, path: str) -> bool:
    head, _, rest = path.partition(".")
    if head.endswith("[]"):
        items = row.get(head[:-2])
        return bool(items) and all(_has(item, rest) for item in items)
    if head not in row:
        return False
    return _has(row[head], rest) if rest else True


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_json_has_every_documented_key(runs):
    records, _, tmp = runs
    documented = _documented()
    assert set(documented) == {"config", "step", "bucket", "baseline", "summary"}
    for name, rows in records.items():
        assert rows[0]["type"] == "config" and rows[-1]["type"] == "summary"
        for kind, keys in documented.items():
            assert _of(rows, kind), (name, kind)
            for row in _of(rows, kind):
                missing = [k for k in keys if not _has(row, k)]
                assert not missing, (name, kind, missing)
        # and nothing undocumented at the top level
        for kind, keys in documented.items():
            tops = {k.split(".")[0].removesuffix("[]") for k in keys}
            extra = set(_of(rows, kind)[0]) - tops - {"gloo", "nccl", "cuda"}
            assert not extra, (kind, extra)
    assert (tmp / "mlp.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    page = (tmp / "mlp.html").read_text()
    assert "data:image/png;base64," in page and "<table>" in page and "exposed" in page
