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
