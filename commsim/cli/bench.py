"""``commsim bench``: measure schedules and native collectives, nccl-tests style."""

from __future__ import annotations

import argparse

from commsim.backends.plan import DEFAULT_MODE, MODES
from commsim.bench.watchdog import add_flag as add_timeout
from commsim.cli.common import add_profile, check_output, chunks, topology_choice
from commsim.errors import CommsimError
from commsim.units import parse_size

DESCRIPTION = """\
Measure commsim's schedules and the backend's native collectives on every rank, nccl-tests
style, with the model's and the simulator's predictions beside each row. Launch it on every
rank: `torchrun --nproc-per-node 4 -m commsim bench ...` (gloo, nccl) or
`mpirun -n 4 python -m commsim bench --backend mpi ...`.

Sizes and bandwidths follow nccl-tests exactly: SIZE is the bytes of one rank's buffer for
allreduce, broadcast and reduce, and of the whole gathered buffer (per-rank count x ranks)
for allgather and reduce_scatter; count is the per-rank element count; algbw = SIZE / time;
busbw = algbw x factor with factor 2(p-1)/p for allreduce, (p-1)/p for allgather and
reduce_scatter, 1 for broadcast and reduce; GB/s = 1e9 bytes/s; sizes take binary suffixes
(64K = 65536). Each size is measured out of place (separate send and receive buffers),
then in place, printed side by side as nccl-tests does (--place picks one). Every result
is checked on exactly-reducing data; a wrong element or a missed --min-busbw exits 1. A
rank that dies or waits --timeout seconds for another ends the run: one line naming the
operation, exit 3; the rows written so far stay (docs/reliability.md)."""


def _size(field: str):
    def parse(text: str) -> int:
        try:
            return parse_size(text, field)
        except CommsimError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
    return parse


def _flag01(text: str) -> bool:
    if text not in ("0", "1"):
        raise argparse.ArgumentTypeError(f"{text!r}: give 0 or 1")
    return text == "1"


