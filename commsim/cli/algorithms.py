"""``commsim algorithms``: every (collective, algorithm) with its summary and cost formula."""

from __future__ import annotations

from commsim import collectives, model
from commsim.report.tables import Table, show


def register(sub) -> None:
    p = sub.add_parser("algorithms", help="list every collective algorithm and its cost formula",
                       description="List every (collective, algorithm) pair with its cost "
                       "formula (a = alpha, seconds per message; b = beta, seconds per byte; "
                       "g = gamma, seconds per byte reduced; S bytes; p ranks).")
    p.add_argument("--collective", help="only this collective")
    p.set_defaults(func=run)


def run(args) -> int:
    table = Table("commsim algorithms (a: s/message, b: s/byte, g: s/byte reduced)",
                  ["collective", "algorithm", "options", "aliases", "time", "how"],
                  align=["l"] * 6)
    for algo in collectives.algorithms(args.collective):
        table.add([algo.collective, algo.name, ", ".join(algo.options),
                   ", ".join(algo.aliases), model.FORMULAS[(algo.collective, algo.name)],
                   algo.summary])
    show([table])
    return 0
