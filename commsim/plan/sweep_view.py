"""A sweep as users see it: the summary tables and the HTML report with its figures.

Built from :mod:`commsim.report`'s pieces, like :mod:`commsim.plan.view` and
:mod:`commsim.bench.compare_view`: :class:`~commsim.report.tables.Table` for the
terminal and the page, matplotlib figures through :mod:`commsim.report.figures`' canvas
helpers, a :class:`~commsim.report.document.Document` written by
:mod:`commsim.report.html`.

Columns show only the axes whose value changes across the grid; the others are listed
once, above the tables.
"""

from __future__ import annotations

import math

from commsim.plan.sweep import AXES, Scenario, Study, describe, format_value
from commsim.report import figures
from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph
from commsim.report.tables import Table
from commsim.units import format_time

MOST_FIGURES = 12
MOST_BARS = 40
LABELS = {"what_if": "what-if", "group_size": "group", "nranks": "ranks"}


def cell(sc: Scenario, axis: str) -> str:
    if axis == "topology":
        return sc.topology_name
    return format_value(axis, sc.params[axis])


def varying(scenarios: list[Scenario]) -> list[str]:
    """The axes whose value differs between scenarios, in the study's order."""
    if not scenarios:
        return []
    axes = AXES[scenarios[0].params["kind"]]
    return [a for a in axes if len({cell(sc, a) for sc in scenarios}) > 1]


def fixed(scenarios: list[Scenario]) -> list[str]:
    """``axis: value`` for every axis that is the same in every scenario."""
    if not scenarios:
        return []
    moving = set(varying(scenarios))
    sc = scenarios[0]
    return [f"{a}: {cell(sc, a)}" for a in AXES[sc.params["kind"]] if a not in moving]


def _num(value, digits: int = 4) -> str:
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "-"
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.{digits}g}"


def _layout(row: dict) -> str:
    parts = [f"{d}{row[d]}" for d in ("tp", "cp", "pp", "dp", "ep")
             if row.get(d) is not None and (row[d] != 1 or d in ("tp", "pp", "dp"))]
    return " ".join(parts) or "-"


def metrics(kind: str) -> list[tuple[str, callable]]:
    """The result columns of a kind: ``(name, row -> text)``."""
    if kind == "simulate":
        return [("time(us)", lambda r: _num(r["time_us"])),
                ("busbw(GB/s)", lambda r: _num(r["busbw_gbps"])),
                ("model(us)", lambda r: _num(r.get("t_model_us"))
                 + ("*" if r.get("model_estimate") else "")),
                ("bottleneck", lambda r: r.get("bottleneck") or "-")]
    if kind == "workload":
        return [("degrees", _layout),
                ("step", lambda r: format_time(r["time_us"] / 1e6)),
                ("comm exposed", lambda r: format_time(r["comm_exposed_us"] / 1e6)),
                ("compute", lambda r: format_time(r["compute_us"] / 1e6)),
                ("busiest link", lambda r: r.get("bottleneck") or "-")]
    return [("degrees", _layout),
            ("step", lambda r: format_time(r["time_us"] / 1e6)),
            ("mfu%", lambda r: f"{100 * r['mfu']:.1f}"),
            ("tokens/s", lambda r: _num(r["tokens_per_s"])),
            ("GB/gpu", lambda r: f"{r['memory_gb_per_gpu']:.1f}"),
            ("fits", lambda r: "yes" if r["fits"] else f"no (+{r['short_gb']:.1f})"),
            ("bottleneck", lambda r: r.get("bottleneck") or "-"),
            ("source", lambda r: r.get("source") or "-")]


def rows_table(study: Study, scenarios: list[Scenario], rows: dict) -> Table:
    """One line per scenario that has a row, in the grid's order."""
    axes = varying(scenarios)
    cols = metrics(study.kind)
    done = [sc for sc in scenarios if sc.key in rows]
    t = Table(f"{study.name}: {len(done)} of {len(scenarios)} scenarios ({study.kind})",
              [LABELS.get(a, a) for a in axes] + [c for c, _f in cols],
              align=["l"] * len(axes) + ["r" if c not in ("bottleneck", "busiest link",
                                                          "degrees", "source", "fits")
                                         else "l" for c, _f in cols])
    for sc in done:
        r = rows[sc.key]
        t.add([cell(sc, a) for a in axes] + [f(r) for _c, f in cols])
    if study.kind == "simulate":
        t.notes.append("model = commsim's closed form on the topology's routes "
                       "(* = an estimate where flows share links); bottleneck = the link "
                       "that held the critical path up longest")
    return t


