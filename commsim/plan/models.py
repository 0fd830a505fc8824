"""Model presets: transformer shapes and their exact parameter counts.

A :class:`ModelSpec` is a decoder-only transformer: ``layers``, ``hidden``, ``heads``,
``kv_heads`` (grouped-query attention: K and V are ``kv_heads * hidden / heads`` wide),
``ffn`` (the MLP's inner width), ``vocab``, whether the MLP is SwiGLU (three ``h x f``
matrices) or GELU (two), whether input and output embeddings are tied, learned position
embeddings (GPT-3), and for mixture-of-experts models ``experts`` routed experts of
``expert_ffn`` each, ``top_k`` a token, ``shared_experts`` always active, and
``dense_layers`` leading layers that keep a dense MLP of ``ffn``; ``dropout`` the
training dropout (its masks are memory traffic, :mod:`commsim.plan.compute`).

Counts (:meth:`ModelSpec.params`): embedding ``V h`` (twice when untied), learned
positions ``s_max h``, per layer attention ``2 h^2 + 2 h h_kv`` (Q, O and K, V) plus
biases where the model has them, MLP ``3 h f`` (SwiGLU) or ``2 h f`` (GELU), router ``h
E``, two norms ``2 h`` (LayerNorm with bias: ``4 h``), a final norm. Every preset cites
its source; ``tests/test_plan_models.py`` checks the totals against the published ones.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from commsim.errors import CommsimError, unknown


@dataclass(frozen=True)
class ModelSpec:
    name: str
    layers: int
    hidden: int
    heads: int
    kv_heads: int
    ffn: int
    vocab: int
    swiglu: bool = True
    tied: bool = False
    positions: int = 0          # learned position embeddings (GPT-3: 2048), else 0 (RoPE)
    biases: bool = False        # GPT-3 has linear biases and LayerNorm biases
    experts: int = 0            # routed experts (0: dense)
    top_k: int = 0
    expert_ffn: int = 0         # inner width of one routed expert
    shared_experts: int = 0     # always-active experts of expert_ffn (DeepSeek)
    dense_layers: int = 0       # leading layers with a dense MLP of ffn (DeepSeek: 3)
    attn_params: int = 0        # override: attention parameters a layer (MLA, DeepSeek)
    dropout: float = 0.0        # hidden and attention dropout in training (GPT-3: 0.1)
    seq_len: int = 2048         # the training context the preset's paper used
    published: float = 0.0      # total parameters as published (for the tests)
    published_active: float = 0.0
    source: str = ""

    def __post_init__(self) -> None:
        for f in ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab"):
            v = getattr(self, f)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise CommsimError(f"model.{f}: {v!r} must be a whole number >= 1")
        if self.hidden % self.heads:
            raise CommsimError(f"model.heads: {self.heads} does not divide hidden "
                               f"{self.hidden}; give heads that divide the hidden size")
        if self.heads % self.kv_heads:
            raise CommsimError(f"model.kv_heads: {self.kv_heads} does not divide heads "
                               f"{self.heads}; give kv heads that divide the heads")
        if not 0 <= self.dropout < 1:
            raise CommsimError(f"model.dropout: {self.dropout!r} must be in [0, 1)")
        if self.experts and not 1 <= self.top_k <= self.experts:
            raise CommsimError(f"model.top_k: {self.top_k} must be 1..{self.experts}")

    # -- shapes ----------------------------------------------------------------------
    @property
    def kv_width(self) -> int:
        """``h_kv``: the width of K (and of V) with grouped-query attention."""
        return self.hidden // self.heads * self.kv_heads

    @property
    def moe(self) -> bool:
        return self.experts > 0

    @property
    def moe_layers(self) -> int:
        return self.layers - self.dense_layers if self.moe else 0

    def is_moe(self, layer: int) -> bool:
        return self.moe and layer >= self.dense_layers

    # -- counts ----------------------------------------------------------------------
    def attention(self) -> int:
        """Attention parameters a layer: Q and O ``h x h``, K and V ``h x h_kv`` (+ biases)."""
        if self.attn_params:
            return self.attn_params
        h, kv = self.hidden, self.kv_width
        n = 2 * h * h + 2 * h * kv
        if self.biases:
            n += 2 * h + 2 * kv
        return n

    def mlp(self, width: int) -> int:
        """One MLP of inner width ``width``: ``3 h f`` SwiGLU, ``2 h f`` GELU (+ biases)."""
        n = (3 if self.swiglu else 2) * self.hidden * width
        if self.biases:
            n += width + self.hidden
        return n

    def norms(self) -> int:
        """Two norms a layer (RMSNorm ``h`` each; LayerNorm with bias ``2 h``)."""
        return (4 if self.biases else 2) * self.hidden

    def embedding(self) -> int:
        """Input embedding, output projection (unless tied), learned positions, final norm."""
        h = self.hidden
        return self.vocab * h * (1 if self.tied else 2) + self.positions * h \
            + (2 if self.biases else 1) * h

    def expert_params(self) -> int:
        """Routed experts' parameters (what expert parallelism splits)."""
        return self.moe_layers * self.experts * self.mlp(self.expert_ffn)

    def params(self) -> int:
        """Total parameters, exactly from the shapes."""
        dense_mlp = (self.layers - self.moe_layers) * self.mlp(self.ffn)
        moe = self.moe_layers * (self.shared_experts * self.mlp(self.expert_ffn)
                                 + self.hidden * self.experts) + self.expert_params()
        return (self.layers * (self.attention() + self.norms()) + dense_mlp + moe
                + self.embedding())

    def active_params(self) -> int:
        """Parameters one token uses: the routed experts count ``top_k`` of ``experts``."""
        if not self.moe:
            return self.params()
        unused = self.moe_layers * (self.experts - self.top_k) * self.mlp(self.expert_ffn)
        return self.params() - unused

    def layer_matmul_params(self, layer: int) -> int:
        """The weights a token multiplies in ``layer`` (attention + the MLP it is routed
        through): what the FLOP count uses (norms and biases left out)."""
        h = self.hidden
        attn = self.attn_params or (2 * h * h + 2 * h * self.kv_width)
        per = 3 if self.swiglu else 2
        if self.is_moe(layer):
            return attn + per * h * self.expert_ffn * (self.top_k + self.shared_experts) \
                + h * self.experts
        return attn + per * h * self.ffn


