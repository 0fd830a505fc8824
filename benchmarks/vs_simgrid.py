"""commsim's flow simulator next to SimGrid (SMPI) on the same ring allreduce and fat-tree.

Both simulators see the same platform: the fat-tree exported as a SimGrid platform
(one link per direction, explicit routes), the routes being the ones commsim's router
chooses with ECMP off (one path per pair), so only the simulators differ. SimGrid runs
an SMPI program calling MPI_Allreduce with SMPI's ``lr`` algorithm (logical ring:
ring reduce-scatter, then ring allgather, each step an MPI_Sendrecv to the ring
successor: the schedule of commsim's ``ring``), with CM02 sharing
(``network/model:CM02``: a flow's share of a full link weighs inversely with its route
latency; no cross traffic, no TCP window limit, no SMPI bandwidth or latency correction
factors) and no computation time. The ranks leave SimGrid's
barrier at slightly different times; commsim gets those entry times as start offsets,
and both report last exit minus first entry. Two placements by default: ``linear``
(contention-free: both simulators give the closed form) and ``random:1`` (ring
neighbours scattered over the pods: intra- and inter-pod flows share uplinks, with
different route latencies). commsim runs with ``--sharing rtt`` (CM02's latency-weighted
shares, the rule SimGrid applies) and with its default max-min, so the table shows
both the agreement and what the sharing rule is worth. Wall times: SimGrid's smpirun
run and commsim's simulation.

    python benchmarks/vs_simgrid.py                       # k=8 fat-tree, 128 ranks, 64M
    python benchmarks/vs_simgrid.py --k 4 --size 16M --nranks 16

Skips (exit 0) with a message when ``smpicc``/``smpirun`` are not installed
(Debian: ``apt-get install libsimgrid-dev python3-simgrid``).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

PROGRAM = r"""
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>

