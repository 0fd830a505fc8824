"""Network profiles: fitted from measurements, written as YAML, loaded back as a topology
whose links and model parameters are the ones measured; and a real calibrate run."""

import json

import numpy as np
import pytest
import yaml
from multiproc import assert_all_ok, run_torch_ranks

from commsim import collectives, model, topology
from commsim.backends.native_as import native_as
from commsim.bench.predictions import native_schedule
from commsim.calibrate import measure, profile
from commsim.calibrate.measure import Measurements, Series
from commsim.cli import main
from commsim.errors import CommsimError
from commsim.model.on_topology import TopologyModel
from commsim.topology import spec
from commsim.units import format_size

INTRA = (20e-6, 1 / 8e9)    # alpha (s), beta (s/byte)
INTER = (60e-6, 1 / 2e9)
CONTENTION = 1.5
GAMMA = 1 / 5e9
PER_STEP, PER_EXCHANGE, PER_MESSAGE = 40e-6, 300e-6, 90e-6
NATIVE_PER_MESSAGE = 60e-6


def _series(alpha, beta, sizes, noise, rng):
    s = Series()
    for n in sizes:
        s.sizes.append(n)
        s.seconds.append((alpha + beta * n) * rng.lognormal(0, noise))
    return s


def synthetic(hosts, noise=0.02, seed=0, mode="dataflow") -> Measurements:
    """Measurements of a machine with the parameters above: the executor's and the
    native allreduce's times are the model's on its network with the costs charged."""
    rng = np.random.default_rng(seed)
    classes = measure.link_classes(hosts)
    params = {"intra_host": INTRA, "inter_host": INTER}
    pairs = {name: _series(*params[name], measure.SIZES, noise, rng) for name in classes}
    slowest = max(params[name][1] for name in classes)
    ring = _series(80e-6, slowest * CONTENTION, measure.SIZES, noise, rng)
    reduction = _series(2e-6, GAMMA, measure.REDUCE_SIZES, noise, rng)
    m = Measurements(hosts, pairs, classes, ring, reduction)
    exact = {name: {"alpha": params[name][0], "beta": params[name][1]} for name in classes}
    exact["ring"] = {"alpha": 80e-6, "beta": slowest * CONTENTION}
    G = spec.parse({"name": "synthetic", **profile.network(m, exact)})
    p = len(hosts)
    executor = TopologyModel(G, p, overhead=PER_STEP, exchange_overhead=PER_EXCHANGE,
                             message_overhead=PER_MESSAGE)
    o = m.overhead = {key: [] for key in ("algorithm", "nchunks", "bytes", "seconds")}
    for algorithm, pieces in measure.OVERHEAD_CASES:
        k = pieces * collectives.chunk_unit("allreduce", algorithm, p)
        for size in measure.OVERHEAD_SIZES:
            nbytes = 4 * max(k, size // 4 // k * k)
            t = executor.estimate(collectives.build("allreduce", algorithm, p, k), nbytes,
                                  GAMMA, mode).time
            for key, value in zip(o, (algorithm, k, nbytes, t * rng.lognormal(0, noise))):
                o[key].append(value)
    backend = TopologyModel(G, p, message_overhead=NATIVE_PER_MESSAGE)
    for size in measure.NATIVE_SIZES:
        choice = native_as("gloo", "allreduce", p, size, nnodes=len(set(hosts)))
        t = backend.estimate(native_schedule(choice, p), size, GAMMA, mode).time
        m.native.sizes.append(size)
        m.native.seconds.append(t * rng.lognormal(0, noise))
    return m


def fit_all(m, backend="gloo", mode="dataflow"):
    return profile.fit_all(m, {"backend": backend, "exec": mode, "versions": {}})


def _write(tmp_path, hosts, **kwargs):
    m = synthetic(hosts, **kwargs)
    fits = fit_all(m)
    data = profile.build(m, fits, {"backend": "gloo", "exec": "dataflow", "versions": {}})
    return profile.write(data, tmp_path / "sub" / "p.yaml"), data


def test_link_classes_pick_one_pair_per_class():
    assert measure.link_classes(["a", "a", "b"]) == {"intra_host": (0, 1), "inter_host": (0, 2)}
    assert measure.link_classes(["a", "b", "a"]) == {"intra_host": (0, 2), "inter_host": (0, 1)}
    assert measure.link_classes(["a", "a"]) == {"intra_host": (0, 1)}


def test_a_profile_loads_as_the_measured_topology(tmp_path):
    path, data = _write(tmp_path, ["a", "a", "b", "b"])
    G = topology.load(path)
    assert topology.gpus(G) == ["rank0", "rank1", "rank2", "rank3"]
    params = G.graph["model"]
    assert params["gamma"] == pytest.approx(GAMMA, rel=0.1)
    assert params["contention"] == pytest.approx(CONTENTION, rel=0.15)
    assert params["step_overhead"] == pytest.approx(PER_STEP, rel=0.3)
    assert params["exchange_overhead"] == pytest.approx(PER_EXCHANGE, rel=0.3)
    assert params["message_overhead"] == pytest.approx(PER_MESSAGE, rel=0.3)
    assert params["native_message_overhead"] == pytest.approx(NATIVE_PER_MESSAGE, rel=0.3)
    assert topology.executor_overheads(G, native=True) == {
        "overhead": 0.0, "exchange_overhead": None,
        "message_overhead": params["native_message_overhead"]}
    # an exchange of every rank at once adds the ring shift's latency over a pair's
    assert params["exchange_latency"] == pytest.approx(80e-6 - INTRA[0], rel=0.3)
    # ranks on one host: the intra class; across hosts: the inter class, as one pair alone
    a_in, b_in = model.alpha_beta(G, 2)
    assert a_in == pytest.approx(INTRA[0], rel=0.25)
    assert b_in == pytest.approx(INTRA[1], rel=0.1)
    a_all, b_all = model.alpha_beta(G, 4)
    assert a_all == pytest.approx(INTER[0], rel=0.25)
    assert b_all == pytest.approx(INTER[1], rel=0.1)
    # each host's shared capacity: the ring shift's 3 flows through it (0->1, 1->2 and
    # 3->0 on host a) over the ring's time per byte, never below one pair alone
    capacity = G.edges["host0.in", "host0.out"]["bandwidth"]
    assert capacity == pytest.approx(max(1 / INTRA[1], 3 / (INTER[1] * CONTENTION)), rel=0.1)
    meta = G.graph["profile"]
    assert meta["hosts"] == ["a", "b"] and meta["nranks"] == 4 and meta["backend"] == "gloo"
    assert set(meta["fits"]) == {"intra_host", "inter_host", "ring", "reduction", "overhead",
                                 "native"}
    assert all(0 <= f["r2"] <= 1 for f in meta["fits"].values())
    # the file is plain YAML (safe_load), and no temporary file is left behind
    assert yaml.safe_load(path.read_text())["name"] == data["name"]
    assert [p.name for p in path.parent.iterdir()] == ["p.yaml"]


def test_a_host_that_moves_one_pair_s_bytes_at_a_time_halves_a_ring_not_a_tree(tmp_path):
    """Two ranks whose ring shift takes twice a pair's time (one memory bus): in the
    simulator and the model alike, ring allreduce's two-way steps share the host and
    run at half the pair's rate, while a tree's one-way steps get all of it."""
    m = synthetic(["h", "h"], noise=0.0)
    m.ring = _series(INTRA[0], INTRA[1] * 2, measure.SIZES, 0.0, np.random.default_rng(0))
    data = profile.build(m, fit_all(m, mode="step"), {"backend": "gloo", "exec": "step",
                                                 "versions": {}})
    G = topology.load(profile.write(data, tmp_path / "bus.yaml"))
    assert G.graph["model"]["contention"] == pytest.approx(2.0)
    from commsim import collectives
    from commsim.model.on_topology import predict_on
    from commsim.sim import simulate

    size = 64 << 20
    a, b = model.alpha_beta(G, 2)
    for algorithm, slower in (("ring", 2.0), ("tree", 1.0)):
        s = collectives.build("allreduce", algorithm, 2)
        flat = model.predict("allreduce", algorithm, 2, size, a, b * slower)
        t_model = predict_on(s, G, size)
        t_sim = simulate(s, G, size).time
        assert t_model.shared == (algorithm == "ring")     # both ways through the host
        assert t_sim == pytest.approx(t_model.time, rel=1e-9), algorithm
        assert t_sim == pytest.approx(flat, rel=0.02), algorithm
    # a ring moves S/2 each way per step at half rate: the tree's one-way S at full rate
    assert simulate(collectives.build("allreduce", "ring", 2), G, size).time == \
        pytest.approx(simulate(collectives.build("allreduce", "tree", 2), G, size).time,
                      rel=0.02)


def test_the_ring_shift_is_the_median_of_its_passes_and_the_profile_keeps_them(tmp_path):
    """One slow pass (a neighbour's burst) moves neither the ring fit nor the host's
    shared capacity; the passes are kept in the profile's raw measurements."""
    assert measure.ring_medians([[1.0, 5.0], [3.0, 1.0], [2.0, 9.0]]) == [2.0, 5.0]
    m = synthetic(["h"] * 4, noise=0.0)
    slow = [t * 1.8 for t in m.ring.seconds]
    m.ring_passes = [list(m.ring.seconds), slow, list(m.ring.seconds)]
    quiet = fit_all(m)
    m.ring = Series(list(m.ring.sizes), measure.ring_medians(m.ring_passes))
    data = profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                         "versions": {}})
    assert data["profile"]["fits"]["ring"]["beta"] == pytest.approx(quiet["ring"]["beta"])
    raw = data["profile"]["measurements"]["ring_passes"]
    assert raw["bytes"] == list(m.ring.sizes) and raw["seconds"][1] == slow


