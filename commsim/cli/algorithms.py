"""``commsim algorithms``: every (collective, algorithm) with its summary and cost formula."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table

from commsim import collectives, model


def register(sub) -> None:
    p = sub.add_parser("algorithms", help="list every collective algorithm and its cost formula",
                       description="List every (collective, algorithm) pair with its cost "
                       "formula (a = alpha, seconds per message; b = beta, seconds per byte; "
                       "g = gamma, seconds per byte reduced; S bytes; p ranks).")
    p.add_argument("--collective", help="only this collective")
    p.set_defaults(func=run)


def run(args) -> int:
    table = Table(title="commsim algorithms (a: s/message, b: s/byte, g: s/byte reduced)")
    for col in ("collective", "algorithm", "time", "how"):
        table.add_column(col, overflow="fold")
    for algo in collectives.algorithms(args.collective):
        name = algo.name + (f" [dim]({', '.join(algo.options)})[/]" if algo.options else "")
        aliases = f"\n[dim]also: {', '.join(algo.aliases)}[/]" if algo.aliases else ""
        table.add_row(algo.collective, name + aliases,
                      model.FORMULAS[(algo.collective, algo.name)], algo.summary)
    Console().print(table)
    return 0
