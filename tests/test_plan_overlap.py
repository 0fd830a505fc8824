"""Overlaps and fp8 communication: TP overlap, param-gather prefetch, interleaved PP."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.errors import CommsimError
from commsim.plan import gpus, models, overlap, planner
from commsim.plan.fabric import Fabric
from commsim.workload.step import Op, Phase

FAB = Fabric.load("dgx-h100-32node")
MS = 1e-3


def _cfg(**kw):
    base = dict(model=models.get("llama2-7b"), gpu=gpus.get("H100"), global_batch=64,
                seq_len=2048)
    base.update(kw)
    return planner.Config(**base)


def _row(cfg, n):
    return planner.plan(cfg, FAB, [n], simulate=False).rows[0]


def _phase(name, dim, collective, phase, count, comm=0.0, comp=0.0):
    ops = (Op(dim, collective, 1 << 20, 1, phase, name, 2),) if dim else ()
    priced = (name, count, comm, comp, False, {dim: comm} if dim else {})
    return Phase(name, ops, comp, count), priced


def test_expose_by_hand():
    # forward of 2 micro-batches: 4 TP allgathers of 3 ms and 4 reduce-scatters of 1 ms,
    # 2 x 10 ms of compute, 2 PP sends of 2 ms, 2 ZeRO-3 parameter allgathers of 5 ms
    pairs = [_phase("forward tp allgather", "tp", "allgather", "forward", 4, 3 * MS),
             _phase("forward tp reduce_scatter", "tp", "reduce_scatter", "forward", 4, MS),
             _phase("forward compute", None, None, "forward", 2, comp=10 * MS),
             _phase("forward pp send", "pp", "send", "forward", 2, 2 * MS),
             _phase("forward dp allgather", "dp", "allgather", "forward", 2, 5 * MS)]
    timeline, priced = [p[0] for p in pairs], [p[1] for p in pairs]
    cls = {"tp": "nvlink", "pp": "nic", "dp": "spine"}
    none = overlap.expose(timeline, priced, overlap.Overlaps(micro_batches=2), cls)
    assert none.time_s == pytest.approx((12 + 4 + 20 + 4 + 10) * MS)
    assert none.exposed == pytest.approx({"nvlink": 16 * MS, "nic": 4 * MS, "spine": 10 * MS})
    assert none.compute_s == pytest.approx(20 * MS) and none.pp_s == pytest.approx(4 * MS)
    ov = overlap.Overlaps(tp={("forward", "allgather"): 2 * MS,
                              ("forward", "reduce_scatter"): 2 * MS},
                          interleave=2, overlap_p2p=True, chunk={"forward": 1.5 * MS},
                          param_gather=True, pass_s={"forward": 4 * MS}, micro_batches=2)
    ex = overlap.expose(timeline, priced, ov, cls)
    # TP: 4 x max(0, 3 - 2) + 4 x max(0, 1 - 2); PP: 2 x 2 sends of max(0, 2 - 1.5);
    # parameters: 2 passes of max(0, 5 - 4)
    assert ex.exposed == pytest.approx({"nvlink": 4 * MS, "nic": 2 * MS, "spine": 2 * MS})
    assert ex.time_s == pytest.approx(28 * MS) and ex.body_s == pytest.approx(28 * MS)
    assert ex.pp_s == pytest.approx(8 * MS)          # V = 2: twice the sends
    blocking = overlap.expose(timeline, priced, overlap.Overlaps(interleave=2), cls)
    assert blocking.exposed["nic"] == pytest.approx(8 * MS)


def test_tp_shares_pair_collectives_with_their_matmuls():
    g = {"qkv": 6.0, "proj": 2.0, "fc1": 8.0, "fc2": 8.0}
    s = overlap.tp_shares(g, {"backward": 2.0})
    assert s[("forward", "allgather")] == 7.0 and s[("forward", "reduce_scatter")] == 5.0
    assert s[("backward", "allgather")] == 10.0 and s[("backward", "reduce_scatter")] == 14.0


def test_interleave_divides_the_bubble_and_multiplies_pp_volume():
    # llama2-7b on 4 gpus, pp 4 (one node: NVLink), 8 micro-batches of 1 x 2048 tokens;
    # 0.4 s of compute a GPU (forward 1/3): a PP message is b s h w = 16 MiB
    msg = 2048 * 4096 * 2
    lat, bw = FAB.link_params["nvlink"]
    c = 2 * lat + msg / bw                           # one send on the NVLink path
    cfg = _cfg(pp=4, global_batch=8, recompute="none", step_compute_gpu_s=0.4)
    one = _row(cfg, 4)
    assert one.micro_batches == 8 and one.dims["pp"]["bytes"] == pytest.approx(16 * msg)
    assert one.comm_exposed_s == pytest.approx(16 * c)            # 1F1B's sends block
    assert one.bubble_s == pytest.approx(3 / 8 * (0.4 + 16 * c))
    two = _row(planner.replace(cfg, interleave=2), 4)
    assert two.dims["pp"]["bytes"] == pytest.approx(2 * 16 * msg)  # V x the messages
    assert two.dims["pp"]["model_s"] == pytest.approx(2 * one.dims["pp"]["model_s"])
    assert two.comm_exposed_s == pytest.approx(0.0, abs=1e-12)     # beside the next chunk
    assert two.bubble_s == pytest.approx(3 / 16 * 0.4)            # (pp-1) / (V m)
    blocking = _row(planner.replace(cfg, interleave=2, overlap_p2p=False), 4)
    assert blocking.comm_exposed_s == pytest.approx(32 * c)
    assert blocking.bubble_s == pytest.approx(3 / 16 * (0.4 + 32 * c))
    assert blocking.exposed_by == pytest.approx({"nvlink": 32 * c})


@settings(max_examples=25, deadline=None)
@given(strategy=st.sampled_from(["ddp", "zero1", "zero2", "zero3"]),
       tp=st.sampled_from([1, 2, 8]), pp=st.sampled_from([1, 2]), v=st.sampled_from([1, 2]),
       flag=st.sampled_from(["tp_comm_overlap", "overlap_param_gather", "overlap_p2p",
                             "overlap"]),
       others=st.fixed_dictionaries({k: st.booleans() for k in (
           "tp_comm_overlap", "overlap_param_gather", "overlap_p2p", "overlap")}),
       n=st.sampled_from([32, 256]), mfu=st.sampled_from([0.2, 0.6]))
def test_more_overlap_never_exposes_more(strategy, tp, pp, v, flag, others, n, mfu):
    rows = []
    for on in (False, True):
        kw = dict(others, **{flag: on})
        cfg = _cfg(strategy=strategy, tp=tp, pp=pp, interleave=v, mfu=mfu,
                   global_batch=128, **kw)
        rows.append(_row(cfg, n))
    off, on = rows
    assert on.comm_exposed_s <= off.comm_exposed_s * (1 + 1e-12) + 1e-15
    if flag != "overlap":
        # (gradient buckets beside the backward pass lengthen the pipeline's busy time, so
        # its bubble: that overlap can cost step time while it hides communication)
        assert on.step_time_s <= off.step_time_s * (1 + 1e-12) + 1e-15


def test_tp_overlap_hides_tp_behind_large_matmuls():
    base = _cfg(tp=8, pp=1, global_batch=8, micro_batch=4)
    off, on = _row(base, 8), _row(planner.replace(base, tp_comm_overlap=True), 8)
    assert off.exposed_by.get("nvlink", 0) > 0.05 * off.step_time_s
    assert on.exposed_by.get("nvlink", 0) < off.exposed_by["nvlink"]
    assert on.compute_s == pytest.approx(off.compute_s)
    with pytest.raises(CommsimError, match="needs sequence parallelism"):
        _cfg(tp=8, sequence_parallel=False, tp_comm_overlap=True)


def test_zero3_prefetch_and_zero1_gather_beside_forward():
    for strategy in ("zero3", "zero1"):
        cfg = _cfg(strategy=strategy, tp=1, pp=1, global_batch=32)
        off = _row(cfg, 32)
        on = _row(planner.replace(cfg, overlap_param_gather=True), 32)
        assert on.comm_exposed_s < off.comm_exposed_s
        assert on.dims["dp"]["bytes"] == off.dims["dp"]["bytes"]


# -- fp8 communication ---------------------------------------------------------------

def test_fp8_volumes_by_hand():
    # llama2-7b, tp 2 with sequence parallelism, dp 8, zero1, 2 micro-batches of 2048
    m = models.get("llama2-7b")
    act = 2048 * 4096 * 2                        # b s h w: one allgather's whole buffer
    per = 2 * 32 * 2                             # 2 a layer, 32 layers, 2 micro-batches
    P = -(-m.params() // 2) * 2                  # a TP rank's parameters, in bytes
    cfg = _cfg(tp=2, global_batch=16)
    rows = {mode: _row(planner.replace(cfg, **kw), 16) for mode, kw in (
        ("bf16", {}), ("fp8", {"dtype": "fp8"}), ("none", {"dtype": "fp8", "fp8_comm": "none"}),
        ("all", {"dtype": "fp8", "fp8_comm": "all"}))}
    tp = {k: r.dims["tp"]["bytes"] for k, r in rows.items()}
    dp = {k: r.dims["dp"]["bytes"] for k, r in rows.items()}
    # bf16: forward and backward, an allgather and a reduce-scatter each, (t-1)/t = 1/2
    assert tp["bf16"] == pytest.approx(0.5 * per * 4 * act)
    # fp8 (Transformer Engine's default): the two allgathers carry 1 byte an element
    assert tp["fp8"] == pytest.approx(0.5 * per * (act / 2 + act + act + act / 2))
    assert tp["none"] == tp["bf16"] and tp["all"] == tp["fp8"]
    # gradients stay 16-bit; --fp8-comm all gathers the parameters in fp8
    assert dp["bf16"] == pytest.approx(7 / 8 * 2 * P / 2 * 2, rel=1e-6)
    assert dp["fp8"] == dp["bf16"] == dp["none"]
    assert dp["all"] == pytest.approx(7 / 8 * (P + P / 2), rel=1e-6)
    assert [rows[k].fp8_comm for k in ("bf16", "fp8", "none", "all")] == \
        ["none", "tp", "none", "all"]


def test_fp8_comm_needs_fp8():
    with pytest.raises(CommsimError, match="--fp8-comm tp: needs --dtype fp8"):
        _cfg(fp8_comm="tp")
    with pytest.raises(CommsimError, match="did you mean 'all'"):
        _cfg(dtype="fp8", fp8_comm="al")
