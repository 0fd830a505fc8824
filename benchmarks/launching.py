"""Launching ``commsim`` verbs on local ranks for the benchmark scripts (torchrun or mpirun)."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_verb(verb: str, backend: str, nproc: int, args: list[str]) -> None:
    """Run ``commsim VERB --backend BACKEND ARGS`` on ``nproc`` local ranks; exit on failure."""
    bindir = Path(sys.executable).parent
    command = ["-m", "commsim", verb, "--backend", backend, *args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    if backend == "mpi":
        mpirun = shutil.which("mpirun", path=str(bindir)) or shutil.which("mpirun")
        if mpirun is None:
            raise SystemExit(f"{verb}: no mpirun on the PATH; install mpi4py and openmpi")
        extra = ["--oversubscribe"] if nproc > (os.cpu_count() or 1) else []
        cmd = [mpirun, "-n", str(nproc), *extra, sys.executable, *command]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(free_port()), *command]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"{verb} on {backend} failed (exit {proc.returncode})")


def bench(backend: str, nproc: int, args: list[str], out: Path) -> list[dict]:
    """One ``commsim bench`` run; its result rows (a wrong element stops the script).
    In place only unless ``args`` says ``--place``: what commsim's executors and torch's
    allreduce do, and half the time of both places."""
    place = [] if "--place" in args else ["--place", "in"]
    out.unlink(missing_ok=True)  # a file left by another call would be resumed or refused
    run_verb("bench", backend, nproc, ["--json", str(out), *place, *args])
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    rows = [r for r in rows if r["type"] == "result"]
    for row in rows:
        if row["wrong"]:
            raise SystemExit(f"bench on {backend}: {row['algorithm']} at {row['size']} bytes "
                             f"had {row['wrong']} wrong elements")
    return rows


