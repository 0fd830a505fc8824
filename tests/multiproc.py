"""Helpers for multi-process tests: launch ranks of a script, fail instead of hanging."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MPIRUN = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or shutil.which("mpirun")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env() -> dict:
    env = dict(os.environ)
    env.update(OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1",
               OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    env["PYTHONPATH"] = os.pathsep.join(
        filter(None, [str(ROOT), str(ROOT / "tests"), env.get("PYTHONPATH")]))
    return env


def _wait(procs: list[subprocess.Popen], timeout: float) -> list[tuple[int, str]]:
    """Wait for every process; on timeout kill them all (their process groups) and fail."""
    out = []
    try:
        for p in procs:
            stdout, _ = p.communicate(timeout=timeout)
            out.append((p.returncode, stdout))
    except subprocess.TimeoutExpired:
        for p in procs:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGKILL)
        for p in procs:
            p.wait()
        pytest.fail(f"ranks did not finish within {timeout} s (a hang?)")
    return out


def run_torch_ranks(code: str, nranks: int, tmp_path: Path, timeout: float = 90,
                    args: tuple[str, ...] = ()) -> list[tuple[int, str]]:
    """Run ``code`` as ``nranks`` processes with torchrun's variables; ``[(rc, output)]``."""
    script = tmp_path / "rank_script.py"
    script.write_text(textwrap.dedent(code))
    port = free_port()
    procs = []
    for rank in range(nranks):
        env = _env()
        env.update(RANK=str(rank), WORLD_SIZE=str(nranks), LOCAL_RANK=str(rank),
                   LOCAL_WORLD_SIZE=str(nranks), MASTER_ADDR="127.0.0.1",
                   MASTER_PORT=str(port))
        procs.append(subprocess.Popen([sys.executable, str(script), *args], env=env,
                                      cwd=tmp_path, stdout=subprocess.PIPE,
                                      stderr=subprocess.STDOUT, text=True,
                                      start_new_session=True))
    return _wait(procs, timeout)


def run_mpi_ranks(code: str, nranks: int, tmp_path: Path, timeout: float = 90,
                  args: tuple[str, ...] = ()) -> tuple[int, str]:
    """Run ``code`` under the environment's mpirun with ``nranks`` ranks; ``(rc, output)``."""
    if MPIRUN is None:
        pytest.skip("mpirun is not installed")
    script = tmp_path / "rank_script.py"
    script.write_text(textwrap.dedent(code))
    cmd = [MPIRUN, "-n", str(nranks), "--oversubscribe", sys.executable, str(script), *args]
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    return _wait([proc], timeout)[0]


def assert_all_ok(results: list[tuple[int, str]]) -> str:
    """Every rank exited 0; returns the joined output."""
    text = "\n".join(f"--- rank {i} rc={rc}\n{out}" for i, (rc, out) in enumerate(results))
    assert all(rc == 0 for rc, _ in results), text
    return text
