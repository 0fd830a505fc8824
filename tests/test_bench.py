"""``commsim bench``: sizes, check data, launcher variables, flags, real runs on gloo and MPI."""

import csv
import json

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from multiproc import assert_all_ok, run_mpi_ranks, run_torch_ranks

from commsim import collectives
from commsim.backends import reference
from commsim.bench import config, data, env
from commsim.bench.harness import aggregate, summarize
from commsim.bench.output import RESULT_KEYS
from commsim.cli import build_parser
from commsim.cli.bench import config_from_args
from commsim.errors import CommsimError

FLOAT32 = config.DTYPES["float32"]


def factor(collective, p):  # REFERENCE.md's table, written out independently
    return {"allreduce": 2 * (p - 1) / p, "reduce_scatter": (p - 1) / p,
            "allgather": (p - 1) / p, "broadcast": 1.0, "reduce": 1.0,
            "alltoall": (p - 1) / p}[collective]


# --- sizes and counts (nccl-tests conventions) ----------------------------------------

def test_size_sweep_follows_nccl_tests():
    cfg = config.BenchConfig(minbytes=1024, maxbytes=64 << 20, stepfactor=2)
    assert config.sizes(cfg) == [1024 << i for i in range(17)]
    cfg = config.BenchConfig(minbytes=1 << 20, maxbytes=4 << 20, stepbytes=1 << 20)
    assert config.sizes(cfg) == [1 << 20, 2 << 20, 3 << 20, 4 << 20]


@pytest.mark.parametrize("collective,p,size,count,measured", [
    ("allreduce", 4, 1 << 20, 1 << 18, 1 << 20),        # one rank's buffer
    ("broadcast", 3, 1000, 250, 1000),
    ("allgather", 4, 1 << 20, 1 << 16, 1 << 20),        # the whole gathered buffer
    ("reduce_scatter", 3, 1 << 20, 87381, 87381 * 12),  # rounded down to whole counts
    ("allreduce", 4, 6, 1, 4),
    ("allgather", 4, 8, 0, 0),                          # too small: skipped
])
def test_count_and_size(collective, p, size, count, measured):
    assert config.count_and_size(collective, size, FLOAT32, p) == (count, measured)


def test_dtype_and_average_names():
    assert config.resolve_dtype("half").name == "float16"
    assert [config.resolve_dtype(n).name for n in ("i8", "u8", "f8e4m3", "e5m2")] == [
        "int8", "uint8", "float8_e4m3fn", "float8_e5m2"]
    assert config.resolve_dtype("uint8").size == config.resolve_dtype("float8_e5m2").size == 1
    cfg = _cfg("--backend", "nccl", "-d", "fp8_e4m3")  # NCCL reduces float8 (2.24 on)
    assert config.check_dtype(cfg.dtype, cfg.backend).name == "float8_e4m3fn"
    assert _cfg("--backend", "mpi", "-d", "uint8").dtype == "uint8"
    assert config.resolve_dtype("bf16").size == 2
    assert config.resolve_average("1") == "mean" and config.resolve_average("3") == "max"
    assert config.resolve_average("rank0") == "rank0"
    with pytest.raises(CommsimError, match="float16"):
        config.resolve_dtype("float61")
    with pytest.raises(CommsimError, match="average"):
        config.resolve_average("median")


# --- check data -----------------------------------------------------------------------

@given(st.sampled_from(list(config.DTYPES.values())), st.integers(1, 300))
def test_check_data_sums_exactly(dtype, p):
    m = data.modulus(dtype, p)
    if dtype.wraps:  # exact modulo 2^8
        assert m == 16
    else:
        assert (m - 1) * p <= dtype.exact


@pytest.mark.parametrize("name", ["int8", "uint8"])
@pytest.mark.parametrize("collective,algorithm", [("allreduce", "ring"), ("allreduce", "rhd"),
                                                  ("reduce_scatter", "ring"),
                                                  ("reduce", "binomial")])
def test_8_bit_sums_wrap_alike_in_the_check_and_the_reference(name, collective, algorithm):
    dtype, p, count = config.DTYPES[name], 40, 50  # 40 ranks: sums about 300, past 255
    m = data.modulus(dtype, p)
    inputs = []
    for r in range(p):
        base, length = data.input_of(collective, r, p, count, m)
        inputs.append(data.typed(np.resize(base, length), dtype))
    assert inputs[0].dtype == np.dtype(name)
    results = reference.run(collectives.build(collective, algorithm, p), inputs)
    wrapped = False
    for r in (0, 7):
        expect = data.expectation(collective, r, p, count, m)
        if not expect:
            continue
        wrapped |= any((base > dtype.exact).any() for _, _, base in expect)
        convert = lambda b: data.typed(b, dtype)  # noqa: E731
        assert data.count_wrong(results[r], expect, convert) == 0
        assert data.count_wrong(reference.expected(collective, inputs)[r], expect, convert) == 0
        bad = results[r].copy()
        bad[3] += 1
        assert data.count_wrong(bad, expect, convert) == 1
    assert wrapped  # the sums did pass the type's range


