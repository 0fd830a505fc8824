"""Flag parsing shared by the verbs: collectives, algorithm lists, sizes and chunking."""

from __future__ import annotations

import json
import sys

from rich.console import Console

from commsim import collectives, model
from commsim.errors import CommsimError
from commsim.units import parse_size_range, parse_time

SIZE_CONVENTION = (
    "Sizes follow nccl-tests: one rank's buffer for allreduce/broadcast/reduce, the whole "
    "gathered buffer for allgather/reduce_scatter; algbw = size / time, busbw = algbw * "
    "nccl-tests' factor (2(p-1)/p allreduce, (p-1)/p allgather and reduce_scatter, 1 "
    "broadcast and reduce). Line rate, no protocol overhead: measured busbw usually sits "
    "at 75-85%% of it.")


def algorithm_list(collective: str, text: str) -> list[str]:
    """Canonical algorithm names from ``ring,tree`` or ``all`` (every one of the collective)."""
    collective = collectives.resolve_collective(collective)
    if text.strip().lower() == "all":
        return [a.name for a in collectives.algorithms(collective)]
    names = [collectives.resolve(collective, part.strip()).name
             for part in text.split(",") if part.strip()]
    if not names:
        raise CommsimError("--algorithm: give at least one name, e.g. ring,tree, or all")
    return list(dict.fromkeys(names))


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
    return value


def sweep(args) -> tuple[str, list[str], list[int], int | str | None, float]:
    """``(collective, algorithms, sizes, chunks, gamma)`` from the flags that ``predict``
    and ``simulate`` share (``--collective --algorithm --size --chunks --gamma``)."""
    coll = collectives.resolve_collective(args.collective)
    gamma = None if args.gamma is None else parse_time(args.gamma, "--gamma")
    return (coll, algorithm_list(coll, args.algorithm), sizes(args.size),
            chunks(args.chunks), gamma)


def add_profile(parser) -> None:
    """``--profile PATH``: a network profile from ``commsim calibrate``."""
    parser.add_argument("--profile", metavar="PATH",
                        help="a network profile written by commsim calibrate: a topology with "
                        "measured links, reduction rate and executor overhead (the same as "
                        "--topology PATH, and its gamma unless --gamma is given)")


def topology_choice(args, default: str | None) -> str | None:
    """The topology a verb uses: ``--profile``, ``--topology`` (not both), or ``default``."""
    profile = getattr(args, "profile", None)
    if profile and args.topology:
        raise CommsimError("--profile and --topology exclude each other: a profile is a "
                           "topology; give one of them")
    return profile or args.topology or default


def model_gamma(gamma: float | None, G) -> float:
    """``--gamma`` when given, else the profile's measured reduction cost, else 0."""
    if gamma is not None:
        return gamma
    return float((G.graph.get("model") or {}).get("gamma", 0.0)) if G is not None else 0.0


def per_rank(items: list[str] | None, field: str, parse) -> dict[int, float]:
    """``{rank: value}`` from repeated ``RANK:VALUE`` flags (``3:200us``, ``0:2.5``)."""
    out: dict[int, float] = {}
    for item in items or []:
        rank_text, sep, value_text = str(item).partition(":")
        if not sep or not rank_text.strip().isdigit():
            raise CommsimError(f"{field}: {item!r} is not RANK:VALUE, e.g. {field} 3:200us")
        out[int(rank_text)] = parse(value_text)
    return out


def topology_params(G, nranks: int, algorithm: str,
                    group_size: int | None = None) -> tuple[float, float, dict]:
    """``(alpha, beta, options)`` the closed form should use for ``algorithm`` on ``G``.

    Flat algorithms see the slowest path from rank 0 (:func:`commsim.model.alpha_beta`).
    A profile's measured executor ``step_overhead`` adds to alpha: every step pays it.
    ``hierarchical`` groups ranks by the topology's ``gpus_per_node`` (or
    ``group_size``): alpha and beta inside a group, ``alpha_inter`` and ``beta_inter``
    across groups.
    """
    extra = float((G.graph.get("model") or {}).get("step_overhead", 0.0))
    alpha, beta = model.alpha_beta(G, nranks)
    group = group_size or (G.graph.get("params") or {}).get("gpus_per_node")
    if algorithm != "hierarchical" or not group or nranks % group or group in (1, nranks):
        return alpha + extra, beta, ({"group_size": group_size} if group_size else {})
    a_in, b_in = model.alpha_beta(G, group)
    return a_in + extra, b_in, {"group_size": group, "alpha_inter": alpha + extra,
                                "beta_inter": beta}


def console(stderr: bool = False) -> Console:
    """A rich console; one writing to a file or pipe gets 160 columns, not 80, so that
    wide tables stay readable in logs."""
    stream = sys.stderr if stderr else sys.stdout
    return Console(stderr=stderr, width=None if stream.isatty() else 160)


def write_json_lines(path: str, rows: list[dict]) -> None:
    """One JSON object a line, as the verbs' ``--json FILE`` promises."""
    with open(path, "w") as fh:
        fh.writelines(json.dumps(row) + "\n" for row in rows)
