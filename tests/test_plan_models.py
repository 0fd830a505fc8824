"""Model presets: exact parameter counts against the published totals; GPU presets."""

import pytest

from commsim.errors import CommsimError
from commsim.plan import gpus, models


@pytest.mark.parametrize("name,published,tol", [
    ("gpt3-175b", 174.6e9, 0.01), ("gpt3-13b", 13.0e9, 0.02), ("gpt3-1.3b", 1.3e9, 0.02),
    ("gpt3-125m", 125e6, 0.02), ("llama2-7b", 6.74e9, 0.01), ("llama2-13b", 13.0e9, 0.01),
    ("llama2-70b", 69.0e9, 0.01), ("llama3-8b", 8.03e9, 0.01), ("llama3-70b", 70.6e9, 0.01),
    ("llama3-405b", 405.9e9, 0.01), ("mixtral-8x7b", 46.7e9, 0.01),
    ("deepseek-v3", 671e9, 0.01)])
def test_published_totals(name, published, tol):
    assert models.get(name).params() == pytest.approx(published, rel=tol)


def test_every_preset_within_two_percent_and_sourced():
    for m in models.PRESETS.values():
        assert m.params() == pytest.approx(m.published, rel=0.02), m.name
        assert m.source


@pytest.mark.parametrize("name,active", [("mixtral-8x7b", 12.9e9), ("deepseek-v3", 37e9)])
def test_moe_active(name, active):
    assert models.get(name).active_params() == pytest.approx(active, rel=0.02)


def test_llama3_70b_by_hand():
    h, kv, f, V, L = 8192, 1024, 28672, 128256, 80
    per_layer = 2 * h * h + 2 * h * kv + 3 * h * f + 2 * h
    assert models.get("llama3-70b").params() == L * per_layer + 2 * V * h + h


def test_short_forms_and_errors():
    assert models.get("70B").name == "llama3-70b"
    assert models.get("405b").name == "llama3-405b"
    assert models.get("7B").name == "llama2-7b"
    with pytest.raises(CommsimError, match="did you mean 'llama3-70b'"):
        models.get("llama3-7b0")


def test_custom_params_and_shapes():
    m = models.custom(13e9)
    assert m.params() == pytest.approx(13e9, rel=0.05)
    m = models.custom(base=models.get("llama3-8b"), layers=16)
    assert m.layers == 16 and m.params() < models.get("llama3-8b").params()
    with pytest.raises(CommsimError, match="--layers"):
        models.custom(hidden=1024)


def test_gpus():
    assert gpus.get("h100").peak("bf16") == 989e12
    assert gpus.get("H100").peak("fp8") == pytest.approx(2 * 989e12, rel=1e-3)
    assert gpus.get("B200").peak("fp8") == 2 * gpus.get("B200").peak("bf16")
    assert gpus.get("A100").memory_gb == 80 and gpus.get("H200").memory_gb == 141
    with pytest.raises(CommsimError, match="did you mean 'H100'"):
        gpus.get("H10O")