def test_typed_wraps_integers_and_keeps_floats():
    assert data.typed(np.array([300.0, 127, 128]), config.DTYPES["int8"]).tolist() == \
        [44, 127, -128]
    assert data.typed(np.array([300.0, 255]), config.DTYPES["uint8"]).tolist() == [44, 255]
    floats = np.array([1.0, 2.0])
    assert data.typed(floats, config.DTYPES["float8_e4m3fn"]) is floats


@given(st.sampled_from(collectives.COLLECTIVES), st.integers(1, 6), st.integers(1, 40),
       st.integers(0, 5))
def test_expectation_matches_the_reference(collective, p, count, root):
    root %= p
    m = data.modulus(FLOAT32, p)
    inputs = []
    for r in range(p):
        base, length = data.input_of(collective, r, p, count, m)
        inputs.append(np.resize(base, length))
    want = reference.expected(collective, inputs, root)
    for r in range(p):
        expect = data.expectation(collective, r, p, count, m, root)
        if collective == "reduce" and r != root:
            assert expect == []
            continue
        result = want[r].astype(np.float32)
        assert data.count_wrong(result, expect, lambda b: b.astype(np.float32)) == 0
        if not len(result):  # alltoall: fewer elements than ranks leaves some ranks none
            assert collective == "alltoall" and expect == []
            continue
        result[-1] += 1  # one wrong element is counted once
        assert data.count_wrong(result, expect, lambda b: b.astype(np.float32)) == 1


def test_long_buffers_are_checked_by_tiling_one_period():
    p, count, m = 2, data.PERIOD + 17, 16
    full = sum(np.resize(data.pattern(r, count, m), count) for r in range(p))
    (offset, length, base), = data.expectation("allreduce", 0, p, count, m)
    assert (offset, length, len(base)) == (0, count, data.PERIOD)
    assert data.count_wrong(full, [(offset, length, base)], lambda b: b) == 0
    full[data.PERIOD + 3] += 1
    full[5] -= 1
    assert data.count_wrong(full, [(offset, length, base)], lambda b: b) == 2


# --- launcher variables ---------------------------------------------------------------

@pytest.mark.parametrize("variables,expected", [
    ({"RANK": "2", "WORLD_SIZE": "4", "LOCAL_RANK": "0"}, (2, 4, 0, "torchrun")),
    ({"OMPI_COMM_WORLD_RANK": "1", "OMPI_COMM_WORLD_SIZE": "2",
      "OMPI_COMM_WORLD_LOCAL_RANK": "1"}, (1, 2, 1, "openmpi")),
    ({"PMI_RANK": "3", "PMI_SIZE": "8", "MPI_LOCALRANKID": "1"}, (3, 8, 1, "mpich")),
    ({"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1",
      "SLURM_NTASKS_PER_NODE": "4(x2)"}, (5, 8, 1, "slurm")),
    ({}, (0, 1, 0, "none")),
])
def test_rank_info_from_launchers(variables, expected):
    info = env.detect(variables)
    assert (info.rank, info.world_size, info.local_rank, info.launcher) == expected


def test_bad_launcher_variables_are_one_line_errors():
    with pytest.raises(CommsimError, match="WORLD_SIZE"):
        env.detect({"RANK": "4", "WORLD_SIZE": "4"})
    with pytest.raises(CommsimError, match="not a whole number"):
        env.detect({"RANK": "x", "WORLD_SIZE": "4"})


# --- flags ----------------------------------------------------------------------------

def _cfg(*flags):
    return config_from_args(build_parser().parse_args(["bench", *flags]))


def test_place_flag_picks_nccl_tests_layouts():
    assert _cfg().places == ("out-of-place", "in-place")  # both, as nccl-tests
    assert _cfg("--place", "out").places == ("out-of-place",)
    assert _cfg("--place", "in").places == ("in-place",)
    assert _cfg("--place", "in").as_dict()["place"] == "in"
    with pytest.raises(SystemExit):
        _cfg("--place", "sideways")
    with pytest.raises(CommsimError, match="place"):
        config.BenchConfig(place="sideways").validate()


