"""FLOPs per training step, and the compute time of a layer: matmuls and memory-bound work.

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
al. 2022).

**Compute time** (:func:`layer_times`): what one GPU spends on a layer and micro-batch of
``T = b s / c`` tokens, as kernels of two kinds (docs/plan.md has the table):

- **matmuls**, each on the roofline: ``max(FLOPs / (peak x mfu), bytes / HBM bandwidth)``
  with bytes its operands and result (``w (M K + K N + M N)``); ``mfu`` is the one fitted
  number, the fraction of the dense peak a matmul reaches. The layer's GEMMs (QKV,
  projection, MLP in and out, the router and experts of MoE, the logits) are compute
  bound at training sizes; the attention scores' batched GEMMs (``Q K^T`` and ``A V``,
  ``K = s`` or ``d = h / a``) without flash attention reach about ``d`` FLOPs a byte,
  which is near the ridge. With flash attention (``flash=True``) the scores are one
  fused, compute-bound kernel: its FLOPs at ``mfu``.
- **memory-bound kernels** at the HBM bandwidth of the GPU preset: every elementwise,
  normalization and softmax pass reads its inputs and writes its outputs once (bytes
  below, ``w = 2``); dropout masks are 1 byte an element (Korthikanti et al. 2022,
  Section 4.1, the same tensors their activation count stores); the optimizer step reads
  and writes 30 bytes a parameter it updates; the cross entropy of the logits 52 bytes a
  vocabulary entry (Megatron's vocab-parallel cross entropy in fp32).

Backward runs each GEMM twice (data and weight gradients: 2 x the forward time) and the
memory-bound kernels' backward passes; recompute adds the forward again (``full``) or the
attention core (``selective``). Or, with a rate measured by ``commsim ddp``
(:mod:`commsim.plan.from_ddp`), hardware FLOPs over ``gpus x rate``
(:func:`measured_compute_time`).
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


# -- the kernels of a layer: matmuls on the roofline, memory-bound passes at HBM speed ----

W = 2                     # bytes of a 16-bit activation element
CE_BYTES = (38, 14)       # bytes a logit, forward and backward: Megatron's fp32 cross entropy
OPTIMIZER_BYTES = 30      # bytes an updated parameter: Adam read + write, grad norm


@dataclass(frozen=True)
class Gemm:
    """One matmul of a layer's forward pass on one GPU and micro-batch."""

    name: str
    flops: float
    nbytes: float

    def time(self, peak: float, mfu: float, bandwidth: float) -> float:
        """The roofline: ``max(flops / (peak x mfu), bytes / bandwidth)``."""
        return max(self.flops / (peak * mfu), self.nbytes / bandwidth)


def _gemm(name: str, m: float, k: float, n: float, count: float = 1.0,
          weights: float | None = None) -> Gemm:
    """``count`` GEMMs ``(m x k) @ (k x n)``: ``2 m k n`` FLOPs, operands and result read
    and written once (``weights``: the bytes of the ``k x n`` operands when not ``count x
    k n``, e.g. experts)."""
    wbytes = count * k * n * W if weights is None else weights
    return Gemm(name, 2 * m * k * n * count, count * (m * k + m * n) * W + wbytes)


def layer_gemms(model: ModelSpec, layer: int, tokens: float, keys: int, tp: int, ep: int = 1,
                flash: bool = True) -> list[Gemm]:
    """The forward matmuls of ``layer`` on one TP rank for ``tokens`` tokens (a micro-batch
    of a CP rank) attending to ``keys`` keys: QKV, scores, projection, MLP (router,
    routed and shared experts for MoE). Their FLOPs add up to :func:`forward_flops_per_token`'s
    layer term over ``t``."""
    h, t, T = model.hidden, tp, tokens
    if model.attn_params:    # MLA: its weights as one input and an h x h output matmul
        qkv_n = (model.attn_params - h * h) / h
    else:
        qkv_n = h + 2 * model.kv_width
    out = [_gemm("qkv", T, h, qkv_n / t), _gemm("proj", T, h / t, h)]
    heads, d = model.heads / t, h / model.heads
    if flash:
        out.append(Gemm("scores", 4 * T * keys * h / t, 0.0))   # one fused kernel
    else:
        out.append(_gemm("scores", T, d, keys, heads, heads * keys * d * W))   # Q K^T
        out.append(_gemm("scores", T, keys, d, heads, heads * keys * d * W))   # A V
    per = 2 if model.swiglu else 1
    if model.is_moe(layer):
        f, k, e = model.expert_ffn, model.top_k, model.experts
        out.append(_gemm("router", T, h, e / t))
        local = e / ep   # experts a rank holds; T k token-expert pairs a rank (balanced)
        out.append(_gemm("fc1", T * k, h, per * f / t, 1.0, local * h * per * f / t * W))
        out.append(_gemm("fc2", T * k, f / t, h, 1.0, local * f / t * h * W))
        if model.shared_experts:
            fs = f * model.shared_experts
            out += [_gemm("fc1", T, h, per * fs / t), _gemm("fc2", T, fs / t, h)]
    else:
        f = model.ffn
        out += [_gemm("fc1", T, h, per * f / t), _gemm("fc2", T, f / t, h)]
    return out


@dataclass(frozen=True)
class Passes:
    """Bytes a token moves through memory-bound kernels in one layer on one TP rank."""

    forward: float
    backward: float
    core: float        # the forward's attention core (softmax, dropout): selective recompute


