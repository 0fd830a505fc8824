"""The benchmark's configuration, its size sweep and its element types.

Sizes follow nccl-tests (REFERENCE.md, "Sizes and bandwidths"): ``size`` is the bytes
of one rank's buffer for allreduce, broadcast and reduce, and the whole gathered
buffer (per-rank count x p) for allgather and reduce_scatter; ``count`` is the
per-rank element count. A size is rounded down to a whole count, as nccl-tests does.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

from commsim.backends.plan import DEFAULT_MODE, PLACES, check_mode
from commsim.errors import CommsimError, unknown

GATHERED = ("allgather", "reduce_scatter")
BACKENDS = ("gloo", "nccl", "mpi")
AVERAGES = ("rank0", "mean", "min", "max")  # nccl-tests' -a 0/1/2/3
#: ``--place``: which of nccl-tests' two layouts to measure (both, like nccl-tests)
PLACE_CHOICES = {"both": PLACES, "out": PLACES[:1], "in": PLACES[1:]}


@dataclass(frozen=True)
class DType:
    """An element type: its canonical name, bytes per element and the largest integer it
    holds exactly (so that exactly-reducing check data can be chosen). ``wraps``: an
    integer type whose sum wraps modulo 2^bits (two's complement for signed types), as
    NCCL's, gloo's and MPI's integer sums do, so every sum is exact modulo 2^bits.
    ``numpy``: numpy has the type (the MPI backend runs on numpy arrays)."""

    name: str
    size: int
    exact: int
    integer: bool = False
    wraps: bool = False
    numpy: bool = True


DTYPES = {d.name: d for d in (
    DType("float32", 4, 2**24), DType("float16", 2, 2**11),
    DType("bfloat16", 2, 2**8, numpy=False), DType("float64", 8, 2**53),
    DType("int8", 1, 2**7 - 1, True, wraps=True), DType("uint8", 1, 2**8 - 1, True, wraps=True),
    DType("int32", 4, 2**31 - 1, True), DType("int64", 8, 2**63 - 1, True),
    # 3 and 2 mantissa bits: every integer up to 16 and 8 is exact
    DType("float8_e4m3fn", 1, 2**4, numpy=False), DType("float8_e5m2", 1, 2**3, numpy=False),
)}
_DTYPE_ALIASES = {"float": "float32", "fp32": "float32", "f32": "float32", "half": "float16",
                  "fp16": "float16", "f16": "float16", "bf16": "bfloat16", "double": "float64",
                  "fp64": "float64", "int": "int32", "i32": "int32", "i64": "int64",
                  "long": "int64", "i8": "int8", "char": "int8", "u8": "uint8",
                  "byte": "uint8", "float8_e4m3": "float8_e4m3fn", "fp8_e4m3": "float8_e4m3fn",
                  "f8e4m3": "float8_e4m3fn", "e4m3": "float8_e4m3fn",
                  "fp8_e5m2": "float8_e5m2", "f8e5m2": "float8_e5m2", "e5m2": "float8_e5m2"}

#: what each backend reduces (``None``: every type). torch's gloo raises "Invalid scalar
#: type" on float8 in every collective; numpy (the MPI backend's arrays) has neither
#: bfloat16 nor float8. NCCL reduces float8 from 2.24 on (sm_90 GPUs and later).
BACKEND_DTYPES = {
    "gloo": tuple(n for n in DTYPES if not n.startswith("float8")),
    "mpi": tuple(n for n, d in DTYPES.items() if d.numpy),
    "nccl": tuple(DTYPES),
}
_WHY_NOT = {"gloo": "torch's gloo has no float8 collectives",
            "mpi": "numpy has no such type, and the MPI backend runs on numpy arrays"}


def check_dtype(dtype: str, backend: str) -> DType:
    """The :class:`DType` of ``dtype`` if ``backend`` supports it, else a one-line
    CommsimError naming the backend and the types it supports."""
    d = resolve_dtype(dtype)
    supported = BACKEND_DTYPES.get(backend, tuple(DTYPES))
    if d.name not in supported:
        raise CommsimError(f"dtype (-d) {d.name}: --backend {backend} does not support it "
                           f"({_WHY_NOT.get(backend, 'unsupported')}); it supports "
                           f"{', '.join(supported)}")
    return d


def resolve_dtype(name: str) -> DType:
    key = str(name).lower()
    key = _DTYPE_ALIASES.get(key, key)
    if key not in DTYPES:
        raise unknown("dtype (-d)", name, list(DTYPES))
    return DTYPES[key]


def resolve_average(value: str) -> str:
    """``-a``: nccl-tests' numbers 0..3 or the names rank0, mean, min, max."""
    text = str(value).lower()
    if text.isdigit() and int(text) < len(AVERAGES):
        return AVERAGES[int(text)]
    text = {"avg": "mean", "average": "mean", "0": "rank0"}.get(text, text)
    if text not in AVERAGES:
        raise unknown("average (-a)", value, list(AVERAGES) + ["0", "1", "2", "3"])
    return text


@dataclass
class BenchConfig:
    """Everything a run does; embedded in the JSON config line. Sizes in bytes."""

    collectives: list[str] = field(default_factory=lambda: ["allreduce"])
    algorithms: list[str] = field(default_factory=lambda: ["native", "ring"])
    backend: str = "gloo"
    minbytes: int = 32 << 20
    maxbytes: int = 32 << 20
    stepfactor: float = 2.0
    stepbytes: int = 0
    iters: int = 20
    warmup: int = 1
    check: bool = True
    average: str = "mean"
    dtype: str = "float32"
    root: int = 0
    per_op_barrier: bool = False
    min_busbw: float | None = None  # GB/s
    topology: str = "localhost"
    json: str | None = None
    csv: str | None = None
    group_size: int | None = None
    chunks: int | str = "auto"  # pieces per message (K x the algorithm's unit); "auto": per size
    exec_mode: str = DEFAULT_MODE  # how the executors run a schedule: dataflow or step
    timeout: float = 300.0  # seconds an operation may wait for the other ranks (watchdog)
    place: str = "both"  # out-of-place then in-place per size, as nccl-tests; or "out", "in"

    def validate(self) -> BenchConfig:
        if self.backend not in BACKENDS:
            raise unknown("backend", self.backend, BACKENDS)
        if self.minbytes < 1 or self.maxbytes < self.minbytes:
            raise CommsimError(f"sizes: need 1 <= minbytes (-b) <= maxbytes (-e), got "
                               f"{self.minbytes} and {self.maxbytes}")
        if self.stepbytes < 0 or (not self.stepbytes and self.stepfactor <= 1
                                  and self.maxbytes > self.minbytes):
            raise CommsimError("stepfactor (-f) must be > 1, or give a stepbytes (-i) > 0")
        if self.iters < 1 or self.warmup < 0:
            raise CommsimError(f"iters (-n) must be >= 1 and warmup (-w) >= 0, got "
                               f"{self.iters} and {self.warmup}")
        if self.root < 0:
            raise CommsimError(f"root (-r): {self.root} must be >= 0")
        check_dtype(self.dtype, self.backend)
        resolve_average(self.average)
        if not self.collectives or not self.algorithms:
            raise CommsimError("give at least one --collective and one --algorithm")
        if self.chunks != "auto" and (not isinstance(self.chunks, int) or self.chunks < 1):
            raise CommsimError(f"chunks: {self.chunks!r} must be a whole number >= 1 or 'auto'")
        check_mode(self.exec_mode)
        if self.place not in PLACE_CHOICES:
            raise unknown("--place", self.place, list(PLACE_CHOICES))
        if not (isinstance(self.timeout, (int, float)) and 0 < self.timeout < float("inf")):
            raise CommsimError(f"--timeout: {self.timeout!r} must be a number of seconds > 0")
        algorithm_names(self)
        return self

    def as_dict(self) -> dict:
        return asdict(self)

    @property
    def places(self) -> tuple[str, ...]:
        """The layouts measured, in order: ``out-of-place`` then ``in-place``."""
        return PLACE_CHOICES[self.place]


def algorithm_names(cfg: BenchConfig) -> list[tuple[str, list[str]]]:
    """``[(collective, [algorithm, ...]), ...]``: canonical names; ``native`` kept as is;
    ``all`` is native and every registered algorithm of the collective. With several
    collectives a name applies to those that have it, and must exist for one of them.
    The parsing is the one ``simulate`` and ``predict`` use
    (:func:`commsim.collectives.select.collective_algorithms`)."""
    from commsim.collectives.select import collective_algorithms

    return collective_algorithms(cfg.collectives, cfg.algorithms, extra=("native",))


def sizes(cfg: BenchConfig) -> list[int]:
    """The swept sizes in bytes, before rounding to whole counts (nccl-tests' loop)."""
    out, size = [], cfg.minbytes
    while size <= cfg.maxbytes:
        out.append(size)
        nxt = size + cfg.stepbytes if cfg.stepbytes else int(size * cfg.stepfactor)
        if nxt <= size:
            break
        size = nxt
    return out


def count_and_size(collective: str, size: int, dtype: DType, nranks: int) -> tuple[int, int]:
    """``(count, size)``: the per-rank element count of a requested ``size`` in bytes and
    the size the run really measures (``count`` x element size, x p when gathered)."""
    per = dtype.size * (nranks if collective in GATHERED else 1)
    count = size // per
    return count, count * per