# GPT-3 family: Brown et al. 2020, "Language Models are Few-Shot Learners", Table 2.1
# (n_layers, d_model, n_heads, d_ff = 4 d_model; n_ctx 2048; vocab 50257, tied; learned
# positions; GELU MLP with biases). Dropout 0.1 (hidden and attention) as Megatron-LM's
# GPT defaults and NeMo's gpt3 configs train them (the paper does not say); Llama,
# Mixtral and DeepSeek train without dropout.
def _gpt3(name, layers, hidden, heads, published):
    return ModelSpec(name, layers, hidden, heads, heads, 4 * hidden, 50257, swiglu=False,
                     tied=True, positions=2048, biases=True, seq_len=2048, dropout=0.1,
                     published=published,
                     source="Brown et al. 2020 (GPT-3), Table 2.1")


PRESETS: dict[str, ModelSpec] = {m.name: m for m in [
    _gpt3("gpt3-125m", 12, 768, 12, 125e6),
    _gpt3("gpt3-350m", 24, 1024, 16, 350e6),
    _gpt3("gpt3-760m", 24, 1536, 16, 760e6),
    _gpt3("gpt3-1.3b", 24, 2048, 16, 1.3e9),   # Table 2.1 prints 24 heads of d_head 128 (3072
    # != 2048); 16 heads of 128 as Megatron's GPT-3 1.3B configs (the count is unchanged)
    _gpt3("gpt3-2.7b", 32, 2560, 32, 2.7e9),
    _gpt3("gpt3-6.7b", 32, 4096, 32, 6.7e9),
    _gpt3("gpt3-13b", 40, 5120, 40, 13.0e9),   # Table 2.1 prints d_model 5140; 40 heads of
    # d_head 128 make 5120 (the usual reading)
    _gpt3("gpt3-175b", 96, 12288, 96, 174.6e9),
    # Llama 2: Touvron et al. 2023, "Llama 2: Open Foundation and Fine-Tuned Chat Models",
    # Table 1 and the released config.json (hidden, intermediate_size, heads, kv heads,
    # vocab 32000, untied, RMSNorm, SwiGLU, context 4096).
    ModelSpec("llama2-7b", 32, 4096, 32, 32, 11008, 32000, seq_len=4096, published=6.74e9,
              source="Touvron et al. 2023 (Llama 2), Table 1; meta-llama/Llama-2-7b config"),
    ModelSpec("llama2-13b", 40, 5120, 40, 40, 13824, 32000, seq_len=4096, published=13.0e9,
              source="Touvron et al. 2023 (Llama 2), Table 1; meta-llama/Llama-2-13b config"),
    ModelSpec("llama2-70b", 80, 8192, 64, 8, 28672, 32000, seq_len=4096, published=68.98e9,
              source="Touvron et al. 2023 (Llama 2), Table 1 (GQA, 8 kv heads); "
              "meta-llama/Llama-2-70b config"),
    # Llama 3: Dubey et al. 2024, "The Llama 3 Herd of Models", Table 3 (layers, model
    # dimension, FFN dimension, heads, 8 kv heads, vocab 128,000 -> 128256 in the config),
    # context 8192.
    ModelSpec("llama3-8b", 32, 4096, 32, 8, 14336, 128256, seq_len=8192, published=8.03e9,
              source="Dubey et al. 2024 (Llama 3), Table 3; meta-llama/Meta-Llama-3-8B config"),
    ModelSpec("llama3-70b", 80, 8192, 64, 8, 28672, 128256, seq_len=8192, published=70.6e9,
              source="Dubey et al. 2024 (Llama 3), Table 3; meta-llama/Meta-Llama-3-70B config"),
    ModelSpec("llama3-405b", 126, 16384, 128, 8, 53248, 128256, seq_len=8192,
              published=405.9e9,
              source="Dubey et al. 2024 (Llama 3), Table 3; meta-llama/Llama-3.1-405B config"),
    # Mixtral: Jiang et al. 2024, "Mixtral of Experts", Table 1 (dim 4096, 32 layers, 32
    # heads, 8 kv heads, hidden_dim 14336, vocab 32000, 8 experts, top 2); 46.7B total,
    # 12.9B active (Section 2.1).
    ModelSpec("mixtral-8x7b", 32, 4096, 32, 8, 14336, 32000, experts=8, top_k=2,
              expert_ffn=14336, seq_len=4096, published=46.7e9, published_active=12.9e9,
              source="Jiang et al. 2024 (Mixtral of Experts), Table 1 and Section 2.1"),
    # DeepSeek-V3: DeepSeek-AI 2024, "DeepSeek-V3 Technical Report", Section 4.2 (61
    # layers, hidden 7168, 128 heads, MLA with q rank 1536 and kv rank 512, head dims
    # 128 + 64 rope, first 3 layers dense (ffn 18432), then 1 shared + 256 routed experts
    # of 2048, 8 routed a token; vocab 129280); 671B total, 37B active (MTP module left out).
    # Simplifications: MLA is counted by its weight shapes (attn_params) but treated as
    # MHA with 128 heads for communication and activations; no node-limited routing.
    ModelSpec("deepseek-v3", 61, 7168, 128, 128, 18432, 129280, experts=256, top_k=8,
              expert_ffn=2048, shared_experts=1, dense_layers=3,
              attn_params=(7168 * 1536 + 1536 + 1536 * 128 * 192 + 7168 * 576 + 512
                           + 512 * 128 * 256 + 128 * 128 * 7168),
              seq_len=4096, published=671e9, published_active=37e9,
              source="DeepSeek-AI 2024 (DeepSeek-V3 Technical Report), Section 4.2"),
]}

