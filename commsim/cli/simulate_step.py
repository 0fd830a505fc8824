"""``commsim simulate --workload``: one training step's communication on a topology.

Every phase of the step (:func:`commsim.workload.step_timeline`) runs its collectives on
all their groups at once (:func:`commsim.sim.simulate_many`), sharing the links; the
step adds the phases up. Prints the time per parallel dimension with its share of the
step, the links busiest over the step and whose traffic crosses them, and writes a
Chrome trace with one track per group (``--trace``) and JSON (``--json``).
"""

from __future__ import annotations

import json

from commsim.cli.common import (
    add_sim_workers,
    check_output,
    model_gamma,
    sim_workers,
    write_json_lines,
)
from commsim.errors import CommsimError, unknown
from commsim.report.files import write_atomic
from commsim.units import format_bandwidth, format_bytes, format_time, parse_pairs, parse_time

DIMS = ("tp", "cp", "pp", "dp", "ep")
COMPUTE_KEYS = ("forward", "backward", "optimizer")
# simulate's flags of one collective, which a training step (its collectives come from the
# workload) does not use; and the flags only a training step uses
ONE_COLLECTIVE = ("collective", "algorithm", "size", "nranks", "chunks", "group_size", "root",
                  "late", "slow_reduce", "links", "channels")
STEP_ONLY = (*DIMS, "compute", "algorithms", "workers")


def add_arguments(p) -> None:
    g = p.add_argument_group("a training step (--workload)")
    g.add_argument("--workload", metavar="NAME|PATH",
                   help="simulate one training step's communication instead of one "
                   "collective: a workload YAML or a shipped name (commsim workload list)")
    for dim in DIMS:
        g.add_argument(f"--{dim}", type=int, metavar="N",
                       help=f"{dim.upper()} degree (overrides the workload's; dp defaults "
                       "to what remains of the topology's gpus)" if dim == "dp" else
                       f"{dim.upper()} degree (overrides the workload's)")
    g.add_argument("--compute", metavar="KEY=TIME,...",
                   help="compute per GPU: forward and backward per layer and micro-batch, "
                   "optimizer per step, e.g. forward=2ms,backward=4ms (default: none, a "
                   "communication-only step)")
    g.add_argument("--algorithms", metavar="COLL=ALGO,...",
                   help="algorithm per collective, or per dim:collective, e.g. "
                   "allreduce=rhd,dp:reduce_scatter=ring (defaults: ring; alltoall "
                   "pairwise; PP sends chain)")
    add_sim_workers(g)


def check_flags(args) -> None:
    """Refuse the flags that the run would ignore: a training step's flags without
    ``--workload``, and with it the flags of one collective given other values than their
    defaults (``args.one_collective``, set by ``commsim simulate``'s parser)."""
    if args.workload is None:
        for dest in STEP_ONLY:
            if getattr(args, dest, None) is not None:
                raise CommsimError(f"--{dest}: only for a training step; add --workload "
                                   "NAME or drop it")
        return
    for dest, default in getattr(args, "one_collective", {}).items():
        if getattr(args, dest, default) != default:
            flag = "--" + dest.replace("_", "-")
            raise CommsimError(f"{flag}: not used with --workload (the workload says which "
                               "collectives run, on which ranks and sizes); drop it")


def _compute(text: str | None) -> dict[str, float]:
    if text is not None and not text.strip():
        raise CommsimError("--compute: empty; give KEY=TIME pairs, e.g. forward=2ms, or "
                           "leave the flag out")
    out = {}
    for key, value in parse_pairs(text, "--compute").items():
        if key not in COMPUTE_KEYS:
            raise unknown("--compute key", key, COMPUTE_KEYS)
        out[key] = parse_time(value, f"--compute {key}", require_unit=True)
    return out


def _algorithms(text: str | None) -> dict[str, str]:
    from commsim.workload import DEFAULT_ALGORITHMS
    from commsim.workload.simulate import algorithm_for

    if text is not None and not text.strip():
        raise CommsimError("--algorithms: empty; give COLL=ALGO pairs, e.g. allreduce=rhd, "
                           "or leave the flag out")
    algos = parse_pairs(text, "--algorithms")
    for key, name in algos.items():
        dim, _, coll = key.rpartition(":")
        if coll not in DEFAULT_ALGORITHMS:
            raise unknown("--algorithms collective", coll, DEFAULT_ALGORITHMS)
        if dim and dim not in ("tp", "cp", "pp", "dp", "ep", "edp"):
            raise unknown("--algorithms dimension", dim, ("tp", "cp", "pp", "dp", "ep", "edp"))
        from commsim.workload.step import Op
        algorithm_for(Op(dim or "dp", coll, 1, 1, "forward", "", 2), {key: name})
    return algos


