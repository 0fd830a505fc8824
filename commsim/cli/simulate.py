"""``commsim simulate``: play algorithms' schedules over a topology with the flow simulator."""

from __future__ import annotations

import os
import time
from pathlib import Path

from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

from commsim import collectives, model
from commsim.cli import simulate_step
from commsim.cli.common import (
    SIZE_CONVENTION,
    add_channels,
    add_collectives,
    add_mode,
    add_profile,
    build_options,
    call_setting,
    check_finite,
    check_group_size,
    check_nranks,
    check_output,
    console,
    load_topology,
    mode_words,
    model_gamma,
    one_level_note,
    per_rank,
    prediction_setting,
    skipped,
    sweep,
    topology_model,
    topology_params,
    warm_note,
    write_json_lines,
)
from commsim.errors import CommsimError
from commsim.report import tables
from commsim.report.files import Staged
from commsim.units import format_bandwidth, format_size, format_time, parse_time

DEFAULT_TOPOLOGY = "dgx-a100-4node"
PROGRESS_AFTER_S = 1.0


def register(sub) -> None:
    p = sub.add_parser(
        "simulate", help="flow-level simulation of collectives on a topology",
        description="Simulate collectives on a network: each transfer of the algorithm's "
        "schedule is a flow on its route, links are shared max-min fairly. "
        + SIZE_CONVENTION)
    p.add_argument("--topology",
                   help=f"a preset name or a YAML file (default {DEFAULT_TOPOLOGY})")
    add_collectives(p)
    p.add_argument("--size", "--sizes", dest="size", default="256M",
                   help="bytes: 256M, or a doubling range 1K:1G, or a list 1K,1M")
    p.add_argument("--nranks", type=int,
                   help="ranks, 2 or more (default: every gpu of the topology)")
    p.add_argument("--chunks", default="auto",
                   help="pipeline depth: a number (times the algorithm's natural chunking) "
                        "or auto (the model's best per size; default)")
    add_mode(p, "simulate")
    p.add_argument("--group-size", type=int,
                   help="hierarchical (allreduce, alltoall): ranks per group, a divisor of "
                   "--nranks (default: the topology's gpus per node, else gcd(ranks, 8)); "
                   "groups of 1 or of every rank are one level (a ring, pairwise), and a "
                   "note says so")
    p.add_argument("--root", type=int,
                   help="root rank of broadcast and reduce (default 0); other collectives "
                   "have none and ignore it")
    p.add_argument("--placement", default="linear",
                   help="which gpu each rank gets: linear (the topology's order; default), "
                        "spread (consecutive ranks on different switches) or random[:SEED]")
    p.add_argument("--routing", choices=("ecmp", "static"), default="ecmp",
                   help="ecmp: each transfer hashes to one of the equal-cost paths; static: "
                        "one path per pair of ranks")
    add_channels(p)
    p.add_argument("--sharing", choices=("maxmin", "rtt"), default="maxmin",
                   help="how flows share a full link: maxmin (equal shares, as on RDMA "
                        "fabrics; default) or rtt (shares inversely proportional to route "
                        "latency, as TCP and SimGrid's CM02 give)")
    p.add_argument("--gamma", help="reduction time per byte with its unit, e.g. 0.01ns "
                   "(default: the profile's, else 0)")
    add_profile(p)
    p.add_argument("--ideal", action="store_true",
                   help="every link at line rate: ignore the topology's link efficiencies")
    p.add_argument("--late", action="append", metavar="RANK:TIME",
                   help="a straggler: RANK enters the collective TIME (with its unit) late, "
                   "e.g. 3:200us (repeatable, once per rank)")
    p.add_argument("--slow-reduce", action="append", metavar="RANK:FACTOR",
                   help="RANK reduces FACTOR times slower than --gamma, e.g. 0:4 (repeatable, "
                   "once per rank)")
    p.add_argument("--links", action="store_true",
                   help="also list the links that held the run up (on its critical path)")
    p.add_argument("--trace", metavar="FILE",
                   help="write a Chrome/Perfetto trace; with several runs one file each: "
                   "FILE-ALGORITHM-SIZE.json (a.json -> a-ring-1M.json), or "
                   "FILE-COLLECTIVE-ALGORITHM-SIZE.json with several collectives "
                   "(a-allreduce-ring-1M.json)")
    p.add_argument("--json", metavar="FILE", help="also write JSON lines, one per "
                   "collective/algorithm/size")
    simulate_step.add_arguments(p)
    p.set_defaults(func=run, one_collective={a.dest: a.default for a in p._actions
                                             if a.dest in simulate_step.ONE_COLLECTIVE})


