"""commsim's ring allreduce against the backend's native allreduce, gloo and MPI, side by side.

Launches its own ranks (torchrun for gloo, the environment's mpirun for MPI), runs
``commsim bench --algorithm native,ring`` on each backend, and prints busbw (GB/s, nccl-tests'
definition) of both and their ratio per size. The goal: ring >= 0.8 of native gloo from
16 MiB up.

    python benchmarks/backend_vs_native.py                  # 4 ranks, 1M..256M
    python benchmarks/backend_vs_native.py -b 16M -e 64M -n 5 --backends gloo
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

GOAL_RATIO, GOAL_FROM = 0.8, 16 << 20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def launch(backend: str, nproc: int, bench_args: list[str], out: Path) -> list[dict]:
    """Run one ``commsim bench`` under its launcher; the result rows of its JSON lines."""
    bindir = Path(sys.executable).parent
    bench = ["-m", "commsim", "bench", "--backend", backend, "--json", str(out), *bench_args]
    env = dict(os.environ, OMP_NUM_THREADS=os.environ.get("OMP_NUM_THREADS", "1"),
               OMPI_ALLOW_RUN_AS_ROOT="1", OMPI_ALLOW_RUN_AS_ROOT_CONFIRM="1")
    if backend == "mpi":
        mpirun = shutil.which("mpirun", path=str(bindir)) or shutil.which("mpirun")
        if mpirun is None:
            print("backend_vs_native: no mpirun; skipping MPI", file=sys.stderr)
            return []
        extra = ["--oversubscribe"] if nproc > (os.cpu_count() or 1) else []
        cmd = [mpirun, "-n", str(nproc), *extra, sys.executable, *bench]
    else:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", str(nproc),
               "--master-port", str(free_port()), *bench]
    print(f"$ {' '.join(cmd)}", file=sys.stderr, flush=True)
    proc = subprocess.run(cmd, check=False, env=env, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    if proc.returncode != 0:
        print(proc.stderr[-3000:], file=sys.stderr)
        raise SystemExit(f"backend_vs_native: {backend} run failed (exit {proc.returncode})")
    rows = [json.loads(line) for line in out.read_text().splitlines() if line.strip()]
    return [r for r in rows if r["type"] == "result"]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=4, help="ranks (default 4)")
    ap.add_argument("-b", "--minbytes", default="1M")
    ap.add_argument("-e", "--maxbytes", default="256M")
    ap.add_argument("-n", "--iters", default="5", help="timed iterations per size (default 5)")
    ap.add_argument("-w", "--warmup", default="2", help="warm-up iterations (default 2)")
    ap.add_argument("--backends", default="gloo,mpi", help="comma-separated (default gloo,mpi)")
    ap.add_argument("--check", default="1", choices=["0", "1"], help="check results (default 1)")
    args = ap.parse_args(argv)
    bench_args = ["--collective", "allreduce", "--algorithm", "native,ring", "-b", args.minbytes,
                  "-e", args.maxbytes, "-f", "2", "-n", args.iters, "-w", args.warmup,
                  "-c", args.check]
    table: dict[tuple[str, int], dict[str, float]] = {}
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    with tempfile.TemporaryDirectory() as tmp:
        for backend in backends:
            for row in launch(backend, args.nproc, bench_args, Path(tmp) / f"{backend}.jsonl"):
                if row["wrong"]:
                    raise SystemExit(f"backend_vs_native: {backend}/{row['algorithm']} at "
                                     f"{row['size']} bytes had {row['wrong']} wrong elements")
                table.setdefault((backend, row["size"]), {})[row["algorithm"]] = row["busbw_gbps"]
    print(f"allreduce busbw (GB/s), {args.nproc} ranks, commsim ring vs native")
    header = f"{'size':>10}"
    for b in backends:
        header += f" | {b + ' native':>12} {b + ' ring':>10} {'ratio':>6}"
    print(header)
    sizes = sorted({size for _, size in table})
    short = []
    for size in sizes:
        line = f"{size:>10}"
        for b in backends:
            cell = table.get((b, size), {})
            nat, ring = cell.get("native"), cell.get("ring")
            ratio = ring / nat if nat and ring else None
            line += (f" | {nat or float('nan'):>12.3f} {ring or float('nan'):>10.3f} "
                     f"{ratio if ratio is not None else float('nan'):>6.2f}")
            if b == "gloo" and size >= GOAL_FROM and ratio is not None and ratio < GOAL_RATIO:
                short.append(size)
        print(line)
    if "gloo" in backends:
        verdict = "met" if not short else f"missed at {', '.join(map(str, short))} bytes"
        print(f"goal (gloo ring >= {GOAL_RATIO} x native from {GOAL_FROM >> 20}M up): {verdict}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