def test_one_host_has_no_fabric(tmp_path):
    path, _ = _write(tmp_path, ["h"] * 3)
    G = topology.load(path)
    assert "fabric" not in G and len(topology.gpus(G)) == 3


def test_data_that_cannot_support_a_fit_is_refused(tmp_path):
    m = synthetic(["a", "a"])
    m.ring.seconds = m.ring.seconds[::-1]  # time falls as size grows
    with pytest.raises(CommsimError, match="ring shift"):
        fit_all(m)


def test_default_path_is_keyed_by_host_backend_and_ranks(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    assert profile.default_path(["n1", "n1", "n2"], "mpi") == \
        tmp_path / "commsim" / "profiles" / "n1+1-mpi-3.yaml"


@pytest.mark.parametrize("block,match", [
    ({"reduce_bandwith": "1GB/s"}, "reduce_bandwidth"),
    ({"contention": 0.5}, "contention"),
    ({"cores_per_rank": 0}, "cores_per_rank: 0 must be a number above 0"),
    ({"cores_per_rank": "two"}, "cores_per_rank"),
    ({"cores_per_rank": True}, "cores_per_rank"),
    ({"step_overhead": "fast"}, "step_overhead"),
    ("5GB/s", "mapping"),
])
def test_bad_model_blocks_are_one_line_errors(tmp_path, block, match):
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump({"builder": "star", "params": {"n": 2}, "model": block}))
    with pytest.raises(CommsimError, match=match):
        topology.load(path)


