"""``commsim workload``: a training workload's parallel layout on a topology, and its step.

::

    commsim workload list
    commsim workload show --topology dgx-h100-32node --workload gpt3-175b-tp8-pp4
    commsim workload show --topology dgx-h100-32node --workload tp8-dp32 --tp 4 --json
"""

from __future__ import annotations

import json

from commsim import topology
from commsim.errors import CommsimError
from commsim.report import tables
from commsim.units import format_bytes

DIM_ORDER = ("tp", "cp", "ep", "edp", "dp", "pp")
SHOWN = 4  # members of a group shown in full before eliding the middle


def register(subparsers) -> None:
    parser = subparsers.add_parser(
        "workload", help="parallel layouts (TP/CP/PP/DP/EP) on a topology and a training "
        "step's communication",
        description="A training workload: its parallel layout mapped onto a topology's gpus "
        "(Megatron's rank order, TP fastest) and the collectives of one step per GPU. Sizes "
        "follow nccl-tests (one rank's buffer; the whole gathered buffer for allgather and "
        "reduce_scatter; one rank's whole send buffer for alltoall), binary suffixes.")
    sub = parser.add_subparsers(dest="workload_command", metavar="COMMAND", required=True)

    p = sub.add_parser("list", help="list the shipped workloads (workloads/ and "
                       "$COMMSIM_WORKLOAD_PATH)")
    p.set_defaults(func=_list)

    p = sub.add_parser("show", help="the layout's groups (rank -> gpu, link classes) and the "
                       "step's collectives with their bytes, counts and traffic per GPU")
    p.add_argument("--topology", required=True, metavar="NAME|PATH",
                   help="a topology preset or YAML file")
    p.add_argument("--workload", required=True, metavar="NAME|PATH",
                   help="a workload YAML file or a shipped name (commsim workload list)")
    for dim in ("tp", "cp", "pp", "dp", "ep"):
        p.add_argument(f"--{dim}", type=int, metavar="N",
                       help=f"{dim.upper()} degree (overrides the file)"
                       + ("; default: what remains of the topology's gpus" if dim == "dp"
                          else ""))
    p.add_argument("--order", help="rank order, fastest first (default tp-cp-ep-dp-pp)")
    p.add_argument("--placement", default="linear",
                   help="which gpu each rank gets: linear (default), spread or random[:SEED]")
    p.add_argument("--routing", choices=("ecmp", "static"), default="ecmp",
                   help="routes used to find the link classes a group's traffic crosses")
    p.add_argument("--groups", action="store_true",
                   help="also list every group of every dimension: its members (rank:gpu) "
                        "and the link classes its own traffic crosses")
    p.add_argument("--json", action="store_true", help="print the same as JSON (bytes)")
    p.set_defaults(func=_show)


def _list(args) -> int:
    from commsim.workload import read_workload, workload_names

    table = tables.Table("commsim workloads", ["name", "layout", "description"],
                         align=["l", "l", "l"])
    for name in workload_names():
        try:
            spec = read_workload(name)
        except CommsimError as exc:
            table.add([name, "-", f"error: {exc}"])
            continue
        layout = " ".join(f"{k}={v}" for k, v in spec.layout.items())
        table.add([name, layout or "-", spec.description])
    tables.show(table)
    return 0


def _members(group: list[int], placement: list) -> str:
    cells = [f"{r}:{placement[r]}" for r in group]
    if len(cells) > SHOWN:
        cells = cells[:SHOWN - 1] + ["...", cells[-1]]
    return ",".join(cells)


def _dims(layout, ops) -> list[str]:
    dims = list(DIM_ORDER)
    dims += [op.dim for op in ops if op.dim not in dims]
    return list(dict.fromkeys(dims))