def register(sub) -> None:
    p = sub.add_parser("bench", help="benchmark schedules and native collectives (nccl-tests "
                       "style), measured vs predicted",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("-b", "--minbytes", type=_size("-b/--minbytes"), default=32 << 20,
                   metavar="SIZE", help="smallest size (default 32M)")
    p.add_argument("-e", "--maxbytes", type=_size("-e/--maxbytes"), default=32 << 20,
                   metavar="SIZE", help="largest size (default 32M)")
    p.add_argument("-f", "--stepfactor", type=float, default=2.0,
                   help="multiply the size by this between steps (default 2)")
    p.add_argument("-i", "--stepbytes", type=_size("-i/--stepbytes"), default=0,
                   metavar="SIZE", help="add this many bytes between steps instead of -f")
    p.add_argument("-n", "--iters", type=int, default=20, help="timed iterations (default 20)")
    p.add_argument("-w", "--warmup-iters", "--warmup_iters", dest="warmup", type=int, default=5,
                   help="untimed warm-up iterations per size (default 5)")
    p.add_argument("-c", "--check", type=_flag01, default=True, metavar="0|1",
                   help="check every result on exactly-reducing data (default 1)")
    p.add_argument("-d", "--dtype", "--datatype", default="float32",
                   help="float32 (float), float16 (half), bfloat16 (not with mpi), float64 "
                   "(double), int8, uint8 (sums wrap modulo 2^8), int32, int64, float8_e4m3fn, "
                   "float8_e5m2 (nccl only) (default float32)")
    p.add_argument("-a", "--average", default="mean",
                   help="across ranks: 0/rank0, 1/mean, 2/min, 3/max (default mean)")
    p.add_argument("-r", "--root", type=int, default=0,
                   help="root rank of broadcast and reduce (default 0)")
    p.add_argument("-o", "--op", default="sum", choices=["sum"],
                   help="reduction operation (only sum)")
    p.add_argument("--collective", default="allreduce",
                   help="allreduce, reduce_scatter, allgather, broadcast, reduce, alltoall; "
                   "comma-separated for several (default allreduce)")
    p.add_argument("--algorithm", default="native,ring",
                   help="comma-separated: native (the backend's own), any commsim algorithm "
                   "(ring, tree, dbt, rhd, hierarchical, chain, binomial), or all "
                   "(default native,ring)")
    p.add_argument("--group-size", type=int,
                   help="hierarchical: ranks per group (default: the algorithm's)")
    p.add_argument("--chunks", default="auto",
                   help="pipeline depth: K cuts every message of the natural schedule into K "
                   "pieces (rings, rhd, hierarchical) or pipelines tree, dbt (per tree) and "
                   "chain over K chunks; auto: the model's best for each size (default)")
    p.add_argument("--exec", dest="exec_mode", default=DEFAULT_MODE, choices=MODES,
                   help="how schedules run: dataflow (each send as soon as its data is final, "
                   "receives posted ahead and reduced as they land; default, the faster) or "
                   "step (post a step's messages, wait for all, then reduce)")
    p.add_argument("--place", default="both", choices=["both", "out", "in"],
                   help="buffers, as nccl-tests measures them: out (separate send and receive "
                   "buffers), in (one buffer; allgather sends from its slot of the receive "
                   "buffer, reduce_scatter receives into its slot of the send buffer), or "
                   "both, out-of-place then in-place for each size (default both)")
    p.add_argument("--backend", default="gloo", choices=["gloo", "nccl", "mpi"],
                   help="gloo (CPU tensors), nccl (one CUDA GPU per local rank), mpi "
                   "(mpi4py, numpy buffers); default gloo")
    p.add_argument("--topology", metavar="NAME|PATH",
                   help="what the predictions assume: a preset name or a YAML file "
                   "(default localhost: nominal loopback numbers, not calibrated)")
    add_profile(p)
    p.add_argument("--json", metavar="FILE", help="write JSON lines: a config line, then one "
                   "line per (collective, algorithm, size), flushed row by row")
    p.add_argument("--csv", metavar="FILE", help="write the result rows as CSV")
    p.add_argument("--min-busbw", type=float, metavar="GB/s",
                   help="fail (exit 1) when an algorithm's average busbw is below this")
    p.add_argument("--per-op-barrier", action="store_true",
                   help="barrier before every timed operation (default: back to back)")
    add_timeout(p)
    p.add_argument("--check-flags", action="store_true",
                   help="only parse and validate the flags, in this one process (launch.sh "
                   "does it before starting the ranks)")
    p.set_defaults(func=run)


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def config_from_args(args):
    """The :class:`~commsim.bench.BenchConfig` that the parsed flags ask for (validated)."""
    from commsim.bench import BenchConfig

    for flag in ("json", "csv"):  # refused before any rank starts, not by rank 0 mid-way
        if getattr(args, flag):
            check_output(getattr(args, flag), f"--{flag}")
    return BenchConfig(
        collectives=_split(args.collective), algorithms=_split(args.algorithm),
        backend=args.backend, minbytes=args.minbytes, maxbytes=args.maxbytes,
        stepfactor=args.stepfactor, stepbytes=args.stepbytes, iters=args.iters,
        warmup=args.warmup, check=args.check, average=args.average, dtype=args.dtype,
        root=args.root, per_op_barrier=args.per_op_barrier, min_busbw=args.min_busbw,
        topology=topology_choice(args, "localhost"), json=args.json, csv=args.csv,
        group_size=args.group_size, chunks=chunks(args.chunks),
        exec_mode=args.exec_mode, timeout=args.timeout, place=args.place).validate()


def run(args) -> int:
    from commsim.bench import run as run_bench

    cfg = config_from_args(args)
    if args.check_flags:
        from commsim import topology
        from commsim.bench.comm import check_backend
        from commsim.bench.env import detect
        from commsim.bench.harness import check_memory
        from commsim.bench.resume import measured

        topology.load(cfg.topology)  # a bad --topology/--profile is a flag error too
        measured(cfg)  # a --json file of another run is refused before the ranks start
        local = detect().local_world_size
        check_backend(cfg.backend, local)
        check_memory(cfg, local)
        return 0
    return run_bench(cfg)