def test_predict_and_simulate_use_the_profile(tmp_path, capsys):
    path, _ = _write(tmp_path, ["a", "a", "a", "a"])
    G = topology.load(path)
    params = G.graph["model"]
    assert main(["predict", "--profile", str(path), "--algorithm", "ring", "--size", "64M",
                 "--mode", "step", "--json", str(tmp_path / "pred.jsonl")]) == 0
    row = yaml.safe_load((tmp_path / "pred.jsonl").read_text().splitlines()[0])
    a, b = model.alpha_beta(G, 4)
    # the flat alpha picks pipeline depths: the larger of the two step costs
    alpha = a + max(params["step_overhead"], params["exchange_overhead"])
    from commsim.model.on_topology import predict_on

    want = predict_on(collectives.build("allreduce", "ring", 4, row["nchunks"]), G, 64 << 20,
                      gamma=params["gamma"], overhead=params["step_overhead"],
                      message_overhead=params["message_overhead"],
                      exchange_overhead=params["exchange_overhead"])
    assert row["time_us"] == pytest.approx(want.time * 1e6)
    assert row["model"] == "topology" and row["mode"] == "step"
    assert row["alpha_us"] == pytest.approx(alpha * 1e6)
    assert main(["simulate", "--profile", str(path), "--algorithm", "ring", "--size", "1M"]) == 0
    assert "gamma" in capsys.readouterr().out
    assert main(["predict", "--profile", str(path), "--topology", "localhost"]) == 2
    assert "exclude each other" in capsys.readouterr().err