def _trace_path(base: str, job: tuple[str, str, int], jobs: list) -> Path:
    """``--trace`` FILE itself for one run; else FILE-ALGORITHM-SIZE.json, with the
    collective before the algorithm when the runs have several."""
    path = Path(base)
    if len(jobs) == 1:
        return path
    coll, algo, size = job
    who = f"{coll}-{algo}" if len({c for c, _, _ in jobs}) > 1 else algo
    return path.with_name(f"{path.stem}-{who}-{format_size(size)}{path.suffix or '.json'}")


def run(args) -> int:
    from commsim import topology
    from commsim.sim import simulate
    from commsim.topology.placement import place

    # every check comes before the first line of output and before any work
    simulate_step.check_flags(args)
    runs, size_list, setting, gamma_flag = sweep(args)
    args.topology, G = load_topology(args, DEFAULT_TOPOLOGY, ideal=args.ideal)
    args.mode, overlap = prediction_setting(G, args.mode)
    if args.workload is not None:
        return simulate_step.run(args, G, G.graph.get("name", args.topology), gamma_flag,
                                 overlap)
    gamma = model_gamma(gamma_flag, G)
    ngpus = len(topology.gpus(G))
    name = G.graph.get("name", args.topology)
    p = args.nranks if args.nranks is not None else ngpus
    check_nranks(p, args.nranks is not None, name, ngpus)
    colls = [c for c, _ in runs]
    root = _root(args.root, colls, p)
    check_group_size(args.group_size, runs, p)
    gpus_of_ranks = place(G, p, args.placement)
    late = _per_rank(args.late, "--late", lambda v: parse_time(v, "--late", require_unit=True),
                     p)
    slow = _per_rank(args.slow_reduce, "--slow-reduce",
                     lambda v: _factor(v, "--slow-reduce"), p)
    jobs = [(coll, algo, size) for coll, algos in runs for algo in algos for size in size_list]
    _check_outputs(args, jobs)
    out = console()
    err = console(stderr=True)
    header = (f"[bold]{', '.join(colls)}[/] on {p} ranks of [bold]{name}[/] ({ngpus} gpus), "
              f"{args.placement} placement, {mode_words(args.mode, overlap)}, "
              f"{args.routing} routing, "
              f"{args.sharing} sharing"
              + (f", gamma {format_time(gamma)}/byte" if gamma else "")
              + "".join(f", rank {r} {format_time(t)} late" for r, t in late.items())
              + "".join(f", rank {r} reduces x{f:g} slower" for r, f in slow.items()))
    rows, link_rows = [], []
    bar = _Bar(err, len(jobs))
    routers: dict = {}
    models: dict = {}
    notes: dict = {}
    with Staged() as staged:
        for n, (coll, algo, size) in enumerate(jobs):
            bar.job(n)
            # a profile's warm rates where the call's data stays in its cache
            on, g = call_setting(G, size, p, gamma_flag)
            a, b, opts = topology_params(on, p, algo, args.group_size, args.channels,
                                         linear=args.placement == "linear")
            k = model.nchunks_for(setting, coll, algo, p, size, a, b, g, mode=args.mode,
                                  overlap=overlap, **opts)
            build_opts = build_options(opts)
            if coll in ("broadcast", "reduce"):
                build_opts["root"] = root
            s = collectives.build(coll, algo, p, k, **build_opts)
            # the simulator's routes depend on the pairs, not on the size
            key = (coll, algo, id(on))
            res = simulate(s, on, size, placement=gpus_of_ranks, routing=args.routing,
                           sharing=args.sharing,
                           mode=args.mode, overlap=overlap, gamma=g, start_offsets=late,
                           reduce_slowdown=slow,
                           **topology.executor_overheads(on),
                           router=routers.get(key), progress=bar.within)
            routers[key] = res.router
            if key not in models:
                models[key] = topology_model(on, p, res.router)
            if algo == "hierarchical":
                notes[coll] = one_level_note(coll, s.options["group_size"], p, len(colls) > 1)
            est = models[key](coll, algo, p, s.nchunks, opts, size, g, args.mode, s, overlap)
            if est is not None:
                t_model, estimate = est.time, est.shared
            else:
                t_model = model.predict(coll, algo, p, size, a, b, g, nchunks=s.nchunks,
                                        mode=args.mode, overlap=overlap, **opts)
                estimate = True
            bott = res.bottleneck
            row = dict(collective=coll, algorithm=algo, nranks=p, size=size, nchunks=s.nchunks,
                       topology=name, placement=args.placement, mode=args.mode,
                       overlap=overlap,
                       routing=args.routing, sharing=args.sharing,
                       time_us=res.time * 1e6, algbw_gbps=res.algbw / 1e9,
                       busbw_gbps=res.busbw / 1e9, t_model_us=t_model * 1e6,
                       model_estimate=estimate,
                       bottleneck=bott["link"] if bott else None,
                       bottleneck_share=bott.get("share") if bott else None,
                       bottleneck_util=bott["utilization"] if bott else None,
                       bottleneck_peak=bott["peak_utilization"] if bott else None,
                       transfers=res.ntransfers, events=res.events,
                       host_work_us=res.host_work * 1e6, warm=on.graph.get("warm", 0.0))
            if args.links:
                bound = res.bottlenecks(5)
                row["links"] = bound
                link_rows.extend((coll, algo, size, d) for d in bound)
            rows.append(row)
            if args.trace is not None:   # staged: written only if every run succeeds
                path = _trace_path(args.trace, (coll, algo, size), jobs)
                try:
                    res.to_chrome_trace(staged.path(path))
                except OSError as exc:
                    raise CommsimError(f"--trace: cannot write {str(path)!r}: "
                                       f"{exc.strerror or exc}") from None
                row["trace"] = str(path)
        bar.stop()
        check_finite(rows, "check the topology's links, --gamma and --late")
        try:
            staged.commit()
        except OSError as exc:
            raise CommsimError(f"--trace: cannot write {args.trace!r}: "
                               f"{exc.strerror or exc}") from None
    out.print(header)   # only now: an error found during the run leaves stdout empty
    several = len(colls) > 1
    tables.show([_table(rows, several)]
                + ([_links_table(link_rows, several)] if args.links else []))
    for note in [skipped(args, runs), *notes.values(), _host_note(rows, G), warm_note(rows)]:
        if note:
            out.print(f"note: {note}")
    shares = "max-min fair" if args.sharing == "maxmin" else "rtt-weighted (TCP-like)"
    out.print(f"[dim]{shares} links; model = every transfer on its route, its step's own "
              "flows sharing links evenly (exact where none share; * = an estimate); "
              "bottleneck = the link that held the critical path up longest (held = the share "
              "of the run it set the critical transfers' rate; util = its busy time / run "
              "time)[/]")
    for row in rows:
        if row.get("trace"):
            out.print(f"wrote trace {row['trace']}")
    if args.json is not None:
        write_json_lines(args.json, rows)
        out.print(f"wrote {args.json}")
    return 0


