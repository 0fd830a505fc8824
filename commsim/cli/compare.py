"""``commsim compare``: measured vs model vs simulator, from ``commsim bench --json`` files."""

from __future__ import annotations

import sys
from pathlib import Path

from commsim.bench import compare_view, results
from commsim.bench.compare import compare
from commsim.cli.common import check_output
from commsim.errors import CommsimError
from commsim.report import figures, html, markdown, tables


def register(sub) -> None:
    p = sub.add_parser(
        "compare", help="measured vs model vs simulator, from bench results",
        description="Compare the measured times of commsim bench --json files with the model's "
        "and the simulator's predictions in them: busbw per size, the relative error of each "
        "prediction with a verdict (within 10%%, within 25%%, off), the model term that "
        "dominates, and a summary per (collective, algorithm). Several files are overlaid "
        "(two machines, two backends). See docs/compare.md.")
    p.add_argument("results", nargs="+", metavar="RESULTS.jsonl",
                   help="JSON lines written by commsim bench --json")
    p.add_argument("--report", metavar="OUT.html",
                   help="also write a self-contained HTML page with figures and tables")
    p.add_argument("--markdown", metavar="OUT.md",
                   help="also write a Markdown report, its figures as PNGs beside it")
    p.add_argument("--summary", action="store_true",
                   help="print one summary line per (collective, algorithm) and file instead "
                   "of the tables")
    p.set_defaults(func=run)


def _writable(path: str, flag: str, inputs: set[Path]) -> Path:
    """``path`` if it can be written (:func:`~commsim.cli.common.check_output`) and is not
    one of the input files. Nothing is created here."""
    target = check_output(path, flag)
    if target.resolve() in inputs:
        raise CommsimError(f"{flag}: {path} is one of the input files; give another name")
    return target


def _resolved(path: str) -> Path | None:
    """``path`` resolved, or None for a name no file can have (a NUL in it): reading it
    says so (:func:`commsim.bench.results.load`)."""
    try:
        return Path(path).resolve()
    except (OSError, ValueError):
        return None


def _outputs(args) -> tuple[Path | None, Path | None]:
    inputs = {_resolved(p) for p in args.results} - {None}
    report = _writable(args.report, "--report", inputs) if args.report is not None else None
    md = _writable(args.markdown, "--markdown", inputs) if args.markdown is not None else None
    if report and md and report.resolve() == md.resolve():
        raise CommsimError("--report and --markdown name the same file; give two names")
    if (report or md) and not figures.available():
        flag = "--report" if report else "--markdown"
        raise CommsimError(f"{flag} draws figures and needs matplotlib: "
                           f"pip install 'commsim[plot]'")
    return report, md


def run(args) -> int:
    report, md = _outputs(args)  # before any work: a bad path fails fast
    comparison = compare(results.load_all(args.results))
    lines = compare_view.skipped_lines(comparison)
    if args.summary:
        summary = [line for group in comparison.groups
                   for line in compare_view.summary_lines(group)]
        print("\n".join(summary + lines))
    else:
        tables.show(compare_view.tables(comparison), lines=lines)
    if not (report or md):
        return 0
    doc = compare_view.document(comparison)
    wrote = []
    for flag, target, writer in (("--report", report, html.write),
                                 ("--markdown", md, markdown.write)):
        if target is None:
            continue
        try:
            done = writer(doc, target)
        except OSError as exc:
            raise CommsimError(f"{flag}: cannot write {str(target)!r}: "
                               f"{exc.strerror or exc}") from None
        wrote += done if isinstance(done, list) else [done]
    pngs = sum(p.suffix == ".png" for p in wrote)
    if report:
        print(f"wrote {report}")
    if md:
        print(f"wrote {md} and {pngs} PNG files beside it")
    sys.stdout.flush()
    return 0
