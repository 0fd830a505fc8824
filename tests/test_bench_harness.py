"""commsim.bench.harness's prediction columns: one set per place (rank 0's)."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from test_calibrate_profile import fit_all, synthetic

from commsim.bench import harness
from commsim.bench.comm import IN_PLACE, OUT_OF_PLACE
from commsim.bench.config import resolve_dtype
from commsim.bench.predictions import Predictor
from commsim.calibrate import profile
from commsim.calibrate.measure import Series


@pytest.fixture()
def predictor(tmp_path):
    m = synthetic(["h", "h"], noise=0.0)
    m.cache_bytes = 8 << 20
    sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
    m.warm_reduction = Series(sizes, [1e-6 + n / 20e9 for n in sizes])
    data = profile.build(m, fit_all(m, "mpi"), {"backend": "mpi", "exec": "dataflow",
                                                 "versions": {}})
    pred = Predictor(str(profile.write(data, tmp_path / "p.yaml")), 2, mode="dataflow")
    pred.gamma = pred.graph.graph["model"]["gamma"]
    return pred


@pytest.mark.parametrize("nbytes", [1 << 20, 16 << 20])
def test_each_place_is_predicted_apart(predictor, nbytes):
    """Out of place Open MPI copies its input into its result first (at the call's
    reduction rate), and the input is one buffer more in the cache."""
    cfg = SimpleNamespace(backend="mpi", root=0)
    args = (cfg, predictor, "allreduce", None, nbytes, resolve_dtype("float32"),
            {"mpi": "Open MPI v5.0.11"}, 1)
    inside, apart = (harness.row_predictions(*args, place) for place in (IN_PLACE, OUT_OF_PLACE))
    assert inside["native_as"] == apart["native_as"] == "rabenseifner"
    assert apart["warm"] <= inside["warm"]
    gamma = predictor.for_call(nbytes, out_of_place=True)[1]
    schedule_apart = predictor.model(predictor.native("mpi", "allreduce", nbytes, 4,
                                                      args[6], 0, 1)[1], nbytes, True, True)
    assert apart["t_model_us"] == pytest.approx((schedule_apart + nbytes * gamma) * 1e6)
    assert apart["t_model_us"] > inside["t_model_us"]
