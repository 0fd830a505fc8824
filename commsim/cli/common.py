"""Flag parsing shared by the verbs: collectives, algorithm lists, sizes and chunking."""

from __future__ import annotations

import json
import math
import os
import sys
from pathlib import Path

from rich.console import Console

from commsim import topology
from commsim.collectives.select import (  # noqa: F401  (the verbs import them from here)
    collective_algorithms,
    collective_list,
    names,
)
from commsim.errors import CommsimError
from commsim.model.setup import (  # noqa: F401  (the verbs import them from here too)
    BUILD_OPTIONS,
    MODEL_BUDGET,
    build_options,
    layout_options,
    prediction_setting,
    topology_model,
    topology_params,
)
from commsim.report.files import write_atomic
from commsim.units import format_size, parse_size_range, parse_time

SIZE_CONVENTION = (
    "Sizes follow nccl-tests: one rank's buffer for allreduce/broadcast/reduce/alltoall, "
    "the whole gathered buffer for allgather/reduce_scatter; algbw = size / time, busbw = "
    "algbw * nccl-tests' factor (2(p-1)/p allreduce, (p-1)/p allgather, reduce_scatter "
    "and alltoall, 1 "
    "broadcast and reduce). Line rate, no protocol overhead: measured busbw usually sits "
    "at 75-85% of it.")


def algorithm_list(collective: str, text: str) -> list[str]:
    """Canonical algorithm names of one collective from ``ring,tree`` or ``all`` (every
    one of the collective)."""
    return collective_algorithms(collective, text)[0][1]


def sizes(text: str, field: str = "--size") -> list[int]:
    """Sizes in bytes from ``256M``, ``1K:1G`` (doubling) or ``1K,64K``."""
    return parse_size_range(text, field)


def chunks(text: str | None) -> int | str | None:
    """``--chunks``: a whole number >= 1, ``auto`` (best pipeline depth), or absent."""
    if text is None or str(text).lower() == "auto":
        return "auto" if text is not None else None
    try:
        value = int(text)
    except ValueError:
        raise CommsimError(f"--chunks: {text!r} is not a whole number or 'auto'") from None
    if value < 1:
        raise CommsimError(f"--chunks: {text!r} must be at least 1")
    if value > MAX_CHUNKS:
        raise CommsimError(f"--chunks: {text!r} is more than {MAX_CHUNKS:,} pieces a message; "
                           "give a smaller number or auto")
    return value


MAX_CHUNKS = 2**31   # --chunks: a pipeline depth no schedule's indices can hold beyond


def sweep(args) -> tuple[list[tuple[str, list[str]]], list[int], int | str | None, float]:
    """``(runs, sizes, chunks, gamma)`` from the flags that ``predict`` and ``simulate``
    share (``--collective --algorithm --size --chunks --gamma``). ``runs`` is
    ``[(collective, [algorithm, ...]), ...]`` (:func:`collective_algorithms`), without
    the collectives that have none of the algorithms asked for."""
    runs = [(c, algos) for c, algos in collective_algorithms(args.collective, args.algorithm)
            if algos]
    # a unit is required: a bare 0.01 would be 0.01 s a byte (0 needs none)
    gamma = None if args.gamma is None else parse_time(args.gamma, "--gamma", require_unit=True,
                                                       units=("ns", "us"))
    return runs, sizes(args.size), chunks(args.chunks), gamma


def skipped(args, runs: list[tuple[str, list[str]]]) -> str | None:
    """A note naming the collectives ``--collective`` asked for that have none of the
    ``--algorithm`` names (they give no rows), or None."""
    shown = {c for c, _ in runs}
    missing = [c for c in collective_list(args.collective) if c not in shown]
    if not missing:
        return None
    return (f"{', '.join(missing)}: none of the algorithms asked for "
            f"({', '.join(names(args.algorithm))}); no rows")


def add_collectives(p) -> None:
    """``--collective`` and ``--algorithm`` as ``simulate`` and ``predict`` take them
    (parsed by :func:`commsim.collectives.select.collective_algorithms`)."""
    p.add_argument("--collective", default="allreduce",
                   help="allreduce, reduce_scatter, allgather, broadcast, reduce, alltoall; "
                   "comma-separated for several, or all (default allreduce)")
    p.add_argument("--algorithm", default="all",
                   help="comma-separated names, or all (default: every algorithm of each "
                   "collective); with several collectives a name applies to those that have "
                   "it")


