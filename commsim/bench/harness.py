"""The measuring loop of ``commsim bench`` (REFERENCE.md, "Measuring").

For every collective, size and algorithm, out of place then in place (nccl-tests' two
layouts, ``--place``): build the op on this rank's check data, warm it up, barrier, time
``iters`` back-to-back operations (or, with ``per_op_barrier``, one barrier before
each), gather every rank's times and aggregate them (``average``: rank0, mean, min or
max), then reset the input, run once more and count the elements that differ from the
exact result, summed over the ranks. Rank 0 adds the model's and the simulator's
predictions (once for both places) and writes the row.
"""

from __future__ import annotations

import numpy as np

from commsim import model
from commsim.backends.native import Unsupported
from commsim.bench import data, drift, watchdog
from commsim.bench.comm import IN_PLACE, OUT_OF_PLACE
from commsim.bench.config import (
    BenchConfig,
    algorithm_names,
    count_and_size,
    resolve_average,
    resolve_dtype,
    sizes,
)
from commsim.bench.env import detect, host_cores_per_rank, usable_cores, usable_cpus
from commsim.bench.output import Reporter
from commsim.bench.predictions import Predictor, build_schedule
from commsim.errors import CommsimError
from commsim.machine import host_available_memory
from commsim.model.cores import reductions_overlap
from commsim.topology import model_parameter
from commsim.units import format_size

REDOP = {"allreduce": "sum", "reduce_scatter": "sum", "reduce": "sum", "allgather": "none",
         "alltoall": "none",
         "broadcast": "none"}
ROOTED = ("broadcast", "reduce")


MIN_PIECE_BYTES = 4096  # auto never cuts messages smaller than a page
GAMMA_PROBE_ELEMENTS = 1 << 22  # 16 MiB of float32: past the caches, like a real buffer


def algorithm_plans(cfg: BenchConfig, nranks: int,
                    topology=None) -> list[tuple[str, list[tuple[str, dict]]]]:
    """``[(collective, [(algorithm, build options, or None for native), ...]), ...]``.
    With the prediction ``topology``, ring and nccl_tree take its layout (channels and
    node size, :func:`commsim.collectives.layout.auto_options`) when the ranks fill
    whole nodes of it."""
    from commsim.collectives.layout import LAYOUT_ALGORITHMS, auto_options

    out = []
    for collective, names in algorithm_names(cfg):
        runs = []
        for algorithm in names:
            options = None
            if algorithm != "native":
                options = {}
                if collective in ROOTED:
                    options["root"] = cfg.root
                if algorithm == "hierarchical" and cfg.group_size:
                    options["group_size"] = cfg.group_size
                if topology is not None and algorithm in LAYOUT_ALGORITHMS:
                    options |= auto_options(topology, nranks, algorithm)
            runs.append((algorithm, options))
        out.append((collective, runs))
    return out


def schedule_for(cfg: BenchConfig, collective: str, algorithm: str, options: dict | None,
                 nranks: int, nbytes: int, count: int, alpha_beta, gamma: float = 0.0,
                 overlap: bool = True, message_overhead: float = 0.0) -> object:
    """The schedule one (algorithm, size) runs; ``None`` for native.

    ``cfg.chunks`` K: trees and chains are pipelined over K chunks (per tree for dbt),
    rings, rhd and hierarchical cut every message into K pieces. ``auto``: the count
    :func:`commsim.model.best_nchunks` finds best for this size and execution mode on the
    prediction topology's alpha and beta, the measured ``gamma`` and whether reductions
    can ``overlap`` transfers, each piece costing ``message_overhead`` seconds to post
    (the natural chunking when the topology cannot say). Every rank computes the same,
    so every rank runs the same schedule.
    """
    if options is None:
        return None
    setting = cfg.chunks
    if setting == "auto" and alpha_beta is None:
        setting = None
    elements = count * nranks if collective in ("allgather", "alltoall") else count
    nchunks = model.nchunks_for(setting, collective, algorithm, nranks, nbytes,
                                *(alpha_beta or (0.0, 0.0)), gamma, mode=cfg.exec_mode,
                                max_chunks=elements, min_chunk_bytes=MIN_PIECE_BYTES,
                                overlap=overlap, message_overhead=message_overhead,
                                **options)
    return build_schedule(collective, algorithm, nranks, nchunks,
                          tuple(sorted(options.items())))


def _plus(seconds: float | None, extra: float) -> float | None:
    return None if seconds is None else seconds + extra


