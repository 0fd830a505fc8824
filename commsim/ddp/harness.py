"""``commsim ddp`` on every rank: connect, predict, train, gather, and rank 0 reports.

:func:`run` takes a :class:`~commsim.ddp.config.DdpConfig` and returns the exit code.
The process group comes from :func:`commsim.bench.comm.connect` (torchrun's variables,
gloo or NCCL), the predictions from :mod:`commsim.ddp.predict`, the training from
:func:`commsim.ddp.train.train`. After training every rank's marks are gathered once
(nothing is exchanged between steps but DDP's own traffic) and rank 0 turns them into
the rows of docs/ddp.md (:func:`results`) and renders them (:mod:`commsim.ddp.output`).
Times in the rows are microseconds, rates GB/s (1e9 bytes/s), sizes bytes.
"""

from __future__ import annotations

from commsim import __version__
from commsim.ddp import metrics
from commsim.ddp.config import DdpConfig
from commsim.ddp.predict import BucketPredictions, expect, make_predictor
from commsim.errors import CommsimError

MODE = "dataflow"  # how commsim's executor runs a hook's schedule (torch_dist.run's default)


def default_backend() -> str:
    """nccl where CUDA GPUs are, else gloo."""
    import torch

    return "nccl" if torch.cuda.is_available() else "gloo"


def check(cfg: DdpConfig, local_ranks: int, nranks: int | None = None) -> str:
    """Refuse what cannot run on this host before any process group (one line, exit 2):
    a backend without its devices, a topology that does not load, a profile measured on
    another number of ranks than ``nranks``. Returns the backend."""
    from commsim import topology
    from commsim.bench.comm import check_backend
    from commsim.bench.predictions import Predictor

    backend = cfg.backend or default_backend()
    check_backend(backend, local_ranks)
    topology.load(cfg.topology)
    if nranks:
        Predictor(cfg.topology, nranks, warn=lambda text: None)
    return backend


def schedule_for(cfg: DdpConfig, nranks: int):
    """The commsim allreduce a ``--comm`` hook runs (None for native): the algorithm's
    natural chunking; ``hierarchical`` groups by the topology's ``gpus_per_node`` when
    that divides the ranks, else the algorithm's default groups."""
    if cfg.comm == "native":
        return None
    from commsim import topology
    from commsim.bench.predictions import build_schedule

    options = ()
    if cfg.comm == "hierarchical":
        group = (topology.load(cfg.topology).graph.get("params") or {}).get("gpus_per_node")
        if group and nranks % group == 0 and group not in (1, nranks):
            options = (("group_size", int(group)),)
    return build_schedule("allreduce", cfg.comm, nranks, None, options)


def run(cfg: DdpConfig) -> int:
    """Train and measure on this rank; 0 on success (the same on every rank). The process
    group is made from the launcher's variables and destroyed at the end, unless the
    caller had one already (then it is used, with its backend, and left open)."""
    import torch.distributed as dist

    from commsim.bench import watchdog
    from commsim.bench.env import detect

    cfg.validate()
    info = detect()
    backend = check(cfg, info.local_world_size, info.world_size)
    owned = not dist.is_initialized()  # a process group of the caller's stays open
    # a rank that dies or hangs, SIGTERM and Ctrl-C end this process (docs/reliability.md)
    watchdog.start("ddp", cfg.timeout)
    try:
        comm = watchdog.connect(backend, info, cfg.timeout)
        try:
            rc = _run(cfg, comm, backend)
            # drop the DDP wrappers (their reducers hold the process group and gloo
            # threads) and let every rank get here before anyone tears the group down: a
            # rank that destroys it while a peer's last collective is in flight aborts
            import gc

            gc.collect()
            comm.barrier()
            return rc
        finally:
            watchdog.stop()  # done: a launcher that ends this rank now has nothing to say
            if owned:
                comm.close()
    finally:
        watchdog.stop()


