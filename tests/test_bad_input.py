"""Bad input, one case a finding: what tests/test_fuzz_input.py found, pinned down.

Each test fails on the code before the fix: a traceback, a hang, a file written on a
failure or half written, or garbage silently accepted. The fixed behaviour: exit code 2
and one line naming the field, the flag or the file, nothing written.
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import pytest
import yaml

from commsim import topology
from commsim.cli import main
from commsim.errors import CommsimError
from commsim.report import document, html, markdown
from commsim.report.files import Staged, replacing, write_atomic
from commsim.topology import builders
from commsim.topology.spec import load_yaml, read_yaml
from commsim.units import parse_bandwidth, parse_size, parse_size_range, parse_time
from commsim.workload import read_workload
from commsim.workload.layout import Layout
from commsim.workload.step import Shape, step_timeline

BOMB = "\n".join(["zz0: &a0 [x, x, x, x, x, x, x, x, x]"] + [
    f"zz{i}: &a{i} [{', '.join([f'*a{i - 1}'] * 9)}]" for i in range(1, 9)])
RING = "name: r\nbuilder: ring\nparams: {n: 4}\n"


def run(capsys, *argv) -> tuple[int, str, str]:
    try:
        code = main(list(argv))
    except SystemExit as exc:
        code = exc.code
    out, err = capsys.readouterr()
    return code, out, err


def refused(capsys, *argv, says: str) -> str:
    code, out, err = run(capsys, *argv)
    assert code == 2, out
    assert len(err.splitlines()) == 1 and "Traceback" not in err, err
    assert says in err, err
    return err


def leftovers(folder: Path) -> list[str]:
    return sorted(p.name for p in folder.iterdir())


# -- units ---------------------------------------------------------------------------------

@pytest.mark.parametrize("text", ["9" * 400, "99999999999999999999999", "2000T"])
def test_a_size_beyond_1024T_is_refused(text):
    """Was: OverflowError (float inf to int), or a size too large for the simulator's C
    longs (OverflowError deep in numpy)."""
    with pytest.raises(CommsimError, match="--size: .* is more than 1024T"):
        parse_size(text, "--size")
    assert parse_size("1024T") == 2**50


@pytest.mark.parametrize("text", ["", " ", ",", " , "])
def test_a_size_list_without_a_size_is_refused(text):
    """Was: an empty list, and a run with no rows that exits 0."""
    with pytest.raises(CommsimError, match="holds no size"):
        parse_size_range(text, "--size")


@pytest.mark.parametrize("text, says", [("1e-300GB/s", "below 1 B/s"), (1e-300, "below"),
                                        ("2e9GB/s", "above 1 EB/s"), (1e300, "above")])
def test_a_bandwidth_off_any_scale_is_refused(text, says):
    """Was: accepted, then time = bytes / bandwidth overflowed to inf (numpy warnings on
    stderr, then an error about the result)."""
    with pytest.raises(CommsimError, match=f"bandwidth: .*{says}"):
        parse_bandwidth(text, "bandwidth")


@pytest.mark.parametrize("text", ["1e300", 1e308, "2e6s", "2e12us"])
def test_a_time_over_11_days_is_refused(text):
    with pytest.raises(CommsimError, match="latency: .* is more than 1e\\+06 s"):
        parse_time(text, "latency")


def test_an_error_message_is_one_line_whatever_it_quotes():
    """Was: a value or a file name holding a newline made a two-line error."""
    assert str(CommsimError("topology: no such file 'a\nb.yaml'\n")) == \
        "topology: no such file 'a b.yaml'"


def test_a_flag_value_with_a_newline_is_one_line(capsys, tmp_path):
    path = tmp_path / "a\nb.yaml"
    path.write_text("nodes: 5\n")
    refused(capsys, "topo", "show", str(path), says="nodes: must be a list")


# -- reading YAML ---------------------------------------------------------------------------

def test_non_utf8_file_is_one_line(capsys, tmp_path):
    """Was: UnicodeDecodeError with a traceback (topologies, profiles, workloads, studies)."""
    path = tmp_path / "t.yaml"
    path.write_bytes(b"name: caf\xe9\nbuilder: ring\n")
    refused(capsys, "topo", "show", str(path), says="not UTF-8 text (byte 10 is 0xe9)")
    refused(capsys, "workload", "show", "--topology", "ring-8", "--workload", str(path),
            says="not UTF-8")
    refused(capsys, "sweep", str(path), "--out", str(tmp_path / "o.jsonl"), says="not UTF-8")
    assert leftovers(tmp_path) == ["t.yaml"]


@pytest.mark.parametrize("text", ["notes: " + "[\n" * 5000, "notes: " + "{a:\n" * 5000])
def test_deep_nesting_is_one_line(capsys, tmp_path, text):
    """Was: RecursionError with a traceback of a thousand frames."""
    path = tmp_path / "deep.yaml"
    path.write_text(RING + text)
    refused(capsys, "topo", "show", str(path), says="nested more than 100 levels deep")
    refused(capsys, "sweep", str(path), "--out", str(tmp_path / "o.jsonl"),
            says="nested more than 100 levels deep")


def test_an_alias_bomb_is_refused_before_it_expands(capsys, tmp_path):
    """Was: accepted; a profile's ``profile`` block or a study's inline topology holding
    it was expanded to 10**9 values by json.dumps (memory, then minutes)."""
    inner = BOMB.replace("\n", "\n  ")
    path = tmp_path / "bomb.yaml"
    path.write_text(f"{RING}profile:\n  {inner}\n")
    t0 = time.perf_counter()
    refused(capsys, "topo", "show", str(path), says="aliases expand the document to")
    study = tmp_path / "study.yaml"
    inner = BOMB.replace("\n", "\n    ")
    study.write_text(f"kind: simulate\ntopology:\n  name: x\n  profile:\n    {inner}\n"
                     "  nodes: *a8\n")
    refused(capsys, "sweep", str(study), "--out", str(tmp_path / "o.jsonl"),
            says="a YAML bomb")
    assert time.perf_counter() - t0 < 10
    assert not (tmp_path / "o.jsonl").exists()


def test_a_few_aliases_still_read():
    data = load_yaml("base: &b {bandwidth: 1GB/s, latency: 1us}\n"
                     "links: [{<<: *b, src: a}, {<<: *b, src: c, latency: 2us}]\n", "x")
    assert data["links"][1] == {"bandwidth": "1GB/s", "latency": "2us", "src": "c"}


def test_a_recursive_alias_is_refused(capsys, tmp_path):
    """Was: accepted (``profile: &p {x: *p}`` is a dict holding itself: whatever walks it
    recurses for ever)."""
    path = tmp_path / "r.yaml"
    path.write_text(RING + "profile: &p {x: *p}\n")
    refused(capsys, "topo", "show", str(path), says="line 4: an alias refers to a value that "
            "holds it")


def test_a_key_given_twice_is_refused(capsys, tmp_path):
    """Was: the last one silently won (builder: ring, then builder: star)."""
    path = tmp_path / "twice.yaml"
    path.write_text(RING + "builder: star\n")
    refused(capsys, "topo", "show", str(path), says="line 4: key 'builder' is given twice")


@pytest.mark.parametrize("name", ["x" * 300, "y" * 4096])
def test_a_name_no_file_can_have_is_unknown_not_a_traceback(capsys, name):
    """Was: OSError (File name too long) from the preset lookup."""
    refused(capsys, "topo", "show", name, says="unknown topology")
    refused(capsys, "workload", "show", "--topology", "ring-8", "--workload", name,
            says="unknown workload")


def test_read_yaml_says_what_is_missing(tmp_path):
    with pytest.raises(CommsimError, match="study: no such file"):
        read_yaml(tmp_path / "none.yaml", "study")
    with pytest.raises(CommsimError, match="is a folder; give a study YAML file"):
        read_yaml(tmp_path, "study")


# -- topology files -------------------------------------------------------------------------

@pytest.mark.parametrize("builder", ["[ring]", "{a: 1}"])
def test_a_builder_that_is_not_a_name(capsys, tmp_path, builder):
    """Was: TypeError (unhashable type) with a traceback."""
    path = tmp_path / "b.yaml"
    path.write_text(f"builder: {builder}\nparams: {{n: 4}}\n")
    refused(capsys, "topo", "show", str(path), says="unknown builder")


def test_an_infinite_contention_is_refused(capsys, tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text(RING + "model: {contention: .inf}\n")
    refused(capsys, "topo", "show", str(path), says="model.contention: inf must be a number "
            "from 1 to 1e+06")


@pytest.mark.parametrize("builder, params, says", [
    ("ring", {"n": 10**8}, "n: a topology of"),
    ("fully_connected", {"n": 100_000}, "n: a topology of"),
    ("dgx_cluster", {"nodes": 10**9}, "nodes, gpus_per_node, spines"),
    ("leaf_spine", {"spines": 10**12}, "leaves, spines, hosts_per_leaf"),
    ("fat_tree", {"k": 1000}, "k, hosts"),
    ("dragonfly", {"groups": 10**6}, "groups, routers_per_group"),
    ("torus", {"dims": [10**4, 10**4]}, "dims"),
])
def test_a_topology_too_large_to_build_is_refused_at_once(builder, params, says):
    """Was: minutes of building and gigabytes, then a MemoryError (or the machine)."""
    t0 = time.perf_counter()
    with pytest.raises(CommsimError, match=f"{says}.*more than commsim builds"):
        builders.BUILDERS[builder](**params)
    assert time.perf_counter() - t0 < 1


# -- workload files -------------------------------------------------------------------------

WORKLOAD = {"layout": {"tp": 2}, "model": {"layers": 2, "hidden": 64, "seq_len": 16}}


def _workload(**changes):
    data = json.loads(json.dumps(WORKLOAD))
    for key, value in changes.items():
        section, _, field = key.partition("__")
        if field:
            data.setdefault(section, {})[field] = value
        else:
            data[section] = value
    return data


@pytest.mark.parametrize("changes, says", [
    ({"model__params": "1e999"}, "model.params: '1e999' is more than"),
    ({"model__params": "9e999B"}, "model.params: '9e999B' is more than"),
    ({"model__layers": 10**20}, "model.layers: 100000000000000000000 is more than 100,000"),
    ({"model__hidden": 10**24}, "model.hidden"),
    ({"model__top_k": -1}, "model.top_k: -1 must be a whole number >= 1"),
    ({"model__micro_batches": 10**30}, "model.micro_batches"),
    ({"training__bucket": 10**30}, "training.bucket"),
    ({"model__hidden": 2**20, "model__seq_len": 2**30}, "model: a collective of"),
    ({"name": ["a"]}, "name: ['a'] must be a string"),
    ({"description": {"a": 1}}, "description: must be text"),
])
def test_workload_values_beyond_any_model(changes, says):
    """Was: OverflowError (params 1e999), a loop that never ended (layers 1e20), sizes
    beyond int64, a negative top_k or a list for a name accepted."""
    t0 = time.perf_counter()
    with pytest.raises(CommsimError, match=re_escape(says)):
        spec = read_workload(_workload(**changes))
        step_timeline(spec.shape, Layout(tp=2))
    assert time.perf_counter() - t0 < 2


def re_escape(text: str) -> str:
    import re
    return re.escape(text)


def test_tiny_buckets_overlapped_are_counted_not_listed():
    """Was: one list entry a bucket: 1-byte buckets of a 13B model overlapped with the
    backward pass are 10**10 entries (memory, then the machine)."""
    shape = Shape(layers=40, hidden=5120, seq_len=4096, micro_batches=4, strategy="zero2",
                  bucket=1, overlap_dp=True)
    t0 = time.perf_counter()
    phases = step_timeline(shape, Layout(tp=2, dp=4))
    assert time.perf_counter() - t0 < 5
    beside = [p for p in phases if "beside backward" in p.name]
    paired = [p for p in phases if " + " in p.name]
    per_pass = shape.dense_params // 2 * 2      # bytes of the tp shard, 1-byte buckets
    # every bucket of each of the 4 passes runs once: beside a TP collective or alone
    assert sum(p.count for p in beside + paired) == 4 * per_pass


@pytest.mark.parametrize("nslots, counts", [(0, [3]), (4, [1, 2]), (4, [3, 5, 2]),
                                             (6, [2, 2, 2]), (7, [0, 9]), (3, [])])
def test_counting_the_buckets_pairs_them_as_listing_them_did(nslots, counts):
    """The pairing as it was (a list entry a bucket), for small counts."""
    from collections import Counter

    from commsim.workload.step import pair_buckets

    slots = [f"tp{i % 2}" for i in range(nslots)]
    buckets = [(f"b{j}", n) for j, n in enumerate(counts)]
    listed = [b for b, n in buckets for _ in range(n)]
    paired, alone = pair_buckets(slots, buckets)
    assert paired == Counter(zip(slots, listed)) and list(paired) == list(
        Counter(zip(slots, listed)))
    assert alone == Counter(listed[len(slots):]) and list(alone) == list(
        Counter(listed[len(slots):]))


# -- flags ----------------------------------------------------------------------------------

SIM = ["simulate", "--topology", "ring-8", "--algorithm", "ring", "--size", "1K"]


@pytest.mark.parametrize("argv, says", [
    (["simulate", "--topology", "", "--size", "1K"], "--topology: empty"),
    (["simulate", "--profile", " ", "--size", "1K"], "--profile: empty"),
    (["predict", "--topology", "", "--size", "1K"], "--topology: empty"),
    (["predict", "--alpha", "1us", "--bandwidth", "1GB/s", "--topology", ""],
     "--topology/--profile and --alpha/--bandwidth exclude each other"),
    ([*SIM, "--size", ""], "--size: '' holds no size"),
    ([*SIM, "--json", ""], "--json: give a file name"),
    ([*SIM, "--trace", ""], "--trace: give a file name"),
    ([*SIM[:-1], "1K,2K", "--trace", ""], "--trace: give a file name"),
    (["predict", "--topology", "ring-8", "--json", ""], "--json: give a file name"),
    (["topo", "export", "ring-8", "-o", ""], "--output: give a file name"),
    (["compare", "tests/fixtures/bench-gloo.jsonl", "--report", ""], "--report: give a file"),
    (["compare", "tests/fixtures/bench-gloo.jsonl", "--markdown", ""], "--markdown: give a"),
    (["simulate", "--topology", "ring-8", "--workload", ""], "workload: give a name or"),
    ([*SIM, "--tp", "-1"], "--tp: only for a training step"),
    ([*SIM, "--compute", "forward=1ms"], "--compute: only for a training step"),
    ([*SIM, "--workers", "2"], "--workers: only for a training step"),
    (["simulate", "--topology", "ring-8", "--workload", "tp8-dp32", "--dp", "4",
      "--nranks", "-5"], "--nranks: not used with --workload"),
    (["simulate", "--topology", "ring-8", "--workload", "tp8-dp32", "--dp", "4",
      "--size", "1K"], "--size: not used with --workload"),
    (["simulate", "--topology", "ring-8", "--workload", "tp8-dp32", "--dp", "4",
      "--compute", ""], "--compute: empty"),
    (["predict", "--topology", "ring-8", "--chunks", "9" * 30], "--chunks: '999"),
    (["predict", "--topology", "ring-8", "--channels", "9" * 30], "--channels"),
    (["topo", "draw", "ring-8", "-o", "t.png", "--dpi", "9" * 30], "--dpi: 999"),
    (["predict", "--profile", "nan"], "--profile: unknown topology 'nan'"),
    ([*SIM, "--json", "a\0b"], "--json: 'a\\x00b' holds a NUL character"),
])
def test_flag_values_that_were_ignored_or_crashed(capsys, tmp_path, monkeypatch, argv, says):
    """Was: an empty --topology/--profile ran the default topology, an empty output flag
    was not written (exit 0), --workload '' ran a plain simulate, the training-step flags
    without --workload (and the collective's with it) were ignored, a huge --dpi crashed
    in matplotlib (TypeError), a NUL in an output name was a ValueError traceback."""
    monkeypatch.chdir(Path(__file__).resolve().parent.parent)
    before = set(os.listdir())
    refused(capsys, *argv, says=says)
    assert set(os.listdir()) == before


# -- files written atomically -----------------------------------------------------------------

class _Broken:
    """A block no writer knows: rendering fails half-way through the document."""


def _doc(broken: bool) -> document.Document:
    doc = document.Document("r", [document.Heading("h"), document.Paragraph("text")])
    doc.add(document.Figure(b"\x89PNG fake", "a figure", "fig"))
    if broken:
        doc.add(_Broken())
    return doc


@pytest.mark.parametrize("writer", [html.write, markdown.write])
def test_a_failing_render_leaves_the_old_file_and_no_partial_one(tmp_path, writer):
    """Was: the HTML page was written in one go only after rendering, but Markdown wrote
    its PNGs first; and a write that failed half-way (disk full, Ctrl-C) left a truncated
    file where the old one was."""
    path = tmp_path / "report.md"
    writer(_doc(False), path)
    old = {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)}
    with pytest.raises(TypeError, match="cannot render _Broken"):
        writer(_doc(True), path)
    assert {name: (tmp_path / name).read_bytes() for name in leftovers(tmp_path)} == old
    fresh = tmp_path / "new" / "r.md"
    with pytest.raises(TypeError):
        writer(_doc(True), fresh)
    assert leftovers(tmp_path) == sorted(old)      # not even the folder


def test_an_interrupted_write_keeps_the_old_file(tmp_path):
    path = tmp_path / "out.json"
    path.write_text("old")
    os.chmod(path, 0o640)
    with pytest.raises(KeyboardInterrupt), replacing(path) as tmp:
        tmp.write_text("half of the new")
        raise KeyboardInterrupt
    assert path.read_text() == "old" and leftovers(tmp_path) == ["out.json"]
    write_atomic(path, "new")
    assert path.read_text() == "new" and leftovers(tmp_path) == ["out.json"]
    assert os.stat(path).st_mode & 0o777 == 0o640      # the permissions it had


def test_staged_files_appear_together_or_not_at_all(tmp_path):
    with Staged() as staged:
        staged.path(tmp_path / "a" / "1.json").write_text("1")
        staged.path(tmp_path / "2.json").write_text("2")
        assert leftovers(tmp_path) != []                  # the temporary files
    assert leftovers(tmp_path) == []                      # discarded: no commit
    with Staged() as staged:
        staged.path(tmp_path / "a" / "1.json").write_text("1")
        staged.path(tmp_path / "2.json").write_text("2")
        staged.commit()
    assert (tmp_path / "a" / "1.json").read_text() == "1"
    assert leftovers(tmp_path) == ["2.json", "a"]


def test_a_simulate_that_fails_half_way_writes_no_trace(capsys, tmp_path, monkeypatch):
    """Was: the traces of the runs before the failure were written (and --json not)."""
    import commsim.sim as sim

    real = sim.simulate
    calls = []

    def second_fails(*args, **kw):
        calls.append(1)
        if len(calls) == 2:
            raise CommsimError("the second run fails")
        return real(*args, **kw)

    monkeypatch.setattr(sim, "simulate", second_fails)
    refused(capsys, *SIM[:-1], "1K,2K", "--trace", str(tmp_path / "t.json"), "--json",
            str(tmp_path / "r.json"), says="the second run fails")
    assert leftovers(tmp_path) == []


def test_topology_save_is_atomic(tmp_path, monkeypatch):
    """Was: written in place: a write that fails (here: the rename) leaves a new file or a
    truncated one where the old one was."""
    path = tmp_path / "t.yaml"
    path.write_text("old")

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(CommsimError, match="cannot write .*No space left"):
        topology.save(topology.load("ring-8"), path)
    assert path.read_text() == "old" and leftovers(tmp_path) == ["t.yaml"]
    monkeypatch.undo()
    topology.save(topology.load("ring-8"), path)
    assert yaml.safe_load(path.read_text())["name"] == "ring-8"


# -- plan, compare, --from-ddp and profiles ----------------------------------------------------

PLAN = ["plan", "--model", "llama3-8b", "--gpus", "8", "--no-simulate", "--topology",
        "dgx-a100-4node"]
LONG = "x" * 300


@pytest.mark.parametrize("flag, says", [
    ("--json", "--json: give a file name"), ("--markdown", "--markdown: give a file name"),
    ("--report", "--report: give a file name"), ("--params", "--params: empty"),
    ("--gpu", "--gpu: empty"), ("--fp8-comm", "--fp8-comm: empty"),
    ("--from-ddp", "--from-ddp: empty"), ("--model", "--model: empty"),
])
def test_plan_refuses_an_empty_value(capsys, tmp_path, monkeypatch, flag, says):
    """Was: an empty value was taken as not given (exit 0, no file written)."""
    monkeypatch.chdir(tmp_path)
    refused(capsys, *PLAN, f"{flag}=", says=says)
    assert leftovers(tmp_path) == []


@pytest.mark.parametrize("text", ["inf", "1e400", "infinity"])
def test_plan_refuses_infinite_tokens(capsys, text):
    """Was: accepted, then infinite training days and GPU-hours."""
    refused(capsys, *PLAN, "--tokens", text, says=f"--tokens: {text!r} is not a finite token "
            "count")


@pytest.mark.parametrize("argv, says", [
    (["--layers", str(10**20)], "--layers: 100000000000000000000 is more than 10,000 layers"),
    (["--gpus", "123456789"], "--gpus: '123456789' is more than 1,048,576 gpus"),
    (["--gpus", str(10**23)], "--gpus: '100000000000000000000000' is more than 1,048,576"),
    (["--gpus", "8,infk"], "--gpus: 'infk' is not a gpu count"),
    (["--global-batch", "9" * 400], "--global-batch: 999"),
    (["--global-batch", str(2**40 + 1)], "is more than 1,099,511,627,776 sequences"),
])
def test_plan_counts_past_its_caps_are_refused_at_once(capsys, argv, says):
    """Was: --layers 10**20 listed every divisor (a hang), --gpus 123456789 planned for
    minutes, --gpus 10**23 was a ValueError and --gpus infk an OverflowError (tracebacks),
    a --global-batch of 400 digits an OverflowError (a float division)."""
    t0 = time.perf_counter()
    refused(capsys, *PLAN, *argv, says=says)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("params, says", [
    ("inf", "--params: 'inf' is not a finite parameter count"),
    ("1e30", "layers (the GPT-3 shape nearest in size, made deeper), more than the 10,000"),
])
def test_plan_params_past_any_model_are_refused(capsys, params, says):
    """Was: --params inf an OverflowError, --params 1e30 a model of 10**23 layers (a
    hang)."""
    t0 = time.perf_counter()
    refused(capsys, "plan", "--params", params, "--gpus", "8", "--no-simulate", says=says)
    assert time.perf_counter() - t0 < 10


@pytest.mark.parametrize("argv, says", [
    (["--seq-len", str(10**14)], "--seq-len: 100000000000000 is more than 1,099,511,627,776"),
    (["--micro-batch", str(10**14)], "--micro-batch: 100000000000000 is more than"),
    (["--vocab", str(10**14)], "--vocab: 100000000000000 is more than"),
    (["--ffn", str(10**14)], "--ffn: model.params: "),
    (["--heads", "7"], "--heads: 7 does not divide hidden 4096"),
    (["--hidden", "100"], "--hidden: model.heads: 32 does not divide hidden 100"),
])
@pytest.mark.parametrize("layout", [[], ["--tp", "1", "--pp", "1"]])
def test_plan_model_errors_name_the_flag_typed(capsys, argv, says, layout):
    """Was: the model field (seq_len: ...), and without a layout a misleading "--gpus 8:
    no valid layout" (the search took the shape's error for an invalid layout)."""
    refused(capsys, *PLAN, *layout, *argv, says=says)


def test_plan_reads_topologies_through_the_guarded_reader(capsys, tmp_path):
    """Was: an OSError (a name too long) or ValueError (a NUL) traceback, and PyYAML's
    unguarded loader (non-UTF-8 text a UnicodeDecodeError, a key given twice kept)."""
    refused(capsys, *PLAN, "--topology", LONG, says=f"unknown topology '{LONG[:20]}")
    refused(capsys, *PLAN, "--topology", "a\0b", says="unknown topology 'a\\x00b'")
    refused(capsys, *PLAN, "--topology", f"{tmp_path}/{LONG}.yaml",
            says="topology: no such file")
    bad = tmp_path / "t.yaml"
    bad.write_bytes(b"name: caf\xe9\nbuilder: ring\n")
    refused(capsys, *PLAN, "--topology", str(bad), says="not UTF-8 text")
    bad.write_text(RING + "builder: star\n")
    refused(capsys, *PLAN, "--topology", str(bad), says="key 'builder' is given twice")
    bad.write_text("- a\n- b\n")
    refused(capsys, *PLAN, "--topology", str(bad), says="is not a topology mapping")


def test_plan_from_ddp_names_no_file_can_have(capsys, tmp_path):
    """Was: an OSError or ValueError traceback from Path.exists(); and a line nested 100,000
    deep a RecursionError."""
    refused(capsys, *PLAN, "--from-ddp", LONG, says="--from-ddp 'xxx")
    refused(capsys, *PLAN, "--from-ddp", "a\0b", says="--from-ddp 'a\\x00b': cannot be read")
    deep = tmp_path / "deep.jsonl"
    deep.write_text("[" * 100_000 + "\n")
    refused(capsys, *PLAN, "--from-ddp", str(deep), says="line 1 is nested too deeply")


@pytest.mark.parametrize("name, says", [
    (" ", "results: ' ' is not a file name"),
    ("a\0b", "results: cannot read 'a\\x00b'"),
    (LONG, "results: cannot read 'xxx"),
])
def test_compare_quotes_and_survives_any_results_name(capsys, name, says):
    """Was: a ValueError (a NUL) or OSError (a name too long) traceback, and a blank name
    quoted bare ("error:  : no such file")."""
    refused(capsys, "compare", name, says=says)


def test_compare_refuses_a_line_nested_too_deeply(capsys, tmp_path):
    """Was: a RecursionError traceback from json.loads."""
    config = (Path(__file__).parent / "fixtures" / "bench-gloo.jsonl").read_text()
    path = tmp_path / "deep.jsonl"
    path.write_text(config.splitlines()[0] + "\n" + "[" * 100_000 + "\n")
    refused(capsys, "compare", str(path), says="deep.jsonl line 2: nested too deeply to read")


def test_an_unreadable_profile_is_stale_with_its_reason(tmp_path):
    """Was: a UnicodeDecodeError out of ``stale()`` (``yaml.safe_load(read_text())``)."""
    from commsim.calibrate import profile

    path = tmp_path / "p.yaml"
    path.write_bytes(b"profile: {format: caf\xe9}\n")
    assert "cannot be read as a profile" in profile.stale(path)
    assert "not UTF-8" in profile.stale(path)
    path.write_text("profile: [1, 2]\n")
    assert "no profile block" in profile.stale(path)
    assert profile.stale(tmp_path / LONG) is None and profile.stale("a\0b") is None


def test_a_profile_is_written_with_write_atomic(tmp_path, monkeypatch):
    """Was: its own temporary file and rename: a failing rename left the temporary file
    behind, and a profile was 0600 whatever the umask."""
    from commsim.calibrate import profile

    path = tmp_path / "p.yaml"
    path.write_text("old")
    os.chmod(path, 0o640)

    def no_rename(src, dst):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "replace", no_rename)
    with pytest.raises(CommsimError, match="--out: cannot write .*No space left"):
        profile.write({"name": "p"}, path)
    assert path.read_text() == "old" and leftovers(tmp_path) == ["p.yaml"]
    monkeypatch.undo()
    profile.write({"name": "p"}, path)
    assert yaml.safe_load(path.read_text()) == {"name": "p"}
    assert os.stat(path).st_mode & 0o777 == 0o640 and leftovers(tmp_path) == ["p.yaml"]
    fresh = profile.write({"name": "q"}, tmp_path / "new" / "q.yaml")
    umask = os.umask(0)
    os.umask(umask)
    assert os.stat(fresh).st_mode & 0o777 == 0o666 & ~umask


