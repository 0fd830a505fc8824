"""Rank 0's output of ``commsim ddp``: tables, JSON lines, the plot and the HTML report.

Everything is rendered through :mod:`commsim.report`: tables as rich tables on a
terminal and plain ``#``-commented columns elsewhere, the figure with matplotlib, the
report as one self-contained HTML page. The rows come from
:func:`commsim.ddp.harness.results` (microseconds, bytes, GB/s); docs/ddp.md describes
every key of the JSON lines, written in this order: the config line, each training step
followed by its bucket lines, the baseline steps, the summary.
"""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from commsim.report import tables
from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph
from commsim.report.tables import Table

MAX_LANES = 24  # the plot shows at most this many buckets (the largest)
DEFINITIONS = [
    "bucket time: from the bucket's launch (its hook call: its gradients are ready) to its "
    "averaged gradient being complete, sharing included when buckets are in flight "
    "together; busbw = bytes / time x 2(p-1)/p (nccl-tests' allreduce factor)",
    "eff%: measured busbw / predicted busbw = predicted time / measured time (the "
    "simulator's prediction, else the model's)",
    "compute-only: separate baseline steps with a no-op comm hook (no communication, not in "
    "the loss curve)",
    "exposed communication: step time - compute-only step time; hidden = communication - "
    "exposed; overlap = hidden / communication",
    "window overlap: communication inside the backward pass's compute window (from its "
    "start to the last bucket's launch) / communication, like HTA's comm-comp overlap",
]


def _num(value, digits: int = 2, scale: float = 1.0) -> str:
    if value is None:
        return "-"
    return f"{value * scale:.{digits}f}"


def _size(nbytes: int) -> str:
    for unit, shift in (("G", 30), ("M", 20), ("K", 10)):
        if nbytes >= 1 << shift:
            return f"{nbytes / (1 << shift):.2f}{unit}"
    return str(nbytes)


def _pct(fraction) -> str:
    return "-" if fraction is None else f"{100 * fraction:.1f}%"


def _eff_class(eff) -> str | None:
    if eff is None:
        return None
    return "good" if eff >= 75 else "fair" if eff >= 40 else "bad"


def bucket_table(result: dict) -> Table:
    s = result["summary"]
    t = Table(f"buckets (median of {s['measured_steps']} steps after skipping the first "
              f"{s['skip']})",
              ["bucket", "bytes", "size", "time(us)", "in-flight(us)", "busbw(GB/s)",
               "t_model(us)", "t_sim(us)", "eff%"])
    for b in s["buckets"]:
        t.add([str(b["bucket"]), str(b["bytes"]), _size(b["bytes"]), _num(b["time_us"], 1),
               _num(b["inflight_us"], 1), _num(b["busbw_gbps"], 3), _num(b["t_model_us"], 1),
               _num(b["t_sim_us"], 1), _num(b["eff_pct"], 1)],
              [None] * 8 + [_eff_class(b["eff_pct"])])
    t_model = [b["t_model_us"] for b in s["buckets"]]
    t_sim = [b["t_sim_us"] for b in s["buckets"]]
    best = t_sim if None not in t_sim else t_model
    eff = 100.0 * sum(best) / s["comm_us"] if None not in best and s["comm_us"] else None
    t.add(["all", str(s["bucket_bytes"]), _size(s["bucket_bytes"]), _num(s["comm_us"], 1),
           "", "", _num(None if None in t_model else sum(t_model), 1),
           _num(None if None in t_sim else sum(t_sim), 1), _num(eff, 1)],
          [None] * 8 + [_eff_class(eff)])
    t.notes.append("time: from a bucket's launch (its gradients ready) to its averaged "
                   "gradient; in-flight: the part of it shared with buckets launched before; "
                   "all: the union of the buckets' times in a step")
    return t


