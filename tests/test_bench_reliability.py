"""Dead ranks, hung ranks and Ctrl-C (docs/reliability.md): the watchdog
(commsim.bench.watchdog), launch.sh's filter of the launcher's output
(commsim.bench.launchlog), and the results reader's cut last line.

The slow tests launch 2 ranks of ``./launch.sh bench`` (torchrun, gloo) and ``./launch.sh
bench-mpi`` (mpirun) and SIGKILL one mid-sweep, make one stop answering (the test-only hook
COMMSIM_TEST_HANG_RANK / COMMSIM_TEST_HANG_AFTER_ROWS) or press Ctrl-C (SIGINT to the
launch's process group), then check: the run ends in time, with exit 3 (130 for Ctrl-C),
one line on stderr naming the operation, and JSON rows that parse line by line.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from multiproc import MPIRUN

from commsim.bench import launchlog, results, watchdog
from commsim.errors import CommsimError

ROOT = Path(__file__).resolve().parent.parent
LAUNCH = ROOT / "launch.sh"
SLACK = 15.0  # seconds past the timeout: the watchdog's poll, the launcher's teardown, load


# --- the flag -------------------------------------------------------------------------
@pytest.mark.parametrize("text,seconds", [("300", 300.0), ("2.5", 2.5), ("90s", 90.0),
                                          ("500ms", 0.5)])
def test_timeout_takes_seconds(text, seconds):
    assert watchdog.parse_timeout(text) == seconds


@pytest.mark.parametrize("text", ["-1", "0", "abc", "inf", ""])
def test_a_bad_timeout_is_refused(text):
    import argparse

    with pytest.raises(argparse.ArgumentTypeError, match="not a time > 0"):
        watchdog.parse_timeout(text)


def test_the_backend_timeout_is_never_below_the_floor():
    assert watchdog.backend_timeout(5).total_seconds() == watchdog.BACKEND_TIMEOUT_FLOOR
    assert watchdog.backend_timeout(600).total_seconds() == 600


@pytest.mark.parametrize("verb", ["bench", "calibrate", "ddp"])
def test_bad_timeouts_exit_2_in_one_line(verb, capsys):
    from commsim.cli import main

    with pytest.raises(SystemExit) as exc:
        main([verb, "--timeout", "-1", "--check-flags"])
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "--timeout" in err[0] and "-1" in err[0]


def test_bench_refuses_an_unwritable_output_before_the_ranks(tmp_path, capsys):
    from commsim.cli import main

    (tmp_path / "a-file").write_text("")
    for flag in ("--json", "--csv"):
        assert main(["bench", flag, str(tmp_path / "a-file" / "run.jsonl"),
                     "--check-flags"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and flag in err[0] and "is a file, not a folder" in err[0]
    missing = tmp_path / "new" / "folder" / "run.jsonl"  # created when written, not here
    assert main(["bench", "--json", str(missing), "--check-flags"]) == 0
    assert not missing.parent.exists()


def test_ddp_scaling_forwards_the_timeout_to_each_run():
    from commsim.ddp.config import DdpConfig
    from commsim.ddp.scaling import child_args

    args = child_args(DdpConfig(timeout=7.5).validate())
    assert args[args.index("--timeout") + 1] == "7.5"


def test_comm_failures_are_told_from_other_errors():
    gloo = RuntimeError("[/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:537] Read "
                        "error [127.0.0.1]:24299: Connection reset by peer. This is "
                        "typically caused by a remote worker hanging")
    assert watchdog.comm_failure(gloo)
    assert watchdog._why(gloo) == "Read error [127.0.0.1]:24299: Connection reset by peer"
    assert not watchdog.comm_failure(RuntimeError("shape mismatch"))
    assert not watchdog.comm_failure(CommsimError("bad flag"))


# --- the watchdog in one process --------------------------------------------------------
WATCHED = """
import sys, time
from commsim.bench import watchdog
dog = watchdog.start("bench", float(sys.argv[1]), results=[sys.argv[2]])
with watchdog.operation("allreduce/ring 1K (1024 bytes)"):
    time.sleep(0.05)
    dog.ticks += 1          # progress: no timeout
    time.sleep(0.1)
if sys.argv[3] == "hang":
    with watchdog.operation("allreduce/ring 2K (2048 bytes)"):
        time.sleep(60)