@pytest.mark.parametrize("builder, param, says", [
    ("dgx_cluster", "nodes: x", "topology 't' params: nodes=x: nodes must be a whole number"),
    ("dgx_cluster", "nodes: .nan", "nodes=nan: nodes must be a whole number"),
    ("dgx_cluster", "gpus_per_node: 0", "gpus_per_node=0: gpus_per_node must be a whole"),
    ("dgx_cluster", "gpus_per_node: [1]", "gpus_per_node=[1]"),
    ("dgx_cluster", "nodes: 1e30", "nodes=1e30: more than 2,147,483,648"),
    ("dgx_cluster", "nodes: null", "nodes=None: nodes must be a whole number"),
    ("dgx_cluster", "nvlink_bw: x", "topology 't' params: nvlink_bw: 'x' is not a bandwidth"),
    ("dgx_cluster", "rail_optimized: x", "rail_optimized: 'x' must be true or false"),
    ("leaf_spine", "oversubscription: x", "oversubscription=x: oversubscription must be a"),
    ("leaf_spine", "oversubscription: -1", "must be a positive ratio"),
    ("leaf_spine", "hosts_per_leaf: 1e40", "hosts_per_leaf=1e40: more than"),
])
def test_plan_checks_an_analytic_topology_when_it_reads_it(capsys, tmp_path, builder, param,
                                                         says):
    """Was: the analytic path (dgx_cluster, leaf_spine: priced without the graph) read its
    counts with int() and float(): a ValueError, TypeError, ZeroDivisionError or
    OverflowError traceback; a bad bandwidth was taken by the layout search for an invalid
    layout ("--gpus 8: no valid layout")."""
    path = tmp_path / "t.yaml"
    path.write_text(f"name: t\nbuilder: {builder}\nparams: {{{param}}}\n")
    refused(capsys, *PLAN, "--topology", str(path), says=says)


def test_an_analytic_topology_without_counts_takes_the_builders_defaults(capsys, tmp_path):
    path = tmp_path / "t.yaml"
    path.write_text("name: t\nbuilder: dgx_cluster\nparams: {nvlink_bw: 100GB/s, spines: null}\n")
    code, _, err = run(capsys, *PLAN, "--topology", str(path))
    assert code == 0, err
