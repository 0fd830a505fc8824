"""The model on the topology against the simulator in dataflow mode, for trees.

Binary trees and double binary trees of 4, 8 and 16 ranks on a star (8 GB/s links,
20 us), 16 MiB, 1 to 8 pieces, with and without overlap of reductions: the model's
time over the simulator's, in step semantics (what the model used for trees before it
followed the simulator's dataflow rules) and in dataflow mode (what it does now).

    python benchmarks/model_vs_sim_dataflow.py
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from commsim import collectives  # noqa: E402
from commsim.model.on_topology import predict_on  # noqa: E402
from commsim.sim import simulate  # noqa: E402
from commsim.topology import builders  # noqa: E402

SIZE = 16 << 20
CASES = (("tree", 1), ("tree", 4), ("tree", 8), ("dbt", 4), ("dbt", 8))


def main() -> int:
    print(f"{'ranks':>5} {'algorithm':>9} {'chunks':>6} {'overlap':>7} {'sim us':>10} "
          f"{'step model':>10} {'dataflow model':>14}")
    errors = {"step": [], "dataflow": []}
    for p in (4, 8, 16):
        G = builders.star(p, bandwidth=8e9, latency=20e-6)
        for algorithm, k in CASES:
            s = collectives.build("allreduce", algorithm, p, k)
            for overlap in (True, False):
                kw = dict(gamma=1 / 4e9, overlap=overlap, message_overhead=5e-6)
                sim = simulate(s, G, SIZE, mode="dataflow", **kw).time
                row = {}
                for mode, model_mode in (("step", "step"), ("dataflow", "dataflow")):
                    row[mode] = predict_on(s, G, SIZE, mode=model_mode, **kw).time / sim - 1
                    errors[mode].append(row[mode])
                print(f"{p:>5} {algorithm:>9} {k:>6} {str(overlap):>7} {sim * 1e6:>10.1f} "
                      f"{100 * row['step']:>+9.0f}% {100 * row['dataflow']:>+13.0f}%")
    for mode, errs in errors.items():
        print(f"{mode} model vs simulator: {100 * min(errs):+.0f}% to {100 * max(errs):+.0f}%")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
