"""Timings every rank takes together, shared by ``bench`` (the drift check) and
``calibrate`` (which measures with them): iterations for a size, a buffer, the slowest
rank's median, and the ring shift. Seconds and bytes."""

from __future__ import annotations

import numpy as np

WORK_BYTES = 256 << 20  # the bytes each size's iterations move, roughly


def iterations(size: int, low: int = 5, high: int = 40) -> int:
    """Iterations at ``size`` bytes: enough to move about :data:`WORK_BYTES`."""
    return int(min(high, max(low, WORK_BYTES // max(size, 1))))


def buffer(comm, size: int):
    """A float32 array of ``size`` bytes (zeros) on the backend's device."""
    return comm.array(np.zeros(1), size // 4, "float32")


def slowest_median(comm, laps: list[float]) -> float:
    """The median over iterations of the slowest rank's time in each."""
    return float(np.median(comm.allgather_floats(laps).max(axis=0)))


def ring_shift(comm, size: int) -> float:
    """Every rank sends ``size`` bytes to its successor and receives as many from its
    predecessor, all at once: the median over iterations of the slowest rank's seconds."""
    p, r = comm.size, comm.rank
    out, into = buffer(comm, size), buffer(comm, size)
    right, left = (r + 1) % p, (r - 1) % p
    laps = []
    comm.barrier()
    for _ in range(iterations(size) + 1):
        clock = comm.clock()
        clock.mark()
        comm.exchange([(out, right)], [(into, left)])
        comm.synchronize()
        clock.mark()
        laps.append(float(clock.seconds()[-1]))
    return slowest_median(comm, laps[1:])
