"""commsim plan --from-ddp: the compute rate of a commsim ddp run, bad files, exclusions."""

import json
from pathlib import Path

import pytest

from commsim.cli import main
from commsim.errors import CommsimError
from commsim.plan import compute, from_ddp, gpus, models, planner
from commsim.plan.fabric import Fabric

FIXTURES = Path(__file__).parent / "fixtures"
GPT_TINY = FIXTURES / "ddp-gpt-tiny.jsonl"   # NPROC=2 ./launch.sh ddp --model gpt-tiny --steps 6
BENCH = FIXTURES / "bench-gloo.jsonl"
PLAN = ["plan", "--model", "llama3-8b", "--topology", "dgx-h100-32node", "--gpus", "8,64",
        "--tp", "8", "--global-batch", "64", "--seq-len", "2048", "--no-simulate"]


def _lines(path=GPT_TINY) -> list[dict]:
    return [json.loads(line) for line in Path(path).read_text().splitlines()]


def _write(tmp_path, rows, name="ddp.jsonl") -> Path:
    p = tmp_path / name
    p.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return p


def test_fixture_rate_by_hand():
    """gpt-tiny (docs/ddp.md): L = 2 blocks, h = 128, s = 64 tokens, V = 256, batch 16 a
    rank, 2 gloo ranks.

    forward FLOPs a token = L (2 x 12 h^2 + 4 s h) + 2 V h
                          = 2 (393216 + 32768) + 65536 = 917504
    training a token      = 3 x 917504 = 2752512
    a sample (64 tokens)  = 176160768;  a rank's step (16 samples) = 2818572288

    measured compute-only steps (baseline lines 2..4; 0 and 1 are skipped), forward_us +
    backward_us: 40177.050 + 77716.699 = 117893.749, 41276.061 + 76336.781 = 117612.842,
    40273.251 + 77404.423 = 117677.674; median 117677.674 us (their optimizer, 5.25 ms
    median, is not counted).

    rate = 2818572288 / 0.117677674 s = 2.3952e10 FLOP/s = 24.0 GFLOP/s a GPU.
    """
    m = from_ddp.load(str(GPT_TINY))
    assert (m.model, m.family, m.nranks, m.batch, m.steps) == ("gpt-tiny", "gpt", 2, 16, 3)
    assert m.flops_per_sample == 3 * 917504 * 64
    assert m.flops == 2818572288
    assert m.compute_s == pytest.approx(0.117677674, rel=1e-8)
    assert m.rate == pytest.approx(2.3952e10, rel=1e-4)
    assert m.optimizer_s == pytest.approx(0.00525236, rel=1e-5)
    assert m.describe().startswith("compute: 24 GFLOP/s a GPU, measured by commsim ddp (")
    assert "3 compute-only steps, median forward+backward 117.7 ms" in m.describe()


def test_mlp_and_cnn_flops(tmp_path):
    """mlp: 6 FLOPs a parameter a sample; cnn: 6 x the multiply-adds of one image."""
    rows = _lines()
    rows[0].update(model="mlp", family="mlp", params=2143242, batch=64, seq_len=None,
                   model_options={"layers": 3, "width": 1024, "heads": None,
                                  "seq_len": None, "vocab": None})
    m = from_ddp.load(str(_write(tmp_path, rows)))
    assert m.flops == 6 * 2143242 * 64
    rows[0].update(model="cnn", family="cnn", params=701466, batch=32,
                   model_options={"layers": 2, "width": 16, "heads": None,
                                  "seq_len": None, "vocab": None})
    m = from_ddp.load(str(_write(tmp_path, rows)))
    # stem 9*3*16*32^2; stage 1 two blocks of 2*9*16*16*32^2; stages 2-4: the first block
    # 9 cin cout r^2 + 9 cout^2 r^2 + cin cout r^2 (shortcut), the second 2*9 cout^2 r^2
    macs = 9 * 3 * 16 * 1024 + 4 * 9 * 256 * 1024
    for cin, cout, r in ((16, 32, 16), (32, 64, 8), (64, 128, 4)):
        macs += (9 * cin * cout + 9 * cout * cout + cin * cout + 18 * cout * cout) * r * r
    macs += 128 * 10
    assert from_ddp.cnn_macs(16, 2) == macs == 35046656
    assert m.flops == 6 * macs * 32