def step_table(result: dict) -> Table:
    s, base, pred = result["summary"], result["summary"]["baseline"], \
        result["summary"]["predicted"]
    t = Table("step time (ms, medians)", ["phase", "training", "compute-only", "predicted"])
    exposed = pred["exposed_us"]
    rows = [("forward", s["forward_us"], base["forward_us"], base["forward_us"]),
            ("backward", s["backward_us"], base["backward_us"],
             None if exposed is None else base["backward_us"] + exposed),
            ("optimizer", s["optimizer_us"], base["optimizer_us"], base["optimizer_us"]),
            ("step", s["step_us"], base["total_us"], pred["step_us"])]
    for name, a, b, c in rows:
        t.add([name, _num(a, 2, 1e-3), _num(b, 2, 1e-3), _num(c, 2, 1e-3)])
    return t


def comm_table(result: dict) -> Table:
    s, pred = result["summary"], result["summary"]["predicted"]
    hook = result["config"]["hook"]
    t = Table(f"communication a step (ms; {hook} hook)", ["", "measured", "predicted"])
    hidden_pred = None if pred["comm_us"] is None else \
        max(0.0, pred["comm_us"] - pred["exposed_us"])
    t.add(["communication", _num(s["comm_us"], 2, 1e-3), _num(pred["comm_us"], 2, 1e-3)])
    t.add(["exposed", _num(s["exposed_us"], 2, 1e-3), _num(pred["exposed_us"], 2, 1e-3)])
    t.add(["hidden", _num(s["hidden_us"], 2, 1e-3), _num(hidden_pred, 2, 1e-3)])
    t.add(["overlap", _pct(s["overlap"]),
           _pct(hidden_pred / pred["comm_us"] if pred["comm_us"] else None)])
    t.add(["window overlap", _pct(s["overlap_window"]), ""])
    t.add(["perfect overlap hides", "", _num(pred["hideable_us"], 2, 1e-3)])
    return t


def header(result: dict) -> list[str]:
    c = result["config"]
    p = c["predictions"]
    model = (f"{c['model']} ({c['params'] / 1e6:.2f}M parameters, "
             f"{_size(c['grad_bytes'])} of gradients)")
    comm = c["comm"] + (f" (as {c['native_as']})" if c.get("native_as") else "") + \
        (f", commsim executor in {c['exec']} mode" if c.get("exec") else "")
    alpha = "-" if p["alpha"] is None else f"{p['alpha'] * 1e6:.1f} us"
    bw = "-" if not p["beta"] else f"{1 / p['beta'] / 1e9:.3g} GB/s"
    lines = [f"# commsim {c['commsim']} ddp: {model} | {c['nranks']} ranks | backend "
             f"{c['backend']} | torch {c.get('torch')}",
             f"# batch {c['batch']} a rank ({c['global_batch']} global"
             + (f", {c['seq_len']} tokens a sample" if c["seq_len"] else "")
             + f") | AdamW lr {c['lr']:g} | bucket cap {c['bucket_cap_mb']:g} MiB | comm "
             f"{comm} | seed {c['seed']} | {c['steps']} steps, {c['baseline_steps']} "
             f"compute-only steps",
             f"# statistics skip the first {c['skip']} steps (DDP rebuilds its buckets after "
             f"step 0); timing: {c['clock']}",
             f"# predictions: topology {c['topology']} (alpha {alpha}, bandwidth {bw}), "
             f"reduction {_gamma(p)}"]
    lines += [f"# note: {n}" for n in c["notes"]]
    return lines


def _gamma(p: dict) -> str:
    if not p.get("gamma"):
        return "not modelled"
    return f"{1 / p['gamma'] / 1e9:.3g} GB/s ({p['gamma_source']})"