elif sys.argv[3] == "lost":
    with watchdog.operation("allreduce/tree 4K (4096 bytes)"):
        raise RuntimeError("[gloo/pair.cc:1] Read error: Connection reset by peer")
elif sys.argv[3] == "sigint":
    with watchdog.operation("allgather/ring 8K (8192 bytes)"):
        print("ready", flush=True)
        time.sleep(60)
watchdog.stop()
print("done", flush=True)
"""


def _one_process(tmp_path, mode, timeout="0.5"):
    rows = tmp_path / "rows.jsonl"
    rows.write_text('{"type": "config"}\n{"type": "result"}\n{"type": "result"}\n')
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    return subprocess.Popen([sys.executable, "-c", WATCHED, timeout, str(rows), mode],
                            env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


def test_an_operation_that_waits_too_long_ends_the_process_with_one_line(tmp_path):
    start = time.monotonic()
    out, err = _one_process(tmp_path, "hang").communicate(timeout=30)
    assert time.monotonic() - start < 20
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("commsim bench: allreduce/ring 2K (2048 bytes): no answer "
                               "within --timeout 0.5s")
    assert "stopping (exit 3); 2 result rows kept in" in lines[0]


def test_a_lost_peer_is_one_line_and_exit_3(tmp_path):
    proc = _one_process(tmp_path, "lost", "30")
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == watchdog.EXIT_LOST
    assert err.strip().splitlines() == [
        "commsim bench: allreduce/tree 4K (4096 bytes): a peer did not answer (Read error: "
        "Connection reset by peer); stopping (exit 3); 2 result rows kept in "
        f"{tmp_path / 'rows.jsonl'}"]


def test_ctrl_c_says_where_the_rows_are(tmp_path):
    proc = _one_process(tmp_path, "sigint", "30")
    assert proc.stdout.readline().strip() == "ready"
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == watchdog.EXIT_INTERRUPTED
    assert err.strip().splitlines() == [
        "commsim bench: allgather/ring 8K (8192 bytes): interrupted (Ctrl-C); stopping "
        f"(exit 130); 2 result rows kept in {tmp_path / 'rows.jsonl'}"]


def test_a_run_without_trouble_is_untouched(tmp_path):
    proc = _one_process(tmp_path, "fine", "30")
    out, err = proc.communicate(timeout=30)
    assert proc.returncode == 0 and out.strip() == "done" and not err


# --- launch.sh's filter of the launcher's output ---------------------------------------
TORCHRUN_KILLED = """\
commsim bench: allreduce/native 8K (8192 bytes): rank 1 exited (Read error); stopping (exit 3)
W1130 08:33:08.572000 32637 torch/distributed/elastic/multiprocessing/api.py:1028] Sending \
process 32672 closing signal SIGTERM
E1130 08:33:08.576000 32637 torch/distributed/elastic/multiprocessing/api.py:1002] failed \
(exitcode: -9) local_rank: 1 (pid: 32673) of binary: /venv/bin/python
Traceback (most recent call last):
  File "/venv/bin/torchrun", line 8, in <module>
    sys.exit(main())
torch.distributed.elastic.multiprocessing.errors.ChildFailedError:
============================================================
commsim FAILED
------------------------------------------------------------
Failures:
[1]:
  rank      : 0 (local_rank: 0)
  exitcode  : 3 (pid: 32672)
------------------------------------------------------------
Root Cause (first observed failure):
[0]:
  rank      : 1 (local_rank: 1)
  exitcode  : -9 (pid: 32673)  (SIGKILL)
