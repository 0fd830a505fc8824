"""Incremental re-rating against filling the whole connected component, on a contended run.

The event engine re-rates, at each change, only the flows the change makes unfair
(docs/simulator.md). This script replays one contended case three ways and prints
simulated time, events and wall time:

1. ``component``: every change re-rates the whole connected component (the engine's
   former rule, patched in here);
2. ``incremental``: the engine as it is;
3. ``incremental, links x (1 +- 1e-14)``: the same engine with every link's bandwidth
   perturbed by 1e-14 (relative, seeded signs), to show how sensitive a contended run is
   to its last bits.

With ``--check`` it also computes, at every change of the incremental run, the whole
component's fill and prints the largest relative difference in any flow's rate.

    python benchmarks/sim_rerate.py                       # ring 64M, fat-tree-k8, random:1
    python benchmarks/sim_rerate.py --algorithm rhd --size 1M --placement random
    python benchmarks/sim_rerate.py --check
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy as np  # noqa: E402

import commsim.sim.events as events  # noqa: E402
from commsim import collectives, topology  # noqa: E402
from commsim.sim import simulate  # noqa: E402
from commsim.sim.maxmin import fill_heap  # noqa: E402
from commsim.topology.placement import place  # noqa: E402
from commsim.units import parse_size  # noqa: E402

INCREMENTAL = events.EventEngine._maxmin


def _component(engine, seeds) -> list:
    """The byte-phase flows connected to ``seeds`` links through shared links."""
    classes_on = engine.classes_on
    seen, todo, found = set(seeds), list(set(seeds)), set()
    while todo:
        for f in (f for c in classes_on[todo.pop()] for f in c.flows):
            if f not in found:
                found.add(f)
                for link in f.links:
                    if link not in seen:
                        seen.add(link)
                        todo.append(link)
    return sorted(found, key=lambda f: f.seq)


def component_maxmin(self, t, seeds) -> None:
    """The former rule: fill the whole connected component of the changed links."""
    flows = _component(self, seeds)
    if not flows:
        return
    rates, load, limits = fill_heap(flows, self.link_bw)
    for link, value in load:
        self.link_peak[link] = max(self.link_peak[link], value / self.link_bw[link])
    for f, rate, limit in zip(flows, rates, limits):
        if rate != f.rate or limit != f.limit:
            self._set_rate(f, rate, t, limit)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--topology", default="fat-tree-k8")
    ap.add_argument("--algorithm", default="ring")
    ap.add_argument("--size", default="64M")
    ap.add_argument("--placement", default="random:1")
    ap.add_argument("--mode", default="step", choices=("step", "dataflow"))
    ap.add_argument("--check", action="store_true",
                    help="compare every incremental re-rating with the whole component's")
    args = ap.parse_args()
    G = topology.load(args.topology)
    n = len(topology.gpus(G))
    s = collectives.build("allreduce", args.algorithm, n)
    size = parse_size(args.size)
    placement = place(G, n, args.placement)
    print(f"allreduce {args.algorithm} {args.size} on {n} ranks of {args.topology}, "
          f"{args.placement} placement, {args.mode} mode")

    def run(label, graph, rule):
        events.EventEngine._maxmin = rule
        t0 = time.perf_counter()
        r = simulate(s, graph, size, placement, mode=args.mode)
        wall = time.perf_counter() - t0
        print(f"  {label:<38} {r.time * 1e6:12.3f} us  {r.events:8d} events  {wall:7.1f} s",
              flush=True)

    try:
        run("component", G, component_maxmin)
        run("incremental", G, INCREMENTAL)
        for eps in (1e-14, -1e-14):
            H = G.copy()
            signs = np.random.default_rng(0).choice([-1.0, 1.0], H.number_of_edges())
            for sign, (_, _, d) in zip(signs, H.edges(data=True)):
                d["bandwidth"] = float(d["bandwidth"]) * (1 + eps * sign)
            run(f"incremental, links x (1 {'+' if eps > 0 else '-'} 1e-14)", H, INCREMENTAL)
        if args.check:
            worst = [0.0]

            def checked(self, t, seeds):
                flows = _component(self, seeds)
                full = fill_heap(flows, self.link_bw)[0] if flows else []
                INCREMENTAL(self, t, seeds)
                for f, rate in zip(flows, full):
                    worst[0] = max(worst[0], abs(f.rate - rate) / max(rate, 1e-300))

            run("incremental, checked at every change", G, checked)
            print(f"  largest relative difference of a rate from the whole component's "
                  f"fill: {worst[0]:.3g}")
    finally:
        events.EventEngine._maxmin = INCREMENTAL
    return 0


if __name__ == "__main__":
    sys.exit(main())
