"""One training step's communication: the collectives a GPU takes part in, and when.

:class:`Shape` is the model and its training options; :func:`step_ops` lists the step's
collectives per GPU (:class:`Op`), :func:`traffic_per_gpu` the bytes a GPU sends, and
:func:`step_timeline` groups the ops into :class:`Phase` s that run at the same time on
all their groups. Units: bytes, seconds. Sizes follow commsim's convention (REFERENCE.md):
``nbytes`` is one rank's buffer for allreduce and a PP send, the whole gathered buffer
for allgather and reduce_scatter, one rank's whole send buffer for alltoall.

Notation (docs/workload.md derives every volume): ``b`` micro-batch, ``s`` sequence,
``h`` hidden, ``w`` bytes per element, ``m`` micro-batches per step, ``L_s = L / pp``
layers of a stage, ``s_l = s / cp`` tokens of a CP rank, ``t, c, e`` the TP, CP and EP
degrees.
"""

from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, fields, replace

from commsim.errors import CommsimError, unknown
from commsim.units import MAX_SIZE, format_bytes
from commsim.workload.layout import Layout

STRATEGIES = ("ddp", "zero1", "zero2", "zero3", "fsdp")
PHASES = ("forward", "backward", "grad-sync", "optimizer")
COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "alltoall", "send")
DEFAULT_BUCKET = 25 * 2**20  # bytes: DDP's bucket_cap_mb default
COMPUTE_KEYS = ("forward", "backward", "optimizer")

_TRAINING = ("strategy", "sequence_parallel", "bucket", "overlap_dp")
# upper bounds far past any model, so that a typo (layers: 1e20) is one error line, not a
# loop that never ends or numbers too large for the simulator's arrays
MAX_LAYERS = 100_000
MAX_COUNT = 2**40            # hidden, seq_len, micro-batches, heads, experts, vocab ...
MAX_PARAMS = 10**18
MAX_DTYPE_BYTES = 64


def _section(name: str) -> str:
    return f"training.{name}" if name in _TRAINING else f"model.{name}"