def reduction_gamma(comm, dtype, repeats: int = 3) -> float:
    """Seconds per byte of an in-place add on the ranks' device, the mean over the ranks
    (so every rank gets the same number) of each rank's fastest of ``repeats`` adds."""
    n = GAMMA_PROBE_ELEMENTS
    a = comm.array(np.ones(1, dtype=np.float64), n, dtype.name)
    b = comm.array(np.ones(1, dtype=np.float64), n, dtype.name)
    best = float("inf")
    for _ in range(repeats):
        comm.synchronize()
        clock = comm.clock()
        clock.mark()
        comm.add(a, b)
        clock.mark()
        best = min(best, float(clock.seconds()[-1]))
    del a, b
    return float(comm.allgather_floats([best / (n * dtype.size)]).mean())


def cores_per_rank(comm) -> float:
    """The cores each rank has: the cores its host's ranks may run on over the ranks on
    that host, the fewest of any host (below 1, ranks share cores;
    :func:`commsim.bench.env.host_cores_per_rank`); the same number on every rank."""
    return host_cores_per_rank(comm.allgather_objects(
        {"host": comm.info.host, "cpus": usable_cpus(), "cores": usable_cores()}))


def cores_to_spare(comm) -> bool:
    """Can the ranks' reductions overlap their transfers here
    (:func:`commsim.model.cores.reductions_overlap` of :func:`cores_per_rank`)?"""
    return reductions_overlap(cores_per_rank(comm))


def aggregate(values: np.ndarray, how: str) -> np.ndarray:
    """Across ranks (axis 0): rank 0's value, the mean, the minimum or the maximum."""
    if how == "rank0":
        return values[0]
    return {"mean": np.mean, "min": np.min, "max": np.max}[how](values, axis=0)


def time_op(comm, op, cfg: BenchConfig) -> tuple[float, np.ndarray]:
    """``(seconds per op, per-iteration seconds)`` on this rank, after the warm-up."""
    for _ in range(cfg.warmup):
        op.call()
    comm.synchronize()
    comm.barrier()
    clock = comm.clock()
    if cfg.per_op_barrier:
        for _ in range(cfg.iters):
            comm.barrier()
            clock.mark()
            op.call()
            clock.mark()
        marks = clock.seconds()
        laps = marks[1::2] - marks[0::2]
        return float(laps.mean()), laps
    clock.mark()
    for _ in range(cfg.iters):
        op.call()
        clock.mark()
    marks = clock.seconds()
    return float(marks[-1] / cfg.iters), np.diff(marks)


def run(cfg: BenchConfig) -> int:
    """Run the benchmark on this rank; returns the exit code (the same on every rank):
    0, or 1 when an element was wrong or ``min_busbw`` was not met. A rank that dies or
    stops answering for ``cfg.timeout`` seconds, SIGTERM and Ctrl-C end the process
    from :mod:`commsim.bench.watchdog` (exit 3, 3 or 143, 130), the rows so far kept."""
    cfg.validate()
    watchdog.start("bench", cfg.timeout, results=[cfg.json, cfg.csv])
    try:
        comm = watchdog.connect(cfg.backend, detect(), cfg.timeout)
        try:
            return _run(cfg, comm)
        finally:
            # done measuring: a launcher that ends this rank now (another exited first)
            # has nothing to be told
            watchdog.stop()
            comm.close()
    finally:
        watchdog.stop()


# the input, and either (out of place) a receive buffer, a work buffer and scratch, or (in
# place) the logical buffer and scratch, the other place's scratch and work still cached
BUFFERS_PER_RANK = 5


def check_memory(cfg: BenchConfig, local_ranks: int, available: int | None = None) -> None:
    """Refuse a sweep whose largest size cannot fit in this host's memory, up front: each
    rank holds about :data:`BUFFERS_PER_RANK` buffers of the size (CPU backends; NCCL's
    live in GPU memory, which the backend reports itself)."""
    if cfg.backend == "nccl":
        return
    available = host_available_memory() if available is None else available
    need = BUFFERS_PER_RANK * cfg.maxbytes * max(1, local_ranks)
    if available is not None and need > available:
        raise CommsimError(
            f"-e/--maxbytes: {format_size(cfg.maxbytes)} needs about {need / 2**30:.1f} GiB "
            f"on this host ({BUFFERS_PER_RANK} buffers of that size on each of {local_ranks} "
            f"ranks) and {available / 2**30:.1f} GiB is available; lower -e")


