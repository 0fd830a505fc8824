"""How far theory and the simulator sit from measurement, after calibrating this machine.

For each backend (gloo, MPI) and rank count (2, 4): ``commsim calibrate`` writes a profile
of this machine, then ``commsim bench --profile`` measures ring and tree allreduce (and
native) from 1 MiB to 64 MiB with the model's and the simulator's predictions beside each
row. Printed: measured time, each prediction and its error ((predicted - measured) /
measured) per size. The goal: within 25% at every size from 1 MiB to 64 MiB.

    python benchmarks/prediction_error.py                       # gloo and mpi, 2 and 4 ranks
    python benchmarks/prediction_error.py --backends gloo --nproc 2 --profiles /tmp/prof
    python benchmarks/prediction_error.py --nproc 2 --repeat 3  # the measurement's own spread

With ``--repeat N`` each benchmark runs N times with the same profile: a row's measured
time is the median of its N means, and ``spread`` is how far those means lie apart
((max - min) / median): the measurement's own repeatability, against which the goal can
be judged. Without it, ``spread`` is the iterations' (p99 - p50) / p50 in the one run.
The last line gives each run's drift: the profile's ring shift timed again before it,
over the time calibrate measured (``bench`` records it: ``prediction.drift``).

``--recalibrate`` calibrates again right before every run, so that each run is predicted
from a profile measured a minute earlier rather than once for all repeats: a row's
predictions are then the median of the runs' own predictions (and its measured time
the median of their means), which separates the model's errors from the machine's
drift between calibrating and measuring.

    python benchmarks/prediction_error.py --repeat 3 --recalibrate

On this machine a run's misses move with the quarter hour more than with the code, so a
change to the model is judged on the same measurements: ``--keep DIR`` keeps the
profiles and the runs' JSON lines, and ``--replay DIR`` measures nothing: it fits each
kept profile again from the raw measurements it holds, with this checkout's fits
(:func:`commsim.calibrate.profile.refit`), predicts every kept row again, and prints the
same table. Replayed in two checkouts, one kept measurement compares two models.

    python benchmarks/prediction_error.py --repeat 3 --keep /tmp/kept
    python benchmarks/prediction_error.py --replay /tmp/kept

Rows are in place unless ``--place out`` or ``--place both`` says otherwise (bench's
default measures both, as nccl-tests does; out of place Open MPI copies its input into
its result first, and the call's input is one buffer more in the cache).

    python benchmarks/prediction_error.py --backends mpi --nproc 2 --place both
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from pathlib import Path

from launching import ROOT, bench, run_verb

GOAL = 0.25


def _split(text: str) -> list[str]:
    return [part.strip() for part in text.split(",") if part.strip()]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backends", default="gloo,mpi", help="comma-separated (default gloo,mpi)")
    ap.add_argument("--nproc", default="2,4", help="rank counts (default 2,4)")
    ap.add_argument("--algorithms", default="native,ring,tree",
                    help="allreduce algorithms (default native,ring,tree)")
    ap.add_argument("-b", "--minbytes", default="1M")
    ap.add_argument("-e", "--maxbytes", default="64M")
    ap.add_argument("-n", "--iters", default="10")
    ap.add_argument("-w", "--warmup", default="2")
    ap.add_argument("--place", default="in", choices=("in", "out", "both"),
                    help="buffer layouts to measure (default in)")
    ap.add_argument("--repeat", type=int, default=1, metavar="N",
                    help="run each benchmark N times and compare with the median of its "
                    "means (default 1)")
    ap.add_argument("--recalibrate", action="store_true",
                    help="calibrate again before every run (default: once per backend and "
                    "rank count)")
    ap.add_argument("--profiles", metavar="DIR",
                    help="keep profiles here and reuse those already there, unless an older "
                    "calibration wrote them (default: fresh)")
    ap.add_argument("--keep", metavar="DIR",
                    help="keep the profiles (as --profiles) and the runs' JSON lines here, "
                    "for --replay")
    ap.add_argument("--replay", metavar="DIR",
                    help="measure nothing: fit the profiles kept in DIR (--keep) again with "
                    "this checkout and predict its runs' rows again")
    args = ap.parse_args(argv)
    if args.repeat < 1:
        ap.error(f"--repeat: {args.repeat} must be at least 1")
    if args.replay:
        return _replay(Path(args.replay))
    rows, drifts = [], {}
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(args.keep or args.profiles or tmp)
        folder.mkdir(parents=True, exist_ok=True)
        kept = Path(args.keep or tmp)
        for backend in _split(args.backends):
            for nproc in map(int, _split(args.nproc)):
                prof = folder / f"profile-{backend}-{nproc}.yaml"
                if not args.recalibrate:   # --reuse: one already there, if current
                    run_verb("calibrate", backend, nproc, ["--out", str(prof), "--reuse"])
                runs = []
                for i in range(args.repeat):
                    if args.recalibrate:
                        prof = kept / f"profile-{backend}-{nproc}-{i}.yaml"
                        run_verb("calibrate", backend, nproc, ["--out", str(prof)])
                    out = kept / f"run-{backend}-{nproc}-{i}.jsonl"
                    rows_of_run = bench(backend, nproc, [
                        "--profile", str(prof), "--algorithm", args.algorithms, "-b",
                        args.minbytes, "-e", args.maxbytes, "-f", "4", "-n", args.iters,
                        "-w", args.warmup, "--place", args.place], out)
                    # a form the backend lacks (torch's allreduce out of place) has no time
                    runs.append([r for r in rows_of_run if r["status"] == "ok"])
                    drifts.setdefault(f"{backend}/{nproc}", []).append(_drift(out))
                rows += _merged(runs, args.recalibrate) if args.repeat > 1 else runs[0]
    _print(rows, repeated=args.repeat > 1)
    print("drift (the profile's ring shift timed again before each run, now / then): "
          + "; ".join(f"{key} " + ", ".join("-" if d is None else f"{d:.2f}x" for d in ds)
                      for key, ds in drifts.items()))
    return 0


def _replay(folder: Path) -> int:
    """:func:`_print` of the runs kept in ``folder``, every prediction made again from its
    profile fitted again by this checkout (each profile once, for every run it served)."""
    sys.path.insert(0, str(ROOT))  # this checkout's commsim, as run_verb's ranks get it
    runs: dict[tuple, list] = {}
    with tempfile.TemporaryDirectory() as tmp:
        fitted: dict[Path, Path] = {}
        for path in sorted(folder.glob("run-*-*-*.jsonl")):
            backend, nproc, i = path.stem.split("-")[1:4]
            prof = folder / f"profile-{backend}-{nproc}-{i}.yaml"
            if not prof.exists():
                prof = folder / f"profile-{backend}-{nproc}.yaml"
            if prof not in fitted:
                fitted[prof] = _fitted_again(prof, Path(tmp))
            runs.setdefault((backend, int(nproc)), []).append(
                _predicted_again(path, fitted[prof]))
    if not runs:
        raise SystemExit(f"--replay: {folder} holds no run-BACKEND-NPROC-I.jsonl (--keep)")
    rows, repeated = [], max(len(r) for r in runs.values()) > 1
    for same in runs.values():
        rows += _merged(same, predictions=True) if repeated else same[0]
    _print(rows, repeated=repeated)
    print(f"replayed: the runs kept in {folder}, predicted from their profiles fitted again")
    return 0


def _fitted_again(prof: Path, folder: Path) -> Path:
    """``prof`` fitted again by this checkout (:func:`commsim.calibrate.profile.refit`),
    written into ``folder``; its cache line printed."""
    from commsim.calibrate import profile
    from commsim.topology import spec

    data = profile.refit(spec.read_yaml(prof, "profile"))
    print(f"{prof.name} fitted again: {profile.warm_summary(data) or 'no cache'}")
    return profile.write(data, folder / prof.name)


def _predicted_again(run: Path, fitted: Path) -> list[dict]:
    """The result rows of ``run`` with their predictions made again from the profile
    ``fitted`` (:func:`_fitted_again`) by bench's own
    :func:`commsim.bench.harness.row_predictions`: the schedule that ran, or for native
    rows what the backend runs, in the row's place."""
    from types import SimpleNamespace

    from commsim.bench.config import resolve_dtype
    from commsim.bench.harness import row_predictions
    from commsim.bench.predictions import Predictor, build_schedule
    from commsim.topology import model_parameter

    lines = [json.loads(line) for line in run.read_text().splitlines() if line.strip()]
    config = lines[0]
    rows = [r for r in lines if r.get("type") == "result" and r.get("status") == "ok"]
    p = rows[0]["nranks"]
    predictor = Predictor(str(fitted), p, warn=lambda text: None,
                          mode=(config.get("prediction") or {}).get("mode", "dataflow"))
    predictor.gamma = model_parameter(predictor.graph, "gamma")
    nnodes = len({r["host"] for r in config.get("ranks") or [{"host": None}]})
    root = (config.get("config") or {}).get("root") or 0
    for r in rows:
        schedule = None if r["algorithm"] == "native" else build_schedule(
            r["collective"], r["algorithm"], p, r["nchunks"], ())
        r.update(row_predictions(SimpleNamespace(backend=r["backend"], root=root), predictor,
                                 r["collective"], schedule, r["size"],
                                 resolve_dtype(r["dtype"]), config, nnodes,
                                 r.get("place") or "in-place"))
    return rows