def _run(cfg: DdpConfig, comm, backend: str) -> int:
    from commsim.bench.env import usable_cores, usable_cpus
    from commsim.ddp import output
    from commsim.ddp.train import train

    p, lead = comm.size, comm.rank == 0
    schedule = schedule_for(cfg, p)
    predictor = make_predictor(cfg.topology, comm, lead, MODE)
    ranks = comm.allgather_objects({"rank": comm.rank, "host": comm.info.host,
                                    "device": comm.device_name(),
                                    "local_rank": comm.info.local_rank,
                                    "cores": usable_cores(), "cpus": usable_cpus()})
    versions = comm.versions()
    trained = train(cfg, comm, schedule, MODE)
    gathered = comm.allgather_objects({"steps": trained.steps, "baseline": trained.baseline,
                                       "losses": trained.losses})
    if not lead:
        return 0
    nnodes = len({r["host"] for r in ranks})
    buckets = BucketPredictions(predictor, cfg.comm, schedule, backend, versions, nnodes)
    result = results(cfg, p, backend, gathered, trained, buckets, versions, ranks,
                     comm.device.type)
    output.emit(cfg, result)
    return 0


def _us(seconds):
    return None if seconds is None else seconds * 1e6


def results(cfg: DdpConfig, p: int, backend: str, gathered: list[dict], trained, buckets,
            versions: dict, ranks: list[dict], device_type: str = "cpu") -> dict:
    """Rank 0's rows: ``config``, ``steps``, ``baseline``, ``buckets`` (one per bucket and
    step), ``summary`` (docs/ddp.md), and ``timeline`` (the plotted step)."""
    spec = cfg.spec()
    synchronous = cfg.comm != "native"
    steps = metrics.across_ranks([g["steps"] for g in gathered], synchronous)
    base = metrics.across_ranks([g["baseline"] for g in gathered], False)
    losses = [sum(ls) / len(ls) for ls in zip(*(g["losses"] for g in gathered))]
    measured, base_measured = steps[cfg.skip:], base[cfg.skip:]
    base_total = metrics.median(base_measured, "total")
    global_batch = spec.batch * p
    tokens = spec.seq_len if spec.family == "gpt" else None

    per_bucket = metrics.bucket_medians(measured)
    predicted = [buckets(b["nbytes"]) for b in per_bucket]
    best = [BucketPredictions.best(*t) for t in predicted]
    theory = expect(base_measured, best, synchronous)

    def bucket_row(b, step=None, t=None):
        t_model, t_sim = t if t is not None else buckets(b["nbytes"])
        algbw, busbw = metrics.rates(b["nbytes"], b["time"], p)
        pred = BucketPredictions.best(t_model, t_sim)
        row = {"type": "bucket", "step": step, "bucket": b["index"], "bytes": b["nbytes"],
               "time_us": _us(b["time"]), "algbw_gbps": algbw, "busbw_gbps": busbw,
               "t_model_us": _us(t_model), "t_sim_us": _us(t_sim),
               "eff_pct": 100.0 * pred / b["time"] if pred and b["time"] > 0 else None,
               "launch_us": _us(b["launch"]), "done_us": _us(b["done"]),
               "inflight_us": _us(b["inflight"])}
        if step is None:
            del row["type"], row["step"]
        return row

    step_rows, bucket_rows = [], []
    for i, s in enumerate(steps):
        step_rows.append({"type": "step", "step": s["step"], "loss": losses[i],
                          "measured": i >= cfg.skip, "step_us": _us(s["total"]),
                          "forward_us": _us(s["forward"]), "backward_us": _us(s["backward"]),
                          "optimizer_us": _us(s["optimizer"]), "comm_us": _us(s["comm"]),
                          "exposed_us": _us(max(0.0, s["total"] - base_total)),
                          "samples_per_s": global_batch / s["total"]})
        for b in s["buckets"]:
            bucket_rows.append(dict(bucket_row(b, s["step"]), measured=i >= cfg.skip))
    base_rows = [{"type": "baseline", "step": s["step"], "measured": i >= cfg.skip,
                  "step_us": _us(s["total"]), "forward_us": _us(s["forward"]),
                  "backward_us": _us(s["backward"]), "optimizer_us": _us(s["optimizer"])}
                 for i, s in enumerate(base)]

    total = metrics.median(measured, "total")
    comm_s = metrics.median(measured, "comm")
    exposed = max(0.0, total - base_total)
    hidden = max(0.0, comm_s - exposed)
    window = metrics.median(measured, "window")
    summary = {
        "type": "summary", "nranks": p, "skip": cfg.skip, "measured_steps": len(measured),
        "baseline_measured_steps": len(base_measured), "step_us": _us(total),
        **{f"{k}_us": _us(metrics.median(measured, k))
           for k in ("forward", "backward", "optimizer")},
        "baseline": {f"{k}_us": _us(metrics.median(base_measured, k))
                     for k in ("total", "forward", "backward", "optimizer")},
        "comm_us": _us(comm_s), "exposed_us": _us(exposed), "hidden_us": _us(hidden),
        "overlap": hidden / comm_s if comm_s > 0 else None,
        "window_us": _us(window), "overlap_window": window / comm_s if comm_s > 0 else None,
        "samples_per_s": global_batch / total,
        "tokens_per_s": global_batch * tokens / total if tokens else None,
        "loss_first": losses[0], "loss_last": losses[-1], "loss_min": min(losses),
        "grad_bytes": trained.grad_bytes,
        "bucket_bytes": sum(b["nbytes"] for b in per_bucket),
        "buckets": [bucket_row(b, t=t) for b, t in zip(per_bucket, predicted)],
        "predicted": {"comm_us": _us(theory["comm"]), "hideable_us": _us(theory["hideable"]),
                      "exposed_us": _us(theory["exposed"]), "step_us": _us(theory["step"]),
                      "samples_per_s": global_batch / theory["step"] if theory["step"]
                      else None},
    }
    config = {
        "type": "config", "commsim": __version__, **versions, "backend": backend,
        "nranks": p, "model": cfg.model, "family": spec.family, "params": trained.params,
        "grad_bytes": trained.grad_bytes, "batch": spec.batch, "global_batch": global_batch,
        "seq_len": tokens, "lr": spec.lr, "comm": cfg.comm,
        "native_as": buckets.native_as, "exec": None if cfg.comm == "native" else MODE,
        "hook": "synchronous" if synchronous else "asynchronous",
        "clock": "cuda events" if device_type == "cuda" else "host perf_counter",
        "bucket_cap_mb": cfg.bucket_cap_mb, "steps": cfg.steps, "skip": cfg.skip,
        "baseline_steps": cfg.baseline_steps, "seed": cfg.seed,
        "topology": buckets.predictor.topology_name,
        "predictions": buckets.predictor.parameters(), "notes": list(buckets.predictor.notes),
        "model_options": {k: getattr(spec, k) for k in ("layers", "width", "heads",
                                                        "seq_len", "vocab")},
        "config": cfg.as_dict(), "ranks": ranks,
    }
    if trained.grad_bytes != summary["bucket_bytes"]:
        raise CommsimError(f"the buckets carry {summary['bucket_bytes']} bytes but the "
                           f"model's gradients are {trained.grad_bytes}: a bucket was missed")
    return {"config": config, "steps": step_rows, "baseline": base_rows,
            "buckets": bucket_rows, "summary": summary, "losses": losses,
            "timeline": timeline(measured, best)}


def timeline(measured: list[dict], durations: list[float | None]) -> dict:
    """The measured step of median length, in seconds since it began: its phases, each
    bucket's launch and end, and where the predicted bucket times would put each
    bucket given the same launch times (in order on one channel)."""
    order = sorted(measured, key=lambda s: s["total"])
    step = order[len(order) // 2]
    bwd = step["forward"]
    ready = [b["launch"] for b in step["buckets"]]
    predicted = None
    if durations and all(d is not None for d in durations) and len(durations) == len(ready):
        starts, _, _ = metrics.pipeline(ready, durations, bwd + step["backward"], True)
        idx = sorted(range(len(ready)), key=lambda j: ready[j])
        predicted = [None] * len(ready)
        for j, s in zip(idx, starts):
            predicted[j] = (s, s + durations[j])
    return {"step": step["step"], "forward": step["forward"], "backward": step["backward"],
            "optimizer": step["optimizer"], "total": step["total"],
            "buckets": step["buckets"], "predicted": predicted}
