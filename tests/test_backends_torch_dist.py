"""The torch.distributed executor: every algorithm, in both modes, in place and out of
place, gives the reference's result on gloo."""

import pytest
from multiproc import assert_all_ok, run_torch_ranks

# One spawned group runs every (collective, algorithm) with several chunkings, lengths
# (some shorter than the chunk count) and dtypes, and compares with the reference
# executor, which is the oracle. Each rank prints one "checked N" line.
WORKER = """
import sys
import numpy as np
import torch
import torch.distributed as dist

from executor_cases import cases

from commsim import collectives
from commsim.backends import reference, torch_dist

dist.init_process_group("gloo")
rank, p = dist.get_rank(), dist.get_world_size()
DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16,
          "int32": torch.int32, "int64": torch.int64}


checked = 0
for collective, algorithm, schedule, root, n, dtype, inputs in cases(
        p, (1, 2), ((1, "float32"), (p + 1, "int64"), (37, "bfloat16"), (64, "float16"),
                    (101, "int32"))):
    want = reference.run(schedule, inputs)[rank]
    oracle = reference.expected(collective, inputs, root)[rank]
    local = torch.from_numpy(inputs[rank]).to(DTYPES[dtype])
    for mode in ("step", "dataflow"):
        buf = torch_dist.logical_buffer(schedule, local)
        torch_dist.run(schedule, buf, mode=mode)
        got = torch_dist.result_view(schedule, buf).to(torch.float64).numpy()
        # out of place: the input is only read, the result lands in a receive buffer
        kept = local.clone()
        out = torch_dist.new_output(schedule, local).fill_(-99)
        assert torch_dist.run(schedule, local, mode=mode, out=out) is out
        assert torch.equal(local, kept), "the input was written"
        got_out = out.to(torch.float64).numpy()
        if collective != "reduce" or rank == root:
            where = f"{collective}/{algorithm} {mode} k={schedule.nchunks} n={n} {dtype}"
            assert np.array_equal(got, want), f"{where}: {got} != {want}"
            assert np.array_equal(got, oracle), where
            assert np.array_equal(got_out, want), f"{where} out of place: {got_out} != {want}"
        checked += 1
assert checked > 200, f"only {checked} cases ran"

# pipelined: ring and rhd with messages cut into 4 pieces, lengths below the chunk count
for algorithm in ("ring", "rhd"):
    k = 4 * collectives.chunk_unit("allreduce", algorithm, p)
    schedule = collectives.build("allreduce", algorithm, p, k)
    for n in (k - 1, 3 * k + 1):
        buf = torch.arange(n, dtype=torch.float32) * (rank + 1)
        torch_dist.run(schedule, buf, mode="dataflow")
        want = torch.arange(n, dtype=torch.float32) * (p * (p + 1) // 2)
        assert torch.equal(buf, want), (algorithm, n, buf)
        checked += 1

# a subgroup: peers are group ranks, translated to global ranks by the executor
if p >= 3:
    members = list(range(1, p))
    sub = dist.new_group(members)
    if rank in members:
        q = len(members)
        schedule = collectives.build("allreduce", "ring", q)
        for mode in ("step", "dataflow"):
            buf = torch.full((10,), float(rank))
            torch_dist.run(schedule, buf, group=sub, mode=mode)
            assert torch.equal(buf, torch.full((10,), float(sum(members)))), buf
            checked += 1

# a schedule for the wrong number of ranks is a one-line error, not a hang
try:
    torch_dist.run(collectives.build("allreduce", "ring", p + 1), torch.zeros(4))
except ValueError as exc:
    assert "ranks" in str(exc)
else:
    raise AssertionError("a schedule for p+1 ranks was accepted")
try:  # a receive buffer of the wrong length
    torch_dist.run(collectives.build("allgather", "ring", p), torch.zeros(4), out=torch.zeros(4))
except ValueError as exc:
    assert "elements" in str(exc), exc
else:
    raise AssertionError("a short receive buffer was accepted")
try:
    torch_dist.run(collectives.build("allreduce", "ring", p), torch.zeros(4), mode="dataflw")
except ValueError as exc:
    assert "dataflow" in str(exc), exc
else:
    raise AssertionError("an unknown mode was accepted")
dist.destroy_process_group()
print(f"checked {checked}")
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
@pytest.mark.parametrize("nranks", [2, 3, 4])
def test_every_algorithm_matches_the_reference_on_gloo(nranks, tmp_path):
    out = assert_all_ok(run_torch_ranks(WORKER, nranks, tmp_path, timeout=140))
    assert out.count("checked ") == nranks


# 8-bit types on 2 ranks: int8 and uint8 inputs across their whole range, so the sums wrap
# modulo 2^8 (compared with the reference executor on numpy arrays of the same type, and
# with gloo's own all_reduce); float8 inputs small enough to add exactly, which the
# executor adds in float32 (torch has no float8 add; gloo moves its bytes point to point)
EIGHT_BITS = """
import numpy as np
import torch
import torch.distributed as dist

