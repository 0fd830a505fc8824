"""``commsim calibrate``: measure this machine on real ranks and write a network profile."""

from __future__ import annotations

import sys
from pathlib import Path

from commsim.backends.plan import DEFAULT_MODE, MODES
from commsim.bench.watchdog import add_flag as add_timeout
from commsim.errors import CommsimError

DESCRIPTION = """\
Measure this machine on real ranks and fit the alpha-beta-gamma model to it: point-to-point
time of one pair alone (per link class: ranks on one host, ranks on two hosts), every rank
exchanging with its ring neighbours at once, the local reduction rate, and commsim's executor
overhead per step and per message. Writes a network profile: a topology YAML with the fitted
links and model parameters, which --profile (or --topology) of bench, predict and simulate
reads. Launch it on every rank like bench: `torchrun --nproc-per-node 4 -m commsim calibrate`,
`mpirun -n 4 python -m commsim calibrate --backend mpi`, or `./launch.sh calibrate`."""


def register(sub) -> None:
    p = sub.add_parser("calibrate", help="measure this machine and write a network profile",
                       description=DESCRIPTION)
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl", "mpi"],
                   help="gloo (CPU tensors; default), nccl (one GPU a rank), mpi (mpi4py)")
    p.add_argument("--out", metavar="PATH",
                   help="where to write the profile (default: the user's cache folder, "
                   "$XDG_CACHE_HOME/commsim/profiles/HOST-BACKEND-NRANKS.yaml)")
    p.add_argument("--exec", dest="exec_mode", default=DEFAULT_MODE, choices=MODES,
                   help="execution mode whose overhead is measured (default dataflow)")
    p.add_argument("--reuse", action="store_true",
                   help="when the profile (--out, or the default path) already exists and "
                   "was written by this version's calibration up to at least --max-size, "
                   "print its path and measure nothing")
    p.add_argument("--max-size", default="64M", metavar="SIZE",
                   help="largest message measured (default 64M; at least 1M)")
    add_timeout(p)
    p.add_argument("--check-flags", action="store_true",
                   help="only parse and validate the flags, in this one process")
    p.set_defaults(func=run)


def run(args) -> int:
    from commsim.bench import watchdog
    from commsim.calibrate import measure
    from commsim.units import parse_size

    largest = parse_size(args.max_size, "--max-size")
    if largest < 1 << 20:
        raise CommsimError(f"--max-size: {args.max_size} is below 1M; the bandwidth fit "
                           "needs sizes where bytes, not latency, dominate")
    sizes = [s for s in measure.SIZES if s <= largest]
    if args.out is not None:   # refused before any rank measures, not after
        from commsim.cli.common import check_output

        check_output(args.out, "--out")
    if args.check_flags:
        return 0
    watchdog.start("calibrate", args.timeout)
    try:
        return _calibrate(args, sizes)
    finally:
        watchdog.stop()


def _calibrate(args, sizes: list[int]) -> int:
    """Measure on this rank (every rank calls it); rank 0 fits and writes the profile.
    Each measurement is an operation of the watchdog (:mod:`commsim.bench.watchdog`),
    named by its progress message and the size of its messages."""
    from commsim.bench import watchdog
    from commsim.bench.env import detect
    from commsim.calibrate import measure, profile
    from commsim.topology import spec

    comm = watchdog.connect(args.backend, detect(), args.timeout)
    dog = watchdog.current()
    try:
        if comm.size < 2:
            raise CommsimError("calibrate needs at least 2 ranks; launch it with "
                               "torchrun --nproc-per-node N (N >= 2) or mpirun -n N")
        lead = comm.rank == 0
        hosts = [r["host"] for r in comm.allgather_objects({"host": comm.info.host})]
        path = Path(args.out) if args.out else profile.default_path(hosts, args.backend)
        stale = profile.stale(path, max(sizes)) if args.reuse and lead else None
        if args.reuse and comm.allgather_objects(spec.is_file(path) and not stale)[0]:
            if lead:   # rank 0 decides
                print(str(path))
            return 0
        if stale and lead:
            print(f"commsim calibrate: {path} {stale}; measuring again", file=sys.stderr,
                  flush=True)

        def say(text: str) -> None:
            dog.next_row(text)  # each measurement is an operation of the watchdog
            if lead:
                print(f"commsim calibrate: {text}", file=sys.stderr, flush=True)

        with dog.operation("the measurements' set-up"):
            m = measure.measure(comm, args.exec_mode, sizes=sizes, progress=say)
        if not lead:
            return 0
        meta = {"backend": args.backend, "exec": args.exec_mode, "versions": comm.versions()}
        fits = profile.fit_all(m, meta)
        data = profile.build(m, fits, meta)
        path = profile.write(data, path)
        _summary(data, fits)
        print(str(path))
        return 0
    finally:
        watchdog.stop()  # done: a launcher that ends this rank now has nothing to say
        comm.close()


def _summary(data: dict, fits: dict) -> None:
    from commsim.calibrate import profile
    from commsim.report.tables import Table, show

    table = Table(f"profile {data['name']}",
                  ["fit", "alpha / overhead (us)", "rate (GB/s)", "R^2", "points"])
    costs = {"overhead": "executor per step / exchange / message",
             "native": "native allreduce per message"}
    for name, f in fits.items():
        if name in costs:
            table.add([costs[name], " / ".join(f"{c * 1e6:.1f}" for c in f.coef), "-",
                       f"{f.r2:.3f}", str(f.npoints)])
            continue
        first, slope = f.names
        table.add([name, f"{f[first] * 1e6:.1f}", f"{1 / f[slope] / 1e9:.3f}",
                   f"{f.r2:.3f}", str(f.npoints)])
    table.notes.append(f"contention {data['model']['contention']:g} (all ranks at once vs "
                       "one pair alone); links of the profile carry it")
    from commsim.model.cores import reductions_overlap

    cores = data["model"]["cores_per_rank"]
    table.notes.append(f"{cores:g} cores per rank: reductions "
                       f"{'overlap' if reductions_overlap(cores) else 'do not overlap'} "
                       "transfers in every prediction from this profile")
    note = profile.warm_summary(data)
    if note:
        table.notes.append(note)
    show(table)

