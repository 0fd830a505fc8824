"""commsim.workload.spec: workload YAML files, shipped names, overrides and bad input."""

from __future__ import annotations

import pytest

from commsim.errors import CommsimError
from commsim.workload import (
    Layout,
    load_workload,
    read_workload,
    step_ops,
    workload_names,
)
from commsim.workload.spec import parse_count

BASE = {"layout": {"tp": 2, "pp": 2},
        "model": {"layers": 4, "hidden": 256, "seq_len": 512}}


def test_shipped_workloads_load_and_have_ops():
    names = workload_names()
    assert {"gpt3-175b-tp8-pp4", "tp8-dp32"} <= set(names)
    for name in names:
        layout, shape = load_workload(name, gpus=256)
        assert layout.world <= 256
        assert step_ops(shape, layout)


def test_gpt3_example():
    """96 layers, h 12288, V 51200: 12 L h^2 + V h = 174.6e9 parameters; tp 8, pp 4 and
    dp filled from 256 gpus: 256 / 32 = 8."""
    layout, shape = load_workload("gpt3-175b-tp8-pp4", gpus=256)
    assert layout == Layout(tp=8, pp=4, dp=8)
    assert shape.total_params == 12 * 96 * 12288**2 + 51200 * 12288
    assert (shape.strategy, shape.sequence_parallel, shape.bucket) == ("zero1", True, 25 << 20)


def test_mapping_with_units_and_defaults():
    data = {"layout": {"tp": 2, "dp": 4},
            "model": {"layers": 2, "hidden": 128, "seq_len": 64, "params": "1.5M",
                      "vocab": "50K", "dtype": "fp8"},
            "training": {"strategy": "ZeRO3", "bucket": "4M", "overlap_dp": True}}
    layout, shape = load_workload(data)
    assert layout == Layout(tp=2, dp=4)
    assert (shape.params, shape.vocab, shape.dtype_bytes) == (1_500_000, 50_000, 1)
    assert (shape.strategy, shape.bucket, shape.overlap_dp) == ("zero3", 4 << 20, True)
    assert read_workload(data).name == "workload"


def test_dp_defaults_to_the_gpus_left_and_flags_override():
    assert load_workload(BASE, gpus=32)[0] == Layout(tp=2, pp=2, dp=8)
    assert load_workload(BASE, gpus=30)[0].dp == 7  # what fits: 28 of the 30 gpus
    assert load_workload(BASE)[0].dp == 1
    assert load_workload(BASE, gpus=32, tp=4, dp=None)[0] == Layout(tp=4, pp=2, dp=4)
    assert load_workload(BASE, gpus=32, dp=2, order="pp-tp-cp-ep-dp")[0] == \
        Layout(tp=2, pp=2, dp=2, order="pp-tp-cp-ep-dp")
    with pytest.raises(CommsimError, match="tp x cp x pp = 4 ranks need 4 gpus"):
        load_workload(BASE, gpus=2)


def test_a_file_and_a_search_path(tmp_path, monkeypatch):
    path = tmp_path / "mine.yaml"
    path.write_text("name: mine\nlayout: {tp: 2, dp: 2}\n"
                    "model: {layers: 2, hidden: 64, seq_len: 32}\n")
    assert load_workload(str(path))[0] == Layout(tp=2, dp=2)
    monkeypatch.setenv("COMMSIM_WORKLOAD_PATH", str(tmp_path))
    assert "mine" in workload_names()
    assert read_workload("mine").name == "mine"


@pytest.mark.parametrize("data, piece", [
    ({**BASE, "modle": {}}, "unknown key 'modle'; did you mean 'model'"),
    ({**BASE, "layout": {"tp": 2, "dq": 2}}, "unknown layout key 'dq'; did you mean 'dp'"),
    ({**BASE, "model": {**BASE["model"], "hiden": 3}}, "did you mean 'hidden'"),
    ({**BASE, "training": {"stratgy": "ddp"}}, "did you mean 'strategy'"),
    ({**BASE, "training": {"bucket": "lots"}}, "training.bucket: 'lots' is not a size"),
    ({**BASE, "training": {"strategy": "zer01"}}, "unknown training.strategy"),
    ({**BASE, "model": {"layers": 4, "hidden": 256}}, "model.seq_len: missing"),
    ({**BASE, "model": {**BASE["model"], "dtype": "fp4"}}, "unknown model.dtype 'fp4'"),
    ({**BASE, "model": {**BASE["model"], "params": "many"}}, "model.params: 'many' is not"),
    ({**BASE, "layout": {"tp": 0}}, "layout.tp: 0 must be a whole number"),
    ({**BASE, "layout": {"dp": 4, "ep": 3}}, "layout.ep: 3 does not divide dp=4"),
    ({**BASE, "layout": {"order": "tp-pp"}}, "layout.order"),
    ({**BASE, "layout": [2, 2]}, "layout: must be a mapping"),
])
def test_bad_input_is_one_line_naming_the_key(data, piece):
    with pytest.raises(CommsimError) as exc:
        read_workload(data)
    assert piece in str(exc.value) and "\n" not in str(exc.value)


def test_bad_files(tmp_path):
    with pytest.raises(CommsimError, match="no such file"):
        read_workload(str(tmp_path / "none.yaml"))
    with pytest.raises(CommsimError, match="unknown workload 'tp8-dp31'; did you mean"):
        read_workload("tp8-dp31")
    broken = tmp_path / "broken.yaml"
    broken.write_text("layout: {tp: 2\nmodel: [\n")
    with pytest.raises(CommsimError, match="not valid YAML at line"):
        read_workload(str(broken))
    listed = tmp_path / "listed.yaml"
    listed.write_text("- 1\n- 2\n")
    with pytest.raises(CommsimError, match="listed.yaml: must be a YAML mapping"):
        read_workload(str(listed))
    unsafe = tmp_path / "unsafe.yaml"
    unsafe.write_text("layout: !!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(CommsimError, match="not valid YAML"):  # safe_load refuses the tag
        read_workload(str(unsafe))


def test_parse_count():
    assert parse_count("175B", "p") == 175_000_000_000
    assert parse_count("1.3B", "p") == 1_300_000_000
    assert parse_count(50257, "v") == 50257
    assert parse_count("1e9", "p") == 10**9
    for bad in ("1.5", True, "7X"):
        with pytest.raises(CommsimError):
            parse_count(bad, "p")
