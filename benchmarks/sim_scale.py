"""How the flow simulator scales: ring and double-binary-tree allreduce on k-ary fat-trees.

For 256, 1024, 4096 and 16384 ranks (a fat-tree with the smallest even k that holds
them, extra hosts dropped) it simulates a 256 MiB allreduce and prints: transfers
simulated, events (steps for the contention-free sweep, event batches for the event
engine), seconds to build the schedule, seconds to simulate, transfers simulated per
second, and peak memory: what the simulation added to the resident set at its peak
(the kernel's high-water mark, reset just before simulating; tracemalloc would triple
the run time by hooking every numpy allocation) and the whole process's peak. Each
configuration runs in a fresh process so peaks do not carry over.

    python benchmarks/sim_scale.py                   # everything (16384 ranks: ~14 GB)
    python benchmarks/sim_scale.py --max-ranks 1024  # a quick look
    python benchmarks/sim_scale.py --no-record       # without per-transfer start/end

Targets (a 2-core machine): ring allreduce, one chunk per rank per step, 1024 ranks in
under 2 s and 16384 ranks in under 60 s of simulation.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path

RANKS = (256, 1024, 4096, 16384)
ALGORITHMS = ("ring", "dbt")
SIZE = 256 * 2**20
TARGETS = {("ring", 1024): 2.0, ("ring", 16384): 60.0}


def fat_tree_k(nranks: int) -> int:
    """The smallest even k whose fat-tree has at least ``nranks`` hosts (k^3/4)."""
    k = 2
    while k**3 // 4 < nranks:
        k += 2
    return k


def _rss_bytes(field: str) -> int | None:
    """``VmRSS`` or ``VmHWM`` (peak) of this process in bytes, where Linux tells."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) * 1024
    except OSError:
        pass
    return None


def _reset_peak() -> bool:
    """Reset the kernel's resident-set high-water mark (Linux >= 4.0)."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
        return True
    except OSError:
        return False


def one(algorithm: str, nranks: int, record: bool) -> dict:
    """Build, simulate and measure one configuration (in this process)."""
    from commsim import collectives
    from commsim.sim import simulate
    from commsim.topology import builders

    k = fat_tree_k(nranks)
    G = builders.fat_tree(k, hosts=nranks)
    t0 = time.perf_counter()
    s = collectives.build("allreduce", algorithm, nranks)
    build_s = time.perf_counter() - t0
    schedule_bytes = sum(a.nbytes for a in (s.step, s.src, s.dst, s.chunk, s.reduce))
    before = _rss_bytes("VmRSS")
    exact = _reset_peak()
    t0 = time.perf_counter()
    r = simulate(s, G, SIZE, record_transfers=record)
    sim_s = time.perf_counter() - t0
    hwm = _rss_bytes("VmHWM") if exact else None
    peak = hwm - before if hwm is not None and before is not None else -1
    return dict(algorithm=algorithm, nranks=nranks, k=k, transfers=len(s), steps=s.nsteps,
                engine=r.engine, events=r.events, build_s=build_s, sim_s=sim_s,
                transfers_per_s=len(s) / sim_s if sim_s > 0 else float("inf"),
                sim_peak_bytes=peak, schedule_bytes=schedule_bytes,
                rss_peak_bytes=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
                time_s=r.time, busbw_gbps=r.busbw / 1e9)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--max-ranks", type=int, default=max(RANKS))
    ap.add_argument("--algorithms", default=",".join(ALGORITHMS))
    ap.add_argument("--no-record", action="store_true",
                    help="skip per-transfer start/end arrays (16 bytes a transfer)")
    ap.add_argument("--json", metavar="FILE", help="also write JSON lines")
    ap.add_argument("--one", nargs=2, metavar=("ALGORITHM", "NRANKS"), help=argparse.SUPPRESS)
    args = ap.parse_args(argv)
    if args.one:
        print(json.dumps(one(args.one[0], int(args.one[1]), not args.no_record)))
        return 0
    from rich.console import Console
    from rich.table import Table

    console = Console()
    rows = []
    for algo in args.algorithms.split(","):
        for p in (n for n in RANKS if n <= args.max_ranks):
            cmd = [sys.executable, __file__, "--one", algo, str(p)]
            if args.no_record:
                cmd.append("--no-record")
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode:
                console.print(f"[red]{algo} {p}: failed[/]\n{done.stderr.strip()[-2000:]}")
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            console.print(f"{algo:5s} {p:6d} ranks: simulated in {row['sim_s']:.2f} s",
                          highlight=False)
    table = Table(title=f"allreduce {SIZE >> 20} MiB on k-ary fat-trees "
                  f"({'no ' if args.no_record else ''}per-transfer times kept)")
    for name in ("algorithm", "ranks", "k", "transfers", "engine", "events", "build (s)",
                 "simulate (s)", "transfers/s", "sim peak (MB)", "bytes/transfer",
                 "schedule (MB)", "process peak (MB)", "target"):
        table.add_column(name, justify="left" if name in ("algorithm", "engine") else "right")
    for r in rows:
        target = TARGETS.get((r["algorithm"], r["nranks"]))
        verdict = "" if target is None else (
            f"< {target:g} s " + ("ok" if r["sim_s"] < target else
                                  f"MISSED by {r['sim_s'] / target - 1:.0%}"))
        table.add_row(r["algorithm"], str(r["nranks"]), str(r["k"]), f"{r['transfers']:,}",
                      r["engine"], f"{r['events']:,}", f"{r['build_s']:.2f}",
                      f"{r['sim_s']:.2f}", f"{r['transfers_per_s'] / 1e6:.2f} M",
                      f"{r['sim_peak_bytes'] / 1e6:,.0f}",
                      f"{r['sim_peak_bytes'] / max(r['transfers'], 1):.1f}",
                      f"{r['schedule_bytes'] / 1e6:,.0f}", f"{r['rss_peak_bytes'] / 1e6:,.0f}",
                      verdict)
    console.print(table)
    if args.json:
        with open(args.json, "w") as fh:
            for r in rows:
                fh.write(json.dumps(r) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
