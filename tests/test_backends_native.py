"""Native baselines: torch's and MPI's own collectives give the reference's result, out of
place and in place, or say that the backend lacks that form."""

import pytest
from multiproc import assert_all_ok, run_mpi_ranks, run_torch_ranks

from commsim.backends import native

# Shared by both workers: every collective, two roots, nccl-tests' buffer layout.
CASES = """
import numpy as np
from commsim.backends import native, reference

CASES = [(c, root, n) for c in ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce")
         for root in (0, P - 1) for n in (1, 7)]
CASES += [("alltoall", 0, n) for n in (1, 7, 2 * P)]  # uneven (Alltoallv) and even blocks


def inputs_of(collective, n):
    rng = np.random.default_rng(n)
    length = n * P if collective == "reduce_scatter" else n
    return [rng.integers(-9, 9, size=length).astype(np.float64) for _ in range(P)]


def recv_length(collective, n):
    if collective == "alltoall":  # p blocks of this rank's block length
        return P * native.alltoall_blocks(n, P)[RANK]
    return {"reduce_scatter": n, "allgather": n * P}.get(collective, n)


def in_place_buffers(collective, send, n, full, slot):
    # (send, recv, result) of the in-place form: one buffer, or a slot of it
    if collective == "reduce_scatter":
        whole = send.copy() if hasattr(send, "copy") else send.clone()
        return whole, slot(whole, n), slot(whole, n)
    if collective == "allgather":
        recv = full(n * P)
        slot(recv, n)[:] = send
        return slot(recv, n), recv, recv
    recv = send.copy() if hasattr(send, "copy") else send.clone()
    return recv, recv, recv
"""

TORCH_WORKER = """
import torch
import torch.distributed as dist
dist.init_process_group("gloo")
RANK, P = dist.get_rank(), dist.get_world_size()
""" + CASES + """
checked = 0
slot = lambda buf, n: buf[RANK * n:(RANK + 1) * n]  # noqa: E731
for collective, root, n in CASES:
    for dtype in (torch.float32, torch.int64, torch.bfloat16):
        ins = inputs_of(collective, n)
        want = reference.expected(collective, ins, root)[RANK]
        send = torch.from_numpy(ins[RANK]).to(dtype)
        full = lambda k: torch.full((k,), -1, dtype=dtype)  # noqa: E731
        # out of place: all_reduce, broadcast and reduce have no such form in torch
        recv = full(recv_length(collective, n))
        try:
            native.torch_native(collective, send, recv, root=root)
        except native.Unsupported as exc:
            assert collective in native.IN_PLACE_ONLY and "in place only" in str(exc), exc
            recv = None
        results = [recv]
        # in place: the same buffer, or (reduce_scatter, allgather) a slot view of it
        a, b, result = in_place_buffers(collective, send, n, full, slot)
        try:
            native.torch_native(collective, None if a is b else a, b, root=root)
            results.append(result)
        except native.Unsupported as exc:
            assert collective == "alltoall" and "in-place alltoall" in str(exc), exc
        assert [r is None for r in results] == [collective in native.IN_PLACE_ONLY,
                                                  collective == "alltoall"][:len(results)]
        for got in results:
            if got is not None and (collective != "reduce" or RANK == root):
                got = got.to(torch.float64).numpy()
                assert np.array_equal(got, want), (collective, root, n, dtype, got, want)
        checked += 1

# an operation the backend lacks is reported, not crashed on
def lacking(*args, **kwargs):
    raise RuntimeError("ProcessGroupGloo does not support reduce_scatter")
dist.reduce_scatter_single = dist.reduce_scatter_tensor = lacking
try:
    native.torch_native("reduce_scatter", torch.zeros(2 * P), torch.zeros(2))
except native.Unsupported as exc:
    assert "reduce_scatter" in str(exc) and "gloo" in str(exc), exc
else:
    raise AssertionError("a lacking operation was not reported")
# other errors are not mistaken for a missing operation
try:
    native.torch_native("allgather", torch.zeros(3), torch.zeros(2))
except native.Unsupported:
    raise AssertionError("a wrong buffer size was reported as unsupported")
except (RuntimeError, ValueError):
    pass
dist.destroy_process_group()
print(f"checked {checked}")
"""

MPI_WORKER = """
from mpi4py import MPI
COMM = MPI.COMM_WORLD
RANK, P = COMM.rank, COMM.size
""" + CASES + """
checked = 0
slot = lambda buf, n: buf[RANK * n:(RANK + 1) * n]  # noqa: E731
for collective, root, n in CASES:
    for dtype in (np.float32, np.int64, np.float16):
        ins = inputs_of(collective, n)
        want = reference.expected(collective, ins, root)[RANK]
        send = ins[RANK].astype(dtype)
        full = lambda k: np.full(k, -1, dtype=dtype)  # noqa: E731
        results = []
        recv = full(recv_length(collective, n))
        try:
            native.mpi_native(collective, send, recv, COMM, root=root)
            results.append(recv)
        except native.Unsupported as exc:  # MPI_Bcast has one buffer
            assert collective == "broadcast" and "MPI_Bcast" in str(exc), exc
        # in place (MPI_IN_PLACE): MPI leaves a reduce_scatter's result at the start
        whole, recv, result = in_place_buffers(collective, send, n, full, slot)
        if collective == "reduce_scatter":
            recv, result = whole, whole[:n]
        try:
            native.mpi_native(collective, None, recv, COMM, root=root)
            results.append(result)
        except native.Unsupported as exc:
            assert collective == "alltoall" and n % P and "divide" in str(exc), exc
        for got in results:
            if collective != "reduce" or RANK == root:
                assert np.array_equal(got.astype(np.float64), want), (collective, root, n,
                                                                      dtype, got, want)
        checked += 1
try:
    native.mpi_native("scan", send, recv, COMM)
except native.Unsupported:
    pass
else:
    raise AssertionError("an unknown collective was not reported")
print(f"checked {checked}", flush=True)
"""


def test_unsupported_is_a_one_line_commsim_error():
    assert issubclass(native.Unsupported, ValueError)
    err = native._unsupported("gloo", "reduce_scatter",
                              RuntimeError("does not support reduce_scatter\ntrace..."))
    assert err is not None and "\n" not in str(err)
    assert native._unsupported("gloo", "allreduce", RuntimeError("connection reset")) is None
    # torch on NCCL < 2.24, its spelling kept: a float8 row is unsupported, not a crash
    old_nccl = RuntimeError("Float8 dtypes are not currenlty supported for NCCL reductions")
    assert native._unsupported("nccl", "allreduce", old_nccl) is not None


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("nranks", [2, 3])
def test_torch_native_collectives_on_gloo(nranks, tmp_path):
    out = assert_all_ok(run_torch_ranks(TORCH_WORKER, nranks, tmp_path, timeout=80))
    assert out.count("checked 69") == nranks


@pytest.mark.slow
@pytest.mark.timeout(90)
@pytest.mark.parametrize("nranks", [2, 3])
def test_mpi_native_collectives(nranks, tmp_path):
    pytest.importorskip("mpi4py")
    rc, out = run_mpi_ranks(MPI_WORKER, nranks, tmp_path, timeout=80)
    assert rc == 0, out
    assert out.count("checked 69") == nranks, out
