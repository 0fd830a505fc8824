"""``commsim predict``: closed-form time, algbw and busbw of algorithms across sizes."""

from __future__ import annotations

from commsim import model
from commsim.cli.common import (
    SIZE_CONVENTION,
    add_channels,
    add_collectives,
    add_mode,
    add_profile,
    call_setting,
    check_finite,
    check_group_size,
    check_nranks,
    check_output,
    console,
    layout_options,
    load_topology,
    mode_words,
    one_level_note,
    prediction_setting,
    skipped,
    sweep,
    topology_model,
    topology_params,
    warm_note,
    write_json_lines,
)
from commsim.collectives.hierarchical import default_group_size
from commsim.errors import CommsimError
from commsim.report import tables
from commsim.units import format_bandwidth, format_size, format_time, parse_bandwidth, parse_time

DEFAULT_TOPOLOGY = "dgx-a100-4node"


def register(sub) -> None:
    p = sub.add_parser(
        "predict", help="closed-form alpha-beta predictions",
        description="Predict collective time with the alpha-beta-gamma model. "
        + SIZE_CONVENTION)
    add_collectives(p)
    p.add_argument("--size", "--sizes", dest="size", default="1K:1G",
                   help="bytes: 256M, or a doubling range 1K:1G, or a list 1K,1M")
    p.add_argument("--nranks", type=int, help="ranks, 2 or more (default: every gpu of the "
                   "topology; 8 with --alpha/--bandwidth)")
    p.add_argument("--alpha", help="latency per message with its unit, e.g. 5us (with "
                   "--bandwidth)")
    p.add_argument("--bandwidth", help="one link's bandwidth with its unit, e.g. 25GB/s or "
                   "400Gb/s (with --alpha)")
    p.add_argument("--gamma", help="reduction time per byte with its unit, e.g. 0.01ns "
                   "(default: the profile's, else 0)")
    p.add_argument("--topology", help=f"take alpha and bandwidth from a topology "
                   f"(default {DEFAULT_TOPOLOGY} when --alpha/--bandwidth are not given)")
    add_profile(p)
    p.add_argument("--ideal", action="store_true",
                   help="every link at line rate: ignore the topology's link efficiencies")
    p.add_argument("--chunks", default="auto",
                   help="a number K (K times the algorithm's natural chunking: pipeline "
                   "depth for trees and chains, pieces per message for rings and rhd) or "
                   "auto (best per size; default)")
    add_channels(p)
    add_mode(p, "predict for")
    p.add_argument("--group-size", type=int,
                   help="hierarchical (allreduce, alltoall): ranks per group, a divisor of "
                   "--nranks (default: the topology's gpus per node, else gcd(ranks, 8)); "
                   "groups of 1 or of every rank are one level (a ring, pairwise), and a "
                   "note says so")
    p.add_argument("--json", metavar="FILE", help="also write JSON lines, one per "
                   "collective/algorithm/size")
    p.set_defaults(func=run)


def _parameters(args) -> dict:
    """Where alpha and beta come from: flags, or a topology (loaded here)."""
    if (args.alpha is None) != (args.bandwidth is None):
        raise CommsimError("give both --alpha and --bandwidth, or neither (then --topology)")
    if args.alpha is not None:
        if args.topology is not None or args.profile is not None:
            raise CommsimError("--topology/--profile and --alpha/--bandwidth exclude each other")
        return {"where": "flags", "graph": None, "gpus": None, "channels": args.channels,
                "nranks": 8 if args.nranks is None else args.nranks,
                "alpha": parse_time(args.alpha, "--alpha", require_unit=True),
                "beta": 1.0 / parse_bandwidth(args.bandwidth, "--bandwidth",
                                              require_unit=True)}
    from commsim import topology  # only when a topology is asked for

    name, G = load_topology(args, DEFAULT_TOPOLOGY, ideal=args.ideal)
    ngpus = len(topology.gpus(G))
    return {"where": G.graph.get("name", name), "graph": G, "gpus": ngpus,
            "channels": args.channels,
            "nranks": ngpus if args.nranks is None else args.nranks}


def _algorithm_params(prm: dict, algo: str, group_size: int | None, G=None) -> tuple:
    """``(alpha, beta, options)`` for one algorithm (on ``G``, a view of the topology,
    when given)."""
    if prm["graph"] is None:
        opts = {"group_size": group_size} if algo == "hierarchical" and group_size else {}
        opts |= layout_options(None, prm["nranks"], algo, prm["channels"])
        return prm["alpha"], prm["beta"], opts
    return topology_params(prm["graph"] if G is None else G, prm["nranks"], algo, group_size,
                           prm["channels"])


