"""FLOPs: Megatron's formula, recompute, MoE active parameters, compute split."""

import dataclasses

import pytest

from commsim.plan import compute, models


def test_matches_megatron_formula_with_full_recompute():
    g = dataclasses.replace(models.get("gpt3-175b"), vocab=51200)
    B, s = 1536, 2048
    fl = compute.step_flops(g, B * s, s, "full")
    assert fl.hardware == pytest.approx(compute.megatron_flops(B, s, 96, 12288, 51200))
    assert fl.model == pytest.approx(fl.hardware * 3 / 4, rel=0.01)  # logits not recomputed


def test_model_flops_about_6P_per_token():
    m = models.get("llama3-70b")
    fl = compute.step_flops(m, 1.0, 8192, "none")
    attn = 3 * 4 * 8192 * m.hidden * m.layers
    assert fl.model - attn == pytest.approx(6 * m.params(), rel=0.02)


def test_moe_counts_active_params():
    m = models.get("mixtral-8x7b")
    fl = compute.step_flops(m, 1.0, 128, "none")
    assert fl.model == pytest.approx(6 * m.active_params(), rel=0.05)


def test_recompute_order_and_split():
    m = models.get("llama2-7b")
    f = {r: compute.step_flops(m, 1e6, 4096, r) for r in ("none", "selective", "full")}
    assert f["none"].hardware < f["selective"].hardware < f["full"].hardware
    assert f["none"].model == f["full"].model
    assert f["none"].backward == pytest.approx(2 * f["none"].forward)
    per = compute.per_layer_compute(10.0, f["full"], 8, 4)
    assert 32 * (per["forward"] + per["backward"]) == pytest.approx(10.0)
    assert per["backward"] > 2 * per["forward"]


def test_compute_time():
    m = models.get("llama2-7b")
    fl = compute.step_flops(m, 1e6, 4096)
    assert compute.compute_time(fl, 8, 1e15, 0.5) == pytest.approx(fl.hardware / 4e15)


# -- the kernel model: matmuls on the roofline, memory-bound kernels at HBM bandwidth -----

def _gpt(h=2304, a=24, L=24, V=51200):
    return models.ModelSpec("gpt", L, h, a, a, 4 * h, V, swiglu=False, tied=True,
                            positions=2048, biases=True, dropout=0.1)


def test_without_a_bandwidth_limit_the_kernels_are_the_flops():
    for m, kw in ((_gpt(), dict(tp=2, pp=2, recompute="full", flash=False)),
                  (models.get("llama3-70b"), dict(tp=8, pp=4, cp=2, recompute="selective",
                                                  sequence_parallel=True)),
                  (models.get("mixtral-8x7b"), dict(ep=8, recompute="none"))):
        s, b, mb, dp = 4096, 2, 8, 4
        lt = compute.layer_times(m, peak=1e15, mfu=0.5, bandwidth=float("inf"), seq_len=s,
                                 micro_batch=b, micro_batches=mb, **kw)
        t, pp, cp = kw.get("tp", 1), kw.get("pp", 1), kw.get("cp", 1)
        fl = compute.step_flops(m, mb * b * dp * s, s, kw["recompute"])
        gpus = t * pp * cp * dp
        assert lt.memory_s == 0.0
        assert lt.compute_s == pytest.approx(compute.compute_time(fl, gpus, 1e15, 0.5),
                                             rel=1e-9)
        ls = m.layers // pp
        assert mb * ls * (lt.forward + lt.backward) == pytest.approx(lt.compute_s, rel=1e-9)


def test_memory_bound_bytes_of_a_gpt_layer_by_hand():
    # Megatron GPT (LayerNorm, biases, dropout 0.1, GELU MLP of 4h), unfused attention;
    # bytes a token: forward norms 2 x 2 x 2h, softmax 2 x 2 a s, dropout (2 + 2 + 1) a s,
    # residual adds 2 x (2 + 2 + 2 + 1) h, GELU 2 x 2 x 4h  = 38 h + 9 a s
    h, a, s = 2304, 24, 2048
    m = _gpt(h, a)
    p = compute.layer_passes(m, 0, s, 1, False, flash=False)
    assert p.forward == pytest.approx(38 * h + 9 * a * s)
    assert p.core == pytest.approx(9 * a * s)
    # backward: norms 2 x 3 x 2h, residual gradients 2 x 3 x 2h, softmax 3 x 2 a s,
    # dropout (2 + 1 + 2) a s, residual dropouts 2 x 5h, GELU 3 x 2 x 4h = 58 h + 11 a s
    assert p.backward == pytest.approx(58 * h + 11 * a * s)
    # TP 8 without sequence parallelism: the residual stream (norms, adds, dropouts) on
    # every rank, the scores and the MLP's inner width split
    p8 = compute.layer_passes(m, 0, s, 8, False, flash=False)
    assert p8.forward == pytest.approx(22 * h + (16 * h + 9 * a * s) / 8)
    assert compute.layer_passes(m, 0, s, 8, True, flash=False).forward == \
        pytest.approx(p.forward / 8)
    # flash attention: no scores in memory
    assert compute.layer_passes(m, 0, s, 1, False).forward == pytest.approx(38 * h)


def test_memory_bound_bytes_of_a_llama_layer_by_hand():
    # RMSNorm, RoPE on Q and K, no dropout or biases, SwiGLU (2 in, 1 out), flash
    m = models.get("llama3-8b")
    h, kv, f = 4096, 1024, 14336
    p = compute.layer_passes(m, 0, 8192, 1, False)
    assert p.forward == pytest.approx(8 * h + 4 * (h + kv) + 12 * h + 6 * f)
    assert p.backward == pytest.approx(24 * h + 4 * (h + kv) + 10 * f)


def test_roofline_and_step_terms():
    # the scores' batched GEMMs of a small head (d = 64) are bandwidth-bound on an A100
    g = compute.layer_gemms(_gpt(1536, 24), 0, 2048, 2048, 1, flash=False)
    qk = next(x for x in g if x.name == "scores")
    peak, bw = 312e12, 2.039e12
    assert qk.nbytes / bw > qk.flops / (peak * 0.6)
    assert qk.time(peak, 0.6, bw) == pytest.approx(qk.nbytes / bw)
    big = next(x for x in g if x.name == "fc1")
    assert big.time(peak, 0.6, bw) == pytest.approx(big.flops / (peak * 0.6))
    # the optimizer: 30 bytes an updated parameter at HBM speed
    lt = compute.layer_times(_gpt(), peak=peak, mfu=0.6, bandwidth=bw, seq_len=2048,
                             micro_batch=1, micro_batches=1, updated_params=1e9)
    assert lt.optimizer == pytest.approx(30e9 / bw)


def test_memory_bound_share_falls_with_hidden_size():
    # what one matmul efficiency per GPU cannot absorb: elementwise work grows as h, the
    # matmuls as h^2 (Megatron SC21's GPTs, unfused attention, full recompute)
    shares = []
    for h, a in ((2304, 24), (4096, 32), (8192, 64), (25600, 160)):
        lt = compute.layer_times(_gpt(h, a), peak=312e12, mfu=0.6, bandwidth=2.039e12,
                                 seq_len=2048, micro_batch=1, micro_batches=1,
                                 recompute="full", flash=False)
        shares.append(lt.memory_s / lt.compute_s)
    assert shares == sorted(shares, reverse=True)
    assert shares[0] > 0.15 > 0.05 > shares[-1]