def footer(result: dict) -> list[str]:
    s, c = result["summary"], result["config"]
    pred = s["predicted"]
    tokens = f", {s['tokens_per_s']:.0f} tokens/s" if s["tokens_per_s"] else ""
    predicted = f" (predicted {pred['samples_per_s']:.1f})" if pred["samples_per_s"] else ""
    first, last = s["loss_first"], s["loss_last"]
    return [f"throughput: {s['samples_per_s']:.1f} samples/s{tokens}{predicted} on "
            f"{c['nranks']} ranks",
            f"loss: {first:.4f} -> {last:.4f} over {c['steps']} steps (min {s['loss_min']:.4f}, "
            f"{100 * (first - last) / first:.0f}% below the first)"]


def _finite(value):
    """``value`` with inf and nan (which JSON cannot carry) as None, nested."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def write_json(path: str, rows: list[dict]) -> None:
    """One JSON object a line (folders above ``path`` are created). Written beside it and
    renamed into place, so a run killed while writing leaves no half file."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    partial = target.with_name(f".{target.name}.partial")
    with open(partial, "w", encoding="utf-8") as fh:
        for row in rows:
            fh.write(json.dumps(_finite(row), allow_nan=False) + "\n")
    os.replace(partial, target)


def json_rows(result: dict) -> list[dict]:
    rows = [result["config"]]
    by_step: dict[int, list[dict]] = {}
    for b in result["buckets"]:
        by_step.setdefault(b["step"], []).append(b)
    for s in result["steps"]:
        rows.append(s)
        rows += by_step.get(s["step"], [])
    return rows + result["baseline"] + [result["summary"]]


def figure(result: dict) -> bytes:
    """One step's timeline (compute phases, each bucket measured and predicted) above
    the loss curve."""
    from commsim.report import figures

    tl, c = result["timeline"], result["config"]
    f, b = tl["forward"], tl["backward"]
    lanes = [figures.Lane("compute", [figures.Span(0, f, "forward"),
                                      figures.Span(f, f + b, "backward"),
                                      figures.Span(f + b, tl["total"], "optimizer")])]
    shown = sorted(range(len(tl["buckets"])), key=lambda j: -tl["buckets"][j]["nbytes"])
    shown = sorted(shown[:MAX_LANES])
    for j in shown:
        bucket = tl["buckets"][j]
        spans = [figures.Span(bucket["launch"], bucket["done"], "communication (measured)",
                              "upper")]
        if tl["predicted"]:
            lo, hi = tl["predicted"][j]
            spans.append(figures.Span(lo, hi, "communication (predicted)", "lower"))
        lanes.append(figures.Lane(f"bucket {bucket['index']} ({_size(bucket['nbytes'])})",
                                  spans))
    losses = result["losses"]
    curve = figures.Curve(f"loss (mean over {c['nranks']} ranks)", list(range(len(losses))),
                          losses, "step", "cross-entropy loss",
                          shade_below=c["skip"] - 0.5 if c["skip"] else None,
                          shade_label="skipped by the statistics")
    more = len(tl["buckets"]) - len(shown)
    title = (f"{c['model']}, {c['nranks']} ranks, {c['backend']}, comm {c['comm']}: step "
             f"{tl['step']} (median length; predicted bars from the same launch times"
             + (f"; the {len(shown)} largest of {len(tl['buckets'])} buckets" if more else "")
             + ")")
    return figures.timeline(title, lanes, curve)


def document(result: dict, png: bytes | None) -> Document:
    c = result["config"]
    doc = Document(f"commsim ddp: {c['model']} on {c['nranks']} ranks, comm {c['comm']}")
    doc.add(Paragraph(" ".join(line.lstrip("# ") + "." for line in header(result)),
                      muted=True))
    doc.add(Heading("Summary"), Bullets(footer(result)))
    doc.add(Heading("Step time"), step_table(result), comm_table(result))
    doc.add(Heading("Buckets"), bucket_table(result))
    if png:
        doc.add(Figure(png, "one step's timeline, measured and predicted, and the loss curve",
                       "timeline"))
    doc.add(Heading("Definitions"), Bullets(DEFINITIONS + ["see docs/ddp.md"]))
    return doc


