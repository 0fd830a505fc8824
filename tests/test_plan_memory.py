"""Memory per GPU, hand-computed for two presets (Korthikanti et al. 2022; ZeRO)."""

import pytest

from commsim.plan import memory, models
from commsim.workload import Layout


def test_llama3_70b_tp8_pp4_zero1_by_hand():
    m = models.get("llama3-70b")
    h, kv, f, V = 8192, 1024, 28672, 128256
    layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    P = (20 * layer + V * h) / 8          # first stage: 20 layers + the input embedding
    d = 4
    mem = memory.memory(m, Layout(tp=8, pp=4, dp=4), strategy="zero1", seq_len=8192,
                        micro_batch=1, micro_batches=16, recompute="selective",
                        sequence_parallel=True, capacity=80e9)
    assert mem.params_held == pytest.approx(P)
    assert mem.weights + mem.grads + mem.optimizer == pytest.approx(4 * P + 12 * P / d)
    s, b = 8192, 1
    per_layer = s * b * h * 34 / 8               # selective, SP: 34 sbh / t
    assert mem.activations == pytest.approx(per_layer * 20 * 4)   # 20 layers, pp=4 in flight
    assert mem.fits


def test_gpt3_175b_ddp_no_parallelism_by_hand():
    m = models.get("gpt3-175b")
    mem = memory.memory(m, Layout(dp=8), strategy="ddp", seq_len=2048, micro_batch=1,
                        micro_batches=1, recompute="none", capacity=80e9)
    P = m.params()
    assert mem.weights + mem.grads + mem.optimizer == pytest.approx(16 * P)
    s, b, h, a = 2048, 1, 12288, 96
    assert mem.activations == pytest.approx(96 * s * b * h * (34 + 5 * a * s / h))
    assert not mem.fits and mem.short_by == pytest.approx(mem.total - 80e9)


@pytest.mark.parametrize("strategy,expect", [
    ("ddp", lambda P, d: 16 * P), ("zero1", lambda P, d: 4 * P + 12 * P / d),
    ("zero2", lambda P, d: 2 * P + 14 * P / d), ("zero3", lambda P, d: 16 * P / d),
    ("fsdp", lambda P, d: 16 * P / d)])
def test_strategies_reference_table(strategy, expect):
    m = models.get("llama2-7b")
    w, g, o, P = memory.state_memory(m, Layout(dp=16), strategy)
    assert w + g + o == pytest.approx(expect(P, 16))


def test_recompute_and_tp_without_sp():
    m = models.get("gpt3-175b")
    s, b, h, a, t = 2048, 2, 12288, 96, 8
    none = memory.layer_activations(m, s, b, t, 1, False, "none")
    assert none == pytest.approx(s * b * h * (10 + 24 / t + 5 * a * s / (h * t)))
    assert memory.layer_activations(m, s, b, t, 1, True, "full") == pytest.approx(2 * s * b * h / t)
    assert memory.in_flight(4, 16, 2) == pytest.approx(4 * (1 + 3 / 8))


def test_moe_experts_split_over_ep():
    m = models.get("mixtral-8x7b")
    d1, e1 = memory.held_params(m, Layout(dp=8, ep=1))
    d8, e8 = memory.held_params(m, Layout(dp=8, ep=8))
    assert d1 == d8 and e1 == pytest.approx(8 * e8)
    assert d1 + e1 == pytest.approx(m.params())
