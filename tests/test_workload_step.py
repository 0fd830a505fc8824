"""commsim.workload.step: each dimension's collectives against a count made by hand, the
traffic per GPU against REFERENCE.md's table, and the timeline's bookkeeping."""

from __future__ import annotations

from dataclasses import replace

import pytest

from commsim.errors import CommsimError
from commsim.workload import Layout, Shape, step_ops, step_timeline, traffic_per_gpu

MiB = 2**20


def by(ops, dim):
    return [(op.collective, op.nbytes, op.count, op.phase) for op in ops if op.dim == dim]


# -- per dimension, by hand ------------------------------------------------------------------

def test_tp_allreduces():
    """layers 4, pp 2 -> L_s = 2 layers a stage; m = 3 micro-batches; b s h w = 2 x 2048 x
    1024 x 2 = 8 MiB. Forward: 2 allreduces a layer and micro-batch = 2 x 2 x 3 = 12, of
    8 MiB each; backward the same."""
    shape = Shape(layers=4, hidden=1024, seq_len=2048, micro_batch=2, micro_batches=3)
    ops = step_ops(shape, Layout(tp=4, pp=2))
    assert by(ops, "tp") == [("allreduce", 8 * MiB, 12, "forward"),
                             ("allreduce", 8 * MiB, 12, "backward")]
    assert all(op.ranks == 4 for op in ops if op.dim == "tp")


def test_tp_sequence_parallel():
    """Each allreduce becomes a reduce_scatter and an allgather of the same gathered size
    (8 MiB): forward 12 allgathers (before attention and MLP) and 12 reduce_scatters
    (after them); backward 12 reduce_scatters and 12 allgathers."""
    shape = Shape(layers=4, hidden=1024, seq_len=2048, micro_batch=2, micro_batches=3,
                  sequence_parallel=True)
    ops = step_ops(shape, Layout(tp=4, pp=2))
    assert sorted(by(ops, "tp")) == sorted([
        ("allgather", 8 * MiB, 12, "forward"), ("reduce_scatter", 8 * MiB, 12, "forward"),
        ("reduce_scatter", 8 * MiB, 12, "backward"), ("allgather", 8 * MiB, 12, "backward")])


def test_pp_sends():
    """pp 2, m 3: per micro-batch one send forward and one backward of b s h w = 8 MiB per
    TP rank (every TP rank holds the whole activation); with sequence parallelism the
    activation is split over the 4 TP ranks: 2 MiB each."""
    shape = Shape(layers=4, hidden=1024, seq_len=2048, micro_batch=2, micro_batches=3)
    assert by(step_ops(shape, Layout(tp=4, pp=2)), "pp") == [
        ("send", 8 * MiB, 3, "forward"), ("send", 8 * MiB, 3, "backward")]
    sp = replace(shape, sequence_parallel=True)
    assert by(step_ops(sp, Layout(tp=4, pp=2)), "pp") == [
        ("send", 2 * MiB, 3, "forward"), ("send", 2 * MiB, 3, "backward")]
    assert by(step_ops(shape, Layout(tp=4)), "pp") == []


