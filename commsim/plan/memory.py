"""Memory per GPU: weights, gradients, optimizer state and activations.

Model state, mixed-precision Adam (REFERENCE.md; Rajbhandari et al. 2020, ZeRO): bf16
weights (2 bytes a parameter), bf16 gradients (2) and fp32 master weights, momentum and
variance (12), sharded over the ``d`` ranks that hold the same parameters:

=========  ===========  ===========  ============  =========================
strategy   weights      gradients    optimizer     total
=========  ===========  ===========  ============  =========================
ddp        2 P          2 P          12 P          16 P
zero1      2 P          2 P          12 P / d      4 P + 12 P / d
zero2      2 P          2 P / d      12 P / d      2 P + 14 P / d
zero3/fsdp 2 P / d      2 P / d      12 P / d      16 P / d
=========  ===========  ===========  ============  =========================

``P`` is what one GPU holds after TP, PP and EP: the layers of its pipeline stage (the
busiest: the first stage also holds the input embedding, the last the output layer)
divided by ``t``, routed experts further by ``e``. Dense parameters shard over ``d = dp
cp``, expert parameters over ``d = dp cp / e``.

Activations (Korthikanti et al. 2022, "Reducing Activation Recomputation in Large
Transformer Models", Section 4, 16-bit activations), bytes per layer and micro-batch
with ``s`` the tokens a CP rank holds, ``a`` heads:

- no TP: ``s b h (34 + 5 a s / h)``;
- TP ``t`` without sequence parallelism: ``s b h (10 + 24 / t + 5 a s / (h t))``;
- TP with sequence parallelism: ``s b h (34 + 5 a s / h) / t``;
- selective recompute drops the ``5 a s / h`` term (attention scores are recomputed), and
  so does flash attention (it never stores them);
- full recompute keeps only each layer's input: ``2 s b h`` (``/ t`` with sequence
  parallelism).

Times the layers of a stage and the micro-batches in flight on the first stage: one
without pipelining, ``min(pp, m)`` with 1F1B, ``pp (1 + (pp - 1) / (pp v))`` with the
interleaved schedule of ``v`` chunks (Korthikanti et al., Section 4.2.3). Not counted:
the embedding's and the logits' activations, MoE's routed copies, temporary buffers,
the CUDA context and fragmentation (plan with some headroom). With context parallelism
the attention scores are ``a (s / c) s`` per layer: ``5 a s^2 / (h c)``.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from commsim.errors import unknown
from commsim.plan.models import ModelSpec
from commsim.workload import Layout

RECOMPUTE = ("none", "selective", "full")
STATE_BYTES = {  # (weights, grads, optimizer): which are sharded over d
    "ddp": (False, False, False), "zero1": (False, False, True),
    "zero2": (False, True, True), "zero3": (True, True, True), "fsdp": (True, True, True)}


@dataclass(frozen=True)
class Memory:
    """Bytes per GPU (the busiest: the first pipeline stage)."""

    weights: float
    grads: float
    optimizer: float
    activations: float
    capacity: float
    params_held: float       # parameters this GPU holds before sharding (P)

    @property
    def total(self) -> float:
        return self.weights + self.grads + self.optimizer + self.activations

    @property
    def fits(self) -> bool:
        return self.total <= self.capacity

    @property
    def short_by(self) -> float:
        """Bytes over capacity (0 when it fits)."""
        return max(0.0, self.total - self.capacity)

    def as_dict(self) -> dict:
        out = asdict(self)
        out.update(total=self.total, fits=self.fits, short_by=self.short_by)
        return out


def stage_params(model: ModelSpec, pp: int) -> tuple[list[float], list[float]]:
    """Per pipeline stage: (dense parameters, routed-expert parameters), unsharded. The
    first stage holds the input embedding (and positions), the last the output layer and
    final norm (tied embeddings: a copy there too when ``pp > 1``, as Megatron keeps)."""
    L = model.layers
    per = L // pp
    h = model.hidden
    dense, expert = [], []
    for k in range(pp):
        d = e = 0.0
        for i in range(k * per, (k + 1) * per):
            d += model.attention() + model.norms()
            if model.is_moe(i):
                d += model.shared_experts * model.mlp(model.expert_ffn) + h * model.experts
                e += model.experts * model.mlp(model.expert_ffn)
            else:
                d += model.mlp(model.ffn)
        dense.append(d)
        expert.append(e)
    inp = model.vocab * h + model.positions * h
    out = (model.vocab * h if (not model.tied or pp > 1) else 0) + h * (2 if model.biases else 1)
    if pp == 1:
        dense[0] += model.embedding()
    else:
        dense[0] += inp
        dense[-1] += out
    return dense, expert


def held_params(model: ModelSpec, layout: Layout) -> tuple[float, float]:
    """(dense, expert) parameters one GPU of the busiest stage holds: its stage's over
    ``t``, experts further over ``e``."""
    dense, expert = stage_params(model, layout.pp)
    t, e = layout.tp, layout.ep
    k = max(range(layout.pp), key=lambda i: dense[i] / t + expert[i] / (t * e))
    return dense[k] / t, expert[k] / (t * e)


def state_memory(model: ModelSpec, layout: Layout, strategy: str) -> tuple[float, float, float,
                                                                           float]:
    """(weights, grads, optimizer, P) bytes per GPU (see the module's table)."""
    if strategy not in STATE_BYTES:
        raise unknown("--strategy", strategy, STATE_BYTES)
    dense, expert = held_params(model, layout)
    d_dense = layout.dp * layout.cp
    d_expert = layout.dp // layout.ep * layout.cp
    shard_w, shard_g, shard_o = STATE_BYTES[strategy]
    out = []
    for nbytes, sharded in ((2, shard_w), (2, shard_g), (12, shard_o)):
        out.append(nbytes * (dense / (d_dense if sharded else 1)
                             + expert / (d_expert if sharded else 1)))
    return out[0], out[1], out[2], dense + expert


def layer_activations(model: ModelSpec, seq_len: int, micro_batch: int, tp: int, cp: int,
                      sequence_parallel: bool, recompute: str, flash: bool = False) -> float:
    """Activation bytes of one layer and micro-batch on one GPU (Korthikanti et al.);
    ``flash``: flash attention never stores the ``5 a s^2 b`` scores (as selective
    recompute does not)."""
    if recompute not in RECOMPUTE:
        raise unknown("--recompute", recompute, RECOMPUTE)
    s, b, h, a, t = seq_len / cp, micro_batch, model.hidden, model.heads, tp
    sbh = s * b * h
    scores = 5 * a * s * seq_len * b / t      # 5 a s^2 b, queries of this CP rank
    if recompute == "full":
        return 2 * sbh / (t if sequence_parallel else 1)
    if t == 1:
        base = 34 * sbh
    elif sequence_parallel:
        base = 34 * sbh / t
    else:
        base = sbh * (10 + 24 / t)
    return base + (0.0 if recompute == "selective" or flash else scores)


def in_flight(pp: int, micro_batches: int, interleave: int = 1) -> float:
    """Micro-batches whose activations the first stage holds at once."""
    if pp == 1:
        return 1.0
    if interleave > 1:
        return pp * (1 + (pp - 1) / (pp * interleave))
    return float(min(pp, micro_batches))


def memory(model: ModelSpec, layout: Layout, *, strategy: str, seq_len: int,
           micro_batch: int, micro_batches: int, recompute: str = "none",
           sequence_parallel: bool = False, interleave: int = 1,
           capacity: float = float("inf"), flash: bool = False) -> Memory:
    """Memory per GPU of the first (busiest) pipeline stage."""
    w, g, o, p = state_memory(model, layout, strategy)
    per_layer = layer_activations(model, seq_len, micro_batch, layout.tp, layout.cp,
                                  sequence_parallel, recompute, flash)
    acts = per_layer * (model.layers // layout.pp) * in_flight(layout.pp, micro_batches,
                                                               interleave)
    return Memory(w, g, o, acts, capacity, p)
