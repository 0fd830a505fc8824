"""launch.sh: paths are the caller's, and bad flags are one line and exit 2 before any rank
starts (no message per rank, no launcher traceback)."""

import shutil
import subprocess
from pathlib import Path

import pytest

LAUNCH = Path(__file__).resolve().parent.parent / "launch.sh"


def _run(args, cwd):
    return subprocess.run([str(LAUNCH), *args], cwd=cwd, capture_output=True, text=True,
                          timeout=120)


@pytest.mark.parametrize("args,field", [
    (["bench", "-d", "f8e4m3"], "dtype"),  # gloo has no float8 collectives
    (["bench", "--algorithm", "rign"], "ring"),
    (["bench", "-b", "1M", "-e", "1K"], "minbytes"),
    (["bench", "-n", "0"], "iters"),
    (["bench-mpi", "--exec", "stpe"], "--exec"),
    (["calibrate", "--max-size", "1K"], "--max-size"),
    (["bench", "--backend", "nccl"], "nccl"),  # no GPU, or fewer GPUs than the 4 ranks
    (["bench", "-b", "64G", "-e", "64G"], "maxbytes"),  # 4 ranks x 5 x 64 GiB: never fits
    (["bench", "--timeout", "-1"], "--timeout"),
    (["calibrate-mpi", "--timeout", "0"], "--timeout"),
])
def test_bad_flags_are_one_line_and_exit_2_before_the_ranks_start(tmp_path, args, field):
    proc = _run(args, tmp_path)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and field in lines[0], proc.stderr
    assert "Traceback" not in proc.stderr and "torchrun" not in proc.stderr


def test_relative_paths_are_the_callers(tmp_path):
    shutil.copy(LAUNCH.parent / "topologies" / "localhost.yaml", tmp_path / "mine.yaml")
    proc = _run(["topo", "show", "mine.yaml"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "localhost" in proc.stdout
