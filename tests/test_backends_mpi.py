"""The MPI executor: every algorithm, in both modes, in place and out of place, gives the
reference's result over mpi4py."""

import pytest
from multiproc import run_mpi_ranks

pytest.importorskip("mpi4py")

# One mpirun runs every (collective, algorithm) with several chunkings, lengths (some
# shorter than the chunk count) and dtypes against the reference executor, the oracle.
WORKER = """
import numpy as np
from mpi4py import MPI

from executor_cases import cases

from commsim import collectives
from commsim.backends import mpi, reference

comm = MPI.COMM_WORLD
rank, p = comm.rank, comm.size


checked = 0
for collective, algorithm, schedule, root, n, dtype, inputs in cases(
        p, (1, 3), ((1, np.float32), (p + 1, np.int64), (64, np.float16), (101, np.int32),
                    (33, np.float64))):
    want = reference.run(schedule, inputs)[rank]
    for mode in ("step", "dataflow"):
        buf = mpi.logical_buffer(schedule, inputs[rank].astype(dtype), rank)
        mpi.run(schedule, buf, comm, mode=mode)
        got = mpi.result_view(schedule, buf, rank)
        # out of place: the input is only read (read-only here: a write raises)
        local = inputs[rank].astype(dtype)
        local.flags.writeable = False
        out = mpi.new_output(schedule, local, rank)
        out.fill(-99)
        assert mpi.run(schedule, local, comm, mode=mode, out=out) is out
        if collective != "reduce" or rank == root:
            where = f"{collective}/{algorithm} {mode} k={schedule.nchunks} n={n} {dtype}"
            assert got.dtype == dtype, where
            assert np.array_equal(got.astype(np.float64), want), f"{where}: {got}"
            assert np.array_equal(out.astype(np.float64), want), f"{where} out of place: {out}"
        checked += 1
assert checked > 200, f"only {checked} cases ran"

# pipelined: ring and rhd with messages cut into 4 pieces, lengths below the chunk count
for algorithm in ("ring", "rhd"):
    k = 4 * collectives.chunk_unit("allreduce", algorithm, p)
    schedule = collectives.build("allreduce", algorithm, p, k)
    for n in (k - 1, 3 * k + 1):
        buf = np.arange(n, dtype=np.float64) * (rank + 1)
        mpi.run(schedule, buf, comm, mode="dataflow")
        assert np.array_equal(buf, np.arange(n) * (p * (p + 1) // 2)), (algorithm, n, buf)
        checked += 1

# a sub-communicator: ranks are the communicator's own
sub = comm.Split(color=int(rank % 2 == 0), key=rank)
schedule = collectives.build("allreduce", "rhd", sub.size)
for mode in ("step", "dataflow"):
    buf = np.full(9, float(rank))
    mpi.run(schedule, buf, sub, mode=mode)
    assert np.array_equal(buf, np.full(9, float(sum(sub.allgather(rank))))), buf
try:
    mpi.run(collectives.build("allreduce", "ring", p + 1), np.zeros(4), comm)
except ValueError as exc:
    assert "ranks" in str(exc)
else:
    raise AssertionError("a schedule for p+1 ranks was accepted")
print(f"checked {checked}", flush=True)
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("nranks", [2, 3, 4])
def test_every_algorithm_matches_the_reference_over_mpi(nranks, tmp_path):
    rc, out = run_mpi_ranks(WORKER, nranks, tmp_path, timeout=140)
    assert rc == 0, out
    assert out.count("checked ") == nranks, out
