"""``commsim <verb>``: the command line. Thin: it parses flags and calls the packages.

Each verb is one module of this package with ``register(subparsers)``, which adds its
parser and sets ``func`` to a callable ``(args) -> int``. Bad input anywhere below
raises :class:`~commsim.errors.CommsimError`; :func:`main` prints its one line and
exits with code 2, without a traceback.
"""

from __future__ import annotations

import argparse
import difflib
import importlib
import re
import signal
import sys

from commsim import __version__
from commsim.errors import CommsimError, unknown
from commsim.report import tables

VERBS = ("algorithms", "predict", "topo", "simulate", "bench", "calibrate", "compare", "ddp",
         "workload", "plan", "sweep")


class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors are one line (usage stays behind ``--help``)."""

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {_suggest(message)} (see {self.prog} --help)\n")


def _verb_parser(parser, args):
    """The parser of the verb ``args`` name, or None."""
    sub = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)),
               None)
    verb = getattr(args, "verb", None)
    return sub.choices.get(verb) if sub is not None and verb else None


def _unrecognized(verb_parser, extra: list[str]) -> str:
    """argparse's "unrecognized arguments", with the verb's closest flag for each
    unknown one (``--topolgy``: did you mean '--topology'?)."""
    text = f"unrecognized arguments: {' '.join(extra)}"
    if verb_parser is None:
        return text
    flags = [f[2:] for a in verb_parser._actions for f in a.option_strings
             if f.startswith("--")]
    hints = []
    for word in extra:
        name = word.split("=", 1)[0]
        if name.startswith("--"):   # compared without the dashes, which every flag shares
            close = difflib.get_close_matches(name[2:], flags, n=1, cutoff=0.7)
            if close:
                hints.append(f"{name}: did you mean '--{close[0]}'?")
    return text + (f" ({'; '.join(hints)})" if hints else "")


def _suggest(message: str) -> str:
    """argparse's "invalid choice" with close matches offered first (``simulat``: did
    you mean 'simulate'?); any other message as it is."""
    found = re.fullmatch(r"argument (.+?): invalid choice: '(.*)' \(choose from (.*)\)",
                         message, re.S)
    if not found:
        return message
    where, value, listed = found.groups()
    known = re.findall(r"'([^']*)'", listed) or [c.strip() for c in listed.split(",")]
    return f"{where}: {unknown('verb' if where == 'VERB' else 'choice', value, known)}"


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="commsim",
        description="Simulate and benchmark collective communication: closed-form "
        "models, a flow-level simulator and real execution of one message schedule.",
    )
    parser.add_argument("--version", action="version", version=f"commsim {__version__}")
    sub = parser.add_subparsers(dest="verb", metavar="VERB")
    for verb in VERBS:
        importlib.import_module(f"commsim.cli.{verb}").register(sub)
    for verb_parser in sub.choices.values():
        _add_format(verb_parser)
    return parser


def _add_format(parser: argparse.ArgumentParser) -> None:
    """``--format auto|rich|plain`` on every verb (and sub-verb) that has no ``--format``
    of its own (``topo export``'s is the file's)."""
    subs = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    for action in subs:
        for child in action.choices.values():
            _add_format(child)
    if subs or "--format" in parser._option_string_actions:
        return
    parser.add_argument("--format", dest="table_format", choices=tables.FORMATS,
                        default="auto",
                        help="tables: rich on a terminal and plain columns (one '#' header "
                        "line, one row per line) anywhere else (auto, the default), or "
                        "always rich or plain")


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:
        flags = _verb_parser(parser, args)
        (flags or parser).error(_unrecognized(flags, extra))
    if not getattr(args, "func", None):  # no verb: say what there is, and fail
        parser.print_help(sys.stderr)
        return 2
    tables.set_format(getattr(args, "table_format", "auto"))
    try:
        return int(args.func(args) or 0)
    except CommsimError as exc:
        print(f"commsim {args.verb}: error: {exc}", file=sys.stderr)
        return 2
    except MemoryError:
        # numpy's allocation failures are MemoryErrors: one line, not an allocator traceback
        print(f"commsim {args.verb}: error: out of memory: the run needs more memory than "
              "this machine gives it; use fewer ranks, chunks or a smaller size",
              file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C: no second traceback
        print(f"commsim {args.verb}: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:
        return 0