def best_table(study: Study, scenarios: list[Scenario], rows: dict) -> Table | None:
    """For simulate studies the fastest algorithm, for workload and plan studies the
    fastest layout (that fits), for each combination of the other varying axes; None when
    that axis does not vary."""
    axis = "algorithm" if study.kind == "simulate" else "layout"
    axes = varying(scenarios)
    if axis not in axes:
        return None
    others = [a for a in axes if a != axis]
    groups: dict[tuple, list[Scenario]] = {}
    for sc in scenarios:
        if sc.key in rows:
            groups.setdefault(tuple(cell(sc, a) for a in others), []).append(sc)
    noun = "algorithm" if axis == "algorithm" else "layout"
    t = Table(f"fastest {noun}" + (" that fits" if study.kind == "plan" else "")
              + (f" per {', '.join(LABELS.get(a, a) for a in others)}" if others else ""),
              [LABELS.get(a, a) for a in others] + [noun, "time", "runner-up", "slower by"],
              align=["l"] * len(others) + ["l", "r", "l", "r"])
    for combo, group in groups.items():
        ranked = sorted(group, key=lambda sc: (not rows[sc.key].get("fits", True),
                                               rows[sc.key]["time_us"]))
        first = ranked[0]
        r0 = rows[first.key]
        name = cell(first, axis) if axis == "algorithm" else _layout(r0)
        if len(ranked) > 1:
            r1 = rows[ranked[1].key]
            second = cell(ranked[1], axis) if axis == "algorithm" else _layout(r1)
            slower = f"{100 * (r1['time_us'] / r0['time_us'] - 1):.1f}%" \
                if r0["time_us"] > 0 else "-"
        else:
            second, slower = "-", "-"
        t.add(list(combo) + [name, format_time(r0["time_us"] / 1e6), second, slower])
    return t


def tables_for(study: Study, scenarios: list[Scenario], rows: dict) -> list[Table]:
    out = [rows_table(study, scenarios, rows)]
    best = best_table(study, scenarios, rows)
    if best is not None and best.rows:
        out.append(best)
    return out


# -- figures -------------------------------------------------------------------------------

def _groups(scenarios: list[Scenario], rows: dict, leave: tuple[str, ...]
            ) -> dict[tuple, list[Scenario]]:
    """Scenarios with rows, grouped by the varying axes not in ``leave``."""
    axes = [a for a in varying(scenarios) if a not in leave]
    out: dict[tuple, list[Scenario]] = {}
    for sc in scenarios:
        if sc.key in rows:
            out.setdefault(tuple((a, cell(sc, a)) for a in axes), []).append(sc)
    return out


def _title(combo: tuple, lead: str) -> str:
    return lead + ("" if not combo else ": " + ", ".join(
        f"{LABELS.get(a, a)} {v}" for a, v in combo))


def busbw_figures(study: Study, scenarios: list[Scenario], rows: dict) -> list[Figure]:
    """simulate: bus bandwidth against size, simulator (solid) and model (dashed), one
    line each per algorithm; a figure per combination of the other varying axes."""
    out = []
    for combo, group in _groups(scenarios, rows, ("size", "algorithm")).items():
        algos = list(dict.fromkeys(sc.params["algorithm"] for sc in group))
        series = []
        for i, algo in enumerate(algos):
            mine = sorted((sc for sc in group if sc.params["algorithm"] == algo),
                          key=lambda sc: sc.params["size"])
            sizes = [sc.params["size"] for sc in mine]
            sim = [rows[sc.key]["busbw_gbps"] for sc in mine]
            mod = []
            for sc in mine:
                r = rows[sc.key]
                t = r.get("t_model_us")
                mod.append(r["busbw_gbps"] * r["time_us"] / t if t else None)
            series.append(figures.Series(algo, sizes, sim, "measured", i))
            series.append(figures.Series(f"{algo} (model)", sizes, mod, "model", i))
        png = figures.busbw(_title(combo, f"{study.name}, simulated busbw"), series)
        out.append(Figure(png, _title(combo, "busbw against size (solid: simulator, dashed: "
                                      "model)"), "busbw"))
    return out