def test_nccl_tests_flags_and_long_names():
    cfg = _cfg("-b", "8", "-e", "128M", "-f", "4", "-n", "7", "-w", "2", "-c", "0", "-d", "half",
               "-a", "3", "--algorithm", "native,ring,tree", "--min-busbw", "1.5",
               "--per-op-barrier", "--json", "x.jsonl")
    assert (cfg.minbytes, cfg.maxbytes, cfg.stepfactor) == (8, 128 << 20, 4.0)
    assert (cfg.iters, cfg.warmup, cfg.check, cfg.dtype) == (7, 2, False, "half")
    assert (cfg.average, cfg.min_busbw, cfg.per_op_barrier) == ("3", 1.5, True)
    long = _cfg("--minbytes", "1K", "--maxbytes", "2K", "--stepfactor", "2", "--iters", "3",
                "--warmup-iters", "1", "--check", "1", "--dtype", "int64", "--average", "0")
    assert (long.minbytes, long.maxbytes, long.iters, long.warmup) == (1024, 2048, 3, 1)
    assert config.algorithm_names(_cfg("--collective", "allgather", "--algorithm", "all")) == [
        ("allgather", ["native", "rhd", "ring"])]


@pytest.mark.parametrize("flags,match", [
    (["-b", "1M", "-e", "1K"], "maxbytes"),
    (["-d", "float8"], "dtype"),
    (["--algorithm", "native,rnig"], "ring"),
    (["--collective", "alltoal"], "collective"),
    (["--backend", "mpi", "-d", "bf16"], "bfloat16"),
    (["-d", "float8_e4m3fn"], r"^dtype \(-d\) float8_e4m3fn: --backend gloo does not support it "
                              r"\(torch's gloo has no float8 collectives\); it supports "
                              r"float32, .*int8, uint8, int32, int64$"),
    (["--backend", "mpi", "-d", "f8e5m2"], r"float8_e5m2: --backend mpi .* numpy .*uint8"),
    (["-n", "0"], "iters"),
    (["--chunks", "0"], "chunks"),
])
def test_bad_flags_are_one_line_errors(flags, match):
    with pytest.raises(CommsimError, match=match):
        _cfg(*flags)


def test_summary_fails_on_wrong_elements_and_min_busbw():
    rows = [{"collective": "allreduce", "algorithm": a, "status": "ok", "busbw_gbps": bw,
             "wrong": w} for a, bw, w in (("ring", 1.0, 0), ("ring", 3.0, 0), ("native", 5.0, 0))]
    assert summarize(rows, None)["ok"]
    s = summarize(rows, 2.5)  # ring averages 2.0
    assert not s["ok"] and s["avg_busbw"][("allreduce", "ring")] == 2.0
    assert len(s["failures"]) == 1 and "ring" in s["failures"][0]
    rows[2]["wrong"] = 3
    assert "3 wrong" in summarize(rows, None)["failures"][0]


def test_unchecked_rows_count_no_wrong_elements():
    rows = [{"collective": "allreduce", "algorithm": "ring", "status": "ok", "busbw_gbps": 1.0,
             "wrong": None}]
    s = summarize(rows, None)
    assert s["ok"] and s["wrong"] == 0


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_check_off_prints_n_a_and_writes_null(tmp_path):
    out = tmp_path / "run.jsonl"
    results = run_torch_ranks(BENCH.format(plant=""), 2, tmp_path, timeout=50,
                              args=("-c", "0", "-b", "1K", "-e", "1K", "-n", "2", "-w", "0",
                                    "--json", str(out), "--csv", str(tmp_path / "run.csv")))
    text = assert_all_ok(results)
    _, rows = _records(out)
    assert {r["algorithm"] for r in rows} == {"native", "ring"}
    assert all(r["wrong"] is None for r in rows)
    names = [line for line in text.splitlines() if line.startswith("#") and "#wrong" in line]
    names = names[0].lstrip("#").split()
    lines = [dict(zip(names, line.split())) for line in text.splitlines()
             if line.split()[:1] == ["allreduce"]]
    assert [(r["algorithm"], r["out:#wrong"], r["in:#wrong"]) for r in lines] == [
        ("native", "-", "N/A"), ("ring", "N/A", "N/A")], text  # torch: all_reduce in place
    assert "Out of bounds values : N/A" in text and " OK" not in text
    with open(tmp_path / "run.csv", newline="") as f:
        assert {r["wrong"] for r in csv.DictReader(f)} == {""}


def test_aggregate_across_ranks():
    v = np.array([[1.0, 4.0], [3.0, 2.0]])
    assert list(aggregate(v, "mean")) == [2.0, 3.0]
    assert list(aggregate(v, "max")) == [3.0, 4.0]
    assert list(aggregate(v, "rank0")) == [1.0, 4.0]


# --- real runs ------------------------------------------------------------------------

BENCH = """
import sys
from commsim.cli import main
{plant}
raise SystemExit(main(["bench"] + sys.argv[1:]))
"""