@pytest.mark.parametrize("cores,overlap", [(0.5, False), (1.5, False), (2.0, True), (8, True)])
def test_predict_simulate_and_bench_assume_what_the_profile_measured(tmp_path, cores,
                                                                      overlap):
    """The profile's execution mode and cores per rank (whether reductions overlap
    transfers) are what predict and simulate assume by default: the same times as
    bench's t_model and t_sim for the same schedule, whatever verb asks."""
    from commsim.bench.predictions import Predictor

    m = synthetic(["a"] * 4, noise=0.0)
    m.cores_per_rank = cores
    data = profile.build(m, fit_all(m), {"backend": "mpi", "exec": "dataflow", "versions": {}})
    assert data["model"]["cores_per_rank"] == cores
    path = profile.write(data, tmp_path / "p.yaml")
    G = topology.load(path)
    assert G.graph["model"]["cores_per_rank"] == cores
    bench = Predictor(str(path), 4, mode="dataflow")
    assert bench.overlap is overlap and bench.overlap_known
    bench.gamma = G.graph["model"]["gamma"]   # as bench's harness sets it from a profile
    for algo in ("tree", "ring"):
        for verb in ("predict", "simulate"):
            out = tmp_path / f"{verb}-{algo}.jsonl"
            assert main([verb, "--profile", str(path), "--algorithm", algo, "--size", "16M",
                         "--chunks", "4", "--json", str(out)]) == 0
            row = json.loads(out.read_text().splitlines()[0])
            assert row["mode"] == "dataflow" and row["overlap"] is overlap
            s = collectives.build("allreduce", algo, 4, row["nchunks"])
            t_model = bench.model(s, 16 << 20)
            if verb == "predict":
                assert row["time_us"] == pytest.approx(t_model * 1e6, rel=1e-12)
            else:
                assert row["t_model_us"] == pytest.approx(t_model * 1e6, rel=1e-12)
                assert row["time_us"] == pytest.approx(bench.sim(s, 16 << 20) * 1e6,
                                                       rel=1e-12)
    # without overlap a tree's reductions hold its connections: never faster
    s = collectives.build("allreduce", "tree", 4, 16)
    free = TopologyModel(G, 4, **topology.executor_overheads(G))
    assert bench.model(s, 16 << 20) >= free.estimate(s, 16 << 20, G.graph["model"]["gamma"],
                                                     "dataflow", True).time * (1 - 1e-12)
    # --mode overrides the profile's mode
    out = tmp_path / "step.jsonl"
    assert main(["predict", "--profile", str(path), "--algorithm", "tree", "--size", "1M",
                 "--mode", "step", "--json", str(out)]) == 0
    assert json.loads(out.read_text())["mode"] == "step"


