"""What ``commsim compare`` shows: its tables, summary lines, figures and report document,
built from a :class:`~commsim.bench.compare.Comparison`."""

from __future__ import annotations

from commsim.bench.compare import WITHIN_10, WITHIN_25, Comparison, Group, Summary
from commsim.report import figures
from commsim.report.document import Bullets, Document, Figure, Heading, Paragraph, slug
from commsim.report.tables import Table
from commsim.units import format_size

VERDICT_CLASS = {"within 10%": "good", "within 25%": "fair", "off": "bad"}
SAME = 0.01  # prediction lines of several files closer than 1% everywhere are drawn once


def number(value: float | None) -> str:
    """Four significant digits (whole numbers from 1000 up); ``-`` for none."""
    if value is None:
        return "-"
    return f"{value:.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def percent(value: float | None) -> str:
    return "-" if value is None else f"{value:+.1f}"


def _dominant(point) -> str:
    if point.dominant is None:
        return "-"
    name, share = point.dominant
    return f"{name} {share:.0%}"


def group_table(group: Group, multi: bool) -> Table:
    """One row per (size, file): measured, model and simulator busbw, errors, verdicts and
    the dominant model term (measured columns only when the group has no predictions);
    the summary lines as notes."""
    lead = ["size"] + (["file"] if multi else [])
    align = ["r"] + (["l"] if multi else []) + ["r", "r"]
    predicted = group.has_predictions()
    cached = predicted and any(p.warm for p in group.points)
    columns = lead + ["time(us)", "busbw(GB/s)"]
    if predicted:
        columns += ["model busbw", "model err%", "model verdict", "sim busbw", "sim err%",
                    "sim verdict", "dominant term"] + (["in cache"] if cached else [])
        align += ["r", "r", "l", "r", "r", "l", "l"] + (["r"] if cached else [])
    table = Table(title=group.title, columns=columns,
                  align=align)
    for p in group.points:
        cells = [format_size(p.size)] + ([p.label] if multi else []) + [
            number(p.time_us), number(p.busbw)]
        classes: list[str | None] = [None] * len(cells)
        if predicted:
            cells += [number(p.model_busbw), percent(p.model_err), p.model_verdict or "-",
                      number(p.sim_busbw), percent(p.sim_err), p.sim_verdict or "-",
                      _dominant(p)]
            classes += [None, None, VERDICT_CLASS.get(p.model_verdict or "", "dim"),
                        None, None, VERDICT_CLASS.get(p.sim_verdict or "", "dim"), None]
            if cached:
                cells.append(f"{p.warm:.0%}" if p.warm else "-")
                classes.append(None)
        table.add(cells, classes)
    table.notes = summary_lines(group)
    return table


def _share(s: Summary, kind: str) -> str:
    median, within, n = ((s.model_median, s.model_within25, s.model_n) if kind == "model"
                         else (s.sim_median, s.sim_within25, s.sim_n))
    name = "model" if kind == "model" else "simulator"
    if median is None:
        return f"{name}: no predictions"
    return (f"{name} median |error| {median:.1f}%, {within}/{n} sizes within "
            f"{WITHIN_25:.0f}%")


def summary_lines(group: Group) -> list[str]:
    """One line per input file of the group (one line when there is one file)."""
    lines = []
    for s in group.summaries():
        head = f"{group.name}, {s.label}"
        if s.model_n == 0 and s.sim_n == 0:
            why = ("no commsim algorithm models what the backend runs"
                   if group.algorithm == "native" else "the file has no predictions for it")
            lines.append(f"{head}: measured only, {s.sizes} sizes ({why})")
        else:
            lines.append(f"{head}: {_share(s, 'model')}; {_share(s, 'sim')}")
        wrong = [p for p in group.of_run(s.run) if p.wrong]
        if wrong:
            sizes = ", ".join(format_size(p.size) for p in wrong)
            lines.append(f"{head}: wrong results at {sizes}: those times are suspect")
    return lines