# gloo has reduce_scatter since torch 2.x; this stands in for a backend that lacks it
NO_REDUCE_SCATTER = """
import torch.distributed as dist
def lacking(*args, **kwargs):
    raise RuntimeError("ProcessGroupGloo does not support reduce_scatter")
dist.reduce_scatter_single = dist.reduce_scatter_tensor = lacking
"""

# rank 1's ring result gets one wrong element after every run (in place: the buffer; out
# of place: the receive buffer)
CORRUPT_RING = """
import torch.distributed as dist
from commsim.backends import torch_dist
_run = torch_dist.run
def corrupted(schedule, tensor, group=None, **kwargs):
    out = _run(schedule, tensor, group, **kwargs)
    if dist.get_rank() == 1 and schedule.algorithm == "ring":
        out.view(-1)[0] += 1
    return out
torch_dist.run = corrupted
"""


def _records(path):
    lines = [json.loads(line) for line in path.read_text().splitlines()]
    return lines[0], lines[1:]


def _check_rows(rows, p, backend):
    for r in rows:
        assert set(RESULT_KEYS) <= set(r), set(RESULT_KEYS) - set(r)
        assert r["type"] == "result" and r["backend"] == backend and r["nranks"] == p
        if r["status"] != "ok":
            continue
        per = 4 * (p if r["collective"] in ("allgather", "reduce_scatter") else 1)
        assert r["size"] == r["count"] * per
        assert r["algbw_gbps"] == pytest.approx(r["size"] / (r["time_us"] * 1e-6) / 1e9)
        assert r["busbw_gbps"] == pytest.approx(r["algbw_gbps"] * factor(r["collective"], p))
        assert r["iter_min_us"] <= r["iter_p50_us"] <= r["iter_p99_us"] <= r["iter_max_us"]
        if r["algorithm"] == "native":  # predicted as what the backend runs, when modelled
            assert (r["t_model_us"] is None) == (r["native_model"] is None)
        else:
            assert r["t_model_us"] > 0 and r["native_as"] is None


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("p", [2, 4])
def test_gloo_bench_writes_checked_rows(p, tmp_path):
    out = tmp_path / "run.jsonl"
    results = run_torch_ranks(
        BENCH.format(plant=NO_REDUCE_SCATTER), p, tmp_path, timeout=110,
        args=("--collective", "allreduce,reduce_scatter,allgather,broadcast,reduce,alltoall",
              "--algorithm", "all", "-b", "4", "-e", "4K", "-f", "32", "-n", "3", "-w", "1",
              "-r", "1", "--json", str(out), "--csv", str(tmp_path / "run.csv"),
              "--min-busbw", "1e-9"))
    text = assert_all_ok(results)
    assert "Out of bounds values : 0 OK" in text
    cfg, rows = _records(out)
    assert cfg["type"] == "config" and cfg["nranks"] == p and cfg["config"]["iters"] == 3
    assert cfg["torch"] and len(cfg["ranks"]) == p
    pairs = {(r["collective"], r["algorithm"]) for r in rows}
    assert pairs == {(c, "native") for c in collectives.COLLECTIVES} | set(collectives.available())
    # out of place then in place, for every (collective, algorithm, size)
    places = {}
    for r in rows:
        places.setdefault((r["collective"], r["algorithm"], r["size"]), []).append(r["place"])
    assert set(map(tuple, places.values())) == {("out-of-place", "in-place")}
    assert all(r["wrong"] == 0 for r in rows)
    assert {r["exec"] for r in rows} == {None, "dataflow"}  # native rows run no schedule
    native = {(r["collective"], r["native_as"], r["native_model"]) for r in rows
              if r["algorithm"] == "native" and r["status"] == "ok"}
    assert ("allreduce", "ring", "ring") in native and ("broadcast", "binomial", "binomial") \
        in native, native
    assert {r["root"] for r in rows if r["collective"] in ("broadcast", "reduce")} == {1}
    # N/A: a native reduce_scatter (planted), torch's in-place-only collectives out of
    # place, an in-place alltoall (torch and NCCL have none; nor do commsim's schedules)
    skipped = [r for r in rows if r["status"] != "ok"]
    assert {(r["collective"], r["algorithm"], r["place"]) for r in skipped} == {
        ("reduce_scatter", "native", "out-of-place"), ("reduce_scatter", "native", "in-place"),
        ("allreduce", "native", "out-of-place"), ("broadcast", "native", "out-of-place"),
        ("reduce", "native", "out-of-place")} | {
        ("alltoall", a, "in-place") for c, a in pairs if c == "alltoall"}
    assert all(r["status"] == "unsupported" and r["note"] for r in skipped)
    assert "allreduce/native out-of-place: torch.distributed.all_reduce works in place only" \
        in text
    _check_rows(rows, p, "gloo")
    with open(tmp_path / "run.csv", newline="") as f:
        table = list(csv.DictReader(f))
    assert len(table) == len(rows) and list(table[0]) == list(RESULT_KEYS)


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("p", [2, 3])
def test_a_corrupted_executor_is_counted_and_fails_the_run(p, tmp_path):
    out = tmp_path / "run.jsonl"
    results = run_torch_ranks(
        BENCH.format(plant=CORRUPT_RING), p, tmp_path, timeout=80,
        args=("--algorithm", "native,ring", "-b", "1K", "-e", "4K", "-f", "4", "-n", "2",
              "-w", "1", "--json", str(out)))
    assert [rc for rc, _ in results] == [1] * p, results
    assert "FAILED" in results[0][1]
    _, rows = _records(out)
    # both places checked: the out-of-place result (the receive buffer) and the in-place one
    assert {(r["algorithm"], r["place"], r["wrong"]) for r in rows} == {
        ("native", "out-of-place", 0), ("native", "in-place", 0),
        ("ring", "out-of-place", 1), ("ring", "in-place", 1)}


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("p", [2, 3])
def test_mpi_bench_checks_rows_and_min_busbw_fails_it(p, tmp_path):
    pytest.importorskip("mpi4py")
    out = tmp_path / "run.jsonl"
    rc, text = run_mpi_ranks(
        BENCH.format(plant=""), p, tmp_path, timeout=80,
        args=("--backend", "mpi", "--collective",
              "allreduce,allgather,reduce_scatter,broadcast,reduce,alltoall",
              "--algorithm", "native,ring,chain,pairwise", "--exec", "step",
              "-b", "64", "-e", "64K", "-f", "32", "-n", "3", "-w", "1", "--json", str(out),
              "--min-busbw", "1e6"))
    assert rc == 1, text
    assert "Out of bounds values : 0 OK" in text and "below --min-busbw" in text
    cfg, rows = _records(out)
    assert cfg["backend"] == "mpi" and cfg["mpi"]
    # both places; N/A only where MPI or commsim lacks the form
    lacking = {(r["collective"], r["algorithm"], r["place"]) for r in rows
               if r["status"] != "ok"}
    want = {("broadcast", "native", "out-of-place"),  # MPI_Bcast: one buffer
            ("alltoall", "pairwise", "in-place")}
    if any(r["count"] % p for r in rows if r["collective"] == "alltoall"):
        want.add(("alltoall", "native", "in-place"))  # MPI_IN_PLACE needs even blocks
    assert lacking == want, lacking
    ok = [r for r in rows if r["status"] == "ok"]
    assert ok and all(r["wrong"] == 0 for r in ok)
    assert {r["place"] for r in ok if r["collective"] == "reduce_scatter"} == {
        "out-of-place", "in-place"}  # in place: MPI_IN_PLACE, the result at the start
    assert {r["exec"] for r in rows if r["algorithm"] != "native"} == {"step"}
    _check_rows(rows, p, "mpi")


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("backend,dtype", [("gloo", "int8"), ("mpi", "uint8")])
def test_8_bit_integers_run_checked_on_two_ranks(backend, dtype, tmp_path):
    out = tmp_path / "run.jsonl"
    args = ("-d", dtype, "--collective", "allreduce,reduce_scatter,allgather,reduce",
            "--algorithm", "native,ring,binomial", "-b", "1K", "-e", "64K", "-f", "64",
            "-n", "2", "-w", "1", "--json", str(out))
    if backend == "mpi":
        pytest.importorskip("mpi4py")
        rc, text = run_mpi_ranks(BENCH.format(plant=""), 2, tmp_path, timeout=80,
                                 args=("--backend", "mpi", *args))
        assert rc == 0, text
    else:
        text = assert_all_ok(run_torch_ranks(BENCH.format(plant=""), 2, tmp_path,
                                             timeout=80, args=args))
    assert "Out of bounds values : 0 OK" in text
    cfg, rows = _records(out)
    assert cfg["config"]["dtype"] == dtype
    ok = [r for r in rows if r["status"] == "ok"]
    assert {r["collective"] for r in ok} == {"allreduce", "reduce_scatter", "allgather",
                                             "reduce"}
    assert {r["algorithm"] for r in ok} == {"native", "ring", "binomial"}
    for r in ok:
        per = 1 if r["collective"] in ("allreduce", "reduce") else 2  # 1 byte an element
        assert r["dtype"] == dtype and r["wrong"] == 0 and r["size"] == r["count"] * per


