"""Synthetic training data with learnable structure, generated, never downloaded.

The *task* (a teacher, class templates, a token chain) is drawn once from the run's
seed, the same on every rank. Each rank's shard of step ``i`` (``batch`` samples) is
drawn from a generator seeded with ``(seed, i, rank)``: deterministic, different on every
rank and step, and independent of the communication algorithm, so runs with the same
seed see the same data whatever ``--comm`` is.

- ``mlp``: Gaussian inputs labelled by a random linear teacher (``argmax x T``); the
  loss starts at about ``ln(classes)`` and can fall towards 0.
- ``cnn``: 3x32x32 images, a smooth random template per class plus noise.
- ``gpt``: token sequences from a Markov chain: with probability 3/4 the next token is
  the current token's fixed successor, else a draw from a Zipf (1/rank) distribution;
  the loss starts at about ``ln(vocab)`` and falls as the model learns the Zipf
  frequencies, then the successors.

Inputs and targets are made on the CPU; the loop moves them to the device. This module
imports torch: import it lazily.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from commsim.ddp.config import ModelSpec

FOLLOW = 0.75  # gpt: probability that a token is its predecessor's successor
NOISE = 1.0    # cnn: noise standard deviation (templates have standard deviation ~1)


def _generator(*parts: int) -> torch.Generator:
    seed = 0
    for part in parts:  # a simple, stable mix (Python's hash of ints is the int itself)
        seed = (seed * 1_000_003 + int(part) + 0x9E3779B9) % (2**63 - 1)
    return torch.Generator().manual_seed(seed)


class Task:
    """One synthetic task: :meth:`batch` gives ``(inputs, targets)`` of a rank's shard;
    ``tokens`` is the tokens a sample (gpt), else None."""

    tokens: int | None = None

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        self.spec, self.seed = spec, seed

    def batch(self, step: int, rank: int, size: int):
        raise NotImplementedError


class Teacher(Task):
    """mlp: ``x ~ N(0, 1)``, ``y = argmax(x @ T)`` for a fixed random ``T``."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        super().__init__(spec, seed)
        g = _generator(seed, -1)
        self.teacher = torch.randn(spec.inputs, spec.classes, generator=g)

    def batch(self, step: int, rank: int, size: int):
        x = torch.randn(size, self.spec.inputs, generator=_generator(self.seed, step, rank))
        return x, (x @ self.teacher).argmax(1)


class Templates(Task):
    """cnn: ``x = template[y] + noise``, templates smooth (8x8 noise upsampled)."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        super().__init__(spec, seed)
        g = _generator(seed, -2)
        coarse = torch.randn(spec.classes, 3, 8, 8, generator=g)
        self.templates = F.interpolate(coarse, size=(spec.inputs, spec.inputs),
                                       mode="bilinear", align_corners=False)
        self.templates /= self.templates.std()

    def batch(self, step: int, rank: int, size: int):
        g = _generator(self.seed, step, rank)
        y = torch.randint(0, self.spec.classes, (size,), generator=g)
        x = self.templates[y] + NOISE * torch.randn(self.templates[y].shape, generator=g)
        return x, y


class TokenChain(Task):
    """gpt: successors and a Zipf distribution over the vocabulary (see the module)."""

    def __init__(self, spec: ModelSpec, seed: int) -> None:
        super().__init__(spec, seed)
        g = _generator(seed, -3)
        self.tokens = spec.seq_len
        self.successor = torch.randperm(spec.vocab, generator=g)
        ranks = torch.arange(1, spec.vocab + 1, dtype=torch.float64)
        zipf = 1.0 / ranks
        self.zipf = (zipf / zipf.sum()).float()[torch.randperm(spec.vocab, generator=g)]

    def batch(self, step: int, rank: int, size: int):
        g = _generator(self.seed, step, rank)
        n = self.spec.seq_len + 1
        draws = torch.multinomial(self.zipf, size * n, replacement=True,
                                  generator=g).view(size, n)
        follow = torch.rand(size, n, generator=g) < FOLLOW
        seq = torch.empty(size, n, dtype=torch.long)
        seq[:, 0] = draws[:, 0]
        for t in range(1, n):
            seq[:, t] = torch.where(follow[:, t], self.successor[seq[:, t - 1]], draws[:, t])
        return seq[:, :-1].contiguous(), seq[:, 1:].contiguous()


def make(spec: ModelSpec, seed: int) -> Task:
    """The task of ``spec``'s model family, drawn from ``seed``."""
    return {"mlp": Teacher, "cnn": Templates, "gpt": TokenChain}[spec.family](spec, seed)


def loss(logits, targets):
    """Mean cross entropy over samples (and tokens)."""
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]), targets.reshape(-1))