def emit(cfg, result: dict, stream=None) -> None:
    """Print the tables and lines; write ``--json``, ``--plot`` and ``--report``."""
    stream = stream or sys.stdout
    stream.write("\n".join(header(result)) + "\n")
    tables.show([bucket_table(result), step_table(result), comm_table(result)], stream,
                lines=footer(result))
    if cfg.json:
        write_json(cfg.json, json_rows(result))
        print(f"wrote {cfg.json}", file=stream)
    png = figure(result) if (cfg.plot or cfg.report) else None
    if cfg.plot:
        Path(cfg.plot).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.plot).write_bytes(png)
        print(f"wrote {cfg.plot}", file=stream)
    if cfg.report:
        from commsim.report import html

        html.write(document(result, png), cfg.report)
        print(f"wrote {cfg.report}", file=stream)


def scaling_table(config: dict, rows: list[dict]) -> Table:
    ref = rows[0]["reference"]
    t = Table(f"weak scaling: {config['model']}, batch {config['batch']} a rank, comm "
              f"{config['comm']}, against {ref} rank{'s' if ref > 1 else ''} (ms, medians)",
              ["ranks", "step", "compute-only", "comm", "exposed", "predicted exposed",
               "samples/s", "efficiency", "compute-only eff", "predicted eff"])
    for r in rows:
        t.add([str(r["nranks"]), _num(r["step_us"], 2, 1e-3), _num(r["baseline_us"], 2, 1e-3),
               _num(r["comm_us"], 2, 1e-3), _num(r["exposed_us"], 2, 1e-3),
               _num(r["predicted_exposed_us"], 2, 1e-3), _num(r["samples_per_s"], 1),
               _pct(r["efficiency"]), _pct(r["compute_efficiency"]),
               _pct(r["predicted_efficiency"])])
    t.notes.append("efficiency = step(ref) / step(n); compute-only eff = compute-only step(ref) "
                   "/ compute-only step(n); predicted eff = compute-only step(ref) / (that + "
                   "predicted exposed communication at n)")
    return t


def emit_scaling(cfg, config: dict, rows: list[dict], stream=None) -> None:
    """The weak-scaling table; ``--json`` (config line, one ``scaling`` line per world
    size), ``--plot`` (efficiency against ranks) and ``--report``."""
    stream = stream or sys.stdout
    table = scaling_table(config, rows)
    tables.show(table, stream)
    if cfg.json:
        write_json(cfg.json, [config] + rows)
        print(f"wrote {cfg.json}", file=stream)
    png = None
    if cfg.plot or cfg.report:
        from commsim.report import figures

        png = figures.lines(
            f"weak-scaling efficiency: {config['model']}, comm {config['comm']}",
            [r["nranks"] for r in rows],
            [("measured", [100 * r["efficiency"] for r in rows], "measured"),
             ("compute only", [100 * r["compute_efficiency"] for r in rows], "sim"),
             ("predicted", [None if r["predicted_efficiency"] is None
                            else 100 * r["predicted_efficiency"] for r in rows], "model")],
            "ranks", "efficiency (%)")
    if cfg.plot:
        Path(cfg.plot).parent.mkdir(parents=True, exist_ok=True)
        Path(cfg.plot).write_bytes(png)
        print(f"wrote {cfg.plot}", file=stream)
    if cfg.report:
        from commsim.report import html

        doc = Document(f"commsim ddp: weak scaling of {config['model']}, comm {config['comm']}")
        doc.add(Paragraph(f"backend {config['backend']}, torch {config.get('torch')}, "
                          f"predictions on {config['topology']}; each world size is one run "
                          f"of {config['steps']} steps (statistics skip the first "
                          f"{config['skip']}).", muted=True))
        doc.add(table, Figure(png, "weak-scaling efficiency against ranks", "scaling"))
        html.write(doc, cfg.report)
        print(f"wrote {cfg.report}", file=stream)
