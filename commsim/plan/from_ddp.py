"""The compute rate a ``commsim ddp`` run measured, for ``commsim plan --from-ddp FILE``.

``commsim ddp --json FILE`` (docs/ddp.md) trains a small sample model under DDP and,
after training, times compute-only steps (``baseline`` lines: the same batches, a no-op
communication hook, so no communication at all). From the file:

- **measured compute** = the median, over the measured ``baseline`` lines (those after
  ``--skip``), of ``forward_us + backward_us``: one rank's forward and backward passes
  with nothing communicated (each line is already the mean over the ranks). The training
  steps' ``backward_us`` is not used: it includes DDP's waiting for the buckets. The
  optimizer (``optimizer_us``) is left out because the plan's FLOPs are those of the
  forward and backward passes only; AdamW's elementwise pass costs per parameter, not
  per token (a third of the CPU mlp run's compute-only step, a sliver of a large GPU
  job's).
- **FLOPs** a rank a step = ``batch`` samples (a rank's, the config line's) x the
  training FLOPs of a sample, 3 x forward (backward = 2 x forward, as the plan counts):
  ``mlp``: ``6 x params`` (2 FLOPs a weight forward); ``gpt``: the plan's own count
  (:func:`commsim.plan.compute.step_flops`: ``3 (L (24 h^2 + 4 s h) + 2 V h)`` a token,
  times ``seq_len`` tokens), from the config line's ``model_options``; ``cnn``: ``6 x``
  the multiply-adds of its convolutions and classifier on one 3 x 32 x 32 image (a
  convolution reuses each weight at every pixel, so ``6 x params`` would be 50 times
  too low); batch norm, activations and pooling are not counted, as the plan does not
  count norms.
- **rate** = FLOPs / measured compute: the FLOP/s one rank achieved. ``commsim plan``
  uses it as each GPU's compute rate instead of ``peak x mfu``: compute a step and GPU =
  the planned model's hardware FLOPs / (gpus x rate).
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from pathlib import Path

from commsim.errors import CommsimError

FLAG = "--from-ddp"
FAMILIES = ("mlp", "cnn", "gpt")
CNN_CHANNELS = 3     # commsim ddp's cnn: 3 x 32 x 32 images (commsim/ddp/data.py)


def format_rate(flops_per_s: float) -> str:
    """``21.5 GFLOP/s`` or ``1.23 TFLOP/s`` (three significant digits)."""
    for unit, scale in (("PFLOP/s", 1e15), ("TFLOP/s", 1e12), ("GFLOP/s", 1e9),
                        ("MFLOP/s", 1e6)):
        if flops_per_s >= scale:
            return f"{flops_per_s / scale:.3g} {unit}"
    return f"{flops_per_s:.3g} FLOP/s"


@dataclass(frozen=True)
class Measured:
    """What a ``commsim ddp`` file says about compute (see the module)."""

    path: str
    model: str              # the ddp preset (mlp, cnn, gpt-tiny, gpt-small)
    family: str
    params: int
    nranks: int
    backend: str
    clock: str
    batch: int              # samples a rank a step
    flops_per_sample: float  # training FLOPs of one sample (3 x forward)
    compute_s: float        # median forward + backward of the compute-only steps
    steps: int              # compute-only steps the median is over
    optimizer_s: float      # median optimizer time of those steps (not counted)

    @property
    def flops(self) -> float:
        """Training FLOPs of one rank's step."""
        return self.batch * self.flops_per_sample

    @property
    def rate(self) -> float:
        """FLOP/s one rank achieved in its forward and backward passes."""
        return self.flops / self.compute_s

    def describe(self) -> str:
        steps = f"{self.steps} compute-only step{'s' if self.steps != 1 else ''}"
        return (f"compute: {format_rate(self.rate)} a GPU, measured by commsim ddp "
                f"({self.path}: {self.model} on {self.nranks} {self.backend} "
                f"rank{'s' if self.nranks != 1 else ''}, {steps}, median forward+backward "
                f"{self.compute_s * 1e3:.4g} ms for {self.flops / 1e9:.4g} GFLOP a rank; "
                f"optimizer {self.optimizer_s * 1e3:.3g} ms not counted)")