def _run(cfg: BenchConfig, comm) -> int:
    p, rank = comm.size, comm.rank
    check_memory(cfg, comm.info.local_world_size)
    dtype = resolve_dtype(cfg.dtype)
    how = resolve_average(cfg.average)
    if cfg.root >= p:
        raise CommsimError(f"root (-r): {cfg.root} is not a rank of {p}")
    lead = rank == 0
    predictor = Predictor(cfg.topology, p, warn=None if lead else (lambda text: None),
                          mode=cfg.exec_mode)
    plans = algorithm_plans(cfg, p, predictor.graph)
    profiled = model_parameter(predictor.graph, "gamma")
    predictor.gamma = profiled if profiled is not None else reduction_gamma(comm, dtype)
    predictor.gamma_source = "profile" if profiled is not None else "measured"
    ranks = comm.allgather_objects({"rank": rank, "host": comm.info.host,
                                    "device": comm.device_name(),
                                    "local_rank": comm.info.local_rank,
                                    "launcher": comm.info.launcher,
                                    "cores": usable_cores(), "cpus": usable_cpus()})
    if not predictor.overlap_known:  # a profile says (predict and simulate read it too)
        predictor.overlap = reductions_overlap(host_cores_per_rank(ranks))
    with watchdog.operation("the profile's drift check (a ring shift)", row=False):
        predictor.set_drift(drift.measure(comm, predictor.graph))
    versions = comm.versions()
    nnodes = len({r["host"] for r in ranks})
    done = _resumed(cfg, comm)
    reporter = (Reporter(cfg, versions, ranks, predictor, p,
                         resumed=None if done is None else len(done)) if lead else None)
    if reporter:
        reporter.start()
    results = []
    try:
        for collective, runs in plans:
            seen = set()
            for requested in sizes(cfg):
                count, nbytes = count_and_size(collective, requested, dtype, p)
                if count == 0 or count in seen:
                    continue
                seen.add(count)
                m = data.modulus(dtype, p)
                base, length = data.input_of(collective, rank, p, count, m)
                local = comm.array(base, length, dtype.name)
                expect = (data.expectation(collective, rank, p, count, m, cfg.root)
                          if cfg.check else [])
                flat, gamma = predictor.flat(nbytes)
                for algorithm, options in runs:
                    schedule = schedule_for(cfg, collective, algorithm, options, p, nbytes,
                                            count, flat, gamma, predictor.overlap,
                                            predictor.message_overhead)
                    for place in cfg.places:
                        if done and (collective, algorithm, nbytes, place) in done:
                            continue  # measured by the run this one resumes
                        with watchdog.operation(_label(collective, algorithm, nbytes,
                                                       schedule, cfg.exec_mode, place)):
                            row = _measure(cfg, comm, how, collective, algorithm, schedule,
                                           local, expect, count, nbytes, dtype.name, place)
                        if reporter:
                            row.update(row_predictions(cfg, predictor, collective, schedule,
                                                       nbytes, dtype, versions, nnodes, place))
                            best = row["t_sim_us"] or row["t_model_us"]
                            row["eff_pct"] = (100.0 * best / row["time_us"]
                                              if best and row["time_us"] else None)
                            reporter.add(row)
                        results.append(row)
                del local
    finally:
        if reporter:
            reporter.stop()
    summary = summarize(results, cfg.min_busbw)
    if reporter:
        reporter.footer(summary)
        reporter.close()
    return 0 if summary["ok"] else 1


def row_predictions(cfg, predictor, collective: str, schedule, nbytes: int, dtype,
                    versions: dict, nnodes: int, place: str = IN_PLACE) -> dict:
    """Rank 0's prediction columns of one (algorithm, size, place): ``t_model_us``,
    ``t_sim_us``, ``warm`` and, for native rows (``schedule`` None), what the backend
    runs (``native_as``, ...). Out of place the call's input is a buffer of its own, and
    a backend may copy it into its result first (:meth:`Predictor.native_extra`).
    ``cfg``: its ``backend`` and ``root``. ``benchmarks/prediction_error.py --replay``
    predicts kept rows again with it."""
    apart = place == OUT_OF_PLACE
    out, predicted, choice = {}, schedule, None
    native = schedule is None
    if native:
        choice, predicted = predictor.native(cfg.backend, collective, nbytes, dtype.size,
                                             versions, cfg.root, nnodes)
        out.update(native_as=choice and choice.name,
                   native_model=predicted and predicted.algorithm,
                   native_exact=choice and choice.exact)
    extra = predictor.native_extra(choice, nbytes, apart) if native else 0.0
    out["t_model_us"] = _us(_plus(predictor.model(predicted, nbytes, native, apart), extra))
    out["t_sim_us"] = _us(_plus(predictor.sim(predicted, nbytes, native, apart), extra))
    out["warm"] = predictor.warm_share(nbytes, apart)
    return out