from commsim import collectives
from commsim.backends import reference, torch_dist

dist.init_process_group("gloo")
rank, p = dist.get_rank(), dist.get_world_size()
checked = 0
for name, low, high in (("int8", -128, 128), ("uint8", 0, 256)):
    rng = np.random.default_rng(7)
    inputs = [rng.integers(low, high, size=37).astype(name) for _ in range(p)]
    total = reference.expected("allreduce", inputs)[rank]
    assert total.dtype == np.dtype(name)
    wide = sum(x.astype(np.int64) for x in inputs)
    assert (wide != total).any() and np.array_equal(wide.astype(name), total)  # it wraps
    native = torch.from_numpy(inputs[rank].copy())
    dist.all_reduce(native)
    assert np.array_equal(native.numpy(), total), (name, native)
    for collective in ("allreduce", "reduce_scatter", "reduce"):
        for algorithm in [a for c, a in collectives.available() if c == collective]:
            schedule = collectives.build(collective, algorithm, p)
            want = reference.run(schedule, inputs)[rank]
            for mode in ("step", "dataflow"):
                buf = torch_dist.logical_buffer(schedule, torch.from_numpy(inputs[rank]))
                torch_dist.run(schedule, buf, mode=mode)
                got = torch_dist.result_view(schedule, buf).numpy()
                if collective != "reduce" or rank == 0:
                    assert np.array_equal(got, want), (name, collective, algorithm, mode)
                checked += 1
for dtype in (torch.float8_e4m3fn, torch.float8_e5m2):
    values = [np.arange(29) % 4 + r for r in range(p)]  # sums <= 7: exact in both
    want = np.sum(values, axis=0).astype(np.float64)
    for algorithm in [a for c, a in collectives.available() if c == "allreduce"]:
        schedule = collectives.build("allreduce", algorithm, p)
        for mode in ("step", "dataflow"):
            buf = torch.from_numpy(values[rank].astype(np.float64)).to(dtype)
            out = torch_dist.new_output(schedule, buf)  # out of place: out = in + received
            torch_dist.run(schedule, buf, mode=mode, out=out)
            torch_dist.run(schedule, buf, mode=mode)
            assert buf.dtype == out.dtype == dtype
            assert np.array_equal(buf.to(torch.float64).numpy(), want), (dtype, algorithm, mode)
            assert np.array_equal(out.to(torch.float64).numpy(), want), (dtype, algorithm, mode)
            checked += 1
dist.destroy_process_group()
print(f"checked {checked}")
"""


@pytest.mark.slow
@pytest.mark.timeout(90)
def test_8_bit_types_wrap_or_add_exactly_like_the_reference_on_gloo(tmp_path):
    out = assert_all_ok(run_torch_ranks(EIGHT_BITS, 2, tmp_path, timeout=80))
    assert out.count("checked ") == 2