def add_profile(parser) -> None:
    """``--profile PATH``: a network profile from ``commsim calibrate``."""
    parser.add_argument("--profile", metavar="PATH",
                        help="a network profile written by commsim calibrate: a topology with "
                        "measured links, reduction rate and executor overhead (the same as "
                        "--topology PATH, and its gamma unless --gamma is given)")


def add_mode(parser, verb: str) -> None:
    """``--mode step|dataflow``: the execution mode to ``verb``; default: the profile's."""
    parser.add_argument("--mode", choices=("step", "dataflow"),
                        help=f"the execution mode to {verb}: step (ranks go step by step, "
                        "the executors' step mode) or dataflow (a transfer waits only for "
                        "its data, the executors' default); default: the mode the profile "
                        "measured, else step")


def mode_words(mode: str, overlap: bool) -> str:
    """The header's words for an execution mode, and for reductions that cannot overlap
    transfers (a profile whose ranks have fewer than two cores each)."""
    return f"{mode} mode" + ("" if overlap else ", reductions not overlapping transfers "
                             "(the profile's cores per rank)")


def add_sim_workers(parser) -> None:
    """``--workers N``: processes the simulator forks for a run's independent groups."""
    parser.add_argument("--workers", type=int, metavar="N",
                        help="processes that simulate a phase's independent groups at once "
                        "(default: every core this process may use; 1: none forked); the "
                        "results are the same for any number")


def sim_workers(args) -> int:
    """``--workers`` (:func:`add_sim_workers`), checked; every usable core if not given."""
    from commsim.plan.pool import default_workers

    if args.workers is not None and args.workers < 1:
        raise CommsimError("--workers: must be 1 or more (1: simulate in this process)")
    return args.workers if args.workers is not None else default_workers()


def topology_choice(args, default: str | None) -> str | None:
    """The topology a verb uses: ``--profile``, ``--topology`` (not both), or ``default``."""
    profile = getattr(args, "profile", None)
    for flag, value in (("--profile", profile), ("--topology", args.topology)):
        if value is not None and not str(value).strip():
            raise CommsimError(f"{flag}: empty; give a {flag[2:]} name or YAML path, or "
                               "leave the flag out")
    if profile is not None and args.topology is not None:
        raise CommsimError("--profile and --topology exclude each other: a profile is a "
                           "topology; give one of them")
    return profile if profile is not None else \
        args.topology if args.topology is not None else default


def load_topology(args, default: str | None, ideal: bool = False):
    """``(name, graph)`` of :func:`topology_choice`; an error in a ``--profile`` says so."""
    name = topology_choice(args, default)
    try:
        return name, topology.load(name, ideal=ideal)
    except CommsimError as exc:
        if getattr(args, "profile", None) is not None:
            raise CommsimError(f"--profile: {exc}") from None
        raise


def model_gamma(gamma: float | None, G) -> float:
    """``--gamma`` when given, else the profile's measured reduction cost, else 0."""
    if gamma is not None:
        return gamma
    return float(topology.model_parameter(G, "gamma", 0.0))


def call_setting(G, size: int, nranks: int, gamma_flag: float | None) -> tuple:
    """``(topology, gamma)`` for a call of ``size`` bytes a rank, repeated as a benchmark
    repeats it: a profile's warm view where some of the call's data stays in its cache
    (:func:`commsim.topology.warm.for_call`), and that view's gamma unless ``--gamma``
    (``gamma_flag``) was given."""
    if G is None:
        return None, model_gamma(gamma_flag, None)
    from commsim.topology import warm

    view = warm.for_call(G, size, nranks)
    return view, model_gamma(gamma_flag, view)