def _resumed(cfg, comm) -> set | None:
    """The rows already in ``cfg.json`` when this run resumes it (rank 0 reads the file
    and decides for every rank), or None for a new file; a file of another run is
    refused on every rank alike."""
    from commsim.bench import resume

    found, error = None, None
    if comm.rank == 0:
        try:
            found = resume.measured(cfg, comm.size)
        except CommsimError as exc:
            error = str(exc)
    found, error = comm.allgather_objects(
        (None if found is None else sorted(found), error))[0]
    if error:
        raise CommsimError(error)
    return None if found is None else {tuple(key) for key in found}


def _label(collective: str, algorithm: str, nbytes: int, schedule, mode: str,
           place: str = "in-place") -> str:
    """What the watchdog names: ``allreduce/ring 64K out-of-place (65536 bytes, dataflow,
    2 chunks)``."""
    how = "" if schedule is None else f", {mode}, {schedule.nchunks} chunks"
    return f"{collective}/{algorithm} {format_size(nbytes)} {place} ({nbytes} bytes{how})"


def _us(seconds: float | None) -> float | None:
    return None if seconds is None else seconds * 1e6


def _measure(cfg, comm, how, collective, algorithm, schedule, local, expect, count, nbytes,
             dtype_name, place: str = "in-place") -> dict:
    p = comm.size
    row = {"type": "result", "collective": collective, "algorithm": algorithm,
           "place": place, "backend": cfg.backend, "dtype": dtype_name, "nranks": p, "size": nbytes,
           "count": count, "redop": REDOP[collective],
           "root": cfg.root if collective in ROOTED else None,
           "busbw_factor": model.busbw_factor(collective, p), "status": "ok", "note": None,
           "nchunks": None if schedule is None else schedule.nchunks,
           "exec": None if schedule is None else cfg.exec_mode}
    unsupported = op = None
    try:  # an unsupported form is raised alike on every rank, before any message
        op = comm.make_op(collective, schedule, local, count, cfg.root, cfg.exec_mode, place)
        t, laps = time_op(comm, op, cfg)
        wrong = 0
        if cfg.check:
            op.reset()
            comm.synchronize()
            comm.barrier()
            op.call()
            comm.synchronize()
            wrong = data.count_wrong(op.result(), expect,
                                     lambda b: comm.convert(b, dtype_name))
    except Unsupported as exc:  # raised alike on every rank, before any message
        unsupported, t, laps, wrong = str(exc), 0.0, np.zeros(cfg.iters), 0
    del op  # its buffers go before the next place's are made
    stats = comm.allgather_floats([unsupported is not None, wrong, t, *laps])
    # -c 0 checked nothing: wrong is unknown (null, N/A), never a reassuring 0
    total_wrong = int(stats[:, 1].sum()) if cfg.check else None
    if stats[:, 0].any():
        row.update(status="unsupported", note=unsupported or "unsupported on another rank",
                   time_us=None, algbw_gbps=None, busbw_gbps=None,
                   wrong=0 if cfg.check else None)
        for key in ("iter_min_us", "iter_p50_us", "iter_p99_us", "iter_max_us"):
            row[key] = None
        return row
    seconds = float(aggregate(stats[:, 2], how))
    per_iter = aggregate(stats[:, 3:], how) * 1e6
    algbw = nbytes / seconds / 1e9 if seconds > 0 else None  # no clock ticks: no rate
    row.update(time_us=seconds * 1e6, algbw_gbps=algbw,
               busbw_gbps=None if algbw is None else algbw * row["busbw_factor"],
               wrong=total_wrong, iter_min_us=float(per_iter.min()),
               iter_p50_us=float(np.percentile(per_iter, 50)),
               iter_p99_us=float(np.percentile(per_iter, 99)),
               iter_max_us=float(per_iter.max()))
    return row


def summarize(rows: list[dict], min_busbw: float | None) -> dict:
    """Total wrong elements, average busbw per (collective, algorithm), failures, ok.
    Rows that were not checked (``wrong`` null, ``-c 0``) count no wrong elements."""
    wrong = sum(r["wrong"] or 0 for r in rows)
    averages: dict[tuple[str, str], float] = {}
    for key in dict.fromkeys((r["collective"], r["algorithm"]) for r in rows):
        measured = [r["busbw_gbps"] for r in rows if (r["collective"], r["algorithm"]) == key
                    and r["status"] == "ok" and r["busbw_gbps"] is not None]
        if measured:
            averages[key] = float(np.mean(measured))
    failures = []
    if wrong:
        failures.append(f"{wrong} wrong elements")
    if min_busbw is not None:
        for (collective, algorithm), avg in averages.items():
            if avg < min_busbw:
                failures.append(f"{collective}/{algorithm}: average busbw {avg:.3f} GB/s is "
                                f"below --min-busbw {min_busbw:g}")
    return {"wrong": wrong, "avg_busbw": averages, "failures": failures, "ok": not failures}