def _host_note(rows: list[dict], G) -> str | None:
    """Where ranks share their host's cores: which rows the host's work set."""
    from commsim import topology

    bound = [r for r in rows if r["host_work_us"] > 0 and r["time_us"] <= r["host_work_us"]]
    if not bound:
        return None
    cores = topology.model_parameter(G, "cores_per_rank")
    return (f"ranks share their host's cores ({cores:g} a rank): {len(bound)} of "
            f"{len(rows)} rows take the host's copies and reductions one after another, "
            "whatever the schedule lets overlap (commsim.model.cores.host_work)")


def _root(root: int | None, colls: list[str], p: int) -> int:
    """``--root``: a rank of the run, for broadcast and reduce (the other collectives have
    no root and ignore it); refused when no collective of the run has one."""
    if root is None:
        return 0
    if not {"broadcast", "reduce"} & set(colls):
        raise CommsimError(f"--root: {', '.join(colls)} {'has' if len(colls) == 1 else 'have'} "
                           "no root; --root is for broadcast and reduce (drop it)")
    if not 0 <= root < p:
        raise CommsimError(f"--root: rank {root} does not exist on {p} ranks; give 0 to "
                           f"{p - 1}")
    return root


def _per_rank(items: list[str] | None, flag: str, parse, p: int) -> dict[int, float]:
    """``{rank: value}`` from repeated ``RANK:VALUE`` flags: each rank once, and a rank
    of the run."""
    out: dict[int, float] = {}
    for item in items or []:
        ((rank, value),) = per_rank([item], flag, parse).items()
        if rank in out:
            raise CommsimError(f"{flag}: rank {rank} is given twice; give each rank once")
        if rank >= p:
            raise CommsimError(f"{flag}: rank {rank} does not exist on {p} ranks; give 0 to "
                               f"{p - 1}")
        out[rank] = value
    return out