def category_figures(study: Study, scenarios: list[Scenario], rows: dict, x_axis: str
                     ) -> list[Figure]:
    """simulate studies: busbw against ``x_axis`` (its values in the grid's order), a
    line per algorithm; a figure per combination of the other varying axes."""
    out = []
    for combo, group in _groups(scenarios, rows, (x_axis, "algorithm")).items():
        xs = list(dict.fromkeys(cell(sc, x_axis) for sc in group))
        algos = list(dict.fromkeys(sc.params["algorithm"] for sc in group))
        fig = figures._figure(9.0, 4.4)
        ax = fig.add_subplot()
        for i, algo in enumerate(algos):
            pts = [(xs.index(cell(sc, x_axis)), rows[sc.key]["busbw_gbps"]) for sc in group
                   if sc.params["algorithm"] == algo]
            if pts:
                px, py = zip(*sorted(pts))
                ax.plot(px, py, marker="o", label=algo,
                        color=figures.PALETTE[i % len(figures.PALETTE)])
        ax.set_xticks(range(len(xs)))
        ax.set_xticklabels([_short(x) for x in xs], fontsize=8)
        ax.set_xlabel(LABELS.get(x_axis, x_axis))
        ax.set_ylabel("bus bandwidth (GB/s)")
        ax.set_ylim(bottom=0)
        ax.set_title(_title(combo, f"{study.name}, simulated busbw"), loc="left", fontsize=11)
        ax.grid(True, alpha=0.3)
        figures._legend(ax)
        out.append(Figure(figures._png(fig), _title(combo, f"busbw per {x_axis}"), "busbw"))
    return out


def x_axis(scenarios: list[Scenario]) -> str:
    """What a simulate study's figures put on the x axis: the size when it takes three
    values or more, else the varying axis (not the algorithm) with the most values."""
    axes = [a for a in varying(scenarios) if a != "algorithm"]
    counts = {a: len({cell(sc, a) for sc in scenarios}) for a in axes}
    if counts.get("size", 0) >= 3:
        return "size"
    if not counts:
        return "algorithm"
    return max(axes, key=lambda a: (counts[a], -axes.index(a)))


def _short(text: str, most: int = 22) -> str:
    return text if len(text) <= most else text[:most - 1] + "…"


PARTS = {"workload": (("compute", "compute_us", "#1f77b4"),
                      ("exposed communication", "comm_exposed_us", "#d62728")),
         "plan": (("compute", "compute_s", "#1f77b4"),
                  ("exposed communication", "comm_exposed_s", "#d62728"),
                  ("pipeline bubble", "bubble_s", "#ff7f0e"))}


def step_figures(study: Study, scenarios: list[Scenario], rows: dict) -> list[Figure]:
    """workload and plan: a stacked horizontal bar per scenario (compute, exposed
    communication and, for plans, the pipeline bubble), in the grid's order, labelled by
    the varying axes; the step time (and a plan's MFU) at the end of each bar."""
    axes = varying(scenarios)
    done = [sc for sc in scenarios if sc.key in rows]
    out = []
    scale = 1e3 if study.kind == "plan" else 1e-3     # seconds or microseconds -> ms
    for start in range(0, len(done), MOST_BARS):
        part = done[start:start + MOST_BARS]
        fig = figures._figure(10.0, 1.3 + 0.26 * len(part))
        ax = fig.add_subplot()
        ys = list(range(len(part)))[::-1]           # the first scenario on top
        left = [0.0] * len(part)
        unit, factor = ("s", 1e-3) if max(rows[sc.key]["time_us"] for sc in part) > 1e7 \
            else ("ms", 1.0)
        for name, key, color in PARTS[study.kind]:
            vals = [rows[sc.key][key] * scale * factor for sc in part]
            ax.barh(ys, vals, left=left, color=color, label=name, height=0.72)
            left = [a + v for a, v in zip(left, vals)]
        for y, x, sc in zip(ys, left, part):
            r = rows[sc.key]
            text = " " + format_time(r["time_us"] / 1e6)
            if study.kind == "plan":
                text += f", MFU {100 * r['mfu']:.1f}%" + ("" if r["fits"] else
                                                         ", does not fit")
            ax.text(x, y, text, ha="left", va="center", fontsize=7)
        ax.set_yticks(ys)
        ax.set_yticklabels([" · ".join(cell(sc, a) for a in axes) or sc.topology_name
                            for sc in part], fontsize=7)
        ax.set_ylim(-0.6, len(part) - 0.4)
        ax.set_xlim(0, max(left, default=1.0) * 1.3 or 1.0)
        ax.set_xlabel(f"time a step ({unit})")
        ax.set_title(f"{study.name}: where a step's time goes ("
                     + " · ".join(LABELS.get(a, a) for a in axes) + ")", loc="left",
                     fontsize=10)
        ax.grid(True, axis="x", alpha=0.3)
        figures._legend(ax)
        out.append(Figure(figures._png(fig), "where a step's time goes, per scenario",
                          "steps"))
    return out


