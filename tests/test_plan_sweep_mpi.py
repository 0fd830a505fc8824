"""commsim sweep over MPI ranks (mpi4py.futures) gives the rows one local process gives."""

import json
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from multiproc import MPIRUN, _env, _wait

from commsim.cli import main

pytest.importorskip("mpi4py")
if MPIRUN is None:
    pytest.skip("mpirun is not installed", allow_module_level=True)

STUDY = {"name": "mpi", "kind": "simulate",
         "topology": {"builder": "fat_tree", "params": {"k": 4}},
         "algorithm": ["ring", "dbt"], "size": ["64K", "1M"], "nranks": [8, "all"],
         "what_if": [{}, {"bandwidth": "2x"}]}


def _rows(path) -> list[dict]:
    rows = [json.loads(line) for line in Path(path).read_text().splitlines()]
    for r in rows:
        r.pop("wall_s")
    return sorted(rows, key=lambda r: r["key"])


def _mpirun(args: list[str], tmp_path, nranks: int = 2) -> str:
    cmd = [MPIRUN, "-n", str(nranks), "--oversubscribe", sys.executable, *args]
    proc = subprocess.Popen(cmd, env=_env(), cwd=tmp_path, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, start_new_session=True)
    ((rc, out),) = _wait([proc], timeout=150)
    assert rc == 0, out
    return out


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_mpi_ranks_give_the_rows_of_one_process(tmp_path, capsys):
    study = tmp_path / "s.yaml"
    study.write_text(yaml.safe_dump(STUDY))
    assert main(["sweep", str(study), "--out", str(tmp_path / "one.jsonl"), "--workers",
                 "1"]) == 0
    capsys.readouterr()
    one = _rows(tmp_path / "one.jsonl")
    assert len(one) == 16
    # every rank runs commsim; rank 0 hands out scenarios (MPICommExecutor) and writes
    out = _mpirun(["-m", "commsim", "sweep", str(study), "--out",
                   str(tmp_path / "mpi.jsonl")], tmp_path)
    assert "on 1 MPI rank (MPICommExecutor)" in out
    assert _rows(tmp_path / "mpi.jsonl") == one
    # mpi4py's own launcher: rank 0 runs commsim, the others are its shared pool
    out = _mpirun(["-m", "mpi4py.futures", "-m", "commsim", "sweep", str(study), "--out",
                   str(tmp_path / "fut.jsonl")], tmp_path, nranks=3)
    assert "on 2 MPI ranks (python -m mpi4py.futures)" in out
    assert _rows(tmp_path / "fut.jsonl") == one