def _drift(path: Path) -> float | None:
    """The ratio ``bench`` recorded in its config line (``prediction.drift``)."""
    config = json.loads(path.read_text().splitlines()[0])
    return ((config.get("prediction") or {}).get("drift") or {}).get("ratio")


def _merged(runs: list[list[dict]], predictions: bool = False) -> list[dict]:
    """One row per (algorithm, size) of the first run: the median of the runs' mean times,
    and ``repeat_spread``, (max - min) / median of them; with ``predictions`` (each run
    had a profile of its own) the medians of the runs' predictions too."""
    out = []

    def key(r: dict) -> tuple:
        return r["algorithm"], r["size"], r.get("place")

    for row in runs[0]:
        same = [r for run in runs for r in run if key(r) == key(row)]
        times = sorted(r["time_us"] for r in same)
        median = float(statistics.median(times))
        merged = {**row, "time_us": median, "repeat_spread": (times[-1] - times[0]) / median,
                  "repeat_times": times}
        for name in ("t_model_us", "t_sim_us") if predictions else ():
            got = [r[name] for r in same if r.get(name) is not None]
            merged[name] = float(statistics.median(got)) if got else None
        out.append(merged)
    return out


def _error(predicted_us, measured_us):
    if predicted_us is None or not measured_us:
        return None
    return (predicted_us - measured_us) / measured_us