def test_a_sweep_that_cannot_fit_in_memory_is_refused_up_front():
    from commsim.bench.harness import check_memory

    cfg = _cfg("-b", "1G", "-e", "1G")
    check_memory(cfg, 2, available=11 << 30)  # 5 buffers x 1 GiB x 2 ranks fit in 11 GiB
    with pytest.raises(CommsimError, match=r"maxbytes: 1G needs about 10.0 GiB .* 4.0 GiB"):
        check_memory(cfg, 2, available=4 << 30)
    check_memory(_cfg("--backend", "nccl", "-e", "1G"), 2, available=1)  # GPU memory: not ours


def _reporter(*flags):
    import io

    from rich.console import Console

    from commsim.bench.output import Reporter
    from commsim.bench.predictions import Predictor

    buf = io.StringIO()
    rep = Reporter(_cfg(*flags), {"torch": "x"}, [{"rank": 0, "host": "h", "device": "cpu",
                                                 "local_rank": 0, "launcher": "torchrun"}],
                   Predictor("localhost", 2), 2,
                   console=Console(file=buf, force_terminal=False, width=300, soft_wrap=True))
    return rep, buf


ROW = {"collective": "allreduce", "algorithm": "native", "size": 1024, "count": 256,
       "dtype": "float32", "redop": "sum", "root": None, "status": "ok", "time_us": 12.5,
       "algbw_gbps": 0.08, "busbw_gbps": 0.08, "wrong": 0, "t_model_us": 10.0,
       "t_sim_us": 9.0, "eff_pct": 72.0, "native_as": "ring", "native_model": "ring",
       "native_exact": True, "iter_p50_us": 12.0, "iter_p99_us": 14.0}


