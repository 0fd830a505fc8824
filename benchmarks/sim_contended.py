"""How long the simulator takes on contended cases: every shipped preset x every
allreduce algorithm, the ECMP fat-tree case that was slower than SimGrid, and a
training step's communication on dgx-h100-32node.

Each case runs ``commsim simulate`` as a user would (the CLI's defaults: automatic
chunking and channels, linear placement, ECMP, the topology's model column), in a
fresh process with a time limit, and prints the wall time of the whole command and
of the simulator alone (the ``sim_wall_s`` the JSON row reports is not kept by the CLI,
so the command's wall time is what is compared with the goal).

    python benchmarks/sim_contended.py                  # everything (minutes)
    python benchmarks/sim_contended.py --preset fat-tree-k8 --size 1M
    python benchmarks/sim_contended.py --limit 60       # give up on a case after 60 s

Goals (the 2-core development machine): every preset x algorithm at 1 MiB and 1 GiB
in under 10 s each; a training step on dgx-h100-32node (TP8 x DP32, TP8 x PP4 x DP8)
in under 30 s.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
SIZES = ("1M", "1G")
GOAL_S = 10.0
STEP_GOAL_S = 30.0
# (label, extra simulate flags) beyond the preset grid
EXTRA = (
    ("fat-tree-k8 rhd random ECMP 16M", ["--topology", "fat-tree-k8", "--algorithm", "rhd",
                                          "--placement", "random", "--size", "16M"]),
    ("fat-tree-k8 rhd random ECMP 256M", ["--topology", "fat-tree-k8", "--algorithm", "rhd",
                                           "--placement", "random", "--size", "256M"]),
)
STEPS = (
    ("dgx-h100-32node step TP8 x DP32 (13B)", ["tp8-dp32", "--tp", "8", "--dp", "32"]),
    ("dgx-h100-32node step TP8 x PP4 x DP8 (13B)",
     ["tp8-dp32", "--tp", "8", "--pp", "4", "--dp", "8"]),
    ("dgx-h100-32node step TP8 x PP4 x DP8 (175B)", ["gpt3-175b-tp8-pp4"]),
)


def presets() -> list[str]:
    sys.path.insert(0, str(ROOT))
    from commsim.topology import presets as names
    return [n for n in names() if n != "localhost"]


def algorithms() -> list[str]:
    from commsim.collectives import available
    return [a for c, a in available() if c == "allreduce"]


def timed(argv: list[str], limit: float) -> tuple[float | None, str]:
    """Wall seconds of ``python -m commsim ARGV`` (None past ``limit``), and a note."""
    env = dict(os.environ, PYTHONPATH=str(ROOT), COLUMNS="200")
    t0 = time.perf_counter()
    try:
        p = subprocess.run([sys.executable, "-m", "commsim", *argv], cwd=ROOT, env=env,
                           capture_output=True, text=True, timeout=limit)
    except subprocess.TimeoutExpired:
        return None, f"> {limit:g} s"
    wall = time.perf_counter() - t0
    if p.returncode:
        return wall, "error: " + (p.stderr.strip().splitlines() or ["?"])[-1]
    return wall, ""


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--preset", action="append", help="only these presets (repeatable)")
    ap.add_argument("--algorithm", action="append", help="only these algorithms")
    ap.add_argument("--size", action="append", help="only these sizes (default 1M and 1G)")
    ap.add_argument("--limit", type=float, default=120.0, help="seconds before giving up")
    ap.add_argument("--no-extra", action="store_true", help="skip the fat-tree ECMP cases")
    ap.add_argument("--no-steps", action="store_true", help="skip the training steps")
    args = ap.parse_args()
    rows = []
    tmp = Path(tempfile.mkdtemp())
    for preset in args.preset or presets():
        for algo in args.algorithm or algorithms():
            for size in args.size or SIZES:
                wall, note = timed(["simulate", "--topology", preset, "--collective",
                                    "allreduce", "--algorithm", algo, "--size", size,
                                    "--json", str(tmp / "r.jsonl")], args.limit)
                rows.append((f"{preset} {algo} {size}", wall, GOAL_S, note))
                print(_line(rows[-1]), flush=True)
    if not args.no_extra and not args.preset:
        for label, flags in EXTRA:
            wall, note = timed(["simulate", "--collective", "allreduce", *flags], args.limit)
            rows.append((label, wall, GOAL_S, note))
            print(_line(rows[-1]), flush=True)
    if not args.no_steps and not args.preset:
        for label, flags in STEPS:
            wall, note = timed(["simulate", "--topology", "dgx-h100-32node", "--workload",
                                *flags], args.limit)
            rows.append((label, wall, STEP_GOAL_S, note))
            print(_line(rows[-1]), flush=True)
    met = sum(1 for _, w, g, n in rows if w is not None and w < g and not n)
    print(f"\n{met}/{len(rows)} cases within their goal")
    print(json.dumps([dict(case=c, wall_s=w, goal_s=g, note=n) for c, w, g, n in rows]))
    return 0


def _line(row) -> str:
    case, wall, goal, note = row
    shown = "   -   " if wall is None else f"{wall:7.2f}"
    ok = "ok" if wall is not None and wall < goal and not note else "MISS"
    return f"{case:<48} {shown} s  (goal {goal:g} s) {ok} {note}"


if __name__ == "__main__":
    sys.exit(main())
