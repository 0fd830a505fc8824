"""What a DDP run does: the model preset, its options, the training and measuring flags.

Pure data and validation (no torch), so the CLI and ``launch.sh`` can refuse bad flags
in one process before any rank starts. Units: ``bucket_cap_mb`` in MiB (2**20 bytes, as
torch's DDP reads it), ``lr`` per step, ``batch`` samples **per rank** per step (weak
scaling keeps it fixed as ranks are added).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from commsim.errors import CommsimError, unknown

BACKENDS = ("gloo", "nccl")
SKIP = 2  # iteration 0 runs DDP's initial buckets, iteration 1 the first rebuilt ones


@dataclass(frozen=True)
class ModelSpec:
    """A model preset: its family (``mlp``, ``cnn``, ``gpt``) and default sizes.

    ``layers``: hidden layers (mlp), residual blocks a stage (cnn), transformer blocks
    (gpt); ``width``: hidden units (mlp), channels of the first stage (cnn), model width
    (gpt); ``heads``, ``seq_len``, ``vocab``: gpt only; ``inputs``/``classes``: mlp and
    cnn inputs and classes. ``batch`` and ``lr`` are the defaults of a run.
    """

    family: str
    layers: int
    width: int
    batch: int
    lr: float
    heads: int | None = None
    seq_len: int | None = None
    vocab: int | None = None
    inputs: int | None = None
    classes: int | None = None
    summary: str = ""


MODELS = {
    "mlp": ModelSpec("mlp", layers=3, width=1024, batch=64, lr=1e-3, inputs=32, classes=10,
                     summary="4 linear layers, about 2.1M parameters; teacher-labelled "
                     "Gaussian inputs"),
    "cnn": ModelSpec("cnn", layers=2, width=16, batch=32, lr=2e-3, inputs=32, classes=10,
                     summary="ResNet-18 layout at 1/4 width with batch norm, about 0.7M "
                     "parameters; 3x32x32 images of noisy class templates"),
    "gpt-tiny": ModelSpec("gpt", layers=2, width=128, batch=16, lr=3e-3, heads=4, seq_len=64,
                          vocab=256, summary="decoder-only transformer, about 0.4M "
                          "parameters (for tests)"),
    "gpt-small": ModelSpec("gpt", layers=6, width=512, batch=4, lr=1e-3, heads=8, seq_len=256,
                           vocab=12288, summary="decoder-only transformer, about 25M "
                           "parameters"),
}
ALIASES = {"gpt": "gpt-small", "resnet": "cnn"}
GPT_ONLY = ("heads", "seq_len", "vocab")


def resolve_model(name: str) -> str:
    """The canonical preset name, or a CommsimError with close matches."""
    key = str(name).strip().lower().replace("_", "-")
    key = ALIASES.get(key, key)
    if key not in MODELS:
        raise unknown("--model", name, list(MODELS))
    return key


def resolve_comm(name: str) -> str:
    """``native`` (the backend's own allreduce) or a commsim allreduce algorithm's
    canonical name (``ring``, ``tree``, ``dbt``, ``rhd``, ``hierarchical``)."""
    from commsim import collectives

    key = str(name).strip().lower()
    if key == "native":
        return key
    names = ["native"] + [a.name for a in collectives.algorithms("allreduce")]
    try:
        return collectives.resolve("allreduce", key).name
    except CommsimError:
        raise unknown("--comm algorithm", name, names) from None


@dataclass
class DdpConfig:
    """Everything a run does; embedded in the JSON config line. ``None`` model options
    take the preset's value (:meth:`spec`)."""

    model: str = "gpt-tiny"
    steps: int = 30
    batch: int | None = None
    lr: float | None = None
    bucket_cap_mb: float = 25.0
    comm: str = "native"
    backend: str | None = None  # None: nccl with CUDA, else gloo
    topology: str = "localhost"
    seed: int = 0
    skip: int = SKIP
    baseline_steps: int = 5
    layers: int | None = None
    width: int | None = None
    heads: int | None = None
    seq_len: int | None = None
    vocab: int | None = None
    json: str | None = None
    plot: str | None = None
    report: str | None = None
    scaling: list[int] = field(default_factory=list)
    timeout: float = 300.0  # seconds a step may wait for the other ranks (the watchdog)

    def validate(self) -> DdpConfig:
        self.model = resolve_model(self.model)
        self.comm = resolve_comm(self.comm)
        if self.backend is not None and self.backend not in BACKENDS:
            raise unknown("--backend", self.backend, BACKENDS)
        if self.steps < 1:
            raise CommsimError(f"--steps: {self.steps} steps train nothing; give 1 or more")
        if self.skip < 0:
            raise CommsimError(f"--skip: {self.skip} must be 0 or more")
        if self.steps <= self.skip:
            raise CommsimError(f"--steps: statistics skip the first {self.skip} steps (DDP "
                               f"rebuilds its buckets after step 0), so {self.steps} leave "
                               f"none; give --steps {self.skip + 1} or more, or lower --skip")
        if self.baseline_steps <= self.skip:
            raise CommsimError(f"--baseline-steps: {self.baseline_steps} leave none after "
                               f"the {self.skip} skipped; give {self.skip + 1} or more")
        if not self.bucket_cap_mb >= 0:  # also refuses nan
            raise CommsimError(f"--bucket-cap-mb: {self.bucket_cap_mb:g} is negative; give "
                               "a size in MiB >= 0 (default 25; 0: a bucket a parameter)")
        if self.batch is not None and self.batch < 1:
            raise CommsimError(f"--batch: {self.batch} must be 1 or more (samples a rank)")
        if self.lr is not None and not self.lr > 0:
            raise CommsimError(f"--lr: {self.lr:g} must be > 0")
        family = MODELS[self.model].family
        for name in ("layers", "width", "heads", "seq_len", "vocab"):
            value = getattr(self, name)
            flag = "--" + name.replace("_", "-")
            if value is None:
                continue
            if name in GPT_ONLY and family != "gpt":
                raise CommsimError(f"{flag}: only the gpt models take it; drop it for "
                                   f"--model {self.model}")
            if value < 1:
                raise CommsimError(f"{flag}: {value} must be 1 or more")
        spec = self.spec()
        if spec.family == "gpt" and spec.width % spec.heads:
            raise CommsimError(f"--heads: {spec.heads} heads do not divide width "
                               f"{spec.width}; give a divisor of {spec.width}")
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < float("inf")):
            raise CommsimError(f"--timeout: {self.timeout!r} must be a number of seconds > 0")
        if any(n < 1 for n in self.scaling):
            raise CommsimError(f"--scaling: {self.scaling} must be rank counts >= 1")
        return self

    def spec(self) -> ModelSpec:
        """The preset with this run's overrides applied."""
        from dataclasses import replace

        base = MODELS[resolve_model(self.model)]
        changes = {k: getattr(self, k) for k in ("layers", "width", "heads", "seq_len",
                                                 "vocab", "batch", "lr")
                   if getattr(self, k) is not None}
        return replace(base, **changes)

    def as_dict(self) -> dict:
        return asdict(self)
