"""The sample models, torch.nn only (nothing downloaded): ``mlp``, ``cnn``, ``gpt``.

:func:`build` makes one from a :class:`~commsim.ddp.config.ModelSpec`; the presets and
their sizes are in :mod:`commsim.ddp.config`. Every model maps a batch of inputs to
logits, ``(batch, classes)`` for mlp and cnn, ``(batch, seq_len, vocab)`` for gpt, and
is trained with cross entropy. Parameters are float32 (4 bytes each, so a model's
gradient bytes are ``4 x parameters``). This module imports torch: import it lazily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from commsim.ddp.config import ModelSpec


class MLP(nn.Module):
    """``layers`` hidden layers of ``width`` units with ReLU, then a linear classifier."""

    def __init__(self, inputs: int, width: int, layers: int, classes: int) -> None:
        super().__init__()
        dims = [inputs] + [width] * layers
        blocks = []
        for a, b in zip(dims[:-1], dims[1:]):
            blocks += [nn.Linear(a, b), nn.ReLU()]
        self.body = nn.Sequential(*blocks)
        self.head = nn.Linear(dims[-1], classes)

    def forward(self, x):
        return self.head(self.body(x))


class BasicBlock(nn.Module):
    """ResNet's basic block: two 3x3 convolutions with batch norm and a shortcut."""

    def __init__(self, cin: int, cout: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(cout)
        self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(cout)
        self.short = nn.Sequential()
        if stride != 1 or cin != cout:
            self.short = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                       nn.BatchNorm2d(cout))

    def forward(self, x):
        out = F.relu(self.bn1(self.conv1(x)))
        return F.relu(self.bn2(self.conv2(out)) + self.short(x))


class ResNet(nn.Module):
    """ResNet-18's layout for 32x32 images: a 3x3 stem, four stages of ``layers`` basic
    blocks with ``width``, 2, 4 and 8 x ``width`` channels, global pooling, a classifier."""

    def __init__(self, width: int, layers: int, classes: int) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, width, 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(width), nn.ReLU())
        blocks, cin = [], width
        for stage in range(4):
            cout = width << stage
            for i in range(layers):
                blocks.append(BasicBlock(cin, cout, 2 if stage and not i else 1))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = nn.Linear(cin, classes)

    def forward(self, x):
        x = self.blocks(self.stem(x))
        return self.head(torch.flatten(F.adaptive_avg_pool2d(x, 1), 1))


class Attention(nn.Module):
    """Causal multi-head self-attention (``scaled_dot_product_attention``)."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(width, 3 * width)
        self.proj = nn.Linear(width, width)

    def forward(self, x):
        b, s, d = x.shape
        q, k, v = self.qkv(x).view(b, s, 3, self.heads, d // self.heads).unbind(2)
        y = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2),
                                           v.transpose(1, 2), is_causal=True)
        return self.proj(y.transpose(1, 2).reshape(b, s, d))


class Block(nn.Module):
    """A pre-norm transformer block: attention and a 4x GELU MLP, each with a residual."""

    def __init__(self, width: int, heads: int) -> None:
        super().__init__()
        self.ln1 = nn.LayerNorm(width)
        self.attn = Attention(width, heads)
        self.ln2 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(nn.Linear(width, 4 * width), nn.GELU(),
                                 nn.Linear(4 * width, width))

    def forward(self, x):
        x = x + self.attn(self.ln1(x))
        return x + self.mlp(self.ln2(x))


class GPT(nn.Module):
    """A decoder-only language model: token and position embeddings, ``layers`` blocks,
    a final norm and an output layer tied to the token embedding."""

    def __init__(self, vocab: int, width: int, layers: int, heads: int, seq_len: int) -> None:
        super().__init__()
        self.tok = nn.Embedding(vocab, width)
        self.pos = nn.Embedding(seq_len, width)
        self.blocks = nn.Sequential(*[Block(width, heads) for _ in range(layers)])
        self.ln = nn.LayerNorm(width)
        self.head = nn.Linear(width, vocab, bias=False)
        self.head.weight = self.tok.weight  # tied: one parameter, one gradient
        for module in self.modules():
            if isinstance(module, (nn.Linear, nn.Embedding)):
                nn.init.normal_(module.weight, std=0.02)
                if getattr(module, "bias", None) is not None:
                    nn.init.zeros_(module.bias)

    def forward(self, idx):
        pos = torch.arange(idx.shape[1], device=idx.device)
        return self.head(self.ln(self.blocks(self.tok(idx) + self.pos(pos))))


def build(spec: ModelSpec, seed: int):
    """The model of ``spec``, its weights drawn from ``seed`` (the same on every rank)."""
    torch.manual_seed(seed)
    if spec.family == "mlp":
        return MLP(spec.inputs, spec.width, spec.layers, spec.classes)
    if spec.family == "cnn":
        return ResNet(spec.width, spec.layers, spec.classes)
    return GPT(spec.vocab, spec.width, spec.layers, spec.heads, spec.seq_len)


def parameter_count(model) -> int:
    """Trainable parameters (each distinct tensor once: tied weights count once)."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def gradient_bytes(model) -> int:
    """Bytes of all gradients, what DDP's buckets carry in total each step."""
    return sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
