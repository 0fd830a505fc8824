"""commsim's allreduce schedules against the backend's native allreduce, gloo and MPI, side by side.

Launches its own ranks (torchrun for gloo, the environment's mpirun for MPI) and runs
``commsim bench --algorithm native,ring,...`` once per (backend, execution mode, chunk
setting), ``--repeat`` rounds of each. Native and commsim's schedules are measured in
the same run, one size after the other, so each ratio compares runs made seconds apart;
the table shows the median over the rounds of busbw (GB/s, nccl-tests' definition: from
the mean time per operation) and of the per-round ratio to native, taken from the median
iteration times (on a loaded machine one slow iteration moves a mean, not a median).
The goal: ring >= 0.9 x native from 4 MiB to 256 MiB.

A second table gives the executor's cost at a small size (default 1K), where time is
all overhead: microseconds per operation and per schedule step, beside native.

    python benchmarks/backend_vs_native.py                          # 2 ranks, 4M..256M
    python benchmarks/backend_vs_native.py --nproc 4 --exec step,dataflow --chunks 1,4
    python benchmarks/backend_vs_native.py --backends gloo --sizes 16M,64M --repeat 5
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from launching import bench

GOAL_RATIO, GOAL_FROM, GOAL_TO = 0.9, 4 << 20, 256 << 20


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def size_runs(text: str, factor: int) -> list[tuple[int, int]]:
    """``(min, max)`` bytes per bench launch: one for ``LOW:HIGH`` (every ``factor`` x),
    one per size for a list ``4M,64M``."""
    from commsim.units import parse_size, parse_size_range

    if ":" in text:
        sizes = parse_size_range(text, "--sizes", factor)
        return [(sizes[0], sizes[-1])]
    return [(s, s) for s in sorted({parse_size(t, "--sizes") for t in _split(text)})]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nproc", type=int, default=2, help="ranks (default 2)")
    ap.add_argument("--sizes", default="4M:256M",
                    help="LOW:HIGH (every --factor times) or a list 4M,64M (default 4M:256M)")
    ap.add_argument("-f", "--factor", type=int, default=4,
                    help="size factor of a LOW:HIGH range (default 4)")
    ap.add_argument("--algorithms", default="ring,rhd",
                    help="commsim algorithms beside native (default ring,rhd)")
    ap.add_argument("--exec", dest="modes", default="dataflow,step",
                    help="execution modes, comma-separated (default dataflow,step)")
    ap.add_argument("--chunks", default="1",
                    help="--chunks settings, comma-separated: numbers or auto (default 1)")
    ap.add_argument("-n", "--iters", default="10", help="timed iterations per size (default 10)")
    ap.add_argument("-w", "--warmup", default="2", help="warm-up iterations (default 2)")
    ap.add_argument("--repeat", type=int, default=3,
                    help="rounds of every run; the table shows medians (default 3)")
    ap.add_argument("--backends", default="gloo,mpi", help="comma-separated (default gloo,mpi)")
    ap.add_argument("--small", default="1K",
                    help="size of the overhead table, or 'none' (default 1K)")
    ap.add_argument("--small-iters", default="200", help="iterations at --small (default 200)")
    args = ap.parse_args(argv)
    runs = size_runs(args.sizes, args.factor)
    algorithms, modes = _split(args.algorithms), _split(args.modes)
    chunk_settings, backends = _split(args.chunks), _split(args.backends)
    variants = [(a, m, c) for m in modes for c in chunk_settings for a in algorithms]
    busbw: dict[tuple, list[float]] = {}
    ratio: dict[tuple, list[float]] = {}
    small: dict[tuple, list[float]] = {}
    nsteps: dict[tuple, int] = {}
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run.jsonl"
        for _ in range(args.repeat):
            for backend in backends:
                for mode in modes:
                    for chunks in chunk_settings:
                        common = ["--collective", "allreduce", "--exec", mode,
                                  "--chunks", chunks, "-w", args.warmup, "-c", "1",
                                  "-f", str(args.factor),
                                  "--algorithm", ",".join(["native", *algorithms])]
                        for lo, hi in runs:
                            rows = bench(backend, args.nproc, [*common, "-b", str(lo),
                                                                "-e", str(hi), "-n",
                                                                args.iters], out)
                            native = {r["size"]: r["iter_p50_us"] for r in rows
                                      if r["algorithm"] == "native"}
                            for r in rows:
                                key = (backend, r["algorithm"], None if r["algorithm"] ==
                                       "native" else mode, None if r["algorithm"] == "native"
                                       else chunks, r["size"])
                                busbw.setdefault(key, []).append(r["busbw_gbps"])
                                if r["algorithm"] != "native":
                                    ratio.setdefault(key, []).append(
                                        native[r["size"]] / r["iter_p50_us"])
                        if args.small.lower() != "none":
                            rows = bench(backend, args.nproc, [*common, "-b", args.small,
                                                                "-e", args.small, "-n",
                                                                args.small_iters], out)
                            for r in rows:
                                native_row = r["algorithm"] == "native"
                                key = (backend, r["algorithm"], None if native_row else mode,
                                       None if native_row else chunks)
                                small.setdefault(key, []).append(r["time_us"])
                                if not native_row:
                                    nsteps[key] = _steps(r, args.nproc)
    sizes = sorted({key[-1] for key in busbw})
    _print_table(args, backends, sizes, variants, busbw, ratio)
    if small:
        _print_small(args, backends, variants, small, nsteps)
    return 0


def _steps(row: dict, nproc: int) -> int:
    from commsim import collectives

    return collectives.build(row["collective"], row["algorithm"], nproc, row["nchunks"]).nsteps


def _print_table(args, backends, sizes, variants, busbw, ratio) -> None:
    med = statistics.median
    print(f"allreduce busbw (GB/s), {args.nproc} ranks, median of {args.repeat} rounds; "
          "ratio = native / commsim median iteration time, in the same run")
    short = []
    for backend in backends:
        head = f"{'size':>10} {backend + ' native':>13}"
        for algo, mode, chunks in variants:
            head += f" | {f'{algo} {mode} k={chunks}':>22} {'ratio':>5}"
        print(head)
        for size in sizes:
            nat = busbw.get((backend, "native", None, None, size))
            if not nat:
                continue
            line = f"{size:>10} {med(nat):>13.3f}"
            for algo, mode, chunks in variants:
                key = (backend, algo, mode, chunks, size)
                if key not in busbw:
                    line += f" | {'-':>22} {'-':>5}"
                    continue
                r = med(ratio[key])
                line += f" | {med(busbw[key]):>22.3f} {r:>5.2f}"
                if algo == "ring" and GOAL_FROM <= size <= GOAL_TO and r < GOAL_RATIO:
                    short.append(f"{backend} {mode} k={chunks} at {size}")
            print(line)
        print()
    verdict = "met" if not short else "missed: " + "; ".join(short)
    print(f"goal (ring >= {GOAL_RATIO} x native, {GOAL_FROM >> 20}M..{GOAL_TO >> 20}M): "
          f"{verdict}")


def _print_small(args, backends, variants, small, nsteps) -> None:
    med = statistics.median
    print(f"\nexecutor overhead at {args.small} (median of {args.repeat} rounds)")
    print(f"{'backend':>8} {'algorithm':>22} {'steps':>6} {'us/op':>9} {'us/step':>9}")
    for backend in backends:
        nat = small.get((backend, "native", None, None))
        if nat:
            print(f"{backend:>8} {'native':>22} {'-':>6} {med(nat):>9.1f} {'-':>9}")
        for algo, mode, chunks in variants:
            key = (backend, algo, mode, chunks)
            if key in small:
                t = med(small[key])
                print(f"{backend:>8} {f'{algo} {mode} k={chunks}':>22} {nsteps[key]:>6} "
                      f"{t:>9.1f} {t / max(1, nsteps[key]):>9.1f}")


if __name__ == "__main__":
    raise SystemExit(main())
