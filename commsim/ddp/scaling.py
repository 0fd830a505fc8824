"""``commsim ddp --scaling 1,2,4``: one run per world size, then weak-scaling efficiency.

Runs in one process (``./launch.sh ddp --scaling ...`` starts it outside torchrun): for
each rank count ``n`` it launches ``python -m torch.distributed.run --standalone
--nproc-per-node n -m commsim ddp ...`` with the same flags (the batch is per rank, so
the work per rank stays fixed: weak scaling), reads that run's JSON summary and
tabulates, against the smallest count ``r`` (1 when listed):

- measured efficiency: ``step(r) / step(n)`` (median step times);
- compute-only efficiency: ``baseline(r) / baseline(n)``, how the compute alone slowed
  (more ranks sharing the host's cores and memory);
- predicted efficiency: ``baseline(r) / (baseline(r) + predicted exposed(n))``: the
  reference compute plus the communication that the predictions leave exposed at ``n``.

Times in the rows are microseconds. Each run's own JSON lines are kept beside ``--json``
(``NAME-n<N>.jsonl``) when it is given.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from commsim.errors import CommsimError

FORWARDED = ("model", "steps", "batch", "lr", "bucket_cap_mb", "comm", "backend", "topology",
             "seed", "skip", "baseline_steps", "layers", "width", "heads", "seq_len", "vocab",
             "timeout")


def child_args(cfg) -> list[str]:
    """The flags of one world size's run (everything but the outputs and --scaling)."""
    out = []
    for name in FORWARDED:
        value = getattr(cfg, name)
        if value is not None:
            out += ["--" + name.replace("_", "-"), str(value)]
    return out


def launch(cfg, n: int, path: Path) -> dict:
    """Run ``n`` ranks under torchrun, writing ``path``; returns its records by type."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           "--nproc-per-node", str(n), "-m", "commsim", "ddp", *child_args(cfg),
           "--json", str(path)]
    env = dict(os.environ)
    env.setdefault("OMP_NUM_THREADS", "1")
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode:
        lines = (proc.stderr + proc.stdout).splitlines()
        errors = [line for line in lines if "error:" in line]
        # the watchdog's line (a rank died or hung; docs/reliability.md)
        stopped = [line.split(":", 1)[1].strip() for line in lines
                   if line.startswith("commsim ddp: ") and "(exit " in line]
        why = errors[0].split("error:", 1)[1].strip() if errors else stopped[0] if stopped \
            else (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise CommsimError(f"--scaling: the {n}-rank run failed: {why}")
    records: dict[str, list] = {}
    for line in path.read_text().splitlines():
        row = json.loads(line)
        records.setdefault(row["type"], []).append(row)
    return records


def rows(runs: list[tuple[int, dict]]) -> list[dict]:
    """The scaling rows from ``(ranks, records)`` pairs (see the module)."""
    runs = sorted(runs, key=lambda r: r[0])
    ref = runs[0][1]["summary"][0]
    ref_step, ref_base = ref["step_us"], ref["baseline"]["total_us"]
    out = []
    for n, records in runs:
        s = records["summary"][0]
        exposed = s["predicted"]["exposed_us"]
        predicted_step = None if exposed is None else ref_base + exposed
        out.append({"type": "scaling", "nranks": n, "reference": runs[0][0],
                    "step_us": s["step_us"], "baseline_us": s["baseline"]["total_us"],
                    "comm_us": s["comm_us"], "exposed_us": s["exposed_us"],
                    "predicted_exposed_us": exposed, "predicted_step_us": predicted_step,
                    "samples_per_s": s["samples_per_s"], "tokens_per_s": s["tokens_per_s"],
                    "efficiency": ref_step / s["step_us"],
                    "compute_efficiency": ref_base / s["baseline"]["total_us"],
                    "predicted_efficiency": None if predicted_step is None
                    else ref_base / predicted_step,
                    "loss_last": s["loss_last"]})
    return out


def run(cfg) -> int:
    from commsim.ddp import output

    counts = list(dict.fromkeys(sorted(cfg.scaling)))
    keep = Path(cfg.json).with_suffix("") if cfg.json else None
    runs = []
    with tempfile.TemporaryDirectory(prefix="commsim-ddp-") as tmp:
        for n in counts:
            path = Path(f"{keep}-n{n}.jsonl") if keep else Path(tmp) / f"ddp-n{n}.jsonl"
            path.parent.mkdir(parents=True, exist_ok=True)
            print(f"commsim ddp --scaling: {n} rank{'s' if n > 1 else ''} ...", file=sys.stderr,
                  flush=True)
            runs.append((n, launch(cfg, n, path)))
    table_rows = rows(runs)
    config = dict(runs[0][1]["config"][0], type="config", scaling=counts)
    output.emit_scaling(cfg, config, table_rows)
    return 0
