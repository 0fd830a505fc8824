"""``commsim sweep``: a grid of what-if scenarios, simulated one by one, in parallel.

::

    commsim sweep sweeps/fat-tree-scaling.yaml --out results/ft.jsonl --report ft.html
    commsim sweep sweeps/oversubscription.yaml --workers 4
    mpirun -n 8 commsim sweep sweeps/llama70b-layouts.yaml --out results/layouts.jsonl

Rows already in ``--out`` are skipped (each scenario has a key made from its parameters),
so an interrupted sweep resumes where it stopped. The study format: docs/sweep.md.
"""

from __future__ import annotations

import os
import sys
import time

from commsim.errors import CommsimError

PLAIN_PROGRESS_STEP = 0.1   # without a terminal: a progress line every 10%


def register(sub) -> None:
    p = sub.add_parser(
        "sweep", help="run a what-if study: a grid of simulate, workload or plan scenarios, "
        "resumable, in parallel (local processes or MPI ranks)",
        description="Run every scenario of a study (a YAML grid of topologies, algorithms, "
        "sizes, rank counts, layouts and what-ifs: docs/sweep.md) and append one JSON line "
        "per scenario to --out as it finishes. Rows already in --out are skipped, so an "
        "interrupted sweep resumes. Parallel on local processes (--workers) or, under "
        "mpirun -n N, on N-1 MPI ranks (mpi4py.futures); the results do not depend on "
        "which.")
    p.add_argument("study", metavar="STUDY.yaml", help="the study file")
    p.add_argument("--out", metavar="FILE",
                   help="results, JSON lines (default results/sweep-NAME.jsonl); rows of "
                   "scenarios already there are not run again")
    p.add_argument("--workers", type=int, metavar="N",
                   help="local worker processes (default: the cores this process may use; 1 "
                   "runs in this process); under mpirun the ranks are the workers")
    p.add_argument("--report", metavar="FILE",
                   help="also write a self-contained HTML report (tables and figures)")
    p.add_argument("--dry-run", action="store_true",
                   help="check the study and count the scenarios to run; run nothing")
    p.set_defaults(func=run)


def run(args) -> int:
    from commsim.plan import pool

    world = pool.mpi_world()
    if world is not None and not world.root:
        verdict = pool.agree(world)     # rank 0 checks the study and says whether to go on
        if verdict != pool.GO:
            return int(verdict)
        pool.serve(world)
        return 0
    try:
        job = _prepare(args, world)
    except BaseException:
        if world is not None:
            pool.agree(world, 2)
        raise
    if args.dry_run:
        if world is not None:
            pool.agree(world, 0)
        return _dry_run(job)
    if world is not None:
        pool.agree(world, pool.GO)
    return _sweep(job, world)


class _Job:
    """Everything checked before any work."""

    def __init__(self, **kw) -> None:
        self.__dict__.update(kw)


def _prepare(args, world) -> _Job:
    from commsim.cli.common import check_output
    from commsim.plan import sweep
    from commsim.report.document import slug

    study = sweep.load_study(args.study)
    out = args.out if args.out is not None else os.path.join(
        "results", f"sweep-{slug(study.name)}.jsonl")
    check_output(out, "--out")
    if args.report is not None:
        check_output(args.report, "--report")
        if os.path.abspath(args.report) == os.path.abspath(out):
            raise CommsimError("--report and --out name the same file; give two files")
    if args.workers is not None:
        if world is not None:
            raise CommsimError(f"--workers: under mpirun the ranks besides rank 0 (here "
                               f"{world.workers}) are the workers; drop --workers (or run "
                               "without mpirun)")
        if args.workers < 1:
            raise CommsimError(f"--workers: {args.workers} must be at least 1")
    scenarios = sweep.expand(study)
    results = sweep.Results(out, study)
    existing = results.read()
    todo = [sc for sc in scenarios if sc.key not in existing]
    sweep.check_scenarios(todo)
    if not args.dry_run:
        results.open()      # and lock it: one sweep a file; under MPI, before the others go
        todo = [sc for sc in todo if sc.key not in results.rows]   # finished meanwhile
    workers = args.workers if args.workers is not None else sweep.default_workers()
    return _Job(args=args, study=study, out=out, scenarios=scenarios, results=results,
                todo=todo, workers=workers, done_before=len(scenarios) - len(todo),
                extra=len(set(results.rows) - {sc.key for sc in scenarios}))


def _where(job: _Job, world) -> str:
    if world is not None:
        how = "python -m mpi4py.futures" if world.shared else "MPICommExecutor"
        return f"{world.workers} MPI rank{'s' if world.workers != 1 else ''} ({how})"
    n = min(job.workers, max(1, len(job.todo)))
    return "this process" if n <= 1 else f"{n} local processes"


