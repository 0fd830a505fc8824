"""Wall-time speedup of ``commsim sweep`` with 1, 2 and 4 local worker processes.

    python benchmarks/sweep_scaling.py [--workers 1,2,4] [--mpi]

Runs one study (60 allreduce scenarios on fat-trees of 16 and 54 hosts: ring, double
binary tree and recursive halving-doubling, 1M to 64M, with and without twice the link
bandwidth; about 30 s serially on the 2-core reference machine) from scratch with each
worker count, each run a fresh ``python -m commsim sweep`` process (cold caches, as a
user gets), checks that every run wrote the same rows, and prints the wall time and the
speedup over one worker. ``--mpi`` adds ``mpirun -n 3`` (2 MPI workers besides rank 0)
when mpirun and mpi4py are there. Speedup is bounded by the cores (``os.cpu_count()``
is printed) and by the longest scenario.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
STUDY = {
    "name": "sweep-scaling",
    "kind": "simulate",
    "description": "the benchmark study of benchmarks/sweep_scaling.py",
    "topology": {"builder": "fat_tree", "params": {"k": [4, 6], "bandwidth": "200Gb/s",
                                                   "latency": "500ns"}},
    "algorithm": ["ring", "dbt", "rhd"],
    "size": ["1M", "4M", "16M", "32M", "64M"],
    "what_if": [{}, {"bandwidth": "2x"}],
}


def _rows(path: Path) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text().splitlines()]
    for r in rows:
        r.pop("wall_s")
    return sorted(rows, key=lambda r: r["key"])


def _run(cmd: list[str], env: dict) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode:
        sys.exit(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-2000:]}")
    return wall


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", default="1,2,4", help="worker counts (default 1,2,4)")
    ap.add_argument("--mpi", action="store_true", help="also time mpirun -n 3")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.workers.split(",") if x.strip()]
    env = dict(os.environ, OMP_NUM_THREADS="1",
               PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT),
                                                        os.environ.get("PYTHONPATH")])))
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        study.write_text(yaml.safe_dump(STUDY, sort_keys=False))
        runs: list[tuple[str, float, Path]] = []
        for n in counts:
            out = Path(tmp) / f"w{n}.jsonl"
            wall = _run([sys.executable, "-m", "commsim", "sweep", str(study), "--out",
                         str(out), "--workers", str(n)], env)
            runs.append((f"{n} worker{'s' if n > 1 else ''}", wall, out))
            print(f"{runs[-1][0]:>18}: {wall:6.1f} s", flush=True)
        mpirun = shutil.which("mpirun", path=str(Path(sys.executable).parent)) or \
            shutil.which("mpirun")
        if args.mpi and mpirun:
            out = Path(tmp) / "mpi.jsonl"
            menv = dict(env, OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
            wall = _run([mpirun, "-n", "3", "--oversubscribe", sys.executable, "-m",
                         "commsim", "sweep", str(study), "--out", str(out)], menv)
            runs.append(("mpirun -n 3 (2 w.)", wall, out))
            print(f"{runs[-1][0]:>18}: {wall:6.1f} s", flush=True)
        first = _rows(runs[0][2])
        same = all(_rows(path) == first for _label, _wall, path in runs[1:])
    base = runs[0][1]
    print(f"\n{len(first)} scenarios on {os.cpu_count()} cores; rows identical across runs: "
          f"{same}")
    print(f"{'run':>18}  {'wall (s)':>9}  {'speedup':>8}")
    for label, wall, _path in runs:
        print(f"{label:>18}  {wall:9.1f}  {base / wall:7.2f}x")
    if not same:
        sys.exit("the runs wrote different rows")
    return {label: wall for label, wall, _path in runs}


if __name__ == "__main__":
    main()