def test_rows_stream_as_plain_columns_when_not_on_a_terminal():
    rep, buf = _reporter("--algorithm", "native,ring")
    rep.start()
    # out of place, then in place: one line a size once both are in, nccl-tests' groups
    shown = buf.getvalue()
    rep.add(dict(ROW, place="out-of-place"))
    assert buf.getvalue() == shown  # not shown before its in-place half
    rep.add(dict(ROW, place="in-place", time_us=20.0, wrong=3, eff_pct=45.0, t_sim_us=8.0))
    lines = buf.getvalue().splitlines()  # the line is out before the run ends
    header = [line for line in lines if line.startswith("#") and "collective" in line]
    assert len(header) == 1
    names = header[0].lstrip("#").split()
    assert names[:7] == ["collective", "algorithm", "size", "count", "type", "redop", "root"]
    assert names[7:25] == [f"{g}:{c}" for g in ("out", "in") for c in (
        "time(us)", "p50(us)", "p99(us)", "algbw(GB/s)", "busbw(GB/s)", "#wrong",
        "t_model(us)", "t_sim(us)", "eff%")]   # each place's predictions in its group
    assert names[25:] == ["as"]
    cells = dict(zip(names, lines[-1].split()))
    assert len(lines[-1].split()) == len(names)
    assert (cells["collective"], cells["algorithm"], cells["size"]) == ("allreduce", "native",
                                                                         "1024")
    assert (cells["out:time(us)"], cells["in:time(us)"]) == ("12.5", "20.0")
    assert (cells["out:#wrong"], cells["in:#wrong"]) == ("0", "3")
    assert (cells["out:eff%"], cells["in:eff%"]) == ("72", "45")
    assert (cells["out:t_sim(us)"], cells["in:t_sim(us)"]) == ("9.0", "8.0")
    assert cells["as"] == "ring=ring" and "┃" not in buf.getvalue()
    # a name with spaces keeps them as _ (one field), not glued together
    for place in ("out-of-place", "in-place"):
        rep.add(dict(ROW, place=place, size=2048, native_as="ring reduce-scatter+gather",
                     native_model="chain", native_exact=False))
    assert buf.getvalue().splitlines()[-1].split()[-1] == "ring_reduce-scatter+gather~chain"
    # a form the backend lacks is N/A in its group (nccl-tests' word)
    rep.add(dict(ROW, place="out-of-place", algorithm="ring", native_as=None,
                 status="unsupported", note="no"))
    rep.add(dict(ROW, place="in-place", algorithm="ring", native_as=None))
    last = dict(zip(names, buf.getvalue().splitlines()[-1].split()))
    assert (last["algorithm"], last["out:time(us)"], last["out:busbw(GB/s)"],
            last["in:time(us)"], last["as"]) == ("ring", "N/A", "-", "12.5", "-")
    assert buf.getvalue().count("collective") == 1  # one header for the whole run
    # an interrupted run shows the size it was measuring with what it has
    rep.add(dict(ROW, place="out-of-place", size=4096))
    rep.stop()
    last = dict(zip(names, buf.getvalue().splitlines()[-1].split()))
    assert (last["size"], last["out:time(us)"], last["in:time(us)"]) == ("4096", "12.5", "-")
    rep.close()


