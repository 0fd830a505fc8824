"""A plan as users see it: tables, JSON rows, and a report with figures.

Built from :mod:`commsim.report`'s pieces (tables, documents, HTML and Markdown writers);
the plan's own figures (stacked step-time bars, scaling curves, the link-utilization
heat map) draw with matplotlib through :mod:`commsim.report.figures`' canvas helpers.
"""

from __future__ import annotations

import math

from commsim.plan.planner import Plan, Row
from commsim.report import figures
from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph
from commsim.report.tables import Table
from commsim.units import format_time

JSON_KEYS = ("scenario", "gpus", "tp", "pp", "dp", "ep", "cp", "step_time_s", "compute_s",
             "comm_exposed_s", "bubble_s", "mfu", "tflops_per_gpu", "tokens_per_s",
             "memory_gb_per_gpu", "fits", "bottleneck", "source")


def _tflops(x: float) -> str:
    """Whole TFLOP/s, three significant digits below 10 (a rate measured on a CPU)."""
    return f"{x:.0f}" if x >= 10 or x == 0 else f"{x:.3g}"


def json_rows(p: Plan) -> list[dict]:
    """One dict per (scenario, gpus): :data:`JSON_KEYS` first, then the details."""
    out = []
    for r in p.rows:
        d = r.as_dict()
        d.pop("link_utilization", None)
        row = {k: d.pop(k) for k in JSON_KEYS}
        row.update(d)
        out.append(row)
    return out


def _gb(x: float) -> str:
    return f"{x:.1f}"


def _tokens(x: float) -> str:
    for unit, scale in (("M", 1e6), ("K", 1e3)):
        if x >= scale:
            return f"{x / scale:.3g}{unit}"
    return f"{x:.3g}"


def rows_table(p: Plan, title: str | None = None) -> Table:
    t = Table(title or "plan: one row per scenario and gpu count (times per step)",
              ["scenario", "gpus", "tp", "pp", "dp", "ep", "cp", "step", "compute", "comm",
               "bubble", "MFU", "TFLOP/s", "tokens/s", "scaling", "mem GB", "fits",
               "bottleneck", "comm bound", "source"])
    for r in p.rows:
        fits = "yes" if r.fits else f"no (+{r.short_gb:.1f})"
        t.add([r.scenario, str(r.gpus), str(r.tp), str(r.pp), str(r.dp), str(r.ep), str(r.cp),
               format_time(r.step_time_s), format_time(r.compute_s),
               format_time(r.comm_exposed_s), format_time(r.bubble_s), f"{r.mfu:.1%}",
               _tflops(r.tflops_per_gpu), _tokens(r.tokens_per_s),
               f"{r.scaling_efficiency:.1%}", _gb(r.memory_gb_per_gpu), fits, r.bottleneck,
               r.bound_link, r.source],
              [None] * 16 + [None if r.fits else "bad", None, None,
                             "dim" if r.source != "simulator" else None])
    return t


def dims_table(p: Plan) -> Table:
    t = Table("communication per dimension and step: model vs simulator, the algorithm "
              "the model picks, the link class that bounds it",
              ["scenario", "gpus", "dim", "model", "simulator", "traffic/GPU", "algorithm",
               "link", "crosses"])
    from commsim.units import format_bytes
    for r in p.rows:
        for d, v in r.dims.items():
            t.add([r.scenario, str(r.gpus), d, format_time(v["model_s"]),
                   format_time(v["sim_s"]) if v["sim_s"] is not None else "-",
                   format_bytes(v["bytes"]), ",".join(v["algorithms"]) or "-", v["link"],
                   ",".join(v["classes"])])
    return t


def training_table(p: Plan) -> Table | None:
    rows = [r for r in p.rows if r.train_days is not None]
    if not rows:
        return None
    t = Table("time to train the given tokens", ["scenario", "gpus", "days", "GPU-hours"])
    for r in rows:
        t.add([r.scenario, str(r.gpus), f"{r.train_days:,.1f}", f"{r.gpu_hours:,.0f}"])
    return t


def what_if_table(p: Plan) -> Table | None:
    if not p.comparisons:
        return None
    t = Table("what-ifs against the baseline", ["what-if", "gpus", "baseline", "what-if step",
                                                 "change", "scaling change", "bound by", "link",
                                                 "why unchanged"],
              align=["l", "r", "r", "r", "r", "r", "l", "l", "l"])
    for c in p.comparisons:
        cls = "good" if c["change"] < -0.005 else ("bad" if c["change"] > 0.005 else "dim")
        t.add([c["scenario"], str(c["gpus"]), format_time(c["baseline_s"]),
               format_time(c["step_time_s"]), f"{c['change']:+.1%}",
               f"{c['efficiency_change']:+.1%}", c["bottleneck"], c["bound_link"],
               c["reason"] or "-"],
              [None, None, None, None, cls, None, None, None, None])
    return t