@dataclass(frozen=True)
class Shape:
    """A transformer and how it trains.

    Model: ``layers``, ``hidden``, ``seq_len`` (tokens), ``micro_batch`` (sequences),
    ``micro_batches`` (per step, per pipeline), ``vocab`` (0: none counted), ``params``
    (total parameter count; default ``12 L h^2 + V h`` for a dense model, see
    :attr:`total_params`), ``experts`` (0 = dense), ``top_k`` (experts per token),
    ``moe_every`` (every k-th layer is MoE, Megatron's ``moe_layer_freq``: layer ``i``
    when ``i % k == 0``), ``heads`` and ``kv_heads`` (only for GQA's smaller K and V in
    context parallelism; 0: K and V are ``h`` wide), ``dtype_bytes`` (2 bf16, 1 fp8).
    Training: ``strategy`` (ddp, zero1, zero2, zero3, fsdp), ``sequence_parallel``,
    ``bucket`` (bytes per gradient bucket, 25 MiB like DDP), ``overlap_dp`` (gradient
    reduction overlaps the last backward pass).
    """

    layers: int
    hidden: int
    seq_len: int
    micro_batch: int = 1
    micro_batches: int = 1
    vocab: int = 0
    params: int | None = None
    experts: int = 0
    top_k: int = 2
    moe_every: int = 1
    heads: int = 0
    kv_heads: int = 0
    dtype_bytes: int = 2
    strategy: str = "ddp"
    sequence_parallel: bool = False
    bucket: int = DEFAULT_BUCKET
    overlap_dp: bool = False

    def __post_init__(self) -> None:
        high = {"layers": MAX_LAYERS, "dtype_bytes": MAX_DTYPE_BYTES, "bucket": MAX_SIZE}
        for name in ("layers", "hidden", "seq_len", "micro_batch", "micro_batches",
                     "moe_every", "top_k", "dtype_bytes", "bucket"):
            _whole(name, getattr(self, name), 1, high.get(name, MAX_COUNT))
        for name in ("vocab", "experts", "heads", "kv_heads"):
            _whole(name, getattr(self, name), 0, MAX_COUNT)
        if self.params is not None:
            _whole("params", self.params, 1, MAX_PARAMS)
        for name in ("sequence_parallel", "overlap_dp"):
            if not isinstance(getattr(self, name), bool):
                raise CommsimError(f"{_section(name)}: {getattr(self, name)!r} must be true "
                                   "or false")
        if self.strategy not in STRATEGIES:
            raise unknown("training.strategy", self.strategy, STRATEGIES)
        if self.experts:
            if self.top_k > self.experts:
                raise CommsimError(f"model.top_k: {self.top_k} is more than the "
                                   f"{self.experts} experts; use a top_k <= experts")
        if bool(self.heads) != bool(self.kv_heads) or (self.heads and self.heads % self.kv_heads):
            raise CommsimError(f"model.kv_heads: {self.kv_heads} with heads {self.heads}: give "
                               "both (kv_heads a divisor of heads) or neither")
        if self.total_params < self.expert_params:
            raise CommsimError(f"model.params: {self.params} is fewer than the "
                               f"{self.expert_params} expert parameters "
                               "(experts x 8 h^2 per MoE layer); raise params or drop it "
                               "to derive it")

    # -- derived counts --------------------------------------------------------------------

    @property
    def moe_layers(self) -> int:
        """MoE layers in the model (0 when dense)."""
        return sum(1 for i in range(self.layers) if self.is_moe(i))

    def is_moe(self, layer: int) -> bool:
        """Layer ``layer`` (0-based) is MoE: experts > 0 and ``layer % moe_every == 0``."""
        return self.experts > 0 and layer % self.moe_every == 0

    @property
    def expert_params(self) -> int:
        """Expert parameters: ``moe_layers * experts * 8 h^2`` (each expert an MLP of two
        h x 4h matrices)."""
        return self.moe_layers * self.experts * 8 * self.hidden ** 2

    @property
    def total_params(self) -> int:
        """``params`` when given, else ``4 h^2`` of attention and ``8 h^2`` of MLP per
        dense layer (experts x ``8 h^2`` per MoE layer) plus ``V h`` of embedding: ``12 L
        h^2 + V h`` for a dense model (Narayanan et al. 2021, biases and norms left out)."""
        if self.params is not None:
            return self.params
        h2 = self.hidden ** 2
        dense_mlp = (self.layers - self.moe_layers) * 8 * h2
        return 4 * self.layers * h2 + dense_mlp + self.expert_params + self.vocab * self.hidden

    @property
    def dense_params(self) -> int:
        """Parameters every data-parallel rank replicates: total less the expert ones."""
        return self.total_params - self.expert_params

    def as_dict(self) -> dict:
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.init}
        out.update(total_params=self.total_params, dense_params=self.dense_params,
                   expert_params=self.expert_params, moe_layers=self.moe_layers)
        return out


