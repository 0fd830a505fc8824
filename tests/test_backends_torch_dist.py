"""The torch.distributed executor: every algorithm, in both modes, gives the reference's
result on gloo."""

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
        if collective != "reduce" or rank == root:
            where = f"{collective}/{algorithm} {mode} k={schedule.nchunks} n={n} {dtype}"
            assert np.array_equal(got, want), f"{where}: {got} != {want}"
            assert np.array_equal(got, oracle), where
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