def _dry_run(job: _Job) -> int:
    from commsim.cli.common import console

    out = console()
    out.print(f"study [bold]{job.study.name}[/] ({job.study.kind}): "
              f"{len(job.scenarios)} scenarios, {job.done_before} already in {job.out}, "
              f"{len(job.todo)} to run", highlight=False)
    return 0


def _sweep(job: _Job, world) -> int:
    from commsim.cli.common import console
    from commsim.plan import pool, sweep, sweep_view
    from commsim.report import html, tables

    study, results = job.study, job.results
    where = _where(job, world)
    out = console()
    err = console(stderr=True)
    line = (f"study {study.name} ({study.kind}): {len(job.scenarios)} scenarios, "
            f"{job.done_before} already in {job.out}, {len(job.todo)} to run on {where}")
    print(line, file=sys.stderr, flush=True)
    bar = _Progress(err, len(job.todo), study.name)
    t0 = time.perf_counter()
    ran = 0
    try:
        tasks = [sc.task() for sc in job.todo]
        for i, res in pool.run_unordered(sweep.run_scenario, tasks, job.workers, world,
                                         started=bar.start):
            sc = job.todo[i]
            row = sweep.make_row(study, sc, res)
            results.append(sweep.row_line(row, sc), row)
            ran += 1
            bar.advance()
    except pool.TaskFailed as failed:
        bar.stop()
        sc = job.todo[failed.index]
        kept = f"{len(results.rows)} rows kept in {job.out}; fix it and run again to resume"
        if isinstance(failed.error, CommsimError):
            raise CommsimError(f"scenario {sweep.describe(sc)}: {failed.error}; {kept}") \
                from None
        raise failed.error from None
    except KeyboardInterrupt:
        bar.stop()
        print(f"commsim sweep: {ran} of {len(job.todo)} scenarios finished; "
              f"{len(results.rows)} rows kept in {job.out}; run again to resume",
              file=sys.stderr)
        raise
    except Exception as exc:
        bar.stop()
        from concurrent.futures.process import BrokenProcessPool

        if isinstance(exc, BrokenProcessPool):
            raise CommsimError(f"a worker process died (out of memory?); "
                               f"{len(results.rows)} rows kept in {job.out}; run again "
                               "with fewer --workers to resume") from None
        raise
    finally:
        results.close()
    bar.stop()
    wall = time.perf_counter() - t0
    rows = results.rows
    shown = sweep_view.tables_for(study, job.scenarios, rows)
    lines = sweep_view.summary_lines(study, job.scenarios, rows)
    same = sweep_view.fixed(job.scenarios)
    if same:
        lines.append("the same in every scenario: " + "; ".join(same))
    if job.extra:
        lines.append(f"{job.extra} rows of {job.out} are not in the grid (an earlier version "
                     "of the study?): kept, not shown")
    lines.append(f"ran {ran} scenarios in {wall:.1f} s on {where}; {len(job.scenarios)} "
                 f"rows in {job.out}")
    tables.show(shown, lines=lines)
    if job.args.report:
        inputs = [f"study file {job.args.study} (kind {study.kind})",
                  f"{len(job.scenarios)} scenarios: {ran} run now on {where} in {wall:.1f} s, "
                  f"{job.done_before} from earlier runs",
                  f"results {job.out}"]
        html.write(sweep_view.document(study, job.scenarios, rows, inputs), job.args.report)
        out.print(f"wrote report {job.args.report}", highlight=False)
    return 0


class _Progress:
    """A rich progress bar on stderr when it is a terminal; elsewhere (a pipe, a log, an
    mpirun without a terminal) a plain line every 10%."""

    def __init__(self, console, total: int, name: str) -> None:
        self.console = console
        self.total = total
        self.name = name
        self.done = 0
        self.bar = None
        self.t0 = time.perf_counter()
        self.next_line = PLAIN_PROGRESS_STEP

    def start(self) -> None:
        """Called once the workers exist (no thread before that: they fork)."""
        self.t0 = time.perf_counter()
        if not self.console.is_terminal or not self.total:
            return
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bar = Progress(TextColumn("{task.description}"), BarColumn(),
                            MofNCompleteColumn(), TimeElapsedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=True)
        self.task = self.bar.add_task(f"sweep {self.name}", total=self.total)
        self.bar.start()

    def advance(self) -> None:
        self.done += 1
        if self.bar is not None:
            self.bar.update(self.task, completed=self.done)
            return
        if self.total and self.done / self.total >= self.next_line - 1e-9:
            while self.next_line <= self.done / self.total + 1e-9:
                self.next_line += PLAIN_PROGRESS_STEP
            print(f"sweep {self.name}: {self.done}/{self.total} scenarios "
                  f"({self.done / self.total:.0%}), {time.perf_counter() - self.t0:.1f} s",
                  file=sys.stderr, flush=True)

    def stop(self) -> None:
        if self.bar is not None:
            self.bar.stop()
            self.bar = None