def skipped_lines(comparison: Comparison) -> list[str]:
    return [f"skipped {s.collective}/{s.algorithm}{' ' + s.place if s.place else ''} "
            f"{format_size(s.size)} ({s.label} line "
            f"{s.line}): {s.status}" + (f": {s.note}" if s.note else "")
            for s in comparison.skipped]


def tables(comparison: Comparison) -> list[Table]:
    multi = len(comparison.runs) > 1
    return [group_table(g, multi) for g in comparison.groups]


# ---- figures --------------------------------------------------------------------------

def _same(a: list, b: list) -> bool:
    return all((x is None) == (y is None) and (x is None or abs(x - y) <= SAME * abs(y))
               for x, y in zip(a, b))


def _prediction_series(group: Group, kind: str, label: str) -> list[figures.Series]:
    """One line for ``kind`` (``model``/``sim``) when every file predicts the same, else
    one per file in that file's colour."""
    sizes = group.sizes()
    per_run = []
    for run in group.runs():
        by_size = {p.size: getattr(p, f"{kind}_busbw") for p in group.of_run(run)}
        values = [by_size.get(s) for s in sizes]
        if any(v is not None for v in values):
            per_run.append((run, group.of_run(run)[0].label, values))
    if not per_run:
        return []
    first = per_run[0][2]
    if all(_same(v, first) for _, _, v in per_run):
        merged = [next((v[i] for _, _, v in per_run if v[i] is not None), None)
                  for i in range(len(sizes))]
        return [figures.Series(label, sizes, merged, kind)]
    return [figures.Series(f"{label} · {name}", sizes, v, kind, run)
            for run, name, v in per_run]


def busbw_figure(group: Group, multi: bool) -> bytes:
    series = []
    for run in group.runs():
        pts = group.of_run(run)
        label = f"measured · {pts[0].label}" if multi else "measured"
        series.append(figures.Series(label, [p.size for p in pts], [p.busbw for p in pts],
                                     "measured", run))
    series += _prediction_series(group, "model", "model")
    series += _prediction_series(group, "sim", "simulator")
    return figures.busbw(f"{group.title}: bus bandwidth", series)


def error_figure(group: Group, multi: bool) -> bytes:
    series = []
    for run in group.runs():
        pts = group.of_run(run)
        for kind, name in (("model", "model"), ("sim", "simulator")):
            values = [getattr(p, f"{kind}_err") for p in pts]
            if all(v is None for v in values):
                continue
            label = f"{name} vs {pts[0].label}" if multi else name
            series.append(figures.Series(label, [p.size for p in pts], values, kind,
                                         run if multi else None))
    return figures.error(f"{group.title}: error of the predictions, "
                         "(predicted - measured) / measured time",
                         series)


# ---- the report document --------------------------------------------------------------

def _inputs(comparison: Comparison) -> Table:
    table = Table(title="input files", columns=[
        "file", "backend", "ranks", "topology", "started", "mode", "alpha (us)",
        "link (GB/s)", "reduction (GB/s)", "overlap", "drift"],
        align=["l", "l", "r", "l", "l", "l", "r", "r", "r", "l", "r"])
    for run in comparison.runs:
        pred = run.prediction or {}
        alpha, beta, gamma = pred.get("alpha"), pred.get("beta"), pred.get("gamma")
        overlap, drift = pred.get("overlap"), (pred.get("drift") or {}).get("ratio")
        table.add([run.label, str(run.backend), str(run.nranks),
                   str(run.config.get("topology") or "-"), str(run.config.get("started") or "-"),
                   str(pred.get("mode") or "-"),
                   number(None if alpha is None else alpha * 1e6),
                   number(1e-9 / beta if beta else None),
                   number(1e-9 / gamma if gamma else None),
                   "-" if overlap is None else ("yes" if overlap else "no"),
                   "-" if drift is None else f"{drift:.2f}x"])
    if any((run.prediction or {}).get("drift") for run in comparison.runs):
        table.notes.append("drift: the profile's ring shift timed again before the run, over "
                           "its time when calibrated; predictions are off by about as much "
                           "(docs/calibrate.md)")
    return table