def mfu_figures(study: Study, scenarios: list[Scenario], rows: dict) -> list[Figure]:
    """plan studies over several gpu counts: MFU against gpus, a line per combination of
    the other varying axes."""
    if "gpus" not in varying(scenarios):
        return []
    groups = _groups(scenarios, rows, ("gpus",))
    fig = figures._figure(9.0, 4.4)
    ax = fig.add_subplot()
    for i, (combo, group) in enumerate(list(groups.items())[:len(figures.PALETTE) * 2]):
        pts = sorted((sc.params["gpus"], 100 * rows[sc.key]["mfu"],
                      rows[sc.key]["fits"]) for sc in group)
        label = ", ".join(f"{v}" for _a, v in combo) or "mfu"
        color = figures.PALETTE[i % len(figures.PALETTE)]
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", color=color,
                label=_short(label, 40), linestyle="-" if i < len(figures.PALETTE) else "--")
        bad = [p for p in pts if not p[2]]
        if bad:
            ax.scatter([p[0] for p in bad], [p[1] for p in bad], marker="x", color="black",
                       zorder=5, s=40)
    gpus = sorted({sc.params["gpus"] for sc in scenarios})
    ax.set_xscale("log", base=2)
    ax.set_xticks(gpus)
    ax.set_xticklabels([str(g) for g in gpus])
    ax.set_xlabel("gpus")
    ax.set_ylabel("MFU (%)")
    ax.set_title(f"{study.name}: MFU per gpu count (x: does not fit in memory)", loc="left",
                 fontsize=11)
    ax.grid(True, alpha=0.3)
    figures._legend(ax)
    return [Figure(figures._png(fig), "MFU against gpu count", "mfu")]


def figures_for(study: Study, scenarios: list[Scenario], rows: dict) -> tuple[list, int]:
    """The report's figures (at most :data:`MOST_FIGURES`) and how many were left out."""
    if study.kind == "simulate":
        axis = x_axis(scenarios)
        if axis == "size":
            figs = busbw_figures(study, scenarios, rows)
        else:
            figs = category_figures(study, scenarios, rows, axis)
    else:
        figs = step_figures(study, scenarios, rows)
        if study.kind == "plan":
            figs += mfu_figures(study, scenarios, rows)
    return figs[:MOST_FIGURES], max(0, len(figs) - MOST_FIGURES)


def document(study: Study, scenarios: list[Scenario], rows: dict, inputs: list[str]
             ) -> Document:
    doc = Document(f"commsim sweep: {study.name}")
    doc.add(Heading("study"), Bullets(inputs))
    if study.description:
        doc.add(Paragraph(study.description))
    same = fixed(scenarios)
    if same:
        doc.add(Paragraph("the same in every scenario: " + "; ".join(same), True))
    doc.add(Heading("results"))
    for t in tables_for(study, scenarios, rows):
        doc.add(t)
    if figures.available():
        figs, left = figures_for(study, scenarios, rows)
        if figs:
            doc.add(Heading("figures"))
            doc.add(*figs)
        if left:
            doc.add(Paragraph(f"{left} more figures left out (the first {MOST_FIGURES} "
                              "shown); narrow the study to see them", True))
    else:
        doc.add(Paragraph("figures need matplotlib (pip install 'commsim[plot]')", True))
    doc.add(Paragraph(NOTES[study.kind], True))
    return doc


NOTES = {
    "simulate": "Each scenario is one collective simulated as commsim simulate does it "
                "(flow-level, max-min fair links, automatic pipeline depth); busbw = algbw "
                "x nccl-tests' factor; line rates, no protocol overhead. docs/simulator.md.",
    "workload": "Each scenario is one training step's communication simulated as commsim "
                "simulate --workload does it: every group of each phase at once on the "
                "topology. docs/workload.md.",
    "plan": "Each scenario is one row of commsim plan: step = timeline + pipeline bubble, "
            "MFU = model FLOPs / (step x gpus x dense peak); source simulator where the "
            "topology holds the gpus, else model or extrapolated. docs/plan.md.",
}


def summary_lines(study: Study, scenarios: list[Scenario], rows: dict) -> list[str]:
    """A line on the slowest and the fastest scenario."""
    done = [sc for sc in scenarios if sc.key in rows]
    if len(done) < 2:
        return []
    fast = min(done, key=lambda sc: rows[sc.key]["time_us"])
    slow = max(done, key=lambda sc: rows[sc.key]["time_us"])
    axes = varying(scenarios)
    return [f"fastest: {describe(fast, axes)} "
            f"({format_time(rows[fast.key]['time_us'] / 1e6)}); slowest: "
            f"{describe(slow, axes)} ({format_time(rows[slow.key]['time_us'] / 1e6)})"]
