"""How fast ``commsim plan`` is: model-only at 100,000 GPUs, simulator-backed at 64..4096.

    python benchmarks/plan_speed.py                         # 100,000 model; 64..1024 simulated
    python benchmarks/plan_speed.py --sim 4096 --workers 2  # the goal's case (under a minute)
    python benchmarks/plan_speed.py --model-gpus 200000 --sim ''

Goals (issue 17): a model-only plan of 100,000 GPUs in under 1 s; a simulator-backed plan
of 4096 GPUs in under a minute.

- Model only: Llama 3 70B (tp 8, pp 10, global batch 20,000 sequences) on
  dgx-h100-superpod grown to the GPU count (12,500 nodes at 100,000), closed forms only.
- Simulated: Llama 3 70B (tp 8, pp 4, global batch 2048 sequences: Llama 3's 16M tokens)
  on the smallest shipped DGX H100 preset that holds the count (dgx-h100-superpod up to
  1024, dgx-h100-512node at 4096), every distinct phase of the step on the simulator.
  Each count is planned cold (the topology loaded and its graph built anew), the way one
  ``commsim plan`` run would; the wall time is the plan's, the graph's build included and
  shown apart, Python's start and imports not. ``--workers N`` is ``commsim plan
  --workers N`` (the simulator forks N processes for a phase's independent groups; the
  rows are the same); the default 1 plans on one core, where the CPU time is the
  steadier figure on a shared machine.

All rows are measured in this one run, side by side. The 4096-GPU case is not in the
default list: its data-parallel groups of 128 nodes span four scalable units and
collide on the spines, 32 contended groups of 16,256 flows a phase through the event
engine, about 75 s of CPU (docs/plan.md, Speed).
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from commsim.plan import gpus, models, planner  # noqa: E402
from commsim.plan.fabric import Fabric  # noqa: E402

MODEL_GOAL_S = 1.0
SIM_GOAL_S = 60.0
SIM_GOAL_GPUS = 4096
PRESETS = (("dgx-h100-superpod", 1024), ("dgx-h100-512node", 4096))


def _cpu() -> float:
    """CPU seconds of this process and of its finished children (forked workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


def topology_for(n: int) -> str:
    """The smallest shipped DGX H100 preset that holds ``n`` gpus."""
    for name, size in PRESETS:
        if n <= size:
            return name
    raise SystemExit(f"--sim: {n} gpus is more than the largest preset ({PRESETS[-1][0]}, "
                     f"{PRESETS[-1][1]} gpus); simulated rows need a topology that holds them")


def model_only(n: int) -> dict:
    """The 100,000-gpu model-only plan, timed."""
    fabric = Fabric.load("dgx-h100-superpod")
    cfg = planner.Config(models.get("llama3-70b"), gpus.get("H100"), tp=8, pp=10,
                         global_batch=20_000)
    t0, c0 = time.perf_counter(), _cpu()
    row = planner.plan(cfg, fabric, [n], simulate=False).rows[0]
    return dict(row=row, topology=fabric.name, wall=time.perf_counter() - t0,
                cpu=_cpu() - c0, graph=0.0,
                goal=MODEL_GOAL_S if n >= 100_000 else None)


def simulated(n: int, workers: int = 1) -> dict:
    """One simulator-backed plan of ``n`` gpus, cold, timed (``workers``: processes the
    simulator may fork; cpu counts theirs too)."""
    name = topology_for(n)
    cfg = planner.Config(models.get("llama3-70b"), gpus.get("H100"), tp=8, pp=4,
                         global_batch=2048)
    t0, c0 = time.perf_counter(), _cpu()
    fabric = Fabric.load(name)
    _ = fabric.graph
    graph = time.perf_counter() - t0
    row = planner.plan(cfg, fabric, [n], simulate_max=n, workers=workers).rows[0]
    return dict(row=row, topology=name, wall=time.perf_counter() - t0,
                cpu=_cpu() - c0, graph=graph,
                goal=SIM_GOAL_S if n >= SIM_GOAL_GPUS else None, workers=workers)


def report(results: list[dict]) -> None:
    print("# commsim plan speed: Llama 3 70B on H100 (seconds on this machine: planned_s the "
          "wall time, graph_s of it building the topology, cpu_s the CPU time of the process "
          "and its workers)")
    print(f"#{'gpus':>7}  {'topology':<18} {'source':<12} {'tp':>2} {'pp':>3} {'dp':>5} "
          f"{'step_s':>8} {'graph_s':>8} {'planned_s':>10} {'cpu_s':>8} {'workers':>7}  goal")
    for r in results:
        row, goal = r["row"], r["goal"]
        verdict = "" if goal is None else \
            f"< {goal:g} s: {'met' if r['wall'] < goal else 'MISSED'}"
        print(f" {row.gpus:>7}  {r['topology']:<18} {row.source:<12} {row.tp:>2} {row.pp:>3} "
              f"{row.dp:>5} {row.step_time_s:>8.3f} {r['graph']:>8.2f} {r['wall']:>10.3f} "
              f"{r['cpu']:>8.3f} {r.get('workers', 1):>7}  {verdict}".rstrip())


def main(argv: list[str] | None = None) -> list[dict]:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-gpus", type=int, default=100_000, metavar="N",
                    help="gpus of the model-only plan (default 100000)")
    ap.add_argument("--sim", default="64,256,1024", metavar="N,N,...",
                    help="gpu counts of the simulator-backed plans (default 64,256,1024; "
                    "add 4096 for the goal's case, about a minute; '' for none)")
    ap.add_argument("--workers", type=int, default=1, metavar="N",
                    help="processes the simulated plans may fork (commsim plan --workers; "
                    "default 1, the single-core figures)")
    args = ap.parse_args(argv)
    counts = [int(x) for x in args.sim.split(",") if x.strip()]
    for n in counts:
        topology_for(n)              # a count no preset holds: one line, before any work
    results = [model_only(args.model_gpus)]
    for n in counts:
        results.append(simulated(n, args.workers))
        print(f"# {n} gpus: planned in {results[-1]['wall']:.1f} s", flush=True)
    report(results)
    return results


if __name__ == "__main__":
    main()