def warm_note(rows: list[dict]) -> str | None:
    """A line on the rows whose calls find their data in a profile's cache (``warm``: the
    share of it, :mod:`commsim.topology.warm`), or None where none do."""
    warm = [r for r in rows if r.get("warm")]
    if not warm:
        return None
    whole = [r["size"] for r in warm if r["warm"] >= 1]
    least = min(warm, key=lambda r: (r["warm"], -r["size"]))
    parts = ([f"all of it up to {format_size(max(whole))}"] if whole else []) + \
        ([f"{least['warm']:.0%} of it at {format_size(least['size'])}"]
         if least["warm"] < 1 else [])
    return (f"{len(warm)} of {len(rows)} rows keep part of their data in the profile's "
            f"cache from one call to the next, as a benchmark repeats them ({', '.join(parts)})"
            ": its warm rates price that share (docs/calibrate.md)")


def per_rank(items: list[str] | None, field: str, parse) -> dict[int, float]:
    """``{rank: value}`` from repeated ``RANK:VALUE`` flags (``3:200us``, ``0:2.5``)."""
    out: dict[int, float] = {}
    for item in items or []:
        rank_text, sep, value_text = str(item).partition(":")
        if not sep or not rank_text.strip().isdigit():
            raise CommsimError(f"{field}: {item!r} is not RANK:VALUE, e.g. {field} 3:200us")
        out[int(rank_text)] = parse(value_text)
    return out


def add_channels(p) -> None:
    """``--channels auto|N`` for verbs that build rings and nccl_tree on a topology."""
    p.add_argument("--channels", default="auto", type=_channels,
                   help="ring and nccl_tree: parallel rings/trees, each with 1/N of the "
                        "buffer; auto (default) takes one a NIC and the node size from a "
                        "node-structured topology (DGX presets: rail-aligned rings), else 1")


def _channels(text: str):
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        value = int(text)
    except ValueError:
        value = 0
    if not 1 <= value <= MAX_CHANNELS:
        raise CommsimError(f"--channels: {text!r} must be auto or a whole number from 1 to "
                           f"{MAX_CHANNELS}")
    return value


MAX_CHANNELS = 1024   # --channels: rings or trees at once (NCCL runs at most 64)


def console(stderr: bool = False) -> Console:
    """A rich console; one writing to a file or pipe gets 160 columns, not 80, so that
    wide tables stay readable in logs."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def check_nranks(p: int, given: bool, where: str, ngpus: int | None) -> None:
    """``--nranks``: 2 or more (one rank has nothing to communicate: its time would be 0,
    its bandwidths inf and nan), and no more than the topology's gpus (``ngpus``)."""
    if not given and p < 2:
        raise CommsimError(f"--nranks: topology {where!r} has {p} gpu(s), and 1 rank has "
                           "nothing to communicate; give a topology with 2 or more gpus")
    if p == 1:
        raise CommsimError("--nranks: 1 rank has nothing to communicate; give 2 or more")
    if p < 1:
        raise CommsimError(f"--nranks: {p} is not a number of ranks; give 2 or more")
    if ngpus is not None and p > ngpus:
        raise CommsimError(f"--nranks: {p} ranks need {p} gpus; topology {where!r} has "
                           f"{ngpus}")


def check_output(path: str, flag: str) -> Path:
    """Refuse, before any work, an output path that cannot be written.

    ``path`` may not be a folder, its first existing ancestor must be a writable folder
    (missing folders below it are created when the file is written, see
    :func:`make_parent`), and an existing file must be writable. Nothing is created here.
    """
    text = str(path)
    if not text.strip():
        raise CommsimError(f"{flag}: give a file name")
    if "\0" in text:
        raise CommsimError(f"{flag}: {text!r} holds a NUL character, which no file name can")
    p = Path(text)
    try:
        if p.is_dir():
            raise CommsimError(f"{flag}: {text!r} is a folder; give a file name (inside it, "
                               "if you like)")
        if p.exists():
            if not os.access(p, os.W_OK):
                raise CommsimError(f"{flag}: {text!r} is not writable; choose another path")
            return p
        folder = p.absolute().parent
        while not folder.exists() and folder != folder.parent:
            folder = folder.parent   # the first that exists; the ones below it get created
    except OSError as exc:
        raise CommsimError(f"{flag}: cannot write {text!r}: {exc.strerror or exc}") from None
    if not folder.is_dir():
        raise CommsimError(f"{flag}: cannot write {text!r}: {str(folder)!r} is a file, not a "
                           "folder; choose another path")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise CommsimError(f"{flag}: cannot write {text!r}: folder {str(folder)!r} is not "
                           "writable; choose another path")
    return p