@pytest.mark.parametrize("hosts", [["h"] * 4, ["a", "a", "b", "b"], ["a", "b", "a"]])
def test_a_profile_keeps_what_it_was_fitted_from_and_fits_again_the_same(tmp_path, hosts):
    """The raw measurements in a profile file are the ones it was fitted from (each
    rank's host read back from its links), and fitting them again gives its model."""
    m = synthetic(hosts)
    meta = {"backend": "gloo", "exec": "dataflow", "versions": {}}
    data = profile.build(m, fit_all(m), meta)
    path = profile.write(data, tmp_path / "p.yaml")
    back = profile.measurements_of(yaml.safe_load(path.read_text()))
    assert back.hosts == m.hosts and back.pair_ranks == m.pair_ranks
    for name in ("ring", "reduction", "native"):
        assert getattr(back, name).sizes == list(getattr(m, name).sizes)
        assert getattr(back, name).seconds == pytest.approx(getattr(m, name).seconds)
    assert back.overhead["algorithm"] == m.overhead["algorithm"]
    assert back.overhead["seconds"] == pytest.approx(m.overhead["seconds"])
    again = profile.refit(yaml.safe_load(path.read_text()))
    assert again["model"] == data["model"] and again["links"] == data["links"]
    assert again["profile"]["hosts"] == data["profile"]["hosts"]
    with pytest.raises(CommsimError, match="no raw measurements"):
        profile.measurements_of({"profile": {"nranks": 2}})
    assert main(["predict", "--profile", str(path), "--size", "1M"]) == 0


def test_warm_rates_are_fitted_and_every_verb_predicts_a_warm_call_alike(tmp_path):
    """Two ranks sharing 8 MiB of cache: the ring shift ran 1.4 times faster a byte at
    the sizes whose buffers fit (2 x 2 x 2 MiB at most), the same adds 4 times faster on
    the same buffers. The profile says so, with the ring's line fitted to the other
    sizes; bench's Predictor, predict and simulate then price a 1 MiB allreduce (all of
    it in the cache) on the warm view, faster than cold, and a 64 MiB one (1/64 of it in
    the cache) nearly cold, all three alike."""
    from commsim.bench.predictions import Predictor
    from commsim.topology import warm

    m = synthetic(["h", "h"], noise=0.0)
    m.cache_bytes = 8 << 20
    a, b = 20e-6, INTRA[1] * CONTENTION
    m.ring.seconds = [a + n * b / (1.4 if 2 * n * 2 <= m.cache_bytes else 1.0)
                      for n in m.ring.sizes]
    m.warm_reduction = Series([64 << 10, 256 << 10, 1 << 20, 4 << 20],
                              [1e-6 + n * GAMMA / 4 for n in (64 << 10, 256 << 10, 1 << 20,
                                                              4 << 20)])
    data = profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                         "versions": {}})
    params = data["model"]
    assert params["cache_bytes"] == 8 << 20
    assert data["profile"]["fits"]["ring"]["beta"] == pytest.approx(b)   # the cold sizes
    assert params["warm_link_speedup"] == pytest.approx(1.4, rel=0.02)
    assert float(params["warm_reduce_bandwidth"].removesuffix("GB/s")) == pytest.approx(20,
                                                                                       rel=0.02)
    path = profile.write(data, tmp_path / "p.yaml")
    again = profile.refit(yaml.safe_load(path.read_text()))   # the warm series kept too
    assert again["model"] == params
    G = topology.load(path)
    assert G.graph["model"]["warm_gamma"] == pytest.approx(GAMMA / 4, rel=0.02)
    bench = Predictor(str(path), 2, mode="dataflow")
    bench.gamma = G.graph["model"]["gamma"]
    for size, share in ((1 << 20, 1.0), (64 << 20, 1 / 64)):
        assert warm.hit_fraction(G, size, 2) == share
        out = tmp_path / f"{size}.jsonl"
        assert main(["predict", "--profile", str(path), "--algorithm", "ring", "--size",
                     str(size), "--chunks", "2", "--json", str(out)]) == 0
        row = json.loads(out.read_text().splitlines()[0])
        assert row["warm"] == share
        s = collectives.build("allreduce", "ring", 2, row["nchunks"])
        assert row["time_us"] == pytest.approx(bench.model(s, size) * 1e6, rel=1e-12)
        assert main(["simulate", "--profile", str(path), "--algorithm", "ring", "--size",
                     str(size), "--chunks", "2", "--json", str(out)]) == 0
        row = json.loads(out.read_text().splitlines()[0])
        assert row["time_us"] == pytest.approx(bench.sim(s, size) * 1e6, rel=1e-12)
        cold = Predictor(str(path), 2, mode="dataflow")
        cold.gamma, cold.repeated = bench.gamma, False   # as a training step's buckets
        assert bench.model(s, size) < cold.model(s, size)
    # a profile without a cache measures no warm rates
    m.cache_bytes = None
    assert "cache_bytes" not in profile.build(m, fit_all(m), {"backend": "mpi",
                                                           "exec": "dataflow",
                                                           "versions": {}})["model"]