def test_flops_agree_with_torch_flop_counter():
    """The forward FLOPs of every ddp preset, against torch's own count of the real
    model (matmuls and convolutions; 6 P for the mlp is 2 FLOPs a weight and bias)."""
    torch = pytest.importorskip("torch")
    from torch.utils.flop_counter import FlopCounterMode

    from commsim.ddp import models as ddp_models
    from commsim.ddp.config import MODELS

    for name, spec in MODELS.items():
        model = ddp_models.build(spec, 0)
        if spec.family == "mlp":
            x = torch.randn(1, spec.inputs)
        elif spec.family == "cnn":
            x = torch.randn(1, 3, spec.inputs, spec.inputs)
        else:
            x = torch.randint(0, spec.vocab, (1, spec.seq_len))
        counter = FlopCounterMode(display=False)
        with counter, torch.no_grad():
            model(x)
        counted = counter.get_total_flops()
        params = ddp_models.parameter_count(model)
        if spec.family == "mlp":
            assert 2 * params == pytest.approx(counted, rel=2e-3), name
        elif spec.family == "cnn":
            assert 2 * from_ddp.cnn_macs(spec.width, spec.layers) == counted, name
        else:
            ours = from_ddp.gpt_flops_per_sample(spec.layers, spec.width, spec.heads,
                                                 spec.seq_len, spec.vocab) / 3
            attention = 4 * spec.seq_len * spec.width * spec.layers * spec.seq_len
            # torch counts attention only where its kernel is registered (not on CPU)
            assert counted in (pytest.approx(ours), pytest.approx(ours - attention)), name


