"""Model-only capacity plan at 100,000 GPUs: must take well under a second.

    python benchmarks/plan_speed.py [GPUS]

Plans Llama 3 70B (tp 8, pp 10, global batch 20,000 sequences) on dgx-h100-superpod
grown to GPUS gpus (default 100,000; 12,500 nodes) with the closed-form model only,
and prints the wall time.
"""

from __future__ import annotations

import sys
import time

from commsim.plan import gpus, models, planner
from commsim.plan.fabric import Fabric


def main(n: int = 100_000) -> float:
    fabric = Fabric.load("dgx-h100-superpod")
    cfg = planner.Config(models.get("llama3-70b"), gpus.get("H100"), tp=8, pp=10,
                         global_batch=20_000)
    t0 = time.perf_counter()
    result = planner.plan(cfg, fabric, [n], simulate=False)
    wall = time.perf_counter() - t0
    r = result.rows[0]
    print(f"{n} gpus ({r.source}): tp {r.tp} pp {r.pp} dp {r.dp}, step {r.step_time_s:.3f} s, "
          f"MFU {r.mfu:.1%}; planned in {wall * 1e3:.0f} ms")
    return wall


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 100_000)