def run(args) -> int:
    runs, size_list, nchunks, gamma_flag = sweep(args)
    prm = _parameters(args)
    p = prm["nranks"]
    check_nranks(p, args.nranks is not None, prm["where"], prm["gpus"])
    check_group_size(args.group_size, runs, p)
    if args.json is not None:
        check_output(args.json, "--json")
    rows = []
    algos = list(dict.fromkeys(a for _, names in runs for a in names))
    views: dict = {}  # id of the topology or its warm view -> (params, model on it)

    def on(G) -> tuple:
        if id(G) not in views:
            views[id(G)] = ({a: _algorithm_params(prm, a, args.group_size, G) for a in algos},
                            topology_model(G, p))
        return views[id(G)]

    mode, overlap = prediction_setting(prm["graph"], args.mode)
    for coll, names in runs:
        for size, algo in ((size, algo) for size in size_list for algo in names):
            G, gamma = call_setting(prm["graph"], size, p, gamma_flag)
            params, on_topology = on(G)
            a, b, opts = params[algo]
            k = model.nchunks_for(nchunks, coll, algo, p, size, a, b, gamma, mode=mode,
                                  overlap=overlap, **opts)
            k = k or model.default_nchunks(coll, algo, p)
            est = on_topology and on_topology(coll, algo, p, k, opts, size, gamma, mode,
                                              overlap=overlap)
            if est is not None:
                t, how, shared = est.time, "topology", est.shared
            else:
                t = model.predict(coll, algo, p, size, a, b, gamma, nchunks=k, mode=mode,
                                  overlap=overlap, **opts)
                how, shared = "flat", prm["graph"] is not None
            algbw = size / t if t > 0 else float("nan")   # refused by check_finite
            rows.append(dict(collective=coll, algorithm=algo, nranks=p, size=size,
                             nchunks=k, time_us=t * 1e6, algbw_gbps=algbw / 1e9,
                             busbw_gbps=algbw * model.busbw_factor(coll, p) / 1e9,
                             alpha_us=a * 1e6, bandwidth_gbps=1e-9 / b, model=how,
                             estimate=shared, mode=mode, overlap=overlap,
                             warm=G.graph.get("warm", 0.0) if G is not None else 0.0))
    check_finite(rows, "give realistic --alpha, --bandwidth and --gamma (with units)"
                 if prm["graph"] is None else "check the topology's links and --gamma")
    out = console()
    colls = [c for c, _ in runs]
    flat_a, flat_b, _ = _algorithm_params(prm, "ring", None)
    line = (f"[bold]{', '.join(colls)}[/] on {p} ranks, {prm['where']}: alpha "
            f"{format_time(flat_a)}, link {format_bandwidth(1 / flat_b)}, "
            f"{mode_words(mode, overlap)}")
    params, on_topology = on(prm["graph"])  # the header's: the topology as given
    hier = params.get("hierarchical")
    if hier and "alpha_inter" in hier[2]:
        line += (f"; hierarchical: groups of {hier[2]['group_size']}, alpha "
                 f"{format_time(hier[0])} and link {format_bandwidth(1 / hier[1])} inside")
    out.print(line)
    several = len(colls) > 1
    if len(size_list) == 1:
        tables.show(_rows_table(rows, several))
    else:
        tables.show([_table(rows, runs, size_list, "time_us", "predicted time (us)"),
                     _table(rows, runs, size_list, "busbw_gbps", "busbw (GB/s)")])
    group = hier[2].get("group_size") if hier else None   # None: the builder's default
    for note in [skipped(args, runs)] + [
            one_level_note(c, group or default_group_size(p), p, several)
            for c, names in runs if "hierarchical" in names] + [warm_note(rows)]:
        if note:
            out.print(f"note: {note}")
    if on_topology:
        out.print("[dim]model on the topology: every transfer on its own route, its step's "
                  "own flows sharing links evenly; busbw = algbw x nccl-tests factor; * marks "
                  f"the fastest algorithm per {'collective and ' if several else ''}size[/]")
        rough = sorted({(f"{r['collective']} " if several else "") + r["algorithm"]
                         for r in rows if r["estimate"]})
        if rough:
            out.print(f"[yellow]estimate[/] for {', '.join(rough)}: flows of one step share "
                      "links here (or the schedule is too large to price: the flat formula); "
                      "`commsim simulate` is the reference")
    else:
        out.print("[dim]alpha-beta model (no protocol efficiency); busbw = algbw x "
                  "nccl-tests factor; * marks the fastest algorithm per "
                  f"{'collective and ' if several else ''}size[/]")
    if args.json is not None:
        write_json_lines(args.json, rows)
        out.print(f"wrote {args.json}")
    return 0


def _number(value: float) -> str:
    """Four significant digits, never in exponent form for the values tables hold."""
    return f"{value:,.0f}" if value >= 1000 else f"{value:.4g}"


def _rows_table(rows: list[dict], several: bool = False) -> tables.Table:
    """One size: a row per (collective,) algorithm with its chunks, time, algbw and busbw;
    ``*`` marks the fastest of each collective."""
    first = ["collective"] if several else []
    table = tables.Table(f"predicted, size {format_size(rows[0]['size'])}",
                         [*first, "algorithm", "chunks", "time (us)", "algbw (GB/s)",
                          "busbw (GB/s)"], align=["l"] * (len(first) + 1) + ["r"] * 4)
    for r in rows:
        mine = [x["time_us"] for x in rows if x["collective"] == r["collective"]]
        mark = "*" if r["time_us"] == min(mine) and len(mine) > 1 else ""
        table.add([*([r["collective"]] if several else []), r["algorithm"], str(r["nchunks"]),
                   _number(r["time_us"]) + mark, _number(r["algbw_gbps"]),
                   _number(r["busbw_gbps"])])
    return table


def _table(rows: list[dict], runs: list[tuple[str, list[str]]], size_list: list[int],
           key: str, title: str) -> tables.Table:
    """One row per (collective,) size, one column per algorithm (``-`` where the row's
    collective has none of that name); ``*`` marks the fastest of a row."""
    several = len(runs) > 1
    algos = list(dict.fromkeys(a for _, names in runs for a in names))
    first = ["collective"] if several else []
    table = tables.Table(title, [*first, "size", *algos],
                         align=["l"] * len(first) + ["r"] * (len(algos) + 1))
    cell = {(r["collective"], r["algorithm"], r["size"]): r for r in rows}
    for coll, names in runs:
        for size in size_list:
            best = min(cell[(coll, a, size)]["time_us"] for a in names)
            cells = [*([coll] if several else []), format_size(size)]
            for algo in algos:
                r = cell.get((coll, algo, size))
                if r is None:
                    cells.append("-")
                    continue
                mark = "*" if r["time_us"] == best and len(names) > 1 else ""
                cells.append(_number(r[key]) + mark)
            table.add(cells)
    return table