def _overview(comparison: Comparison) -> Table:
    multi = len(comparison.runs) > 1
    table = Table(title="summary per group", columns=(
        ["group"] + (["file"] if multi else []) + [
            "sizes", "model median |err|", f"model within {WITHIN_25:.0f}%",
            "sim median |err|", f"sim within {WITHIN_25:.0f}%"]))
    if multi:
        table.align = ["l", "l"] + ["r"] * 5
    for group in comparison.groups:
        for s in group.summaries():
            table.add([group.name] + ([s.label] if multi else []) + [
                str(s.sizes),
                "-" if s.model_median is None else f"{s.model_median:.1f}%",
                f"{s.model_within25}/{s.model_n}" if s.model_n else "-",
                "-" if s.sim_median is None else f"{s.sim_median:.1f}%",
                f"{s.sim_within25}/{s.sim_n}" if s.sim_n else "-"])
    return table


DEFINITIONS = [
    "busbw: nccl-tests' bus bandwidth, size / time x busbw_factor, in GB/s (1e9 bytes/s); "
    "model and simulator busbw use the same size and factor with the predicted time.",
    "error: (predicted time - measured time) / measured time, in %. Negative: the prediction "
    "is faster than the measurement (the network or executor is slower than assumed).",
    f"verdict: within {WITHIN_10:.0f}% when |error| <= {WITHIN_10:.0f}%, within "
    f"{WITHIN_25:.0f}% when |error| <= {WITHIN_25:.0f}%, else off.",
    "dominant term: the model evaluated with only alpha (latency), only beta (bandwidth) or "
    "only gamma (reduction), the others zero; the largest, with its share of the three. "
    "A profile's step overhead is inside alpha, so it counts as latency.",
    "in cache: the share of the call's data that the profile's cache holds from one call to "
    "the next, which the predictions price at its warm rates (docs/calibrate.md); shown "
    "where some is.",
    "summary: per group and file, the median |error| and how many sizes are within "
    f"{WITHIN_25:.0f}%.",
]


def document(comparison: Comparison) -> Document:
    """The whole report: inputs, a summary, then per group its figures and table."""
    multi = len(comparison.runs) > 1
    doc = Document("commsim compare: measured vs model vs simulator")
    files = ", ".join(r.label for r in comparison.runs)
    doc.add(Paragraph(f"{len(comparison.runs)} result file{'s' if multi else ''} ({files}), "
                      f"{len(comparison.groups)} (collective, algorithm) groups. Errors are "
                      f"those of the predicted time; terms are listed under Definitions."),
            _inputs(comparison), _overview(comparison))
    for group in comparison.groups:
        title = group.title
        doc.add(Heading(title, 2))
        doc.add(Bullets(summary_lines(group)))
        what = ("measured, model and simulator bus bandwidth per size"
                if group.has_predictions() else "measured bus bandwidth per size")
        doc.add(Figure(busbw_figure(group, multi), f"{title}: {what}", f"{slug(title)}-busbw"))
        if group.has_predictions():
            doc.add(Figure(error_figure(group, multi), f"{title}: relative error of the "
                           f"predicted time; bands at +-{WITHIN_10:.0f}% and "
                           f"+-{WITHIN_25:.0f}%", f"{slug(title)}-error"))
        table = group_table(group, multi)
        table.notes = []
        doc.add(table)
    if comparison.skipped:
        doc.add(Heading("Skipped rows", 2), Bullets(skipped_lines(comparison)))
    doc.add(Heading("Definitions", 2), Bullets(DEFINITIONS))
    return doc