def _fail(path, why: str) -> CommsimError:
    return CommsimError(f"{FLAG} {path}: {why}")


def _rows(path: str) -> list[dict]:
    if not str(path).strip():
        raise CommsimError(f"{FLAG}: empty; give the --json file of a commsim ddp run")
    try:    # no exists() first: a name too long or holding a NUL raises there too
        raw = Path(path).read_bytes()
    except FileNotFoundError:
        raise _fail(path, "no such file; give the --json file of a commsim ddp run") from None
    except IsADirectoryError:
        raise _fail(path, "is a folder; give the --json file of a commsim ddp run") from None
    except (OSError, ValueError) as e:      # ValueError: a NUL in the name
        raise CommsimError(f"{FLAG} {str(path)!r}: cannot be read "
                           f"({getattr(e, 'strerror', None) or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise _fail(path, "is not text; give the --json file (JSON lines) of a commsim ddp "
                    "run") from None
    lines = [(i, line) for i, line in enumerate(text.splitlines(), 1) if line.strip()]
    if not lines:
        raise _fail(path, "is empty; give the --json file of a commsim ddp run")
    rows = []
    for i, line in lines:
        try:
            row = json.loads(line)
        except RecursionError:
            raise _fail(path, f"line {i} is nested too deeply to read; commsim ddp --json "
                        "writes flat JSON objects") from None
        except ValueError as e:
            try:
                json.loads(text)
            except ValueError:
                raise _fail(path, f"line {i} is not JSON ({e.msg}); commsim ddp --json "
                            "writes one JSON object a line") from None
            raise _fail(path, "is one JSON document, not JSON lines: not a commsim ddp "
                        "--json file") from None
        if not isinstance(row, dict):
            raise _fail(path, f"line {i} is not a JSON object; commsim ddp --json writes "
                        "one object a line")
        rows.append(row)
    return rows


def _kind(path: str, rows: list[dict]) -> dict:
    """The config line, after checking this is one ``commsim ddp`` run's file."""
    types = [r.get("type") for r in rows]
    first = rows[0]
    if "scaling" in types:
        raise _fail(path, "is a commsim ddp --scaling file (one summary a world size, no "
                    "steps); give one run's file (--scaling --json NAME.jsonl keeps them "
                    "as NAME-nN.jsonl)")
    if "result" in types:
        raise _fail(path, "is a commsim bench file (result lines), not a commsim ddp run's")
    if first.get("type") != "config" or "family" not in first or "params" not in first:
        raise _fail(path, "is not a commsim ddp file: its first line is not a ddp config "
                    "line (type config with model, family, params)")
    if "step" not in types:
        raise _fail(path, "has no step lines: not a complete commsim ddp run")
    return first


def _whole(path, cfg: dict, key: str) -> int:
    v = cfg.get(key)
    if isinstance(v, bool) or not isinstance(v, int) or v < 1:
        raise _fail(path, f"the config line's {key} is {v!r}, not a whole number >= 1")
    return v


def _shape(path, cfg: dict, keys: tuple[str, ...]) -> dict:
    opts = cfg.get("model_options")
    if not isinstance(opts, dict):
        raise _fail(path, "the config line has no model_options: the model's shape is "
                    "needed for its FLOPs")
    for k in keys:
        v = opts.get(k)
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise _fail(path, f"model_options.{k} is {v!r}: the {cfg['family']} model's "
                        f"FLOPs need it")
    return opts


def gpt_flops_per_sample(layers: int, width: int, heads: int, seq_len: int,
                         vocab: int) -> float:
    """Training FLOPs of one sequence of commsim ddp's gpt, counted as the plan counts a
    GPT (:func:`commsim.plan.compute.step_flops`, no recompute): 4x GELU MLP, tied
    output layer."""
    from commsim.plan import compute, models

    spec = models.ModelSpec("ddp-gpt", layers, width, heads, heads, 4 * width, vocab,
                            swiglu=False, tied=True, positions=seq_len, biases=True,
                            seq_len=seq_len)
    return compute.step_flops(spec, seq_len, seq_len, "none").model