def test_a_topology_without_cores_per_rank_overlaps_in_step_mode():
    from commsim.model.setup import prediction_setting

    assert prediction_setting(None) == ("step", True)
    assert prediction_setting(topology.load("dgx-a100-4node")) == ("step", True)
    assert prediction_setting(topology.load("dgx-a100-4node"), "dataflow") == \
        ("dataflow", True)


CALIBRATE = """
import sys
from commsim.cli import main
raise SystemExit(main(["calibrate"] + sys.argv[1:]))
"""


@pytest.mark.slow
@pytest.mark.timeout(150)
def test_calibrate_on_two_gloo_ranks_writes_a_profile_that_bench_reads(tmp_path):
    out = tmp_path / "prof.yaml"
    text = assert_all_ok(run_torch_ranks(CALIBRATE, 2, tmp_path, timeout=140,
                                         args=("--out", str(out), "--max-size", "4M")))
    assert str(out) in text
    G = topology.load(out)
    assert len(topology.gpus(G)) == 2 and G.graph["model"]["gamma"] > 0
    assert G.graph["profile"]["measurements"]["pair_intra_host"]["bytes"][-1] == 2 << 20
    bench = """
import sys
from commsim.cli import main
raise SystemExit(main(["bench"] + sys.argv[1:]))
"""
    text = assert_all_ok(run_torch_ranks(bench, 2, tmp_path, timeout=100, args=(
        "--profile", str(out), "--algorithm", "ring", "-b", "1K", "-e", "1K", "-n", "2",
        "-w", "1", "--json", str(tmp_path / "b.jsonl"))))
    assert f"topology {G.graph['name']}" in text and "(profile)" in text
    # the profile's ring shift, timed again before the sweep: how far the machine moved
    config = json.loads((tmp_path / "b.jsonl").read_text().splitlines()[0])
    moved = config["prediction"]["drift"]
    assert moved["bytes"] == 2 << 20 and moved["now_us"] > 0 and moved["ratio"] > 0
    assert moved["profile_us"] == pytest.approx(
        G.graph["profile"]["measurements"]["ring"]["seconds"][-1] * 1e6)
    # --reuse: an existing profile measured as far as asked is kept, its path printed,
    # nothing measured
    before = out.stat().st_mtime_ns
    text = assert_all_ok(run_torch_ranks(CALIBRATE, 2, tmp_path, timeout=100,
                                         args=("--out", str(out), "--reuse",
                                               "--max-size", "4M")))
    assert str(out) in text and "ping-pong" not in text and out.stat().st_mtime_ns == before


def test_calibrate_refuses_sizes_too_small_for_a_bandwidth_fit(capsys):
    assert main(["calibrate", "--max-size", "1K"]) == 2
    assert "1M" in capsys.readouterr().err


def test_a_profile_of_another_rank_count_is_refused(tmp_path):
    from commsim.bench.predictions import Predictor

    path, _ = _write(tmp_path, ["a", "a", "a"])
    assert Predictor(str(path), 3).topology_name
    with pytest.raises(CommsimError, match="measured on 3 ranks and this run has 2"):
        Predictor(str(path), 2)


def test_a_profile_from_an_older_calibration_is_stale_and_measured_again(tmp_path):
    path, data = _write(tmp_path, ["h", "h"])
    assert data["profile"]["format"] == profile.FORMAT
    assert profile.stale(path) is None
    assert profile.stale(tmp_path / "absent.yaml") is None
    old = yaml.safe_load(path.read_text())
    del old["profile"]["format"]           # what the previous calibration wrote
    path.write_text(yaml.safe_dump(old))
    assert "older calibration (format 1" in profile.stale(path)
    path.write_text("[not, a, profile]")
    assert "cannot be read" in profile.stale(path)