def make_parent(path: str, flag: str) -> None:
    """Create the missing folders above ``path`` (checked by :func:`check_output`)."""
    try:
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise CommsimError(f"{flag}: cannot create the folder of {str(path)!r}: "
                           f"{exc.strerror or exc}") from None


def _not_finite(value, key: str = "") -> str | None:
    """The key of the first inf or nan in ``value`` (nested dicts and lists), else None."""
    if isinstance(value, float):
        return None if math.isfinite(value) else key
    if isinstance(value, dict):
        pairs = ((f"{key}.{k}" if key else str(k), v) for k, v in value.items())
    elif isinstance(value, (list, tuple)):
        pairs = ((f"{key}[{i}]", v) for i, v in enumerate(value))
    else:
        return None
    for k, v in pairs:
        found = _not_finite(v, k)
        if found:
            return found
    return None


def check_finite(rows: list[dict], fix: str) -> None:
    """Refuse result rows that hold inf or nan: a table would print them and JSON cannot
    carry them. ``fix`` says which flags to change."""
    for row in rows:
        key = _not_finite(row)
        if key:
            raise CommsimError(
                f"{row.get('collective')}/{row.get('algorithm')} at "
                f"{format_size(row['size'])} on {row.get('nranks')} ranks: {key} comes out "
                f"infinite or undefined; {fix}")


def write_json_lines(path: str, rows: list[dict], flag: str = "--json") -> None:
    """One JSON object a line, as the verbs' ``--json FILE`` promises, written atomically
    (:func:`~commsim.report.files.write_atomic`). Missing folders above ``path`` are
    created; inf and nan, which JSON cannot carry, are refused."""
    try:
        lines = [json.dumps(row, allow_nan=False) + "\n" for row in rows]
    except ValueError:
        raise CommsimError(f"{flag}: a row holds inf or nan, which JSON cannot carry; "
                           "nothing written") from None
    try:
        write_atomic(path, "".join(lines))
    except OSError as exc:
        raise CommsimError(f"{flag}: cannot write {str(path)!r}: {exc.strerror or exc}") \
            from None


def check_group_size(group: int | None, runs, p: int) -> None:
    """``--group-size`` only where it is honoured: hierarchical (of allreduce or alltoall),
    dividing the ranks. ``runs``: algorithm names, or ``[(collective, [algorithm, ...])]``."""
    if group is None:
        return
    algos = [a for item in runs for a in ([item] if isinstance(item, str) else item[1])]
    if "hierarchical" not in algos:
        raise CommsimError("--group-size: only the hierarchical algorithm (of allreduce and "
                           "alltoall) has groups; add hierarchical to --algorithm or drop "
                           "--group-size")
    if group < 1 or p % group:
        divisors = [d for d in range(1, p + 1) if p % d == 0]
        shown = ", ".join(map(str, divisors[:12])) + (", ..." if len(divisors) > 12 else "")
        raise CommsimError(f"--group-size: {group} does not divide {p} ranks; give a "
                           f"divisor of {p} ({shown})")


# what a two-level algorithm is when its groups hold one rank or every rank: the same
# transfers, step for step (tests/test_cli_simulate.py checks the schedules)
ONE_LEVEL = {"allreduce": "a ring (one channel)", "alltoall": "pairwise"}


def one_level_note(collective: str, group: int, p: int, name: bool = False) -> str | None:
    """The note for ``hierarchical`` whose groups of ``group`` (the group size its
    schedule and model use) leave one level on ``p`` ranks, else None. ``name``: say
    which collective (when several are shown)."""
    if collective not in ONE_LEVEL or group not in (1, p):
        return None
    shape = "is one group" if group == p else "has one rank a group"
    who = f"{collective} " if name else ""
    return (f"{who}hierarchical with groups of {group} on {p} ranks {shape}: the schedule is "
            f"{ONE_LEVEL[collective]}, transfer for transfer")
