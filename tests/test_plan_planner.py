"""The planner: model step = run_step(model=...), volumes, monotonicity, what-ifs, search."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import CommsimError
from commsim.plan import gpus, models, planner
from commsim.plan.fabric import Fabric
from commsim.workload import (
    Layout,
    place_layout,
    run_step,
    step_ops,
    step_timeline,
    traffic_per_gpu,
)

FAB = Fabric.load("dgx-h100-32node")


def _cfg(**kw):
    base = dict(model=models.get("llama2-7b"), gpu=gpus.get("H100"), tp=2, pp=2,
                global_batch=64, seq_len=2048)
    base.update(kw)
    return planner.Config(**base)


def test_group_array_matches_layout_groups():
    lay = Layout(tp=2, pp=2, dp=4, ep=2)
    for dim in ("tp", "pp", "dp", "ep", "edp", "dp-cp"):
        assert planner.group_array(lay, dim).tolist() == lay.groups(dim)


def test_micro_batches_divide_whole_numbers():
    # rounded up, and exact for a batch far beyond a float's range (a float division
    # would overflow there, or round above 2**53)
    lay = Layout(tp=2, pp=2, dp=4)
    assert planner.micro_batches(_cfg(global_batch=64, micro_batch=2), lay) == 8
    assert planner.micro_batches(_cfg(global_batch=65, micro_batch=2), lay) == 9
    assert planner.micro_batches(_cfg(global_batch=1, micro_batch=2), lay) == 1
    huge = 10**400 + 1
    assert planner.micro_batches(_cfg(global_batch=huge), lay) == 10**400 // 4 + 1
    assert planner.micro_batches(_cfg(global_batch=2**53 + 8), Layout(dp=8)) == 2**50 + 1


def test_fabric_paths_match_alpha_beta_on_the_graph():
    from commsim import model
    from commsim.topology import gpus as gpu_nodes
    nodes = gpu_nodes(FAB.graph)
    for ranks in (list(range(8)), list(range(0, 256, 8)), list(range(16))):
        _bound, a, b, _classes = FAB.group_path(np.array(ranks))
        ea, eb = model.alpha_beta(FAB.graph, len(ranks), [nodes[r] for r in ranks])
        assert a == pytest.approx(ea) and b == pytest.approx(eb)


def test_model_step_equals_run_step_with_the_same_model():
    cfg = _cfg()
    lay = planner.make_layout(cfg, 64)
    shape = planner.make_shape(cfg, lay)
    tl = step_timeline(shape, lay, {"forward": 1e-3, "backward": 2e-3})
    pricer = planner.Pricer(FAB, lay)
    pricer.choose(step_ops(shape, lay))
    mine = planner.model_step(tl, pricer)
    res = run_step(tl, FAB.graph, lay, place_layout(FAB.graph, lay), pricer.algorithms(),
                   model=pricer.job_model())
    assert mine.time_s == pytest.approx(res.time_s, rel=1e-12)


def test_simulated_row_close_to_model_and_sourced():
    cfg = _cfg()
    p = planner.plan(cfg, FAB, [16, 512], tokens=1e9)
    sim, ext = p.rows
    assert sim.source == "simulator" and ext.source == "extrapolated"
    assert sim.step_time_s == pytest.approx(sim.model_step_time_s, rel=0.05)
    assert sim.train_days > 0 and sim.gpu_hours > 0
    assert p.rows[0].scaling_efficiency == 1.0


def test_per_strategy_volumes_are_workloads():
    for strategy in ("ddp", "zero1", "zero3"):
        cfg = _cfg(strategy=strategy, tp=1, pp=1)
        row = planner.plan(cfg, FAB, [16], simulate=False).rows[0]
        lay = planner.make_layout(cfg, 16)
        want = traffic_per_gpu(step_ops(planner.make_shape(cfg, lay), lay))
        assert row.dims["dp"]["bytes"] == pytest.approx(want["dp"])
    ddp = planner.plan(_cfg(strategy="ddp", tp=1, pp=1), FAB, [16], simulate=False).rows[0]
    z3 = planner.plan(_cfg(strategy="zero3", tp=1, pp=1, global_batch=16), FAB, [16],
                      simulate=False).rows[0]
    assert z3.dims["dp"]["bytes"] == pytest.approx(1.5 * ddp.dims["dp"]["bytes"], rel=0.01)


@settings(max_examples=15, deadline=None)
@given(factor=st.sampled_from(["1.5x", "2x", "4x"]), key=st.sampled_from(["nvlink_bw", "nic_bw"]),
       n=st.sampled_from([16, 64, 512]), overlap=st.booleans())
def test_more_bandwidth_never_slows_a_step(factor, key, n, overlap):
    cfg = _cfg(overlap=overlap, tp=4, pp=1)
    p = planner.plan(cfg, FAB, [n], [f"{key}={factor}"], simulate=False)
    base, what = p.rows
    assert what.step_time_s <= base.step_time_s * (1 + 1e-12)


@settings(max_examples=15, deadline=None)
@given(strategy=st.sampled_from(["ddp", "zero1", "zero2", "zero3"]),
       tp=st.sampled_from([1, 2, 8]), n=st.sampled_from([32, 128]))
def test_overlap_never_increases_exposed_comm(strategy, tp, n):
    rows = [planner.plan(_cfg(strategy=strategy, tp=tp, pp=1, overlap=o), FAB, [n],
                         simulate=False).rows[0] for o in (False, True)]
    assert rows[1].comm_exposed_s <= rows[0].comm_exposed_s * (1 + 1e-12)


def test_what_if_unchanged_explains():
    cfg = _cfg(tp=8, pp=1, dp=1)
    p = planner.plan(cfg, FAB, [8], ["nic_bw=2x"], simulate=False)
    (c,) = p.comparisons
    assert abs(c["change"]) < 0.005 and "NVLink domain" in c["reason"]


def test_what_if_keys_and_values():
    with pytest.raises(CommsimError, match="did you mean 'nvlink_bw'"):
        planner.plan(_cfg(), FAB, [16], ["nvlink_bww=2x"], simulate=False)
    fab = FAB.with_changes({"oversubscription": "2:1"})
    assert fab.link_params["spine"][1] == pytest.approx(FAB.link_params["spine"][1] / 2)
    fab = FAB.with_changes({"gpus_per_node": "4"})
    assert fab.gpus_per_node == 4 and fab.ngpus == 256
    p = planner.plan(_cfg(), FAB, [16], ["tp=1"], simulate=False)
    assert p.rows[1].tp == 1


def test_layout_errors():
    with pytest.raises(CommsimError, match="not the 16 gpus"):
        planner.plan(_cfg(dp=3), FAB, [16], simulate=False)
    with pytest.raises(CommsimError, match="--no-extrapolate"):
        planner.plan(_cfg(), FAB, [512], simulate=False, extrapolate=False)


def test_search_ranks_fitting_layouts():
    cfg = planner.Config(models.get("llama3-70b"), gpus.get("H100"), global_batch=256,
                         seq_len=4096)
    rows, valid = planner.search(cfg, FAB, 64)
    assert 1 <= len(rows) <= 10 and valid >= len(rows)
    assert all(r.fits for r in rows)
    times = [r.step_time_s for r in rows]
    assert times == sorted(times)
    for r in rows:
        assert r.tp <= 8 and 64 % r.tp == 0 and 80 % r.pp == 0 and r.tp * r.pp * r.dp == 64


def test_moe_plan_runs():
    cfg = planner.Config(models.get("mixtral-8x7b"), gpus.get("H100"), tp=1, ep=8,
                         global_batch=256, seq_len=4096)
    row = planner.plan(cfg, FAB, [64], simulate=False).rows[0]
    assert "ep" in row.dims and "edp" in row.dims and row.ep == 8


def test_hundred_thousand_gpus_fast():
    import time
    cfg = planner.Config(models.get("llama3-70b"), gpus.get("H100"), tp=8, pp=10,
                         global_batch=20000)
    t0 = time.perf_counter()
    row = planner.plan(cfg, Fabric.load("dgx-h100-superpod"), [100_000],
                       simulate=False).rows[0]
    assert time.perf_counter() - t0 < 1.0
    assert row.source == "extrapolated" and row.step_time_s > 0


@given(st.integers(1, 5000))
def test_divisors_are_every_divisor_ascending(n):
    from commsim.plan.planner import _divisors

    assert _divisors(n) == [d for d in range(1, n + 1) if n % d == 0]
