"""``commsim ddp``: train a sample model under DDP, each bucket measured vs predicted."""

from __future__ import annotations

import argparse

from commsim.bench.watchdog import add_flag as add_timeout
from commsim.cli.common import add_profile, check_output, topology_choice
from commsim.errors import CommsimError

DESCRIPTION = """\
Train a sample model (mlp, cnn, gpt-tiny, gpt-small; torch.nn, synthetic data) under
DistributedDataParallel with AdamW, and time every step (forward, backward, optimizer) and,
through a comm hook, every gradient bucket's allreduce, with the model's and the
simulator's predictions beside each bucket. Launch it on every rank:
`torchrun --nproc-per-node 4 -m commsim ddp --model gpt-small --steps 50`, or
`./launch.sh ddp ...` for NPROC local ranks.

--comm native times the backend's own asynchronous allreduce; any commsim algorithm runs
each bucket through commsim's torch executor, synchronously inside the hook (so it cannot
overlap the backward pass). Every hook returns the averaged gradient as DDP's default does:
with the same --seed every --comm trains the same losses. Statistics skip the first --skip
steps (DDP rebuilds its buckets after step 0); a compute-only baseline runs in separate
steps with a no-op hook. busbw = bytes / time x 2(p-1)/p (nccl-tests' allreduce factor);
GB/s = 1e9 bytes/s. docs/ddp.md defines every metric and JSON key."""


def _ranks(text: str) -> list[int]:
    try:
        values = [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r}: give rank counts, e.g. 1,2,4") from None
    if not values:
        raise argparse.ArgumentTypeError("give rank counts, e.g. 1,2,4")
    return values


def register(sub) -> None:
    p = sub.add_parser("ddp", help="train a sample model under DDP: each bucket's allreduce "
                       "measured vs predicted, overlap and exposed communication",
                       description=DESCRIPTION,
                       formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="gpt-tiny",
                   help="mlp, cnn, gpt-tiny (< 2M parameters), gpt-small (~25M) "
                   "(default gpt-tiny)")
    p.add_argument("--steps", type=int, default=30, help="training steps (default 30)")
    p.add_argument("--batch", type=int, help="samples a rank a step (default: the model's)")
    p.add_argument("--lr", type=float, help="AdamW learning rate (default: the model's)")
    p.add_argument("--bucket-cap-mb", type=float, default=25.0, metavar="MiB",
                   help="DDP's bucket_cap_mb (default 25; the first bucket is capped at "
                   "1 MiB by DDP)")
    p.add_argument("--comm", default="native",
                   help="native (the backend's allreduce) or a commsim algorithm: ring, tree, "
                   "dbt, rhd, hierarchical (default native)")
    p.add_argument("--backend", choices=["gloo", "nccl"],
                   help="gloo (CPU) or nccl (one GPU a rank); default nccl with CUDA, "
                   "else gloo")
    p.add_argument("--topology", metavar="NAME|PATH",
                   help="what the predictions assume (default localhost: nominal numbers)")
    add_profile(p)
    p.add_argument("--seed", type=int, default=0,
                   help="weights and data (default 0); the same seed trains the same losses")
    p.add_argument("--skip", type=int, default=2,
                   help="steps the statistics skip (default 2: DDP rebuilds its buckets "
                   "after step 0)")
    p.add_argument("--baseline-steps", type=int, default=5,
                   help="compute-only steps with a no-op hook, after training (default 5; "
                   "the first --skip of them are skipped too)")
    for name, what in (("layers", "hidden layers (mlp), blocks a stage (cnn), blocks (gpt)"),
                       ("width", "hidden units (mlp), first stage's channels (cnn), model "
                        "width (gpt)"),
                       ("heads", "attention heads (gpt)"),
                       ("seq-len", "tokens a sample (gpt)"),
                       ("vocab", "vocabulary size (gpt)")):
        p.add_argument(f"--{name}", type=int, help=f"{what}; default: the preset's")
    p.add_argument("--json", metavar="FILE", help="JSON lines: config, step and bucket lines, "
                   "baseline steps, summary (docs/ddp.md)")
    p.add_argument("--plot", metavar="PNG", help="one step's timeline (compute and each "
                   "bucket, measured and predicted) and the loss curve")
    p.add_argument("--report", metavar="HTML", help="a self-contained HTML report")
    p.add_argument("--scaling", type=_ranks, metavar="N,N,...",
                   help="run once per world size (here, under torchrun) and report "
                   "weak-scaling efficiency, measured and predicted (e.g. 1,2,4)")
    add_timeout(p)
    p.add_argument("--check-flags", action="store_true",
                   help="only parse and validate the flags in this one process (launch.sh "
                   "does it before starting the ranks)")
    p.set_defaults(func=run)


def config_from_args(args):
    """The validated :class:`~commsim.ddp.DdpConfig` of the parsed flags."""
    from commsim.ddp.config import DdpConfig

    for flag in ("json", "plot", "report"):
        if getattr(args, flag):
            check_output(getattr(args, flag), f"--{flag}")
    cfg = DdpConfig(
        model=args.model, steps=args.steps, batch=args.batch, lr=args.lr,
        bucket_cap_mb=args.bucket_cap_mb, comm=args.comm, backend=args.backend,
        topology=topology_choice(args, "localhost"), seed=args.seed, skip=args.skip,
        baseline_steps=args.baseline_steps, layers=args.layers, width=args.width,
        heads=args.heads, seq_len=args.seq_len, vocab=args.vocab, json=args.json,
        plot=args.plot, report=args.report, scaling=args.scaling or [],
        timeout=args.timeout)
    cfg.validate()
    if (cfg.plot or cfg.report):
        from commsim.report import figures

        if not figures.available():
            raise CommsimError("--plot and --report need matplotlib: pip install "
                               "'commsim[plot]'")
    return cfg


def run(args) -> int:
    from commsim import ddp

    cfg = config_from_args(args)
    if args.check_flags:
        from commsim.bench.env import detect
        from commsim.ddp.harness import check

        info = detect()
        if cfg.scaling:
            check(cfg, max(cfg.scaling))
        else:
            check(cfg, info.local_world_size, info.world_size)
        return 0
    return ddp.run(cfg)