def search_table(rows: list[Row], gpus: int, valid: int) -> Table:
    fitting = sum(r.fits for r in rows)
    t = Table(f"--search at {gpus} gpus: {valid} valid layouts, the top {len(rows)} "
              + ("that fit" if fitting else "(none fits: least memory first)"),
              ["rank", "tp", "pp", "dp", "ep", "cp", "m", "step", "MFU", "tokens/s",
               "mem GB", "fits", "bottleneck"])
    for i, r in enumerate(rows, 1):
        t.add([str(i), str(r.tp), str(r.pp), str(r.dp), str(r.ep), str(r.cp),
               str(r.micro_batches), format_time(r.step_time_s), f"{r.mfu:.1%}",
               _tokens(r.tokens_per_s), _gb(r.memory_gb_per_gpu),
               "yes" if r.fits else f"no (+{r.short_gb:.1f})", r.bottleneck])
    return t


def tables_for(p: Plan) -> list[Table]:
    out = [rows_table(p), dims_table(p)]
    for extra in (what_if_table(p), training_table(p)):
        if extra is not None:
            out.append(extra)
    return out


# -- figures -------------------------------------------------------------------------------

BREAKDOWN = (("compute", "#1f77b4"), ("exposed communication", "#d62728"),
             ("pipeline bubble", "#ff7f0e"))


def breakdown_figure(p: Plan) -> bytes:
    """Stacked bars: compute, exposed communication and bubble per (scenario, gpus)."""
    fig = figures._figure(10.0, 4.6)
    ax = fig.add_subplot()
    labels, parts = [], [[], [], []]
    for r in p.rows:
        labels.append(f"{r.gpus}\n{_short(r.scenario)}")
        total = r.step_time_s or 1.0
        parts[0].append(r.compute_s / total)
        parts[1].append(r.comm_exposed_s / total)
        parts[2].append(r.bubble_s / total)
    xs = list(range(len(labels)))
    bottom = [0.0] * len(xs)
    for (name, color), vals in zip(BREAKDOWN, parts):
        ax.bar(xs, [v * 100 for v in vals], bottom=[b * 100 for b in bottom], color=color,
               label=name, width=0.7)
        bottom = [b + v for b, v in zip(bottom, vals)]
    for x, r in zip(xs, p.rows):
        ax.text(x, 101, format_time(r.step_time_s), ha="center", va="bottom", fontsize=7)
    ax.set_xticks(xs)
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylim(0, 112)
    ax.set_ylabel("share of the step (%)")
    ax.set_xlabel("gpus / scenario (step time above each bar)")
    ax.set_title("where a step's time goes", loc="left", fontsize=11)
    ax.grid(True, axis="y", alpha=0.3)
    figures._legend(ax)
    return figures._png(fig)


def _short(text: str, most: int = 18) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


def scaling_figure(p: Plan) -> bytes:
    """Scaling efficiency (tokens/s per gpu vs the smallest count) per scenario."""
    fig = figures._figure(8.0, 4.0)
    ax = fig.add_subplot()
    for i, sc in enumerate(p.scenarios):
        rows = [r for r in p.rows if r.scenario == sc.name]
        ax.plot([r.gpus for r in rows], [100 * r.scaling_efficiency for r in rows],
                marker="o", color=figures.PALETTE[i % len(figures.PALETTE)], label=sc.name,
                linestyle="-" if i == 0 else "--")
    gpus = sorted({r.gpus for r in p.rows})
    ax.set_xscale("log", base=2)
    ax.set_xticks(gpus)
    ax.set_xticklabels([str(g) for g in gpus])
    ax.set_xlabel("gpus")
    ax.set_ylabel("scaling efficiency (%)")
    ax.set_title("scaling efficiency per scenario", loc="left", fontsize=11)
    ax.grid(True, alpha=0.3)
    figures._legend(ax)
    return figures._png(fig)