def test_one_place_prints_its_group_only():
    rep, buf = _reporter("--place", "in")
    rep.start()
    rep.add(dict(ROW, place="in-place"))
    names = [line for line in buf.getvalue().splitlines() if "collective" in line][0].split()
    assert "in:time(us)" in names and not any(n.startswith("out:") for n in names)
    assert buf.getvalue().splitlines()[-1].split()[7] == "12.5"
    rep.stop()
    rep.close()


def test_the_rich_table_groups_columns_as_nccl_tests_prints_them():
    from rich.console import Console

    rep, _ = _reporter()
    for place in ("out-of-place", "in-place"):
        rep.add(dict(ROW, place=place, time_us=11.0 if place == "out-of-place" else 22.0))
    console = Console(width=400, record=True, force_terminal=False)
    console.print(rep._tables())
    text = console.export_text()
    lines = text.splitlines()
    head = next(i for i, line in enumerate(lines) if "out-of-place" in line)
    assert lines[head].index("out-of-place") < lines[head].index("in-place")
    assert lines[head + 1].count("time(us)") == 2 and lines[head + 1].count("t_sim(us)") == 2
    row = next(line for line in lines if "1024" in line)
    assert row.index("11.0") < row.index("22.0")


def test_header_and_footer_speak_like_nccl_tests():
    import io

    from rich.console import Console

    from commsim.bench.output import Reporter, oversubscribed
    from commsim.bench.predictions import Predictor

    buf = io.StringIO()
    cfg = _cfg("-d", "half", "-a", "3", "-c", "0")
    ranks = [{"rank": r, "host": "h", "device": "cpu", "local_rank": r, "launcher": "torchrun",
              "cores": 2} for r in range(4)]
    rep = Reporter(cfg, {"torch": "x"}, ranks, Predictor("localhost", 4), 4,
                   console=Console(file=buf, force_terminal=False, width=300, soft_wrap=True))
    rep.start()
    rep.footer({"wrong": 0, "avg_busbw": {}, "failures": []})
    text = buf.getvalue()
    assert "dtype float16" in text and "average max" in text  # canonical names
    assert "Out of bounds values : N/A" in text and "0 OK" not in text
    assert "# oversubscribed: 4 ranks on 2 cores of h: latencies are the scheduler's, not " \
        "the network's" in text
    assert oversubscribed([dict(r, cores=8) for r in ranks]) == []
    rep.close()


def test_oversubscription_is_said_per_host_and_recorded_in_the_config_line(tmp_path):
    import io

    from rich.console import Console

    from commsim.bench.output import Reporter, oversubscription
    from commsim.bench.predictions import Predictor

    def rank(r, host, cores, device="cpu"):
        return {"rank": r, "host": host, "device": device, "local_rank": r,
                "launcher": "torchrun", "cores": cores}

    # a: 3 ranks on 2 cores; b: 2 ranks on 2 cores (not oversubscribed)
    ranks = [rank(0, "a", 2), rank(1, "a", 2), rank(2, "a", 2), rank(3, "b", 2),
             rank(4, "b", 2)]
    assert oversubscription(ranks) == {"oversubscribed": True, "cores": {"a": 2, "b": 2}}
    assert oversubscription(ranks[3:]) == {"oversubscribed": False, "cores": {"b": 2}}
    gpus = [rank(r, "g", 2, device=f"cuda:{r} (H100)") for r in range(4)]
    assert not oversubscription(gpus)["oversubscribed"]  # GPU ranks wait on the GPU
    out = tmp_path / "run.jsonl"
    buf = io.StringIO()
    rep = Reporter(_cfg("--json", str(out)), {"torch": "x"}, ranks, Predictor("localhost", 5),
                   5, console=Console(file=buf, force_terminal=False, width=300))
    rep.start()
    rep.close()
    lines = [line for line in buf.getvalue().splitlines() if "oversubscribed" in line]
    assert lines == ["# oversubscribed: 3 ranks on 2 cores of a: latencies are the "
                     "scheduler's, not the network's"]
    record = json.loads(out.read_text().splitlines()[0])
    assert record["oversubscribed"] is True and record["cores"] == {"a": 2, "b": 2}


# every rank pinned to one core: two ranks share it
ONE_CORE = """
import os
os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
"""