def _whole(name: str, value, low: int, high: int | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise CommsimError(f"{_section(name)}: {value!r} must be a whole number >= {low}")
    if high is not None and value > high:
        raise CommsimError(f"{_section(name)}: {value!r} is more than {high:,}, beyond any "
                           "model; check the number")
    return value


@dataclass(frozen=True)
class Op:
    """A collective one GPU takes part in, ``count`` times per step.

    ``dim``: the layout group it runs on (``tp``, ``cp``, ``pp``, ``dp``, ``ep``, ``edp``,
    or ``dp-cp`` / ``edp-cp`` when ``cp > 1``: parameters are replicated across CP ranks
    too). ``collective``: allreduce, reduce_scatter, allgather, alltoall or ``send`` (a PP
    point-to-point message to the next stage in ``forward``, to the previous one in
    ``backward``). ``nbytes``: commsim's size convention (module doc). ``ranks``: the
    ranks of one instance (2 for a send). ``phase``: forward, backward, grad-sync or
    optimizer.
    """

    dim: str
    collective: str
    nbytes: int
    count: int
    phase: str
    label: str
    ranks: int

    @property
    def factor(self) -> float:
        """Bytes one rank sends per byte of ``nbytes`` with a bandwidth-optimal
        algorithm: ``2(p-1)/p`` allreduce, ``(p-1)/p`` allgather, reduce_scatter and
        alltoall, 1 for a send."""
        return send_factor(self.collective, self.ranks)

    @property
    def traffic(self) -> float:
        """Bytes one GPU sends for this op per step: ``count * factor * nbytes``."""
        return self.count * self.factor * self.nbytes


def send_factor(collective: str, ranks: int) -> float:
    """Bytes a rank sends per byte of the collective's size (REFERENCE.md's busbw
    factors: the per-rank traffic of a bandwidth-optimal algorithm)."""
    p = ranks
    if collective == "allreduce":
        return 2 * (p - 1) / p
    if collective in ("reduce_scatter", "allgather", "alltoall"):
        return (p - 1) / p
    if collective == "send":
        return 1.0
    raise unknown("collective", collective, COLLECTIVES)


def _ceil(num: int, den: int) -> int:
    return -(-num // den)


@dataclass(frozen=True)
class _Sizes:
    """Per-GPU sizes in bytes and counts for one (shape, layout)."""

    stage_layers: int       # L_s
    stage_moe_layers: int   # MoE layers of the busiest stage
    act: int                # b s_l h w: one TP rank's activation buffer
    pp_msg: int             # one PP message per TP rank
    kv: int                 # CP: gathered K and V of this TP rank's heads
    tokens: int             # EP: one rank's alltoall send buffer


def _sizes(shape: Shape, layout: Layout) -> _Sizes:
    t, c, pp = layout.tp, layout.cp, layout.pp
    if shape.layers % pp:
        raise CommsimError(f"model.layers: {shape.layers} layers do not split evenly over "
                           f"pp={pp} stages; use a pp that divides the layers")
    if shape.seq_len % c:
        raise CommsimError(f"model.seq_len: {shape.seq_len} does not split over cp={c}; use "
                           "a cp that divides the sequence length")
    s_l = shape.seq_len // c
    if shape.hidden % t:
        raise CommsimError(f"model.hidden: {shape.hidden} does not split over tp={t}; use a "
                           "tp that divides hidden")
    if shape.heads and shape.heads % t:
        raise CommsimError(f"model.heads: {shape.heads} heads do not split over tp={t}; use "
                           "a tp that divides heads")
    if shape.sequence_parallel and t > 1 and s_l % t:
        raise CommsimError(f"training.sequence_parallel: {s_l} tokens per CP rank do not "
                           f"split over tp={t}; use a seq_len divisible by cp x tp")
    moe_here = shape.experts > 0 and layout.ep > 1
    if shape.experts and shape.experts % layout.ep:
        raise CommsimError(f"layout.ep: {layout.ep} does not divide the {shape.experts} "
                           "experts; use an ep that divides experts")
    if moe_here and t > 1 and not shape.sequence_parallel:
        raise CommsimError("training.sequence_parallel: MoE with tp > 1 needs sequence "
                           "parallelism (Megatron requires it); set sequence_parallel: true")
    b, h, w = shape.micro_batch, shape.hidden, shape.dtype_bytes
    ls = shape.layers // pp
    stage_moe = max(sum(1 for i in range(k * ls, (k + 1) * ls) if shape.is_moe(i))
                    for k in range(pp))
    act = b * s_l * h * w
    split = t if (shape.sequence_parallel and t > 1) else 1
    kv_width = h * shape.kv_heads // shape.heads if shape.heads else h
    sizes = _Sizes(stage_layers=ls, stage_moe_layers=stage_moe, act=act,
                   pp_msg=act // split,
                   kv=_ceil(2 * b * shape.seq_len * kv_width * w, t),
                   tokens=shape.top_k * act // split)
    largest = max(sizes.act, sizes.kv, sizes.tokens if moe_here else 0)
    if largest > MAX_SIZE:
        raise CommsimError(f"model: a collective of {format_bytes(largest)} (micro_batch x "
                           "seq_len x hidden x dtype bytes, times 2 for K and V, top_k for "
                           f"routed tokens) is more than {format_bytes(MAX_SIZE)}; use a "
                           "smaller hidden, seq_len or micro_batch")
    return sizes


def _buckets(dim: str, ranks: int, collective: str, total: int, bucket: int, count: int,
             phase: str, what: str) -> list[Op]:
    """``total`` bytes as full buckets plus a last, shorter one; ``count`` times each."""
    full, rest = divmod(total, bucket)
    ops = []
    if full:
        ops.append(Op(dim, collective, bucket, full * count, phase,
                      f"{what}, {_human(bucket)} buckets", ranks))
    if rest:
        ops.append(Op(dim, collective, rest, count, phase,
                      f"{what}, last bucket" if full else what, ranks))
    return ops


def _human(nbytes: int) -> str:
    from commsim.units import format_size
    return format_size(nbytes)


def step_ops(shape: Shape, layout: Layout) -> list[Op]:
    """The collectives of one training step, per GPU (a GPU of the busiest stage).

    Per dimension (only where its groups have more than one rank):

    - TP: per layer and micro-batch, 2 allreduces of ``b s_l h w`` forward and 2
      backward; with sequence parallelism each becomes a reduce_scatter and an allgather
      of the same gathered size.
    - CP: per layer and micro-batch, an allgather of K and V (``2 b s h_kv w / t``, the
      whole sequence's K and V of this TP rank's heads) forward; backward an allgather of
      K and V again and a reduce_scatter of dK and dV.
    - PP: per micro-batch, a send of ``b s_l h w`` (``/ t`` with sequence parallelism)
      forward and one backward: what a middle stage sends (one per boundary).
    - EP: per MoE layer and micro-batch, alltoall dispatch and combine of ``top_k b s_l h
      w`` (``/ t`` with sequence parallelism) forward, and both again backward.
    - DP: gradients of the rank's shard, ``dense_params / (t pp)`` over ``dp`` and
      ``expert_params / (t pp e)`` over ``edp``, times ``w``, in buckets: ddp allreduce
      once a step; zero1 reduce_scatter once a step and allgather of the parameters after
      the optimizer; zero2 reduce_scatter every micro-batch and the allgather once;
      zero3 and fsdp allgather forward, allgather backward and reduce_scatter every
      micro-batch. With ``cp > 1`` the groups are ``dp-cp`` and ``edp-cp``.
    """
    z = _sizes(shape, layout)
    m, ls = shape.micro_batches, z.stage_layers
    sp = shape.sequence_parallel
    ops: list[Op] = []
    t = layout.tp
    if t > 1:
        per = 2 * ls * m
        if sp:
            ops += [Op("tp", "allgather", z.act, per, "forward",
                       "TP allgather of sequence-parallel activations before attention and "
                       "MLP", t),
                    Op("tp", "reduce_scatter", z.act, per, "forward",
                       "TP reduce_scatter of attention and MLP outputs", t),
                    Op("tp", "reduce_scatter", z.act, per, "backward",
                       "TP reduce_scatter of input gradients of attention and MLP", t),
                    Op("tp", "allgather", z.act, per, "backward",
                       "TP allgather of output gradients of attention and MLP", t)]
        else:
            ops += [Op("tp", "allreduce", z.act, per, "forward",
                       "TP allreduce of attention and MLP outputs", t),
                    Op("tp", "allreduce", z.act, per, "backward",
                       "TP allreduce of input gradients of attention and MLP", t)]
    c = layout.cp
    if c > 1:
        per = ls * m
        ops += [Op("cp", "allgather", z.kv, per, "forward", "CP allgather of K and V", c),
                Op("cp", "allgather", z.kv, per, "backward", "CP allgather of K and V again",
                   c),
                Op("cp", "reduce_scatter", z.kv, per, "backward",
                   "CP reduce_scatter of dK and dV", c)]
    e = layout.ep
    if e > 1 and z.stage_moe_layers:
        per = 2 * z.stage_moe_layers * m
        ops += [Op("ep", "alltoall", z.tokens, per, "forward",
                   "EP alltoall dispatch and combine of routed tokens", e),
                Op("ep", "alltoall", z.tokens, per, "backward",
                   "EP alltoall dispatch and combine of token gradients", e)]
    if layout.pp > 1:
        ops += [Op("pp", "send", z.pp_msg, m, "forward",
                   "PP send of activations to the next stage", 2),
                Op("pp", "send", z.pp_msg, m, "backward",
                   "PP send of activation gradients to the previous stage", 2)]
    ops += _dp_ops(shape, layout, layout.pp, t)
    return ops


def _dp_ops(shape: Shape, layout: Layout, pp: int, t: int) -> list[Op]:
    w, m, bucket = shape.dtype_bytes, shape.micro_batches, shape.bucket
    cp_suffix = "-cp" if layout.cp > 1 else ""
    parts = [(f"dp{cp_suffix}", _ceil(shape.dense_params, t * pp) * w, "dense")]
    if shape.experts:
        parts.append((f"edp{cp_suffix}", _ceil(shape.expert_params, t * pp * layout.ep) * w,
                      "expert"))
    ops: list[Op] = []
    for dim, total, kind in parts:
        d = layout.size(dim)
        if d == 1 or total == 0:
            continue
        name = dim.split("-")[0].upper()
        grads, params = f"{name} {{}} of {kind} gradients", f"{name} {{}} of {kind} parameters"
        if shape.strategy == "ddp":
            ops += _buckets(dim, d, "allreduce", total, bucket, 1, "grad-sync",
                            grads.format("allreduce"))
        elif shape.strategy in ("zero1", "zero2"):
            every = 1 if shape.strategy == "zero1" else m
            ops += _buckets(dim, d, "reduce_scatter", total, bucket, every, "grad-sync",
                            grads.format("reduce_scatter"))
            ops += _buckets(dim, d, "allgather", total, bucket, 1, "optimizer",
                            params.format("allgather") + " after the optimizer")
        else:
            ops += _buckets(dim, d, "allgather", total, bucket, m, "forward",
                            params.format("allgather") + " for forward")
            ops += _buckets(dim, d, "allgather", total, bucket, m, "backward",
                            params.format("allgather") + " for backward")
            ops += _buckets(dim, d, "reduce_scatter", total, bucket, m, "grad-sync",
                            grads.format("reduce_scatter"))
    return ops


def traffic_per_gpu(ops: list[Op]) -> dict[str, float]:
    """Bytes one GPU sends per step, per dimension (``sum(op.traffic)``), in the order the
    dimensions first appear."""
    out: dict[str, float] = {}
    for op in ops:
        out[op.dim] = out.get(op.dim, 0.0) + op.traffic
    return out


# -- the timeline ------------------------------------------------------------------------

@dataclass(frozen=True)
class Phase:
    """Ops that run at the same time, each on every one of its groups (every TP group of
    the machine does its allreduce at once), ``count`` times per step. Every op of a phase
    runs once per execution (its ``count`` is 1). ``compute_s``: seconds of computation
    per execution, after the communication, or beside it when ``overlap`` (then one
    execution takes ``max(communication, compute_s)``, else their sum)."""

    name: str
    ops: tuple[Op, ...] = ()
    compute_s: float = 0.0
    count: int = 1
    overlap: bool = False


def _check_compute(compute) -> dict[str, float]:
    compute = dict(compute or {})
    for key, value in compute.items():
        if key not in COMPUTE_KEYS:
            raise unknown("compute key", key, COMPUTE_KEYS)
        if isinstance(value, bool) or not isinstance(value, (int, float)) \
                or not math.isfinite(value) or value < 0:
            raise CommsimError(f"compute.{key}: {value!r} must be a number of seconds >= 0")
    return {k: float(compute.get(k, 0.0)) for k in COMPUTE_KEYS}


def pair_buckets(slots: list, buckets: list[tuple]) -> tuple[Counter, Counter]:
    """``(paired, alone)``: the buckets of one backward pass, ``[(bucket, how many), ...]``
    in order, each beside the next of ``slots`` (its TP collectives in issue order) while
    there are slots: ``paired`` counts ``(slot, bucket)``, ``alone`` the buckets left over.
    The buckets are counted, never listed: 1-byte buckets of a large model are 10**10."""
    paired: Counter = Counter()
    alone: Counter = Counter()
    taken = 0
    for bucket, n in buckets:
        k = min(n, len(slots) - taken)
        paired.update(zip(slots[taken:taken + k], [bucket] * k))
        taken += k
        if n > k:
            alone[bucket] += n - k
    return paired, alone


def step_timeline(shape: Shape, layout: Layout, compute: dict | None = None) -> list[Phase]:
    """The step as phases: ``sum(phase.count * one execution)`` is the step's time.

    ``compute``: seconds on one GPU, ``forward`` and ``backward`` per layer and
    micro-batch, ``optimizer`` per step (all 0 by default: a communication-only step).

    - each forward and backward op of TP, CP and EP is a phase of its own, repeated as
      often as the op (per layer and micro-batch): TP collectives block the layer;
    - PP sends: a phase per micro-batch and direction, every boundary at once;
    - DP ops of the forward and backward (ZeRO-3/FSDP allgathers) and of the gradient
      reduction: a phase per bucket size; the optimizer's allgathers after the optimizer;
    - compute: phases of their own (forward, backward, optimizer).

    ``overlap_dp``: the gradient buckets of a backward pass (the last micro-batch's for
    ddp and zero1, every micro-batch's for zero2, zero3 and fsdp) run beside that pass:
    one bucket beside each of its TP collectives (they share the links), and the buckets
    left over beside its compute (``overlap``: a bucket then costs only what the compute
    does not hide). Otherwise they run after the backward pass. The pipeline bubble is not
    in the timeline (1F1B adds ``(pp-1)/m`` of the ideal step).
    """
    comp = _check_compute(compute)
    ops = step_ops(shape, layout)
    ls, m = _sizes(shape, layout).stage_layers, shape.micro_batches
    one = [replace(op, count=1) for op in ops]
    phases: list[Phase] = []

    def add(name, group, count, **kw):
        if count > 0:
            phases.append(Phase(name, tuple(group), count=count, **kw))

    by_phase = {p: [(op, o) for op, o in zip(ops, one) if op.phase == p] for p in PHASES}
    for op, o in by_phase["forward"]:
        add(f"forward {op.dim} {op.collective} {_human(op.nbytes)}", [o], op.count)
    if comp["forward"]:
        add("forward compute", [], ls * m, compute_s=comp["forward"])
    overlap = shape.overlap_dp and bool(by_phase["grad-sync"])
    passes = (m if shape.strategy in ("zero2", "zero3", "fsdp") else 1) if overlap else 0
    tp_back = [(op, o) for op, o in by_phase["backward"] if op.dim == "tp"]
    paired: Counter = Counter()
    alone: Counter = Counter()
    if overlap:
        # one backward pass: its TP collectives in issue order, its buckets in order
        slots = [o for _ in range(2 * ls) for op, o in tp_back]
        paired, alone = pair_buckets(slots, [(o, op.count // passes)
                                             for op, o in by_phase["grad-sync"]])
    used = Counter(s for s, _ in paired.elements())
    for op, o in by_phase["backward"]:
        add(f"backward {op.dim} {op.collective} {_human(op.nbytes)}", [o],
            op.count - used[o] * passes)
    for (tp_op, dp_op), n in paired.items():
        add(f"backward {tp_op.dim} {tp_op.collective} {_human(tp_op.nbytes)} + "
            f"{dp_op.dim} {dp_op.collective} {_human(dp_op.nbytes)}", [tp_op, dp_op], n * passes)
    hidden = comp["backward"] * ls if alone else 0.0
    nalone = sum(alone.values())
    for dp_op, n in alone.items():
        add(f"grad-sync {dp_op.dim} {dp_op.collective} {_human(dp_op.nbytes)} beside backward",
            [dp_op], n * passes, compute_s=hidden / nalone, overlap=True)
    if comp["backward"]:
        add("backward compute", [], ls * m - (passes if alone else 0) * ls,
            compute_s=comp["backward"])
    if not overlap:
        for op, o in by_phase["grad-sync"]:
            add(f"grad-sync {op.dim} {op.collective} {_human(op.nbytes)}", [o], op.count)
    if comp["optimizer"]:
        add("optimizer compute", [], 1, compute_s=comp["optimizer"])
    for op, o in by_phase["optimizer"]:
        add(f"optimizer {op.dim} {op.collective} {_human(op.nbytes)}", [o], op.count)
    return phases