def test_a_profile_measured_to_smaller_sizes_than_asked_is_stale(tmp_path):
    path, data = _write(tmp_path, ["h", "h"])
    largest = max(data["profile"]["measurements"]["ring"]["bytes"])
    assert profile.stale(path, largest) is None
    assert profile.stale(path, largest // 4) is None     # a smaller ask is covered
    why = profile.stale(path, 4 * largest)
    assert why.startswith(f"was measured up to {format_size(largest)}, not the ")
    assert "(--max-size)" in why


def test_first_touch_is_fitted_and_charged_to_native_rows_that_map_fresh_scratch(tmp_path):
    """Open MPI's rhd allreduce mallocs a whole-message scratch buffer every call; above
    glibc's 32 MiB mmap threshold its pages are fresh, and their first writes cost what
    calibrate measured (here 6 GB/s)."""
    from commsim.backends.native_as import native_as
    from commsim.bench.predictions import Predictor

    m = synthetic(["h", "h"])
    m.first_touch = _series(0.0, 1 / 6e9, measure.FIRST_TOUCH_SIZES, 0.0,
                            np.random.default_rng(0))
    data = profile.build(m, fit_all(m, "mpi"), {"backend": "mpi", "exec": "dataflow",
                                                 "versions": {}})
    path = profile.write(data, tmp_path / "p.yaml")
    G = topology.load(path)
    assert G.graph["model"]["first_touch"] == pytest.approx(1 / 6e9, rel=1e-3)
    versions = {"mpi": "Open MPI v5.0.11"}
    big = native_as("mpi", "allreduce", 2, 64 << 20, versions=versions)
    small = native_as("mpi", "allreduce", 2, 16 << 20, versions=versions)
    assert (big.name, big.scratch, small.scratch) == ("rabenseifner", 32 << 20, 0)
    pred = Predictor(str(path), 2)
    assert pred.native_extra(big) == pytest.approx((32 << 20) / 6e9, rel=1e-3)
    assert pred.native_extra(small) == 0.0


def test_out_of_place_native_rows_pay_the_input_s_copy_at_the_call_s_reduction_rate(tmp_path):
    """Open MPI's ring and rabenseifner allreduce copy the send buffer into the receive
    buffer first when not in place: that many bytes at the rate the call reduces at
    (cold at 64 MiB, warm where the call's data stays in the cache)."""
    from commsim.backends.native_as import native_as
    from commsim.bench.predictions import Predictor

    m = synthetic(["h", "h"])
    m.cache_bytes = 8 << 20
    sizes = [64 << 10, 256 << 10, 1 << 20, 4 << 20]
    m.warm_reduction = Series(sizes, [1e-6 + n / 20e9 for n in sizes])
    data = profile.build(m, fit_all(m, "mpi"), {"backend": "mpi", "exec": "dataflow",
                                                 "versions": {}})
    pred = Predictor(str(profile.write(data, tmp_path / "p.yaml")), 2)
    pred.gamma = pred.graph.graph["model"]["gamma"]   # as bench sets it
    versions = {"mpi": "Open MPI v5.0.11"}
    for size in (256 << 10, 64 << 20):
        choice = native_as("mpi", "allreduce", 2, size, versions=versions)
        copy = pred.native_extra(choice, size, True) - pred.native_extra(choice, size)
        gamma = pred.for_call(size, out_of_place=True)[1]
        assert copy == pytest.approx(size * gamma, rel=1e-9)
    assert pred.for_call(256 << 10, True)[1] == pytest.approx(1 / 20e9, rel=0.05)  # warm
    assert pred.for_call(64 << 20, True)[1] > 0.9 * pred.gamma                    # cold
    # out of place, the input is one buffer more: no more of the call is in the cache
    assert pred.warm_share(1 << 20, True) < pred.warm_share(1 << 20) == 1.0


def test_reductions_written_apart_are_fitted_and_charged_to_out_of_place_executor_rows(
        tmp_path):
    """A profile keeps the add into a third buffer (``out = a + b``) apart from the
    in-place one; out of place, commsim's rows reduce at that rate for the share of their
    reductions written apart (all of a ring's), native rows and in-place rows at gamma."""
    from commsim.bench.predictions import Predictor

    m = synthetic(["h", "h"], noise=0.0)
    m.cores_per_rank = 1.0   # reductions do not overlap transfers: each adds its time
    m.reduction_apart = _series(2e-6, 1.5 * GAMMA, measure.REDUCE_SIZES, 0.0,
                                np.random.default_rng(0))
    data = profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                         "versions": {}})
    assert float(data["model"]["apart_reduce_bandwidth"].removesuffix("GB/s")) == \
        pytest.approx(1e-9 / (1.5 * GAMMA), rel=1e-3)
    path = profile.write(data, tmp_path / "p.yaml")
    assert profile.refit(yaml.safe_load(path.read_text()))["model"] == data["model"]
    pred = Predictor(str(path), 2, mode="dataflow")
    pred.gamma = pred.graph.graph["model"]["gamma"]
    assert pred.graph.graph["model"]["gamma_apart"] == pytest.approx(1.5 * GAMMA, rel=1e-3)
    ring, size = collectives.build("allreduce", "ring", 2, 2), 64 << 20
    assert pred.rates(ring, size, out_of_place=True)[1] == pytest.approx(1.5 * GAMMA,
                                                                         rel=1e-3)
    assert pred.rates(ring, size)[1] == pred.rates(ring, size, True, True)[1] == pred.gamma
    # the ring reduces size / 2 a rank: out of place that much more at the apart rate
    extra = pred.model(ring, size, out_of_place=True) - pred.model(ring, size)
    assert extra == pytest.approx(size / 2 * 0.5 * GAMMA, rel=0.02)
    # a profile without the measurement predicts both places alike
    m.reduction_apart = Series()
    plain = profile.write(profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                                        "versions": {}}), tmp_path / "q.yaml")
    assert "apart_reduce_bandwidth" not in yaml.safe_load(plain.read_text())["model"]
    old = Predictor(str(plain), 2, mode="dataflow")
    old.gamma = old.graph.graph["model"]["gamma"]
    assert old.model(ring, size, out_of_place=True) == old.model(ring, size)