def _spread(r: dict) -> float | None:
    """The measurement's own spread: its repeats' ``(max - min) / median`` when repeated,
    else ``(p99 - p50) / p50`` of its iterations."""
    if "repeat_spread" in r:
        return r["repeat_spread"]
    p50, p99 = r.get("iter_p50_us"), r.get("iter_p99_us")
    if not p50 or p99 is None:
        return None
    return (p99 - p50) / p50


def _place(r: dict) -> str:
    """``in`` or ``out``: a row's buffer layout (``in`` for rows that name none)."""
    return "out" if r.get("place") == "out-of-place" else "in"


def _print(rows: list[dict], repeated: bool = False) -> None:
    spread = "(max - min) / median of the repeats' mean times (measured: their median)" \
        if repeated else "(p99 - p50) / p50 of the measured iterations"
    print("allreduce: measured vs predicted after calibration; error = (predicted - measured)"
          f" / measured; spread = {spread}")
    print(f"{'backend':>7} {'ranks':>5} {'algorithm':>9} {'place':>5} {'size':>9} "
          f"{'measured us':>12} {'spread':>7} {'model us':>10} {'model err':>9} "
          f"{'sim us':>10} {'sim err':>8}")
    misses, noisy, total = [], 0, 0

    def cell(value, width, fmt):
        return f"{'-':>{width}}" if value is None else f"{value:>{width}{fmt}}"

    for r in rows:
        model, sim = _error(r["t_model_us"], r["time_us"]), _error(r["t_sim_us"], r["time_us"])
        spread, place = _spread(r), _place(r)
        print(f"{r['backend']:>7} {r['nranks']:>5} {r['algorithm']:>9} {place:>5} {r['size']:>9} "
              f"{r['time_us']:>12.1f} {cell(None if spread is None else 100 * spread, 6, '.0f')}% "
              f"{cell(r['t_model_us'], 10, '.1f')} "
              f"{cell(None if model is None else 100 * model, 8, '.0f')}% "
              f"{cell(r['t_sim_us'], 10, '.1f')} "
              f"{cell(None if sim is None else 100 * sim, 7, '.0f')}%")
        for name, err in (("model", model), ("sim", sim)):
            if err is None:
                continue
            total += 1
            if abs(err) > GOAL:
                misses.append(f"{r['backend']}/{r['nranks']}/{r['algorithm']}/{place}/"
                              f"{r['size']} {name} {100 * err:+.0f}%")
                noisy += spread is not None and spread > GOAL
    within = "met" if not misses else f"missed at {len(misses)} of {total}: " + \
        "; ".join(misses[:12])
    print(f"goal (every prediction within {GOAL:.0%}): {within}")
    if misses:
        what = "repeats differ by" if repeated else "own iterations spread"
        print(f"of the misses, {noisy} are at sizes whose {what} more than {GOAL:.0%}: "
              "there the machine's noise is as large as the goal")


if __name__ == "__main__":
    raise SystemExit(main())
