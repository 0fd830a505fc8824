"""The reference executor's contract: inputs, results, and the step semantics."""

import numpy as np
import pytest

from commsim import collectives
from commsim.backends import reference
from commsim.collectives import Schedule
from commsim.errors import CommsimError


def test_sends_read_pre_step_values():
    # step 0: 0 -> 1 copies chunk 0 while 1 -> 0 adds chunk 0; both read the old values
    s = Schedule.from_transfers("allreduce", "hand", 2, 1,
                                [(0, 0, 1, 0, False), (0, 1, 0, 0, True)])
    got = reference.run(s, [np.array([1.0]), np.array([10.0])])
    assert got[0].tolist() == [11.0] and got[1].tolist() == [1.0]


def test_results_shapes_when_length_below_ranks():
    p, n = 5, 2
    inputs = [np.full(n, r + 1.0) for r in range(p)]
    rs = reference.run(collectives.build("reduce_scatter", "ring", p), inputs)
    assert [len(x) for x in rs] == [1, 1, 0, 0, 0]
    assert rs[0].tolist() == [15.0]
    ag = reference.run(collectives.build("allgather", "rhd", p), inputs)
    assert all(len(x) == p * n for x in ag)


def test_integer_dtypes_are_kept():
    inputs = [np.arange(7, dtype=np.int32) * (r + 1) for r in range(3)]
    out = reference.run(collectives.build("allreduce", "ring", 3), inputs)
    assert out[0].dtype == np.int32
    assert out[2].tolist() == (np.arange(7) * 6).tolist()


def test_bad_inputs():
    s = collectives.build("allreduce", "ring", 3)
    with pytest.raises(CommsimError, match="3 ranks"):
        reference.run(s, [np.zeros(2)] * 2)
    with pytest.raises(CommsimError, match="same length"):
        reference.run(s, [np.zeros(2), np.zeros(2), np.zeros(3)])


def test_expected_rejects_unknown_collective():
    with pytest.raises(CommsimError):
        reference.expected("gossip", [np.zeros(1)])