# short forms: a size picks the Llama preset of that size (newest generation first)
SHORT = {"7B": "llama2-7b", "8B": "llama3-8b", "13B": "llama2-13b", "70B": "llama3-70b",
         "405B": "llama3-405b", "175B": "gpt3-175b", "8x7B": "mixtral-8x7b"}
ALIASES = {"gpt3": "gpt3-175b", "llama2-70b-chat": "llama2-70b", "mixtral": "mixtral-8x7b",
           "deepseek": "deepseek-v3"}


def names() -> list[str]:
    return list(PRESETS) + list(SHORT)


def get(name: str) -> ModelSpec:
    """A preset by name (``llama3-70b``), short form (``70B``) or alias; case-insensitive."""
    text = str(name).strip()
    for table in (SHORT, ):
        for k, v in table.items():
            if k.lower() == text.lower():
                return PRESETS[v]
    key = text.lower()
    key = ALIASES.get(key, key)
    if key in PRESETS:
        return PRESETS[key]
    raise unknown("model", text, names())


def custom(params: float | None = None, *, layers=None, hidden=None, heads=None,
           kv_heads=None, ffn=None, vocab=None, base: ModelSpec | None = None) -> ModelSpec:
    """A model from flags: a preset with shapes replaced, or shapes alone, or ``params``
    (a dense model: the GPT-3 shape whose size is closest, scaled in depth to ``params``
    when no shape is given)."""
    over = {k: v for k, v in dict(layers=layers, hidden=hidden, heads=heads,
                                  kv_heads=kv_heads, ffn=ffn, vocab=vocab).items()
            if v is not None}
    if base is None and params is not None and not over:
        # a dense GELU transformer of the GPT-3 shape nearest in size, layers scaled
        near = min((m for m in PRESETS.values() if m.name.startswith("gpt3")),
                   key=lambda m: abs(m.params() - params))
        per_layer = (near.params() - near.embedding()) / near.layers
        layers_n = max(1, round((params - near.embedding()) / per_layer))
        spec = replace(near, name=f"dense-{_human(params)}", layers=layers_n,
                       published=0.0, source=f"--params: {near.name}'s shape, "
                       f"{layers_n} layers")
        return spec
    if base is None:
        missing = [k for k in ("layers", "hidden", "heads") if k not in over]
        if missing:
            raise CommsimError(f"--{missing[0]}: a custom model needs --layers, --hidden and "
                               "--heads (or --model NAME, or --params N)")
        h = over["hidden"]
        base = ModelSpec("custom", over["layers"], h, over["heads"],
                         over.get("kv_heads", over["heads"]), over.get("ffn", 4 * h),
                         over.get("vocab", 32000), swiglu="ffn" in over,
                         source="command-line shape")
        return base
    if "heads" in over and "kv_heads" not in over:
        over["kv_heads"] = over["heads"]
    return replace(base, name=f"{base.name}*", published=0.0, **over) if over else base


def _human(n: float) -> str:
    for unit, scale in (("T", 1e12), ("B", 1e9), ("M", 1e6)):
        if n >= scale:
            return f"{n / scale:g}{unit}"
    return f"{n:g}"


def parse_count(text) -> float:
    """``175B``, ``1.3B``, ``350M``, ``7e9`` -> a number of parameters."""
    s = str(text).strip()
    scale = {"K": 1e3, "M": 1e6, "B": 1e9, "G": 1e9, "T": 1e12}.get(s[-1:].upper())
    try:
        value = float(s[:-1]) * scale if scale else float(s)
    except ValueError:
        raise CommsimError(f"--params: {text!r} is not a parameter count; write e.g. 7B, "
                           "350M or 1.3e9") from None
    if not value >= 1:
        raise CommsimError(f"--params: {text!r} must be at least 1")
    return value
