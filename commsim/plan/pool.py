"""Where a sweep's scenarios run: in this process, a local process pool, or MPI ranks.

- **Local**: :class:`concurrent.futures.ProcessPoolExecutor` with ``workers`` processes
  (one worker: a plain loop in this process, no pool).
- **MPI**: under ``mpirun -n N commsim sweep ...`` every rank runs the command; rank 0
  checks the study and tells the others (a broadcast) whether to go on, then
  :class:`mpi4py.futures.MPICommExecutor` makes rank 0 the master that hands out
  scenarios and writes the results, and ranks 1..N-1 the workers (N-1 of them). The same
  code also serves ``mpirun -n N python -m mpi4py.futures -m commsim sweep ...``, where
  mpi4py's shared pool already holds ranks 1..N-1 (MPICommExecutor then uses it).

mpi4py is imported only when the environment says this process is one of several MPI
ranks (:func:`mpi_world`), so sweeps run where it is not installed.

Results come back as each scenario finishes (:func:`run_unordered`), whatever the order;
what a scenario computes does not depend on where it ran.
"""

from __future__ import annotations

import os
import signal
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from commsim.errors import CommsimError

# set by the launchers for each rank: Open MPI, MPICH/Intel MPI (Hydra, PMI), MVAPICH,
# PMIx (Slurm srun --mpi=pmix)
SIZE_VARIABLES = ("OMPI_COMM_WORLD_SIZE", "PMI_SIZE", "MV2_COMM_WORLD_SIZE", "PMIX_SIZE")


@dataclass
class MPIWorld:
    """This process's place among the MPI ranks: ``comm`` is ``MPI.COMM_WORLD``;
    ``shared`` when ``python -m mpi4py.futures`` runs the other ranks as its pool."""

    comm: object
    rank: int
    size: int
    shared: bool

    @property
    def root(self) -> bool:
        return self.rank == 0

    @property
    def workers(self) -> int:
        return self.size - 1


def _launched_size() -> int:
    for name in SIZE_VARIABLES:
        value = os.environ.get(name, "").strip()
        if value.isdigit():
            return int(value)
    return 1


def mpi_world() -> MPIWorld | None:
    """The MPI world when this process is one of several ranks (launched by mpirun, or
    under ``python -m mpi4py.futures``), else None; mpi4py is imported only then."""
    import sys

    shared_pool = "mpi4py.futures" in sys.modules
    if _launched_size() <= 1 and not shared_pool:
        return None
    try:
        from mpi4py import MPI
    except ImportError:
        raise CommsimError(f"running as one of {_launched_size()} MPI ranks, but mpi4py is "
                           "not installed: pip install 'commsim[mpi]', or run without "
                           "mpirun (--workers N uses local processes)") from None
    size = MPI.COMM_WORLD.Get_size()
    if size <= 1:
        return None
    shared = False
    if shared_pool:
        from mpi4py.futures import _core

        shared = getattr(_core, "SharedPool", None) is not None
    return MPIWorld(MPI.COMM_WORLD, MPI.COMM_WORLD.Get_rank(), size, shared)


GO = "go"


def agree(world: MPIWorld, verdict=None):
    """Rank 0 tells the other ranks, after its checks, whether the sweep goes on:
    :data:`GO`, or the exit code to leave with (an error, a dry run); every rank returns
    it. Under mpi4py's shared pool the others are busy serving it: nobody to tell."""
    if world.shared:
        return verdict
    return world.comm.bcast(verdict if world.root else None, root=0)


def serve(world: MPIWorld) -> None:
    """Ranks 1..N-1: run the scenarios rank 0 hands out until it is done."""
    from mpi4py.futures import MPICommExecutor

    with MPICommExecutor(world.comm, root=0) as executor:
        assert executor is None


def default_workers() -> int:
    """The cores this process may use."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except (AttributeError, OSError):
        return max(1, os.cpu_count() or 1)


def _quiet_worker() -> None:
    """Pool workers leave Ctrl-C to the parent (which stops them), so that one key press
    gives one message, not a traceback per worker."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def run_unordered(fn: Callable, tasks: Sequence, workers: int = 1,
                  world: MPIWorld | None = None, started: Callable | None = None
                  ) -> Iterator[tuple[int, object]]:
    """``(index, fn(tasks[index]))`` for every task, as each finishes.

    ``world`` (rank 0 of several MPI ranks): on the other ranks through MPICommExecutor;
    else ``workers`` local processes (1: in this process, one after the other).
    ``started()`` is called once the workers exist (before it, no thread may run in this
    process: a forked worker must not inherit one mid-flight, so start progress bars
    there). An exception of ``fn`` comes out of the iteration as :class:`TaskFailed`
    (which task, and the error); closing the iterator early (an error, Ctrl-C) cancels
    what has not started and stops the workers.
    """
    if world is not None:
        from mpi4py.futures import MPICommExecutor

        # main=False: workers must not run the master's __main__ (python -m commsim's
        # would run the whole command again on every worker of mpi4py's shared pool)
        with MPICommExecutor(world.comm, root=0, main=False) as executor:
            yield from _drain(executor, fn, tasks, started, stop=None)
        return
    if workers <= 1 or len(tasks) <= 1:
        if started:
            started()
        for i, task in enumerate(tasks):
            try:
                result = fn(task)
            except Exception as exc:
                raise TaskFailed(i, exc) from exc
            yield i, result
        return
    from concurrent.futures import ProcessPoolExecutor

    pool = ProcessPoolExecutor(max_workers=min(workers, len(tasks)),
                               initializer=_quiet_worker)
    try:
        yield from _drain(pool, fn, tasks, started, stop=_stop_workers)
    finally:
        pool.shutdown(wait=True, cancel_futures=True)


class TaskFailed(Exception):
    """Task ``index`` raised ``error`` (the original exception, also the ``__cause__``)."""

    def __init__(self, index: int, error: BaseException) -> None:
        super().__init__(f"task {index}: {error}")
        self.index = index
        self.error = error


def _drain(executor, fn, tasks, started, stop) -> Iterator[tuple[int, object]]:
    from concurrent.futures import as_completed

    futures = {executor.submit(fn, task): i for i, task in enumerate(tasks)}
    if started:
        started()
    finished = False
    try:
        for fut in as_completed(futures):
            try:
                result = fut.result()
            except Exception as exc:
                raise TaskFailed(futures[fut], exc) from exc
            yield futures[fut], result
        finished = True
    finally:
        if not finished:
            for fut in futures:
                fut.cancel()
            if stop is not None:
                stop(executor)


def _stop_workers(pool) -> None:
    """Stop a process pool's workers now, mid-scenario (an error or Ctrl-C elsewhere):
    what they were computing is not wanted."""
    terminate = getattr(pool, "terminate_workers", None)   # Python 3.14
    if terminate is not None:
        terminate()
        return
    for proc in list((getattr(pool, "_processes", None) or {}).values()):
        if proc.is_alive():
            proc.terminate()
