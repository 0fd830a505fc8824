"""FLOPs per training step and the compute time they take.

Per token and layer, the forward pass multiplies every weight the token meets (2 FLOPs a
weight: attention's Q, K, V, O and the MLP it is routed through, ``top_k`` experts and
the shared ones for MoE) and computes attention scores and their weighted sum (``4 s h``:
``Q K^T`` and ``A V``, causal masking not discounted); the logits add ``2 V h``. Backward
is twice the forward (Narayanan et al. 2021, "Efficient Large-Scale Language Model
Training on GPU Clusters Using Megatron-LM", Appendix: the FLOP count). So

    model FLOPs / token  = 3 (sum_l (2 W_l + 4 s h) + 2 V h)

which for a GPT layer (``W = 12 h^2``) is ``72 L h^2 (1 + s / (6 h) + V / (12 L h))``.
Recompute adds work the model does not count (hardware FLOPs): ``full`` one more forward
of every layer (Megatron's ``96 B s L h^2 (1 + s / (6h) + V / (16 L h))`` per step,
:func:`megatron_flops`), ``selective`` the attention scores again (``4 s h`` a layer).
MFU divides model FLOPs by time x GPUs x dense peak (PaLM's definition, Chowdhery et
al. 2022); the compute time divides hardware FLOPs by GPUs x peak x ``mfu``, where
``mfu`` is the fraction of peak the compute kernels reach; or, with a rate measured by
``commsim ddp`` (:mod:`commsim.plan.from_ddp`), hardware FLOPs over ``gpus x rate``.
"""

from __future__ import annotations

from dataclasses import dataclass

from commsim.errors import CommsimError, unknown
from commsim.plan.memory import RECOMPUTE
from commsim.plan.models import ModelSpec


def forward_flops_per_token(model: ModelSpec, seq_len: int) -> tuple[float, float]:
    """(layers, logits) forward FLOPs of one token."""
    s, h = seq_len, model.hidden
    layers = sum(2 * model.layer_matmul_params(i) + 4 * s * h for i in range(model.layers))
    return float(layers), float(2 * model.vocab * h)


@dataclass(frozen=True)
class Flops:
    """FLOPs of one step: ``model`` (what MFU counts) and ``hardware`` (with recompute);
    ``forward`` and ``backward`` split the hardware FLOPs (recompute counted in backward)."""

    model: float
    hardware: float
    forward: float
    backward: float
    tokens: float


def step_flops(model: ModelSpec, tokens: float, seq_len: int, recompute: str = "none") -> Flops:
    """FLOPs of a step of ``tokens`` tokens."""
    if recompute not in RECOMPUTE:
        raise unknown("--recompute", recompute, RECOMPUTE)
    layers, logits = forward_flops_per_token(model, seq_len)
    fwd = layers + logits
    extra = {"none": 0.0, "full": layers,
             "selective": 4.0 * seq_len * model.hidden * model.layers}[recompute]
    return Flops(3 * fwd * tokens, (3 * fwd + extra) * tokens, fwd * tokens,
                 (2 * fwd + extra) * tokens, tokens)


def megatron_flops(batch: float, seq_len: int, layers: int, hidden: int, vocab: int) -> float:
    """Megatron's FLOPs per iteration with full recompute (Narayanan et al. 2021, eq. 3):
    ``96 B s L h^2 (1 + s / (6 h) + V / (16 L h))``."""
    B, s, L, h, V = batch, seq_len, layers, hidden, vocab
    return 96 * B * s * L * h * h * (1 + s / (6 * h) + V / (16 * L * h))


def compute_time(flops: Flops, gpus: int, peak: float, mfu: float) -> float:
    """Seconds of compute a GPU spends per step: hardware FLOPs over ``gpus x peak x mfu``."""
    if not 0 < mfu <= 1:
        raise CommsimError(f"--mfu: {mfu!r} must be in (0, 1], e.g. 0.5")
    return flops.hardware / (gpus * peak * mfu)


def measured_compute_time(flops: Flops, gpus: int, rate: float) -> float:
    """Seconds of compute a GPU spends per step at a measured ``rate`` (FLOP/s a GPU,
    :mod:`commsim.plan.from_ddp`): hardware FLOPs over ``gpus x rate``."""
    if not rate > 0:
        raise CommsimError(f"compute rate: {rate!r} FLOP/s must be positive")
    return flops.hardware / (gpus * rate)


def per_layer_compute(step_compute_s: float, flops: Flops, stage_layers: int,
                      micro_batches: int) -> dict[str, float]:
    """``{"forward", "backward"}`` seconds per layer and micro-batch on one GPU, for
    :func:`commsim.workload.step_timeline`: the step's compute split in the FLOPs'
    forward : backward ratio (backward = 2 x forward, recompute added to backward) over
    the ``stage_layers x micro_batches`` layer passes of a GPU."""
    passes = stage_layers * micro_batches
    share = flops.forward / flops.hardware if flops.hardware else 1 / 3
    return {"forward": step_compute_s * share / passes,
            "backward": step_compute_s * (1 - share) / passes}