@pytest.mark.slow
@pytest.mark.timeout(60)
def test_two_ranks_pinned_to_one_core_say_they_are_oversubscribed(tmp_path):
    if not hasattr(__import__("os"), "sched_setaffinity"):
        pytest.skip("no CPU affinity on this platform")
    out = tmp_path / "run.jsonl"
    results = run_torch_ranks(BENCH.format(plant=ONE_CORE), 2, tmp_path, timeout=50,
                              args=("-b", "1K", "-e", "1K", "-n", "2", "-w", "0",
                                    "--algorithm", "native", "--json", str(out)))
    text = assert_all_ok(results)
    assert "# oversubscribed: 2 ranks on 1 core of " in text
    assert "latencies are the scheduler's, not the network's" in text
    cfg, _ = _records(out)
    assert cfg["oversubscribed"] is True and list(cfg["cores"].values()) == [1]
    assert [r["cores"] for r in cfg["ranks"]] == [1, 1]


def test_usable_cores_is_the_affinity_else_the_core_count(monkeypatch):
    import os

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 3, 5}, raising=False)
    assert env.usable_cores() == 3
    monkeypatch.delattr(os, "sched_getaffinity")
    monkeypatch.setattr(os, "cpu_count", lambda: 7)
    assert env.usable_cores() == 7


def test_cores_per_rank_counts_the_cores_a_hosts_ranks_may_use_together():
    """mpirun binds each of 2 ranks to its own core: a core each, not half a core; 4
    unbound ranks on 2 cores: half; 2 pinned to one core: half; a host whose ranks'
    affinity is unknown counts the most cores any of them has; the fewest host wins."""
    def rank(host, cpus, cores=None):
        return {"host": host, "cpus": cpus, "cores": cores or len(cpus or [0])}

    assert env.host_cores_per_rank([rank("a", [0]), rank("a", [1])]) == 1.0
    assert env.host_cores_per_rank([rank("a", [0, 1])] * 4) == 0.5
    assert env.host_cores_per_rank([rank("a", [0])] * 2) == 0.5
    assert env.host_cores_per_rank([rank("a", None, 8), rank("a", [0], 1)]) == 4.0
    assert env.host_cores_per_rank([rank("a", [0, 1, 2, 3]), rank("b", [0]),
                                    rank("b", [0])]) == 0.5
    from commsim.bench.output import host_load

    load = host_load([rank("a", [0]), rank("a", [1])])
    assert load == [("a", 2, 2, False)]


def _cache(root, cpu, index, level, kind, size, shared):
    d = root / f"cpu{cpu}" / "cache" / f"index{index}"
    d.mkdir(parents=True)
    for name, text in (("level", str(level)), ("type", kind), ("size", size),
                       ("shared_cpu_list", shared)):
        (d / name).write_text(text + "\n")


def test_cpu_caches_are_each_core_s_last_level_cache_named_once(tmp_path):
    """Two cores with their own L2 and one L3 each of two 4-core dies: cores 0 and 1 share
    die 0's L3, core 4 has die 1's; instruction caches never count."""
    for cpu, die in ((0, "0-3"), (1, "0-3"), (4, "4-7")):
        _cache(tmp_path, cpu, 0, 1, "Instruction", "64K", str(cpu))
        _cache(tmp_path, cpu, 1, 2, "Unified", "1024K", str(cpu))
        _cache(tmp_path, cpu, 2, 3, "Unified", "16384K", die)
    assert env.cpu_caches([0, 1], root=tmp_path) == {"0-3": 16 << 20}
    assert env.cpu_caches([0, 4], root=tmp_path) == {"0-3": 16 << 20, "4-7": 16 << 20}
    assert env.cpu_caches([9], root=tmp_path) == {}   # no sysfs entry: unknown
    assert env.cpu_caches(None, root=tmp_path) == {}


def test_a_host_s_cache_is_its_ranks_distinct_caches_and_the_least_host_wins():
    def rank(host, caches):
        return {"host": host, "caches": caches}

    die0, die1 = {"0-3": 16 << 20}, {"4-7": 16 << 20}
    assert env.host_cache_bytes([rank("a", die0), rank("a", die0)]) == 16 << 20
    assert env.host_cache_bytes([rank("a", die0), rank("a", die1)]) == 32 << 20
    assert env.host_cache_bytes([rank("a", die0 | die1), rank("b", die0)]) == 16 << 20
    assert env.host_cache_bytes([rank("a", die0), rank("a", {})]) is None


def test_rings_take_the_prediction_topology_s_layout_when_ranks_fill_its_nodes():
    from commsim.bench.harness import algorithm_plans
    from commsim.topology import builders

    cfg = _cfg("--algorithm", "native,ring,tree")
    G = builders.dgx_cluster(2, gpus_per_node=4)
    plans = dict(algorithm_plans(cfg, 8, G)[0][1])
    assert plans["ring"] == {"channels": 4, "gpus_per_node": 4}
    assert plans["tree"] == {} and plans["native"] is None
    assert dict(algorithm_plans(cfg, 6, G)[0][1])["ring"] == {}    # not whole nodes
    assert dict(algorithm_plans(cfg, 8)[0][1])["ring"] == {}       # no topology
