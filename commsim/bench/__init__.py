"""``commsim bench``: an nccl-tests-style benchmark of commsim schedules and native collectives.

Launched on every rank (``torchrun ... -m commsim bench`` or ``mpirun ... commsim bench
--backend mpi``); see docs/bench.md. :func:`run` takes a :class:`BenchConfig` and returns
the exit code.
"""

from commsim.bench.config import BenchConfig
from commsim.bench.harness import run

__all__ = ["BenchConfig", "run"]