def _show(args) -> int:
    from commsim.topology.routing import Router
    from commsim.workload import (
        group_links,
        place_layout,
        read_workload,
        resolve_layout,
        step_ops,
        traffic_per_gpu,
    )

    G = topology.load(args.topology)
    ngpus = len(topology.gpus(G))
    spec = read_workload(args.workload)
    layout = resolve_layout(spec.layout, ngpus, tp=args.tp, cp=args.cp, pp=args.pp,
                            dp=args.dp, ep=args.ep, order=args.order)
    shape = spec.shape
    ops = step_ops(shape, layout)
    placement = place_layout(G, layout, args.placement)
    router = Router(G, placement, args.routing)
    dims = []
    for dim in _dims(layout, ops):
        groups = layout.groups(dim)
        links = group_links(G, placement, groups, router=router, ring=dim != "pp")
        dims.append({"dim": dim, "groups": len(groups), "size": len(groups[0]),
                     "first_groups": [[{"rank": r, "gpu": str(placement[r])} for r in g]
                                      for g in groups[:2]],
                     "link_classes": links})
    every = []
    if args.groups:
        for d in dims:
            if d["size"] == 1:
                continue
            for i, g in enumerate(layout.groups(d["dim"])):
                links = group_links(G, placement, [g], router=router, ring=d["dim"] != "pp")
                every.append({"dim": d["dim"], "index": i,
                              "members": [{"rank": r, "gpu": str(placement[r])} for r in g],
                              "link_classes": links})
    traffic = traffic_per_gpu(ops)
    name = G.graph.get("name", args.topology)
    if args.json:
        print(json.dumps({
            "workload": spec.name, "topology": name, "gpus": ngpus,
            "placement": args.placement, "routing": args.routing,
            "layout": layout.as_dict(), "model": shape.as_dict(), "dims": dims,
            "ops": [{"dim": op.dim, "collective": op.collective, "phase": op.phase,
                     "nbytes": op.nbytes, "count": op.count, "ranks": op.ranks,
                     "traffic_per_gpu": op.traffic, "label": op.label} for op in ops],
            "traffic_per_gpu": traffic}
            | ({"groups": every} if args.groups else {}), indent=2))
        return 0
    print(f"workload {spec.name} on {name} ({ngpus} gpus, {args.placement} placement): "
          f"{layout.describe()}")
    moe = (f", {shape.experts} experts top-{shape.top_k} on {shape.moe_layers} layers"
           if shape.experts else "")
    print(f"model: {shape.total_params / 1e9:.4g}e9 parameters, {shape.layers} layers "
          f"({shape.layers // layout.pp} a stage), hidden {shape.hidden}, {shape.seq_len} "
          f"tokens, micro-batch {shape.micro_batch} x {shape.micro_batches}, "
          f"{shape.dtype_bytes} bytes an element{moe}; {shape.strategy}"
          + (", sequence parallel" if shape.sequence_parallel else "")
          + (", DP overlapped with backward" if shape.overlap_dp else ""))
    groups = tables.Table("groups (rank:gpu; links: classes the group's traffic crosses)",
                          ["dim", "groups", "size", "first group", "second group", "links"],
                          align=["l", "r", "r", "l", "l", "l"])
    for d in dims:
        if d["size"] == 1 or (d["dim"].startswith("edp") and layout.ep == 1):
            continue    # a degree of 1 (no group communicates), or edp, which is dp
        firsts = [_members([m["rank"] for m in g], placement) for g in d["first_groups"]]
        links = ",".join(d["link_classes"]) or "-"
        groups.add([d["dim"], str(d["groups"]), str(d["size"]), firsts[0],
                    firsts[1] if len(firsts) > 1 else "-", links])
    step = tables.Table("one step's collectives per GPU (sizes in nccl-tests' convention; "
                        "traffic = bytes a GPU sends, bandwidth-optimal algorithms)",
                        ["dim", "collective", "phase", "size", "ranks", "count/step",
                         "traffic/GPU/step", "what"],
                        align=["l", "l", "l", "r", "r", "r", "r", "l"])
    for op in ops:
        step.add([op.dim, op.collective, op.phase, format_bytes(op.nbytes), str(op.ranks),
                  f"{op.count:,}", format_bytes(op.traffic), op.label])
    total = tables.Table("traffic per GPU per step", ["dim", "bytes", "share"])
    everything = sum(traffic.values())
    for dim, nbytes in traffic.items():
        total.add([dim, format_bytes(nbytes), f"{nbytes / everything:.1%}" if everything else "-"])
    total.add(["all", format_bytes(everything), "100.0%" if everything else "-"])
    shown = [groups, step, total]
    if args.groups:
        listing = tables.Table("every group (rank:gpu; links: classes its own traffic crosses)",
                               ["dim", "group", "members", "links"],
                               align=["l", "r", "l", "l"])
        for g in every:
            listing.add([g["dim"], str(g["index"]),
                         ",".join(f"{m['rank']}:{m['gpu']}" for m in g["members"]),
                         ",".join(g["link_classes"]) or "-"])
        shown.append(listing)
    tables.show(shown)
    return 0