def cnn_macs(width: int, layers: int, image: int = 32, classes: int = 10) -> int:
    """Multiply-adds of one image through commsim ddp's cnn (ResNet-18's layout: a 3x3
    stem to ``width`` channels, four stages of ``layers`` basic blocks with ``width``,
    2, 4, 8 x ``width`` channels, the first block of stages 2-4 halving the resolution
    with a 1x1 projection shortcut, then pooling and a classifier)."""
    r = image
    macs = 9 * CNN_CHANNELS * width * r * r
    cin = width
    for stage in range(4):
        cout = width << stage
        for i in range(layers):
            stride = 2 if stage and not i else 1
            r = (r - 1) // stride + 1
            macs += 9 * cin * cout * r * r + 9 * cout * cout * r * r
            if stride != 1 or cin != cout:
                macs += cin * cout * r * r
            cin = cout
    return macs + cin * classes


def flops_per_sample(path, cfg: dict) -> float:
    """Training FLOPs (3 x forward) of one sample of the file's model."""
    family = cfg.get("family")
    if family not in FAMILIES:
        raise _fail(path, f"model family {family!r} is not one whose FLOPs are known "
                    f"({', '.join(FAMILIES)})")
    if family == "mlp":
        return 6.0 * _whole(path, cfg, "params")
    if family == "gpt":
        o = _shape(path, cfg, ("layers", "width", "heads", "seq_len", "vocab"))
        return gpt_flops_per_sample(o["layers"], o["width"], o["heads"], o["seq_len"],
                                    o["vocab"])
    o = _shape(path, cfg, ("layers", "width"))
    from commsim.ddp.config import MODELS

    preset = MODELS["cnn"]
    return 6.0 * cnn_macs(o["width"], o["layers"], preset.inputs or 32, preset.classes or 10)


def _us(path, row: dict, key: str, line: int) -> float:
    v = row.get(key)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) \
            or v < 0:
        raise _fail(path, f"compute-only step {row.get('step', line)} has {key} {v!r}, not "
                    "a time in microseconds")
    return float(v)


def _median(values: list[float]) -> float:
    v = sorted(values)
    n = len(v)
    return v[n // 2] if n % 2 else (v[n // 2 - 1] + v[n // 2]) / 2


def load(path: str) -> Measured:
    """The measured compute of a ``commsim ddp --json`` file; a :class:`CommsimError`
    naming the file and what is wrong with it otherwise."""
    rows = _rows(path)
    cfg = _kind(path, rows)
    base = [(i, r) for i, r in enumerate(rows, 1)
            if r.get("type") == "baseline" and r.get("measured")]
    if not base:
        raise _fail(path, "has no measured compute-only (baseline) steps; rerun commsim ddp "
                    "with --baseline-steps above --skip")
    fb = [_us(path, r, "forward_us", i) + _us(path, r, "backward_us", i) for i, r in base]
    compute_s = _median(fb) / 1e6
    if not compute_s > 0:
        raise _fail(path, "its compute-only steps took no time; nothing to divide by")
    opt = [r.get("optimizer_us") for _i, r in base]
    opt_s = _median([float(v) for v in opt if isinstance(v, (int, float))] or [0.0]) / 1e6
    per_sample = flops_per_sample(path, cfg)
    return Measured(path=str(path), model=str(cfg.get("model")), family=cfg["family"],
                    params=_whole(path, cfg, "params"), nranks=_whole(path, cfg, "nranks"),
                    backend=str(cfg.get("backend", "?")), clock=str(cfg.get("clock", "?")),
                    batch=_whole(path, cfg, "batch"), flops_per_sample=per_sample,
                    compute_s=compute_s, steps=len(base), optimizer_s=opt_s)