def test_plan_uses_the_rate(tmp_path, capsys):
    """compute a step and GPU = the planned model's hardware FLOPs / (gpus x rate)."""
    out = tmp_path / "plan.json"
    assert main(PLAN + ["--from-ddp", str(GPT_TINY), "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert f"compute: 24 GFLOP/s a GPU, measured by commsim ddp ({GPT_TINY}: gpt-tiny" in text
    assert "its peak is only MFU's denominator" in text and "mfu 0.5" not in text
    rate = from_ddp.load(str(GPT_TINY)).rate
    fl = compute.step_flops(models.get("llama3-8b"), 64 * 2048, 2048, "selective")
    rows = json.loads(out.read_text())
    for r in rows:
        assert r["compute_s"] == pytest.approx(fl.hardware / (r["gpus"] * rate), rel=1e-9)
        assert r["bottleneck"] == "compute"


def test_config_rate_and_exclusion():
    base = dict(model=models.get("llama2-7b"), gpu=gpus.get("H100"), tp=8, global_batch=16,
                seq_len=1024)
    cfg = planner.Config(**base, compute_rate=1e12)
    fab = Fabric.load("dgx-h100-32node")
    row = planner.evaluate(cfg, fab, 16, planner.make_layout(cfg, 16))
    fl = compute.step_flops(cfg.model, 16 * 1024, 1024, cfg.recompute)
    assert row.compute_s == pytest.approx(fl.hardware / 16e12)
    with pytest.raises(CommsimError, match="exclude each other"):
        planner.Config(**base, compute_rate=1e12, step_compute_gpu_s=1.0)
    with pytest.raises(CommsimError, match="must be positive"):
        planner.Config(**base, compute_rate=0.0)


def _bad_files(tmp_path) -> dict:
    rows = _lines()
    config = rows[0]
    no_base = [r for r in rows if r["type"] != "baseline"]
    unmeasured = [dict(r, measured=False) if r["type"] == "baseline" else r for r in rows]
    bad_time = [dict(r, forward_us="soon") if r["type"] == "baseline" else r for r in rows]
    no_shape = [{k: v for k, v in config.items() if k != "model_options"}] + rows[1:]
    scaling = [dict(config, scaling=[1, 2]),
               {"type": "scaling", "nranks": 1, "reference": 1, "step_us": 1e5}]
    (tmp_path / "folder").mkdir()
    (tmp_path / "empty.jsonl").write_text("")
    (tmp_path / "blank.jsonl").write_text("\n  \n")
    (tmp_path / "text.jsonl").write_text(json.dumps(config) + "\nstep 1 took 3 ms\n")
    (tmp_path / "plan.json").write_text(json.dumps([{"scenario": "baseline"}], indent=1))
    (tmp_path / "list.jsonl").write_text("[1, 2]\n")
    (tmp_path / "binary.jsonl").write_bytes(b"\x80\x81\xff\x00")
    return {
        "missing": (tmp_path / "nope.jsonl", "no such file"),
        "folder": (tmp_path / "folder", "is a folder"),
        "empty": (tmp_path / "empty.jsonl", "is empty"),
        "blank": (tmp_path / "blank.jsonl", "is empty"),
        "binary": (tmp_path / "binary.jsonl", "is not text"),
        "not json": (tmp_path / "text.jsonl", "line 2 is not JSON"),
        "json document": (tmp_path / "plan.json", "one JSON document, not JSON lines"),
        "not objects": (tmp_path / "list.jsonl", "line 1 is not a JSON object"),
        "bench file": (BENCH, "is a commsim bench file"),
        "scaling file": (_write(tmp_path, scaling, "s.jsonl"), "--scaling file"),
        "config only": (_write(tmp_path, rows[:1], "c.jsonl"), "has no step lines"),
        "steps only": (_write(tmp_path, rows[1:], "st.jsonl"), "not a commsim ddp file"),
        "no baseline": (_write(tmp_path, no_base, "nb.jsonl"), "no measured compute-only"),
        "unmeasured": (_write(tmp_path, unmeasured, "u.jsonl"), "no measured compute-only"),
        "bad time": (_write(tmp_path, bad_time, "t.jsonl"), "forward_us 'soon'"),
        "no shape": (_write(tmp_path, no_shape, "ns.jsonl"), "no model_options"),
        "family": (_write(tmp_path, [dict(config, family="rnn")] + rows[1:], "f.jsonl"),
                   "family 'rnn'"),
        "params": (_write(tmp_path, [dict(config, family="mlp", params=0)] + rows[1:],
                          "p.jsonl"), "params is 0"),
    }


CASES = ["missing", "folder", "empty", "blank", "binary", "not json", "json document",
         "not objects", "bench file", "scaling file", "config only", "steps only",
         "no baseline", "unmeasured", "bad time", "no shape", "family", "params"]


@pytest.mark.parametrize("case", CASES)
def test_bad_file_one_line_exit_2(case, tmp_path, capsys):
    path, match = _bad_files(tmp_path)[case]
    assert main(PLAN + ["--from-ddp", str(path)]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert f"--from-ddp {path}: " in err and match in err, err


@pytest.mark.parametrize("extra,match", [
    (["--mfu", "0.4"], "--from-ddp and --mfu exclude each other"),
    (["--mfu", "0.5"], "--from-ddp and --mfu exclude each other"),
    (["--step-compute-ms", "100"], "--from-ddp and --step-compute-ms exclude each other"),
    (["--what-if", "mfu=0.6"], "the compute comes from --from-ddp"),
])
def test_exclusive_with_given_compute(extra, match, capsys):
    assert main(PLAN + ["--from-ddp", str(GPT_TINY)] + extra) == 2
    err = capsys.readouterr().err
    assert match in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


def test_exclusion_checked_before_the_file(capsys):
    assert main(PLAN + ["--from-ddp", "/nonexistent.jsonl", "--mfu", "0.4"]) == 2
    assert "exclude each other" in capsys.readouterr().err


def test_what_if_mfu_refused_with_given_compute_too(capsys):
    assert main(PLAN + ["--step-compute-ms", "100", "--what-if", "mfu=0.6"]) == 2
    assert "the compute comes from --step-compute-ms" in capsys.readouterr().err