def test_drift_compares_the_profile_s_ring_shift_with_one_timed_now():
    """The reference is the profile's ring shift nearest 2 MiB; a move beyond 20% is
    noted in one line that says which way and what to do."""
    from commsim.bench import drift

    m = synthetic(["h", "h"])
    G = spec.parse(profile.build(m, fit_all(m), {"backend": "gloo", "exec": "dataflow",
                                                 "versions": {}}))
    size, seconds = drift.reference(G)
    assert size == 2 << 20 and seconds == m.ring.seconds[m.ring.sizes.index(2 << 20)]
    assert drift.reference(topology.load("localhost")) is None and drift.reference(None) is None
    for ring in ({"bytes": ["a"], "seconds": [1.0]}, {"bytes": 5, "seconds": None}, [1, 2],
                 {"bytes": [2 << 20], "seconds": [float("nan")]}, {"bytes": [-1], "seconds": [1]}):
        G.graph["profile"]["measurements"]["ring"] = ring   # a profile edited by hand
        assert drift.reference(G) is None, ring
    same = {"bytes": size, "profile_us": 100.0, "now_us": 110.0, "ratio": 1.1}
    assert drift.note(same) is None and drift.note(None) is None
    slow = drift.note({**same, "now_us": 250.0, "ratio": 2.5})
    assert "\n" not in slow and "2.50x, slower" in slow and "calibrate again" in slow
    assert "faster" in drift.note({**same, "now_us": 50.0, "ratio": 0.5})


def test_calibrate_s_summary_says_which_calls_the_cache_holds():
    def data(**model):
        return {"model": model, "profile": {"nranks": 4, "hosts": ["h"]}}

    assert profile.warm_summary(data()) is None
    assert profile.warm_summary(data(cache_bytes=8 << 20, warm_link_speedup=1.5,
                           warm_reduce_bandwidth="20GB/s")) == (
        "cache 8M a host: calls of up to 512K a rank stay in it, larger ones in part "
        "(links 1.5x, reductions at 20GB/s)")
    assert "no faster" in profile.warm_summary(data(cache_bytes=8 << 20))