def _check_outputs(args, jobs: list) -> None:
    """``--json`` and every ``--trace`` file are writable, and distinct, before the run."""
    paths = []
    for flag, given in (("--trace", args.trace), ("--json", args.json)):
        if given is not None:
            check_output(given, flag)   # as given: Path("") would be ".", a folder
    if args.trace is not None:
        paths = [(_trace_path(args.trace, job, jobs), "--trace") for job in jobs]
    if args.json is not None:
        paths.append((Path(args.json), "--json"))
    seen: dict[str, str] = {}
    for path, flag in paths:
        check_output(str(path), flag)
        key = os.path.abspath(path)
        if key in seen and seen[key] != flag:
            raise CommsimError(f"--json and --trace both name {str(path)!r}; give two files")
        seen[key] = flag


def _factor(text: str, field: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0 or value == float("inf"):
        raise CommsimError(f"{field}: {text!r} is not a factor >= 0, e.g. 4 or 2.5")
    return value


class _Bar:
    """A transient progress bar over the jobs (and the transfers within a long one) that
    appears only once the run has taken more than ``PROGRESS_AFTER_S``."""

    def __init__(self, err: Console, jobs: int) -> None:
        self.console, self.jobs, self.n = err, jobs, 0
        self.t0 = time.perf_counter()
        self.progress = None

    def job(self, n: int) -> None:
        self.n = n
        self._show(float(n))

    def within(self, done: int, total: int) -> None:
        self._show(self.n + done / max(total, 1))

    def _show(self, completed: float) -> None:
        if self.progress is None:
            if time.perf_counter() - self.t0 < PROGRESS_AFTER_S:
                return
            self.progress = Progress(TextColumn("simulating"), BarColumn(),
                                     TextColumn("{task.percentage:>3.0f}%"),
                                     TimeElapsedColumn(), console=self.console,
                                     transient=True)
            self.progress.start()
            self.task = self.progress.add_task("sim", total=self.jobs)
        self.progress.update(self.task, completed=completed)

    def stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()


def _num(value: float) -> str:
    return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"


def _pct(value) -> str:
    return "-" if value is None else f"{100 * value:.1f}"


def _table(rows: list[dict], several: bool = False) -> tables.Table:
    """One row per run; a collective column first when the runs have several."""
    first = ["collective"] if several else []
    table = tables.Table("simulated", [*first, "algorithm", "size (B)", "chunks", "time (us)",
                                       "algbw (GB/s)", "busbw (GB/s)", "model (us)",
                                       "sim/model (x)", "bottleneck link", "held (%)",
                                       "util (%)"],
                         align=["l"] * len(first) + ["l"] + ["r"] * 7 + ["l", "r", "r"])
    for r in rows:
        ratio = f"{r['time_us'] / r['t_model_us']:.3f}" if r["t_model_us"] > 0 else "-"
        table.add([*([r["collective"]] if several else []),
                   r["algorithm"], format_size(r["size"]), str(r["nchunks"]),
                   _num(r["time_us"]), _num(r["algbw_gbps"]), _num(r["busbw_gbps"]),
                   _num(r["t_model_us"]) + ("*" if r["model_estimate"] else ""), ratio,
                   r["bottleneck"] or "-",
                   _pct(r["bottleneck_share"]), _pct(r["bottleneck_util"])])
    return table


def _links_table(link_rows: list, several: bool = False) -> tables.Table:
    first = ["collective"] if several else []
    table = tables.Table("links that held the run up (critical path)",
                         [*first, "algorithm", "size (B)", "link", "class", "rate",
                          "held (us)", "held (%)", "bytes (MB)", "util (%)", "peak (%)"],
                         align=["l"] * len(first) + ["l", "r", "l", "l"] + ["r"] * 6)
    for coll, algo, size, d in link_rows:
        table.add([*([coll] if several else []),
                   algo, format_size(size), d["link"], d.get("link_class", "-"),
                   format_bandwidth(d["bandwidth"]), _num(d.get("seconds", 0.0) * 1e6),
                   _pct(d.get("share")), _num(d["bytes"] / 1e6),
                   _pct(d["utilization"]), _pct(d["peak_utilization"])])
    return table


__all__ = ["register", "run", "format_time"]