def run(args, G, name: str, gamma: float | None, overlap: bool = True) -> int:
    """Simulate one step of ``args.workload`` on ``G`` and print where the time goes
    (``overlap``: may reductions overlap transfers, as a profile's cores per rank say)."""
    from commsim import topology
    from commsim.cli.common import console
    from commsim.report import tables
    from commsim.sim import simulate_many
    from commsim.workload import (
        place_layout,
        read_workload,
        resolve_layout,
        run_step,
        step_timeline,
    )
    from commsim.workload.simulate import step_chrome_trace

    for flag in ("trace", "json"):
        if getattr(args, flag) is not None:
            check_output(getattr(args, flag), f"--{flag}")
    workers = sim_workers(args)
    ngpus = len(topology.gpus(G))
    spec = read_workload(args.workload)
    layout = resolve_layout(spec.layout, ngpus, tp=args.tp, cp=args.cp, pp=args.pp,
                            dp=args.dp, ep=args.ep)
    compute = _compute(args.compute)
    algos = _algorithms(args.algorithms)
    placement = place_layout(G, layout, args.placement)
    timeline = step_timeline(spec.shape, layout, compute)
    gamma = model_gamma(gamma, G)
    step = run_step(timeline, G, layout, placement, algos, simulate_many,
                    routing=args.routing, mode=args.mode, gamma=gamma, sharing=args.sharing,
                    overlap=overlap, workers=workers, **topology.executor_overheads(G))
    many = next((p.many for p in step.phases if p.many is not None), None)
    links = step.slowest_links(5)
    for d in links:
        d["name"] = many.link_name(d["link"]) if many is not None else str(d["link"])
        d["class"] = many.link_class(d["link"]) if many is not None else "-"
    out = console()
    out.print(f"[bold]one training step[/] of {spec.name} on [bold]{name}[/] ({ngpus} gpus, "
              f"{args.placement} placement, {args.routing} routing, {args.mode} mode): "
              f"{layout.describe()}", soft_wrap=True)
    out.print(f"step {format_time(step.time_s)}: communication {format_time(step.comm_s)}, "
              f"compute {format_time(step.compute_s)}; {len(step.phases_once())} distinct "
              "phases, each simulated once with all its groups at once")
    dims = tables.Table("time per parallel dimension (its collectives' time per step; "
                        "dimensions sharing a phase both count it)",
                        ["dim", "time/step", "share", "traffic/GPU", "busbw"])
    for dim, d in step.dims.items():
        dims.add([dim, format_time(d["time_s"]), f"{d['share']:.1%}",
                  format_bytes(d["bytes"]), format_bandwidth(d["busbw"])])
    phases = tables.Table("phases (one execution; x count per step)",
                          ["phase", "count", "comm", "compute", "per step", "share"])
    for p in sorted(step.phases_once(), key=lambda p: -p.count * p.time_s)[:12]:
        phases.add([p.name, f"{p.count:,}", format_time(p.comm_s), format_time(p.compute_s),
                    format_time(p.count * p.time_s),
                    f"{p.count * p.time_s / step.time_s:.1%}" if step.time_s else "-"])
    busiest = tables.Table("links busiest over the step, and whose traffic crosses them",
                           ["link", "class", "busy/step", "share", "bytes/step", "crossing"])
    for d in links:
        crossing = ", ".join(f"{dim} {format_bytes(b)}" for dim, b in
                             sorted(d["crossing"].items(), key=lambda kv: -kv[1]))
        busiest.add([d["name"], d["class"], format_time(d["busy_s"]), f"{d['share']:.1%}",
                     format_bytes(d["bytes"]), crossing or "-"])
    tables.show([dims, phases, busiest])
    if args.trace is not None:
        try:
            write_atomic(args.trace, json.dumps(step_chrome_trace(step)))
        except OSError as exc:
            raise CommsimError(f"--trace: cannot write {args.trace!r}: "
                               f"{exc.strerror or exc}") from None
        out.print(f"trace: {args.trace} (a track per group; open in ui.perfetto.dev)")
    if args.json is not None:
        row = dict(workload=spec.name, topology=name, gpus=ngpus, layout=layout.as_dict(),
                   placement=args.placement, routing=args.routing, mode=args.mode,
                   **step.as_dict())
        row["links"] = [{k: v for k, v in d.items()} for d in links]
        write_json_lines(args.json, [row])
    return 0