def test_cp_kv_allgather():
    """cp 2, tp 2, 2 layers, m 2, b 1, s 4096, h 1024 with 16 heads and 4 KV heads (GQA):
    K and V are h_kv = 1024 x 4 / 16 = 256 wide. The gathered K and V of this TP rank's
    heads: 2 x b x s x h_kv x w / t = 2 x 4096 x 256 x 2 / 2 = 2 MiB. Per layer and
    micro-batch (2 x 2 = 4): forward an allgather; backward an allgather and a
    reduce_scatter (dK, dV). TP now sees s / cp = 2048 tokens: b s_l h w = 4 MiB; the DP
    group spans dp and cp."""
    shape = Shape(layers=2, hidden=1024, seq_len=4096, micro_batches=2, heads=16, kv_heads=4)
    ops = step_ops(shape, Layout(tp=2, cp=2, dp=2))
    assert by(ops, "cp") == [("allgather", 2 * MiB, 4, "forward"),
                             ("allgather", 2 * MiB, 4, "backward"),
                             ("reduce_scatter", 2 * MiB, 4, "backward")]
    assert by(ops, "tp")[0] == ("allreduce", 4 * MiB, 8, "forward")
    assert {op.dim for op in ops if op.phase == "grad-sync"} == {"dp-cp"}
    assert all(op.ranks == 4 for op in ops if op.dim == "dp-cp")
    # a CP rank's own K and V go to the other cp - 1 ranks: (c-1)/c of the gathered buffer
    forward = next(op for op in ops if op.dim == "cp" and op.phase == "forward")
    assert forward.traffic == 4 * (2 - 1) * 2 * 1 * (4096 // 2) * 256 * 2 / 2


def test_ep_alltoalls():
    """6 layers, moe_every 2 (MoE layers 0, 2, 4), pp 2: stage 0 holds layers 0-2 (2 MoE),
    stage 1 layers 3-5 (1 MoE); the busiest stage has 2. m 3: dispatch + combine per MoE
    layer = 2 x 2 x 3 = 12 alltoalls forward and 12 backward, each one rank's whole send
    buffer top_k b s h w = 2 x 1 x 512 x 256 x 2 = 512 KiB."""
    shape = Shape(layers=6, hidden=256, seq_len=512, micro_batches=3, experts=8, top_k=2,
                  moe_every=2)
    ops = step_ops(shape, Layout(pp=2, dp=4, ep=4))
    assert by(ops, "ep") == [("alltoall", 512 * 1024, 12, "forward"),
                             ("alltoall", 512 * 1024, 12, "backward")]
    assert shape.moe_layers == 3


def test_ep_with_tp_needs_sequence_parallel_and_splits_tokens():
    """tp 2 with sequence parallelism: each TP rank dispatches its s / t tokens: 256 KiB."""
    shape = Shape(layers=2, hidden=256, seq_len=512, experts=4, top_k=2)
    with pytest.raises(CommsimError, match="training.sequence_parallel"):
        step_ops(shape, Layout(tp=2, dp=2, ep=2))
    ops = step_ops(replace(shape, sequence_parallel=True), Layout(tp=2, dp=2, ep=2))
    assert by(ops, "ep")[0] == ("alltoall", 256 * 1024, 4, "forward")


def test_dp_ddp_buckets():
    """2 layers, h 1024, no vocab: 12 L h^2 = 25,165,824 parameters; tp 2 -> a shard of
    12,582,912 parameters x 2 bytes = 24 MiB of gradients, allreduced once a step: one
    24 MiB bucket under the 25 MiB cap; with a 10 MiB cap, 2 full buckets and a 4 MiB one."""
    shape = Shape(layers=2, hidden=1024, seq_len=128, micro_batches=4)
    assert shape.total_params == 25_165_824
    ops = step_ops(shape, Layout(tp=2, dp=4))
    assert by(ops, "dp") == [("allreduce", 24 * MiB, 1, "grad-sync")]
    small = step_ops(replace(shape, bucket=10 * MiB), Layout(tp=2, dp=4))
    assert by(small, "dp") == [("allreduce", 10 * MiB, 2, "grad-sync"),
                               ("allreduce", 4 * MiB, 1, "grad-sync")]


def test_dp_strategies():
    """The same 24 MiB shard, m 4, one bucket: zero1 reduce_scatters once and allgathers
    the parameters after the optimizer; zero2 reduce_scatters every micro-batch (4) and
    allgathers once; zero3 and fsdp allgather forward and backward and reduce_scatter every
    micro-batch (4 each)."""
    shape = Shape(layers=2, hidden=1024, seq_len=128, micro_batches=4)
    lay = Layout(tp=2, dp=4)
    s = 24 * MiB
    assert by(step_ops(replace(shape, strategy="zero1"), lay), "dp") == [
        ("reduce_scatter", s, 1, "grad-sync"), ("allgather", s, 1, "optimizer")]
    assert by(step_ops(replace(shape, strategy="zero2"), lay), "dp") == [
        ("reduce_scatter", s, 4, "grad-sync"), ("allgather", s, 1, "optimizer")]
    for strategy in ("zero3", "fsdp"):
        assert by(step_ops(replace(shape, strategy=strategy), lay), "dp") == [
            ("allgather", s, 4, "forward"), ("allgather", s, 4, "backward"),
            ("reduce_scatter", s, 4, "grad-sync")]


def test_dp_expert_gradients_on_edp():
    """2 MoE layers of 4 experts, h 64: expert parameters 2 x 4 x 8 x 64^2 = 262,144;
    dense 4 L h^2 = 32,768 (attention only: every layer's MLP is experts). dp 4 with ep 2:
    dense gradients (32,768 x 2 bytes = 64 KiB) over the 4 dp ranks; expert gradients of
    this rank's experts (262,144 / 2 x 2 bytes = 256 KiB) over the edp = 2 ranks."""
    shape = Shape(layers=2, hidden=64, seq_len=16, experts=4, top_k=1)
    assert (shape.expert_params, shape.dense_params) == (262_144, 32_768)
    ops = step_ops(shape, Layout(dp=4, ep=2))
    assert by(ops, "dp") == [("allreduce", 64 * 1024, 1, "grad-sync")]
    assert by(ops, "edp") == [("allreduce", 256 * 1024, 1, "grad-sync")]
    assert [op.ranks for op in ops if op.phase == "grad-sync"] == [4, 2]
    # ep = dp: no expert replica to reduce with
    assert by(step_ops(shape, Layout(dp=4, ep=4)), "edp") == []


def test_single_rank_dims_have_no_ops():
    shape = Shape(layers=2, hidden=64, seq_len=16)
    assert step_ops(shape, Layout()) == []


# -- traffic per GPU: REFERENCE.md's table, (d-1)/d factors written out ----------------------

def test_traffic_matches_reference_table():
    """b 1, s 1024, h 512, w 2 (b s h w = 1 MiB), L_s = 4, m = 1, P = 12 L h^2 over t pp."""
    b, s, h, w, L, m = 1, 1024, 512, 2, 8, 1
    bshw = b * s * h * w
    shape = Shape(layers=L, hidden=h, seq_len=s, micro_batch=b, micro_batches=m,
                  experts=4, top_k=2, moe_every=2)
    t, pp, d, e = 4, 2, 4, 2
    lay = Layout(tp=t, pp=pp, dp=d, ep=e)
    ls, moe_ls = L // pp, 2
    got = traffic_per_gpu(step_ops(replace(shape, sequence_parallel=True), lay))
    # TP: 4 allreduces of b s h w per layer and micro-batch, each 2 (t-1)/t of it
    assert got["tp"] == pytest.approx(4 * 2 * bshw * (t - 1) / t * ls * m)
    # PP: 2 b s h w per boundary and micro-batch (here / t: sequence parallel)
    assert got["pp"] == pytest.approx(2 * bshw / t * m)
    # EP: 4 top_k b s h w per MoE layer (here / t: sequence parallel), (e-1)/e of it leaves
    assert got["ep"] == pytest.approx(4 * 2 * bshw / t * (e - 1) / e * moe_ls * m)
    P = shape.dense_params / (t * pp)
    Pe = shape.expert_params / (t * pp * e)
    for strategy, mult in (("ddp", 2), ("zero1", 2), ("zero2", 2), ("zero3", 3), ("fsdp", 3)):
        got = traffic_per_gpu(step_ops(replace(shape, strategy=strategy,
                                               sequence_parallel=True), lay))
        assert got["dp"] == pytest.approx(mult * P * w * (d - 1) / d), strategy
        assert got["edp"] == pytest.approx(mult * Pe * w * (d // e - 1) / (d // e)), strategy


def test_traffic_without_sequence_parallel_is_the_same_for_tp():
    shape = Shape(layers=4, hidden=512, seq_len=1024, micro_batches=2)
    lay = Layout(tp=8)
    plain = traffic_per_gpu(step_ops(shape, lay))["tp"]
    sp = traffic_per_gpu(step_ops(replace(shape, sequence_parallel=True), lay))["tp"]
    assert plain == pytest.approx(sp)


# -- shape validation ------------------------------------------------------------------------

@pytest.mark.parametrize("kwargs, piece", [
    ({"layers": 0}, "model.layers: 0 must be a whole number >= 1"),
    ({"strategy": "zero4"}, "unknown training.strategy 'zero4'; did you mean"),
    ({"sequence_parallel": "yes"}, "training.sequence_parallel"),
    ({"bucket": 0}, "training.bucket"),
    ({"experts": 4, "top_k": 5}, "model.top_k"),
    ({"heads": 8}, "model.kv_heads"),
    ({"heads": 8, "kv_heads": 3}, "model.kv_heads"),
    ({"params": 10, "experts": 2}, "model.params"),
])
def test_bad_shapes(kwargs, piece):
    base = {"layers": 2, "hidden": 64, "seq_len": 16}
    with pytest.raises(CommsimError) as exc:
        Shape(**{**base, **kwargs})
    assert piece in str(exc.value) and "\n" not in str(exc.value)


@pytest.mark.parametrize("layout, piece", [
    (Layout(pp=3), "model.layers: 4 layers do not split evenly over pp=3"),
    (Layout(cp=3), "model.seq_len"),
    (Layout(tp=3), "model.hidden"),
    (Layout(dp=3, ep=3), "layout.ep: 3 does not divide the 4 experts"),
])
def test_shape_and_layout_must_fit(layout, piece):
    shape = Shape(layers=4, hidden=64, seq_len=16, experts=4, top_k=1)
    with pytest.raises(CommsimError, match=piece):
        step_ops(shape, layout)


# -- timeline ---------------------------------------------------------------------------------

CASES = [
    (Shape(layers=4, hidden=512, seq_len=1024, micro_batches=3, bucket=MiB), Layout(tp=2, dp=4)),
    (Shape(layers=4, hidden=512, seq_len=1024, micro_batches=3, bucket=MiB, overlap_dp=True),
     Layout(tp=2, dp=4)),
    (Shape(layers=4, hidden=512, seq_len=1024, micro_batches=3, bucket=MiB // 8,
           overlap_dp=True, sequence_parallel=True, strategy="zero1"), Layout(tp=2, pp=2, dp=2)),
    (Shape(layers=4, hidden=512, seq_len=1024, micro_batches=2, bucket=MiB, overlap_dp=True,
           strategy="zero3"), Layout(dp=4)),
    (Shape(layers=4, hidden=256, seq_len=1024, micro_batches=2, bucket=MiB, overlap_dp=True,
           strategy="zero2", experts=4, top_k=2, sequence_parallel=True, heads=8, kv_heads=2),
     Layout(tp=2, cp=2, dp=4, ep=2)),
]


@pytest.mark.parametrize("shape, layout", CASES)
def test_timeline_runs_every_op_as_often_as_step_ops_says(shape, layout):
    compute = {"forward": 1e-3, "backward": 2e-3, "optimizer": 5e-3}
    phases = step_timeline(shape, layout, compute)
    runs: dict = {}
    for p in phases:
        assert p.count >= 1
        for op in p.ops:
            assert op.count == 1
            runs[op] = runs.get(op, 0) + p.count
    ops = step_ops(shape, layout)
    assert runs == {replace(op, count=1): op.count for op in ops}
    ls = shape.layers // layout.pp
    total = sum(p.count * p.compute_s for p in phases)
    assert total == pytest.approx(ls * shape.micro_batches * 3e-3 + 5e-3)


def test_timeline_without_overlap_puts_grad_sync_after_backward():
    """12 L h^2 = 12 x 4 x 512^2 parameters / tp 2 x 2 bytes = 12 MiB of gradients: 12
    buckets of 1 MiB after the backward pass."""
    shape, layout = CASES[0]
    phases = step_timeline(shape, layout)
    assert [p.name for p in phases] == ["forward tp allreduce 1M", "backward tp allreduce 1M",
                                        "grad-sync dp allreduce 1M"]
    assert [p.count for p in phases] == [24, 24, 12]


def test_overlap_pairs_buckets_with_the_last_backward_tp_collectives():
    """tp 2, L_s 4, m 3: the last micro-batch's backward has 2 x 4 = 8 TP allreduces; the
    first 8 of the 12 buckets run beside them, the 4 left beside its compute; the other
    3 x 8 - 8 = 16 TP allreduces run alone."""
    shape, layout = CASES[1]
    phases = {p.name: p for p in step_timeline(shape, layout)}
    assert phases["backward tp allreduce 1M"].count == 16
    assert phases["backward tp allreduce 1M + dp allreduce 1M"].count == 8
    assert phases["grad-sync dp allreduce 1M beside backward"].count == 4
    assert phases["grad-sync dp allreduce 1M beside backward"].overlap


def test_overlap_without_tp_hides_buckets_behind_the_backward_compute():
    """DDP alone (dp 4), m 2, L_s 2, 2 ms of backward a layer: the last micro-batch's
    backward (2 x 2 ms) is spread over the buckets, which run beside it (overlap)."""
    shape = Shape(layers=2, hidden=512, seq_len=128, micro_batches=2, bucket=MiB,
                  overlap_dp=True)
    phases = step_timeline(shape, Layout(dp=4), {"backward": 2e-3})
    beside = [p for p in phases if p.overlap]
    nbuckets = sum(p.count for p in beside)
    assert nbuckets == 12  # 6 MiB of gradients (12 x 512^2 x 2 x 2 bytes) in 1 MiB buckets
    assert all(p.compute_s == pytest.approx(4e-3 / nbuckets) for p in beside)
    (bwd,) = [p for p in phases if p.name == "backward compute"]
    assert bwd.count == 2 and bwd.compute_s == 2e-3  # the first micro-batch's 2 layers


def test_compute_keys_are_checked():
    shape, layout = CASES[0]
    with pytest.raises(CommsimError, match="did you mean 'forward'"):
        step_timeline(shape, layout, {"forwrd": 1.0})
    with pytest.raises(CommsimError, match="compute.backward"):
        step_timeline(shape, layout, {"backward": -1.0})