============================================================
"""


def _filter(launcher, text, results=None):
    flt = launchlog.Filter(launcher, results)
    out = [line for raw in text.splitlines() for line in flt.feed(raw)]
    tail, code = flt.finish()
    return out + tail, code


def test_torchrun_s_traceback_gives_way_to_the_rank_s_line():
    lines, code = _filter("torchrun", TORCHRUN_KILLED)
    assert lines == [TORCHRUN_KILLED.splitlines()[0]] and code == 3


def test_a_rank_killed_without_a_word_is_named_in_one_line():
    text = "\n".join(TORCHRUN_KILLED.splitlines()[1:])
    lines, code = _filter("torchrun", text)
    assert lines == ["torchrun: rank 1 was killed by signal 9 (SIGKILL; out of memory, or "
                     "killed by hand)"] and code == 3


def test_a_rank_s_own_traceback_stays():
    text = ("Traceback (most recent call last):\n  File \"<frozen runpy>\", line 198\n"
            "ValueError: boom\n" + "\n".join(TORCHRUN_KILLED.splitlines()[1:]))
    lines, _ = _filter("torchrun", text)
    assert lines[:3] == text.splitlines()[:3]


def test_mpirun_s_notices_give_way_too(tmp_path):
    rows = tmp_path / "r.jsonl"
    rows.write_text('{"type": "config"}\n{"type": "result"}\n')
    frame = "-" * 74
    text = (f"{frame}\nprterun noticed that process rank 1 with PID 332 on node vm exited "
            f"on\nsignal 9 (Killed).\n{frame}\n")
    assert _filter("mpirun", text) == (["mpirun: rank 1 was killed by signal 9 (SIGKILL; "
                                        "out of memory, or killed by hand)"], 3)
    other = f"{frame}\nThere are not enough slots available\n{frame}\n"
    assert _filter("mpirun", other)[0] == other.splitlines()
    flt = launchlog.Filter("mpirun", str(rows))
    flt.interrupted = True
    assert flt.finish() == ([f"mpirun: interrupted (Ctrl-C); 1 result row kept in {rows}"],
                            130)


# --- a cut last line ---------------------------------------------------------------------
def test_readers_skip_a_cut_last_line_but_not_a_bad_one(tmp_path):
    good = tmp_path / "good.jsonl"
    good.write_text('{"type": "config", "nranks": 2, "backend": "gloo"}\n')
    row = {"type": "result", "collective": "allreduce", "algorithm": "ring",
           "backend": "gloo", "nranks": 2, "size": 1024, "status": "ok", "time_us": 10.0,
           "busbw_gbps": 0.1, "busbw_factor": 1.0, "t_model_us": 9.0, "t_sim_us": 9.0,
           "nchunks": 2, "wrong": 0}
    with open(good, "a") as f:
        f.write(json.dumps(row) + "\n" + json.dumps(row)[:40])
    assert len(results.load(good).rows) == 1
    bad = tmp_path / "bad.jsonl"
    bad.write_text(good.read_text().replace(json.dumps(row) + "\n", json.dumps(row)[:40] + "\n"))
    with pytest.raises(CommsimError, match="line 2: not JSON"):
        results.load(bad)


# --- 2 ranks under torchrun and mpirun --------------------------------------------------
SWEEP = ("-b", "4K", "-e", "16M", "-f", "2", "-n", "50", "-w", "1")  # long: killed early


def _launch(tmp_path, verb, args, **env_extra):
    env = dict(os.environ, NPROC="2", OMP_NUM_THREADS="1", COMMSIM_TEST_TAG=uuid.uuid4().hex,
               **env_extra)
    out, err = open(tmp_path / "out.txt", "w"), open(tmp_path / "err.txt", "w")
    proc = subprocess.Popen([str(LAUNCH), verb, *args], cwd=tmp_path, env=env, stdout=out,
                            stderr=err, start_new_session=True)
    proc.tag = env["COMMSIM_TEST_TAG"]
    return proc


def _rows_written(path: Path) -> int:
    try:
        return sum(1 for line in path.read_text().splitlines(keepends=True)
                   if line.endswith("\n")) - 1
    except OSError:
        return -1


def _await_rows(proc, path: Path, n: int, limit: float = 120) -> float:
    """Wait until ``path`` holds ``n`` result rows; returns the time (monotonic)."""
    end = time.monotonic() + limit
    while _rows_written(path) < n:
        if proc.poll() is not None or time.monotonic() > end:
            _end(proc)
            pytest.fail(f"the run ended or stalled before {n} rows: "
                        f"{(path.parent / 'err.txt').read_text()}")
        time.sleep(0.05)
    return time.monotonic()


def _rank_pid(tag: str, variable: str, rank: int) -> int:
    """The pid of rank ``rank`` of the launch tagged ``tag`` (from /proc's environments)."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            env = (entry / "environ").read_bytes().split(b"\0")
            cmd = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if f"COMMSIM_TEST_TAG={tag}".encode() in env and \
                f"{variable}={rank}".encode() in env and b"commsim" in cmd:
            return int(entry.name)
    raise AssertionError(f"no rank {rank} of launch {tag}")


def _end(proc, limit: float = 60) -> tuple[int, float]:
    """Wait for the launch; ``(exit code, seconds waited)``; kill it past ``limit``."""
    start = time.monotonic()
    try:
        proc.wait(timeout=limit)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
        pytest.fail(f"the launch did not end within {limit} s")
    return proc.returncode, time.monotonic() - start


def _check(tmp_path, rc, code, rows_at_least, *words):
    err = (tmp_path / "err.txt").read_text()
    lines = [line for line in err.splitlines() if line.strip()]
    assert rc == code, err
    assert len(lines) == 1, err
    assert lines[0].startswith("commsim bench: allreduce/") and f"(exit {code})" in lines[0]
    assert all(word in lines[0] for word in words), lines[0]
    assert "Traceback" not in err
    records = [json.loads(line) for line in (tmp_path / "run.jsonl").read_text().splitlines()]
    assert records[0]["type"] == "config"
    assert len(records) - 1 >= rows_at_least
    # every row whole; torch's all_reduce has no out-of-place form (N/A), the rest ran
    assert all(r["type"] == "result" and (r["status"] == "ok" or (
        r["algorithm"], r["place"], r["backend"]) == ("native", "out-of-place", "gloo"))
        for r in records[1:])
    assert results.load(tmp_path / "run.jsonl").rows
    return lines[0]


LAUNCHERS = [("bench", "RANK"), ("bench-mpi", "OMPI_COMM_WORLD_RANK")]


def _skip_without(verb):
    pytest.importorskip("mpi4py" if verb == "bench-mpi" else "torch")
    if verb == "bench-mpi" and MPIRUN is None:
        pytest.skip("mpirun is not installed")


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("verb,variable", LAUNCHERS)
def test_a_rank_killed_mid_sweep_ends_the_run_with_one_line(tmp_path, verb, variable):
    _skip_without(verb)
    proc = _launch(tmp_path, verb, (*SWEEP, "--timeout", "20", "--json", "run.jsonl"))
    _await_rows(proc, tmp_path / "run.jsonl", 2)
    os.kill(_rank_pid(proc.tag, variable, 1), signal.SIGKILL)
    rc, waited = _end(proc)
    assert waited < SLACK  # long before the timeout: the survivor notices at once
    line = _check(tmp_path, rc, watchdog.EXIT_LOST, 2, "rank 1 exited")
    assert "result rows kept in run.jsonl" in line


@pytest.mark.slow
@pytest.mark.timeout(120)
@pytest.mark.parametrize("verb,variable", LAUNCHERS)
def test_a_rank_that_stops_answering_ends_the_run_within_the_timeout(tmp_path, verb,
                                                                     variable):
    _skip_without(verb)
    proc = _launch(tmp_path, verb, ("-b", "1K", "-e", "64K", "-n", "2", "-w", "0",
                                    "--timeout", "3", "--json", "run.jsonl"),
                   COMMSIM_TEST_HANG_RANK="1", COMMSIM_TEST_HANG_AFTER_ROWS="2")
    _await_rows(proc, tmp_path / "run.jsonl", 2)
    rc, waited = _end(proc)
    assert waited < 3 + SLACK
    # under torchrun the store says rank 1 never reached the operation; under MPI, with
    # two ranks, the silent one is the other
    who = "rank 1 did not reach it" if verb == "bench" else "rank 1 did not answer"
    line = _check(tmp_path, rc, watchdog.EXIT_LOST, 2, "no answer within --timeout 3s", who)
    assert "2 result rows kept in run.jsonl" in line


@pytest.mark.slow
@pytest.mark.timeout(120)
def test_ctrl_c_under_torchrun_keeps_the_rows_and_says_where(tmp_path):
    _skip_without("bench")
    proc = _launch(tmp_path, "bench", (*SWEEP, "--json", "run.jsonl"))
    _await_rows(proc, tmp_path / "run.jsonl", 2)
    os.killpg(proc.pid, signal.SIGINT)  # what the terminal does: the whole foreground group
    rc, waited = _end(proc)
    assert waited < SLACK
    line = _check(tmp_path, rc, watchdog.EXIT_INTERRUPTED, 2, "interrupted (Ctrl-C)")
    assert "result rows kept in run.jsonl" in line