def layer_passes(model: ModelSpec, layer: int, keys: int, tp: int, sequence_parallel: bool,
                 flash: bool = True) -> Passes:
    """Bytes read and written a token by a layer's memory-bound kernels on one TP rank
    (docs/plan.md, "Compute"). Tensors of the residual stream (``h`` wide: norms, dropout,
    residual adds) are split over ``t`` only with sequence parallelism; those split by
    heads or columns (``Q``, ``K``, scores, the MLP's inner ``f``) always are. Dropout
    masks are 1 byte an element, kept only when the model trains with dropout; without
    flash attention the ``a s`` scores of a token go through softmax and dropout."""
    h, t, w = model.hidden, tp, W
    r = 1 / t if sequence_parallel else 1.0
    c = 1 / t
    drop = 1 if model.dropout > 0 else 0
    kv = model.kv_width
    scores = model.heads * keys
    if model.is_moe(layer):
        f = model.expert_ffn * (model.top_k + model.shared_experts)
    else:
        f = model.ffn
    rope = 2 * w * (h + kv) * c if not model.positions else 0.0
    act_f, act_b = (3 * w, 5 * w) if model.swiglu else (2 * w, 3 * w)
    core = 0.0 if flash else (2 * w + drop * (2 * w + 1)) * scores * c
    forward = (2 * 2 * w * h * r              # two norms: read x, write y
               + rope                          # RoPE on Q and K
               + core                          # softmax (+ dropout and its mask)
               + 2 * (3 * w + drop) * h * r    # two residual adds (+ dropout): x, res -> y
               + act_f * f * c)                # the MLP's activation (SwiGLU: 2 in, 1 out)
    core_b = 0.0 if flash else (3 * w + drop * (2 * w + 1)) * scores * c
    backward = (2 * 3 * w * h * r             # norms: dy, x -> dx
                + 2 * 3 * w * h * r            # residual gradients added: two in, one out
                + rope
                + core_b                       # softmax: dy, y -> dx (+ dropout: dy, mask)
                + 2 * drop * (2 * w + 1) * h * r   # residual dropout: dy, mask -> dx
                + act_b * f * c)               # activation: dy, x -> dx (SwiGLU: 2 out)
    return Passes(forward, backward, core)


@dataclass(frozen=True)
class LayerTimes:
    """Seconds on one GPU: ``forward`` and ``backward`` (recompute included) per layer and
    micro-batch, the logits' share spread over the layers as the FLOPs are; ``optimizer``
    a step; ``gemm`` the forward time of each linear layer's matmul (``qkv``, ``proj``,
    ``fc1``, ``fc2``, averaged over the layers) for TP overlap; ``matmul_s`` and
    ``memory_s`` a step's matmuls and memory-bound kernels (``compute_s`` = their sum)."""

    forward: float
    backward: float
    optimizer: float
    gemm: dict
    matmul_s: float
    memory_s: float

    @property
    def compute_s(self) -> float:
        return self.matmul_s + self.memory_s


def layer_times(model: ModelSpec, *, peak: float, mfu: float, bandwidth: float,
                seq_len: int, micro_batch: int, micro_batches: int, tp: int = 1, cp: int = 1,
                pp: int = 1, ep: int = 1, sequence_parallel: bool = False,
                flash: bool = True, recompute: str = "none",
                updated_params: float = 0.0) -> LayerTimes:
    """The compute of a step on one GPU of a ``tp x cp x pp`` layout (``updated_params``:
    parameters the GPU's optimizer updates), kernel by kernel (module doc)."""
    if recompute not in RECOMPUTE:
        raise unknown("--recompute", recompute, RECOMPUTE)
    if not 0 < mfu <= 1:
        raise CommsimError(f"--mfu: {mfu!r} must be in (0, 1], e.g. 0.5")
    L, h, t = model.layers, model.hidden, tp
    T = micro_batch * seq_len / cp
    r = 1 / t if sequence_parallel else 1.0
    fwd_mm = bwd_extra_mm = fwd_mem = bwd_mem = extra_mem = 0.0
    gemm: dict[str, float] = {}
    for layer in range(L):
        gs = layer_gemms(model, layer, T, seq_len, tp, ep, flash)
        times = [g.time(peak, mfu, bandwidth) for g in gs]
        fwd_mm += sum(times)
        for g, x in zip(gs, times):
            if g.name in ("qkv", "proj", "fc1", "fc2"):
                gemm[g.name] = gemm.get(g.name, 0.0) + x / L
        p = layer_passes(model, layer, seq_len, tp, sequence_parallel, flash)
        fwd_mem += T * p.forward / bandwidth
        bwd_mem += T * p.backward / bandwidth
        if recompute == "full":
            bwd_extra_mm += sum(times)
            extra_mem += T * p.forward / bandwidth
        elif recompute == "selective":
            bwd_extra_mm += sum(x for g, x in zip(gs, times) if g.name == "scores")
            extra_mem += T * p.core / bandwidth
    # the logits, the final norm and the cross entropy: on the last stage, spread evenly
    # over every stage's layers as the plan spreads their FLOPs (per GPU: / pp)
    logits = _gemm("logits", T, h, model.vocab / t).time(peak, mfu, bandwidth)
    ce_f = T * (CE_BYTES[0] * model.vocab / t + 2 * W * h * r) / bandwidth
    ce_b = T * (CE_BYTES[1] * model.vocab / t + 3 * W * h * r) / bandwidth
    fwd_mm += logits
    fwd_mem += ce_f
    bwd_mem += ce_b
    forward = (fwd_mm + fwd_mem) / L
    backward = (2 * fwd_mm + bwd_extra_mm + bwd_mem + extra_mem) / L
    stage = micro_batches / pp                  # the layer passes of a GPU: L / pp x m
    optimizer = OPTIMIZER_BYTES * updated_params / bandwidth
    matmul = stage * (3 * fwd_mm + bwd_extra_mm)
    mem = stage * (fwd_mem + bwd_mem + extra_mem) + optimizer
    return LayerTimes(forward, backward, optimizer, gemm, matmul, mem)