int main(int argc, char **argv) {
  MPI_Init(&argc, &argv);
  int rank, size;
  MPI_Comm_rank(MPI_COMM_WORLD, &rank);
  MPI_Comm_size(MPI_COMM_WORLD, &size);
  long count = atol(argv[1]);                 /* floats, 4 bytes each */
  float *in = (float *)SMPI_SHARED_MALLOC(count * sizeof(float));
  float *out = (float *)SMPI_SHARED_MALLOC(count * sizeof(float));
  MPI_Barrier(MPI_COMM_WORLD);
  double t0 = MPI_Wtime();
  MPI_Allreduce(in, out, (int)count, MPI_FLOAT, MPI_SUM, MPI_COMM_WORLD);
  double t1 = MPI_Wtime();
  double last = 0.0;
  double *starts = (double *)malloc(size * sizeof(double));
  MPI_Reduce(&t1, &last, 1, MPI_DOUBLE, MPI_MAX, 0, MPI_COMM_WORLD);
  MPI_Gather(&t0, 1, MPI_DOUBLE, starts, 1, MPI_DOUBLE, 0, MPI_COMM_WORLD);
  if (rank == 0) {            /* each rank's entry time, then the last exit */
    printf("ENTRIES");
    for (int r = 0; r < size; r++) printf(" %.15e", starts[r]);
    printf("\nLAST_EXIT %.15e\n", last);
  }
  free(starts);
  SMPI_SHARED_FREE(in);
  SMPI_SHARED_FREE(out);
  MPI_Finalize();
  return 0;
}
"""

SIMGRID_CFG = [
    "--cfg=network/model:CM02", "--cfg=network/crosstraffic:0",
    "--cfg=network/TCP-gamma:0", "--cfg=smpi/bw-factor:0:1.0",
    "--cfg=smpi/lat-factor:0:1.0", "--cfg=smpi/simulate-computation:no",
    "--cfg=smpi/allreduce:lr", "--cfg=smpi/host-speed:1Gf",
]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--k", type=int, default=8, help="fat-tree arity (k^3/4 hosts)")
    ap.add_argument("--nranks", type=int, help="ranks (default: every host)")
    ap.add_argument("--size", default="64M", help="allreduce buffer, e.g. 64M")
    ap.add_argument("--bandwidth", default="25GB/s")
    ap.add_argument("--latency", default="1us")
    ap.add_argument("--placements", default="linear,random:1",
                    help="comma-separated: linear (contention-free) and random:SEED (ring "
                    "neighbours scattered: intra- and inter-pod flows share uplinks)")
    args = ap.parse_args(argv)
    smpicc, smpirun = shutil.which("smpicc"), shutil.which("smpirun")
    if not smpicc or not smpirun:
        print("vs_simgrid: SimGrid's smpicc/smpirun not found; skipping (install "
              "libsimgrid-dev and python3-simgrid)")
        return 0

    from commsim.topology import builders, gpus
    from commsim.units import format_size, parse_size

    size = parse_size(args.size)
    G = builders.fat_tree(args.k, bandwidth=args.bandwidth, latency=args.latency)
    hosts = gpus(G)
    p = args.nranks or len(hosts)
    if not 2 <= p <= len(hosts):
        print(f"vs_simgrid: --nranks must be 2..{len(hosts)}", file=sys.stderr)
        return 2
    if size % (4 * p):
        size -= size % (4 * p)       # whole floats, equal chunks: the same bytes in both
    print(f"ring allreduce of {format_size(size)} ({size} bytes) on {p} ranks of "
          f"{G.graph['name']} ({args.bandwidth}, {args.latency} a link), same routes in both")
    print(f"SimGrid: SMPI MPI_Allreduce, algorithm lr (logical ring), {' '.join(SIMGRID_CFG)}")
    print("ranks enter when they leave SimGrid's barrier; time = last exit - first entry; "
          "commsim shares links max-min (its default) and rtt-weighted (--sharing rtt, "
          "CM02's rule)")
    print(f"{'placement':>10s} {'SimGrid us':>12s} {'commsim rtt':>12s} {'rtt/SG':>8s} "
          f"{'commsim maxmin':>15s} {'maxmin/SG':>9s} {'engine':>7s} {'SG wall s':>9s} "
          f"{'commsim wall s':>14s}")
    for how in [x.strip() for x in args.placements.split(",") if x.strip()]:
        row = _case(G, hosts, p, size, how, smpicc, smpirun)
        if row is None:
            return 1
        sg, rtt, mm, engine, sg_wall, cs_wall = row
        print(f"{how:>10s} {sg * 1e6:12.3f} {rtt * 1e6:12.3f} {rtt / sg:8.5f} "
              f"{mm * 1e6:15.3f} {mm / sg:9.5f} {engine:>7s} {sg_wall:9.3f} {cs_wall:14.3f}")
    return 0


def _case(G, hosts, p, size, how, smpicc, smpirun):
    """``(SimGrid s, commsim rtt s, commsim max-min s, engine, SimGrid wall, commsim
    wall)`` for one placement, or None when SimGrid failed (the reason is printed)."""
    from commsim import collectives
    from commsim.sim import simulate
    from commsim.topology.placement import place
    from commsim.topology.routing import Router
    from commsim.topology.simgrid import to_simgrid_xml

    placement = place(G, p, how)
    router = Router(G, placement, routing="static")
    rank_of = {g: r for r, g in enumerate(placement)}
    leftover = [g for g in hosts if g not in rank_of]
    exported = None

    def route(src, dst):       # the simulator's static routes, between ranks and beyond
        nonlocal exported
        if src in rank_of and dst in rank_of:
            edges = router.path(rank_of[src], rank_of[dst])
            return [edges[0][0]] + [v for _, v in edges]
        if exported is None:
            from commsim.topology.simgrid import static_routes
            exported = static_routes(G, hosts)
        return exported(src, dst)

    with tempfile.TemporaryDirectory(prefix="commsim-simgrid-") as tmp:
        tmp = Path(tmp)
        (tmp / "platform.xml").write_text(to_simgrid_xml(G, route=route))
        (tmp / "hosts.txt").write_text("\n".join(placement + leftover) + "\n")
        (tmp / "allreduce.c").write_text(PROGRAM)
        build = subprocess.run([smpicc, "-O2", "-o", str(tmp / "allreduce"),
                                str(tmp / "allreduce.c")], capture_output=True, text=True)
        if build.returncode:
            print(f"vs_simgrid: smpicc failed:\n{build.stderr}", file=sys.stderr)
            return None
        cmd = [smpirun, "-np", str(p), "-platform", str(tmp / "platform.xml"),
               "-hostfile", str(tmp / "hosts.txt"), *SIMGRID_CFG,
               str(tmp / "allreduce"), str(size // 4)]
        t0 = time.perf_counter()
        run = subprocess.run(cmd, capture_output=True, text=True)
        simgrid_wall = time.perf_counter() - t0
    lines = {ln.split()[0]: ln.split()[1:] for ln in run.stdout.splitlines() if ln.strip()}
    if run.returncode or "ENTRIES" not in lines or "LAST_EXIT" not in lines:
        print(f"vs_simgrid: smpirun failed (exit {run.returncode}):\n"
              f"{run.stderr[-3000:]}", file=sys.stderr)
        return None
    entries = [float(x) for x in lines["ENTRIES"]]
    first = min(entries)
    simgrid_time = float(lines["LAST_EXIT"][0]) - first
    skew = {r: t - first for r, t in enumerate(entries)}
    schedule = collectives.build("allreduce", "ring", p)
    t0 = time.perf_counter()
    rtt = simulate(schedule, G, size, routing="static", router=router, start_offsets=skew,
                   sharing="rtt")
    commsim_wall = time.perf_counter() - t0
    maxmin = simulate(schedule, G, size, routing="static", router=router, start_offsets=skew)
    return simgrid_time, rtt.time, maxmin.time, rtt.engine, simgrid_wall, commsim_wall


if __name__ == "__main__":
    sys.exit(main())
