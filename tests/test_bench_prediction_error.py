"""benchmarks/prediction_error.py --replay: kept runs predicted again from their profiles,
fitted again by this checkout, with nothing measured."""

from __future__ import annotations

import json

import benchmark_scripts
import pytest
from test_calibrate_profile import fit_all, synthetic

from commsim import collectives
from commsim.bench.predictions import Predictor
from commsim.calibrate import profile


@pytest.fixture(scope="module")
def script():
    return benchmark_scripts.load("prediction_error")


def _row(algorithm, size, nchunks, time_us):
    return {"type": "result", "status": "ok", "collective": "allreduce", "backend": "gloo",
            "algorithm": algorithm, "nranks": 2, "size": size, "nchunks": nchunks,
            "dtype": "float32", "root": -1, "time_us": time_us, "iter_p50_us": time_us,
            "iter_p99_us": time_us, "t_model_us": 1.0, "t_sim_us": 1.0}


def test_replay_predicts_the_kept_rows_again_from_the_refitted_profile(tmp_path, script,
                                                                       capsys):
    m = synthetic(["h", "h"], noise=0.0)
    data = profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                         "versions": {}})
    path = profile.write(data, tmp_path / "profile-gloo-2.yaml")
    config = {"type": "config", "prediction": {"mode": "dataflow"},
              "ranks": [{"host": "h"}, {"host": "h"}], "torch": "2.13.0"}
    rows = [_row("ring", 1 << 20, 4, 2000.0), _row("native", 1 << 20, None, 1500.0)]
    (tmp_path / "run-gloo-2-0.jsonl").write_text(
        "\n".join(json.dumps(r) for r in [config, *rows]) + "\n")
    assert script.main(["--replay", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    bench = Predictor(str(path), 2, mode="dataflow")
    bench.gamma = bench.graph.graph["model"]["gamma"]
    ring = bench.model(collectives.build("allreduce", "ring", 2, 4), 1 << 20)
    line = next(x for x in out.splitlines() if " ring " in x)
    assert f"{ring * 1e6:.1f}" in line and "2000.0" in line
    assert "replayed" in out and "native" in out
    with pytest.raises(SystemExit, match="no run-BACKEND-NPROC-I.jsonl"):
        script.main(["--replay", str(tmp_path / "empty")])
