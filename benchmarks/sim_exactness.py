"""Validate the simulator against the closed forms where theory is exact, and show contention.

For every contention-free case the simulated time must equal ``commsim.model.predict``
to 1e-9 relative: ring algorithms on a ring and on a single switch, Rabenseifner and
the hierarchical allreduce, binomial and chain broadcast/reduce on a switch (any p),
binary and double binary trees on a switch for complete trees (p = 2^m - 1). Then a
contended case: a ring on a 2:1 oversubscribed leaf-spine, placed linearly and then
scattered over the leaves. Prints one row per case and exits 1
if any exact case is off.

    python benchmarks/sim_exactness.py
"""

from __future__ import annotations

import sys
import time

from commsim import collectives, model
from commsim.sim import simulate
from commsim.topology import builders
from commsim.topology.placement import place

BW, LAT = 25e9, 1e-6  # 25 GB/s links, 1 us each
CASES = [  # (collective, algorithm, topology kind, rank counts, options)
    ("allreduce", "ring", "ring", (2, 5, 8, 17, 64), {}),
    ("reduce_scatter", "ring", "ring", (3, 8, 31), {}),
    ("allgather", "ring", "ring", (3, 8, 31), {}),
    ("allreduce", "ring", "star", (2, 7, 16, 100), {}),
    ("allreduce", "rhd", "star", (2, 6, 16, 100), {}),
    ("reduce_scatter", "rhd", "star", (2, 16, 64), {}),
    ("allgather", "rhd", "star", (2, 16, 64), {}),
    ("allreduce", "hierarchical", "star", (8, 32, 96), {"group_size": 8}),
    ("broadcast", "binomial", "star", (2, 9, 100), {"root": 1}),
    ("reduce", "binomial", "star", (2, 9, 100), {"root": 1}),
    ("broadcast", "chain", "star", (2, 9, 100), {"nchunks": 8}),
    ("reduce", "chain", "star", (2, 9, 100), {"nchunks": 8}),
    ("allreduce", "tree", "star", (3, 15, 63, 255), {"nchunks": 16}),
    ("allreduce", "dbt", "star", (3, 15, 63, 255), {"nchunks": 32}),
]


def main() -> int:
    bad = 0
    print(f"{'collective':>14} {'algorithm':>12} {'topology':>8} {'p':>4} {'size':>10} "
          f"{'sim (us)':>12} {'model (us)':>12} {'rel err':>9} {'wall (s)':>8}")
    for coll, algo, kind, ranks, options in CASES:
        opts = dict(options)
        nchunks = opts.pop("nchunks", None)
        for p in ranks:
            G = builders.ring(p, BW, LAT) if kind == "ring" else builders.star(p, BW, LAT)
            alpha = LAT if kind == "ring" else 2 * LAT  # ring: one link; star: two
            s = collectives.build(coll, algo, p, nchunks, **opts)
            size = s.nchunks * 4096  # equal chunks
            t0 = time.perf_counter()
            sim = simulate(s, G, size).time
            wall = time.perf_counter() - t0
            want = model.predict(coll, algo, p, size, alpha, 1 / BW, nchunks=s.nchunks, **opts)
            err = abs(sim - want) / want
            bad += err > 1e-9
            print(f"{coll:>14} {algo:>12} {kind:>8} {p:>4} {size:>10} {sim * 1e6:>12.3f} "
                  f"{want * 1e6:>12.3f} {err:>9.1e} {wall:>8.3f}"
                  + ("  OFF" if err > 1e-9 else ""))
    G = builders.leaf_spine(leaves=4, spines=2, hosts_per_leaf=8, host_bw=BW,
                            host_latency=LAT, spine_latency=LAT, oversubscription=2)
    s = collectives.build("allreduce", "ring", 32)
    times = {}
    for how in ("linear", "spread"):
        times[how] = simulate(s, G, 64 << 20, placement=place(G, 32, how)).time
        print(f"contention: ring allreduce 64M, 32 ranks, leaf-spine 2:1, {how:>6} placement: "
              f"{times[how] * 1e6:,.1f} us")
    print(f"contention: spread / linear = {times['spread'] / times['linear']:.3f}")
    print("exact cases: " + ("all within 1e-9" if not bad else f"{bad} OFF"))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
