"""benchmarks/prediction_error.py --replay: kept runs predicted again from their profiles,
fitted again by this checkout, with nothing measured."""

from __future__ import annotations

import json

import benchmark_scripts
import pytest
from test_calibrate_profile import GAMMA, fit_all, synthetic

from commsim import collectives
from commsim.bench.predictions import Predictor
from commsim.calibrate import profile
from commsim.calibrate.measure import Series

SIZES = [64 << 10, 256 << 10, 1 << 20, 4 << 20]


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


def test_replay_keeps_each_place_apart_and_predicts_it_as_bench_did(tmp_path, script, capsys):
    m = synthetic(["h", "h"], noise=0.0)
    m.cache_bytes = 8 << 20   # adds 5x faster warm: in place more of 2 MiB is in the cache
    m.warm_reduction = Series(SIZES, [1e-6 + n * GAMMA / 5 for n in SIZES])
    data = profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                         "versions": {}})
    path = profile.write(data, tmp_path / "profile-gloo-2.yaml")
    config = {"type": "config", "prediction": {"mode": "dataflow"},
              "ranks": [{"host": "h"}, {"host": "h"}], "torch": "2.13.0"}
    size = 2 << 20
    runs = []
    for i, (t_out, t_in) in enumerate(((3000.0, 2000.0), (3300.0, 2200.0))):
        rows = [{**_row("ring", size, 4, t_out), "place": "out-of-place"},
                {**_row("ring", size, 4, t_in), "place": "in-place"}]
        runs.append(rows)
        (tmp_path / f"run-gloo-2-{i}.jsonl").write_text(
            "\n".join(json.dumps(r) for r in [config, *rows]) + "\n")
    assert script.main(["--replay", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    bench = Predictor(str(path), 2, mode="dataflow")
    bench.gamma = bench.graph.graph["model"]["gamma"]
    ring = collectives.build("allreduce", "ring", 2, 4)
    assert bench.model(ring, size) < bench.model(ring, size, out_of_place=True)
    lines = {x.split()[3]: x for x in out.splitlines() if " ring " in x}
    assert set(lines) == {"in", "out"}
    for place, apart, median in (("in", False, 2100.0), ("out", True, 3150.0)):
        assert f"{bench.model(ring, size, False, apart) * 1e6:.1f}" in lines[place]
        assert f"{median:.1f}" in lines[place]   # the median of that place's repeats