def busbw_figure(p: Plan) -> bytes | None:
    """The model's busbw against size for the DP gradient collective of the largest
    baseline row, one line per candidate algorithm."""
    from commsim import model as cost
    from commsim.plan.planner import CANDIDATES, Pricer
    from commsim.workload import Layout

    base = [r for r in p.rows if r.scenario == "baseline"]
    if not base:
        return None
    r = base[-1]
    dim = "dp" if r.dp > 1 else ("tp" if r.tp > 1 else None)
    if dim is None:
        return None
    coll = "allreduce"
    sc = p.scenarios[0]
    fab = sc.fabric if r.gpus <= sc.fabric.ngpus else sc.fabric.grow(r.gpus)
    pricer = Pricer(fab, Layout(tp=r.tp, cp=r.cp, pp=r.pp, dp=r.dp, ep=r.ep))
    n = r.dp if dim == "dp" else r.tp
    sizes = [2 ** k for k in range(16, 33, 2)]
    series = []
    for i, algo in enumerate(CANDIDATES[coll]):
        if algo == "hierarchical" and not pricer._hier_ok(pricer.path(dim)):
            continue
        vals = []
        for s in sizes:
            t = pricer.time(dim, coll, algo, n, s)
            vals.append(s / t * cost.busbw_factor(coll, n) / 1e9 if t > 0 else None)
        series.append(figures.Series(algo, sizes, vals, "model", i))
    return figures.busbw(f"model busbw of a {dim.upper()} allreduce on {n} ranks "
                         f"({pricer.path(dim).bound}), {r.gpus} gpus", series)


def heatmap_figure(p: Plan) -> bytes | None:
    """Link utilization (busy share of the step) of the largest simulated row, links
    grouped by class: one row of cells per class."""
    sim = [r for r in p.rows if r.source == "simulator" and r.link_utilization]
    if not sim:
        return None
    r = max(sim, key=lambda r: (r.gpus, r.scenario == "baseline"))
    util = r.link_utilization
    by_class: dict[str, list[tuple[str, float]]] = {}
    for name, u in util.items():
        by_class.setdefault(_link_kind(name), []).append((name, u))
    classes = sorted(by_class)
    width = max(len(v) for v in by_class.values())
    import numpy as np

    grid = np.full((len(classes), width), np.nan)
    for i, c in enumerate(classes):
        vals = sorted((u for _n, u in by_class[c]), reverse=True)
        grid[i, :len(vals)] = vals
    fig = figures._figure(10.0, 1.2 + 0.5 * len(classes))
    ax = fig.add_subplot()
    im = ax.imshow(np.minimum(grid, 1.0) * 100, aspect="auto", cmap="viridis", vmin=0,
                   vmax=100, interpolation="nearest")
    ax.set_yticks(range(len(classes)))
    ax.set_yticklabels([f"{c} ({len(by_class[c])})" for c in classes], fontsize=8)
    ax.set_xlabel("links of the class, busiest first")
    ax.set_title(f"link utilization (busy share of the step), {r.scenario}, {r.gpus} gpus "
                 "(simulator)", loc="left", fontsize=11)
    fig.colorbar(im, ax=ax, label="busy %")
    return figures._png(fig)


def _link_kind(name: str) -> str:
    """A link's kind from its name, ``gpu0_1->nvs0`` -> ``gpu->nvs``."""
    import re

    a, _, b = name.partition("->")
    return f"{re.sub(r'[0-9_]+$', '', a)}->{re.sub(r'[0-9_]+$', '', b)}"


def document(p: Plan, title: str, inputs: list[str], searches: list[Table] = ()) -> Document:
    doc = Document(title)
    doc.add(Heading("inputs"), Bullets(inputs))
    if p.notes:
        doc.add(Bullets(p.notes))
    doc.add(Heading("results"))
    for t in tables_for(p):
        doc.add(t)
    for t in searches:
        doc.add(t)
    if figures.available():
        doc.add(Heading("figures"))
        doc.add(Figure(breakdown_figure(p), "step-time breakdown per gpu count and scenario",
                       "breakdown"))
        if len({r.gpus for r in p.rows}) > 1:
            doc.add(Figure(scaling_figure(p), "scaling efficiency per scenario", "scaling"))
        bus = busbw_figure(p)
        if bus:
            doc.add(Figure(bus, "busbw against size per algorithm (model)", "busbw"))
        heat = heatmap_figure(p)
        if heat:
            doc.add(Figure(heat, "link utilization of the largest simulated case",
                           "links"))
    else:
        doc.add(Paragraph("figures need matplotlib (pip install 'commsim[plot]')", True))
    doc.add(Paragraph("Step = timeline (compute + communication not hidden) + pipeline "
                      "bubble. MFU = model FLOPs / (step time x gpus x dense peak). Scaling "
                      "efficiency = tokens/s per gpu against the smallest count. Sources: "
                      "simulator (every group at once on the topology), model (closed forms "
                      "on the topology's link classes), extrapolated (the model on the "
                      "topology grown with more nodes). See docs/plan.md.", True))
    return doc


def finite(x) -> bool:
    return isinstance(x, (int, float)) and math.isfinite(x)
