"""Capacity planning: a training job's step time, MFU and memory at several GPU counts.

For each (scenario, GPU count) :func:`evaluate` builds a :class:`~commsim.workload.Layout`
and a :class:`~commsim.workload.Shape` from the model preset, the step's timeline
(:func:`commsim.workload.step_timeline`, with the compute of :mod:`commsim.plan.compute`
per layer and micro-batch), and prices its communication

- **from the model**: every op on its group with :func:`commsim.model.predict`, alpha and
  beta of the link class the group crosses (:class:`~commsim.plan.fabric.Fabric`), the
  best algorithm per collective chosen by the same model; the phases add up exactly as
  :func:`commsim.workload.run_step` adds them (:func:`model_step`; it prices one group
  per op instead of building every group's schedule, which is what lets 100,000 gpus
  plan in well under a second; ``tests/test_plan_planner.py`` checks it against
  ``run_step(model=...)``);
- **from the simulator** where the topology holds the GPUs and ``simulate_max`` allows:
  ``run_step(..., simulate_many=commsim.sim.simulate_many, model=...)``, every group of
  every phase at once on the topology, the model beside it.

The compute is :mod:`commsim.plan.compute`'s kernel model (matmuls on the roofline at peak x
``mfu``, memory-bound kernels and the optimizer at the GPU's HBM bandwidth); the bytes an op
sends follow ``--fp8-comm`` (:func:`sized_op`). Then :mod:`commsim.plan.overlap` applies
the overlaps to the priced phases (TP communication beside its matmuls, parameter gathers
beside compute, interleaved PP sends beside the next chunk, with ``V`` times the PP
messages), the pipeline bubble (1F1B ``(pp-1)/m`` of the pipeline's busy time, ``/v``
interleaved), exposed communication (what is not hidden behind compute), step time, MFU,
tokens/s, memory.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np

from commsim import model as cost
from commsim.errors import CommsimError, unknown
from commsim.plan import compute as flops_mod
from commsim.plan import gpus as gpu_mod
from commsim.plan import overlap as overlap_mod
from commsim.plan import whatif
from commsim.plan.fabric import Fabric, param_class
from commsim.plan.memory import RECOMPUTE, memory, state_memory
from commsim.plan.models import ModelSpec
from commsim.units import format_size, parse_pairs
from commsim.workload import STRATEGIES, Layout, Shape, step_ops, step_timeline
from commsim.workload.step import Op, Phase

SOURCES = ("simulator", "model", "extrapolated")
LAYOUT_KEYS = tuple(whatif.PLAN_KEYS)      # what-if keys that change the plan's options
FP8_COMM = ("none", "tp", "all")
DEFAULT_GLOBAL_BATCH = 1024
_VARIES = {"tp": ("tp",), "cp": ("cp",), "pp": ("pp",), "ep": ("ep",), "edp": ("dp",),
           "dp": ("ep", "dp")}
_TOKENS = ("tp", "cp", "ep", "dp", "pp")
CANDIDATES = {"allreduce": ("ring", "rhd", "hierarchical"),
              "reduce_scatter": ("ring", "rhd"), "allgather": ("ring", "rhd"),
              "alltoall": ("pairwise", "bruck", "hierarchical"), "send": ("chain",)}


# -- the shape with a model's real expert size --------------------------------------------

@dataclass(frozen=True)
class PlanShape(Shape):
    """:class:`commsim.workload.Shape` with MoE as presets have it: ``expert_size``
    parameters per routed expert (Shape assumes ``8 h^2``) and ``dense_first`` leading
    dense layers (DeepSeek-V3's first 3)."""

    expert_size: int = 0
    dense_first: int = 0

    def is_moe(self, layer: int) -> bool:
        return (self.experts > 0 and layer >= self.dense_first
                and (layer - self.dense_first) % self.moe_every == 0)

    @property
    def expert_params(self) -> int:
        if not self.expert_size:
            return super().expert_params
        return self.moe_layers * self.experts * self.expert_size


# -- configuration -----------------------------------------------------------------------

@dataclass(frozen=True)
class Config:
    """What to plan: a model, a GPU, training options and (optionally) a fixed layout.
    ``tp``..``ep`` None: chosen (the fastest layout that fits, :func:`search`)."""

    model: ModelSpec
    gpu: gpu_mod.GPU
    strategy: str = "zero1"
    tp: int | None = None
    pp: int | None = None
    cp: int | None = None
    ep: int | None = None
    dp: int | None = None
    interleave: int = 1
    micro_batch: int = 1
    global_batch: int | None = None
    seq_len: int | None = None
    recompute: str = "selective"
    sequence_parallel: bool | None = None
    dtype: str = "bf16"
    mfu: float = 0.5
    step_compute_gpu_s: float | None = None   # GPU-seconds of compute a step (given)
    compute_rate: float | None = None   # FLOP/s a GPU measured by commsim ddp (--from-ddp)
    overlap: bool = True                # gradient reduction beside the backward pass
    tp_comm_overlap: bool = False       # TP collectives beside their matmuls (needs SP)
    overlap_param_gather: bool = False  # ZeRO-3/FSDP prefetch; ZeRO-1/2 gather beside forward
    overlap_p2p: bool = True            # interleaved PP sends beside the next chunk
    flash_attention: bool = True        # fused attention: no scores in memory
    fp8_comm: str | None = None         # none, tp, all (default: tp with fp8, else none)
    pp_scatter_gather: bool = False     # PP messages split over the TP ranks without SP

    def __post_init__(self) -> None:
        if self.strategy not in STRATEGIES:
            raise unknown("--strategy", self.strategy, STRATEGIES)
        if self.recompute not in RECOMPUTE:
            raise unknown("--recompute", self.recompute, RECOMPUTE)
        gpu_mod.check_dtype(self.dtype)
        if not 0 < self.mfu <= 1:
            raise CommsimError(f"--mfu: {self.mfu!r} must be in (0, 1], e.g. 0.5")
        if self.compute_rate is not None:
            if self.step_compute_gpu_s is not None:
                raise CommsimError("--from-ddp and --step-compute-ms exclude each other; "
                                   "give one")
            if not self.compute_rate > 0 or not math.isfinite(self.compute_rate):
                raise CommsimError(f"compute rate: {self.compute_rate!r} FLOP/s must be "
                                   "positive")
        for name in ("tp", "pp", "cp", "ep", "dp", "interleave", "micro_batch",
                     "global_batch", "seq_len"):
            v = getattr(self, name)
            if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
                raise CommsimError(f"--{name.replace('_', '-')}: {v!r} must be a whole "
                                   "number >= 1")
        for name in ("overlap", "tp_comm_overlap", "overlap_param_gather", "overlap_p2p",
                     "flash_attention", "pp_scatter_gather"):
            if not isinstance(getattr(self, name), bool):
                raise CommsimError(f"--{name.replace('_', '-')}: {getattr(self, name)!r} "
                                   "must be true or false")
        if self.fp8_comm is not None and self.fp8_comm not in FP8_COMM:
            raise unknown("--fp8-comm", self.fp8_comm, FP8_COMM)
        if self.fp8_comm in ("tp", "all") and self.dtype != "fp8":
            raise CommsimError(f"--fp8-comm {self.fp8_comm}: needs --dtype fp8 (with "
                               f"{self.dtype} nothing is computed in fp8 to send); drop "
                               "--fp8-comm or add --dtype fp8")
        if self.tp_comm_overlap and self.sequence_parallel is False:
            raise CommsimError("--tp-comm-overlap: needs sequence parallelism (Megatron "
                               "overlaps the TP allgathers and reduce-scatters of sequence "
                               "parallelism with their matmuls); drop --no-sequence-parallel")

    @property
    def seq(self) -> int:
        return self.seq_len or self.model.seq_len

    @property
    def batch(self) -> int:
        return self.global_batch or DEFAULT_GLOBAL_BATCH

    @property
    def comm8(self) -> str:
        """Which communication is fp8: ``--fp8-comm``, else Transformer Engine's default
        (``tp`` with ``--dtype fp8``, ``none`` with bf16)."""
        if self.fp8_comm is not None:
            return self.fp8_comm
        return "tp" if self.dtype == "fp8" else "none"

    @property
    def fixed_layout(self) -> bool:
        return any(getattr(self, k) is not None for k in ("tp", "pp", "cp", "ep", "dp"))


def make_layout(cfg: Config, gpus: int) -> Layout:
    """The layout ``cfg`` fixes for ``gpus`` (dp = what remains)."""
    tp, pp, cp, ep = cfg.tp or 1, cfg.pp or 1, cfg.cp or 1, cfg.ep or 1
    inner = tp * pp * cp
    if cfg.dp is not None:
        if inner * cfg.dp != gpus:
            raise CommsimError(f"layout: tp {tp} x pp {pp} x cp {cp} x dp {cfg.dp} = "
                               f"{inner * cfg.dp}, not the {gpus} gpus; drop --dp (it fills "
                               "what remains) or change a degree")
        dp = cfg.dp
    else:
        if gpus % inner:
            raise CommsimError(f"layout: tp {tp} x pp {pp} x cp {cp} = {inner} does not divide "
                               f"{gpus} gpus; choose degrees whose product divides the gpu "
                               "count")
        dp = gpus // inner
    if dp % ep:
        raise CommsimError(f"--ep: {ep} does not divide dp={dp} at {gpus} gpus; expert "
                           "parallelism is carved out of data parallelism")
    return Layout(tp=tp, cp=cp, pp=pp, dp=dp, ep=ep)


def check_layout(cfg: Config, layout: Layout, gpn: int) -> str | None:
    """Why ``layout`` is not valid for ``cfg`` (None: it is)."""
    m = cfg.model
    if m.heads % layout.tp or m.hidden % layout.tp:
        return f"tp {layout.tp} does not divide the {m.heads} heads"
    if m.layers % layout.pp:
        return f"pp {layout.pp} does not divide the {m.layers} layers"
    if cfg.interleave > 1 and (m.layers // layout.pp) % cfg.interleave:
        return (f"interleave {cfg.interleave} does not divide {m.layers // layout.pp} layers "
                "a stage")
    if cfg.seq % layout.cp:
        return f"cp {layout.cp} does not divide the sequence of {cfg.seq}"
    if m.experts and m.experts % layout.ep:
        return f"ep {layout.ep} does not divide the {m.experts} experts"
    if not m.experts and layout.ep > 1:
        return "ep > 1 needs a mixture-of-experts model"
    sp = sequence_parallel(cfg, layout)
    if sp and layout.tp > 1 and (cfg.seq // layout.cp) % layout.tp:
        return (f"sequence parallelism: {cfg.seq // layout.cp} tokens do not split over tp "
                f"{layout.tp}")
    return None


def sequence_parallel(cfg: Config, layout: Layout) -> bool:
    if cfg.sequence_parallel is not None:
        return cfg.sequence_parallel and layout.tp > 1
    return layout.tp > 1


def micro_batches(cfg: Config, layout: Layout) -> int:
    """Micro-batches a step per pipeline: the global batch over ``b x dp``, rounded up (the
    effective global batch is then ``m b dp``). Whole numbers throughout: a float division
    would overflow (or round) on a batch of hundreds of digits."""
    return max(1, -(-cfg.batch // (cfg.micro_batch * layout.dp)))


def make_shape(cfg: Config, layout: Layout) -> PlanShape:
    m = cfg.model
    mb = micro_batches(cfg, layout)
    sp = sequence_parallel(cfg, layout)
    if m.experts and layout.tp > 1 and layout.ep > 1 and not sp:
        raise CommsimError("--sequence-parallel: MoE with tp > 1 and ep > 1 needs sequence "
                           "parallelism (Megatron requires it); drop --no-sequence-parallel")
    return PlanShape(layers=m.layers, hidden=m.hidden, seq_len=cfg.seq,
                     micro_batch=cfg.micro_batch, micro_batches=mb, vocab=m.vocab,
                     params=m.params(), experts=m.experts, top_k=m.top_k or 2,
                     heads=m.heads, kv_heads=m.kv_heads, dtype_bytes=2,
                     strategy=cfg.strategy, sequence_parallel=sp, overlap_dp=cfg.overlap,
                     expert_size=m.mlp(m.expert_ffn) if m.experts else 0,
                     dense_first=m.dense_layers)


# -- what each op sends: fp8 communication, PP scatter/gather ----------------------------

def sized_op(op: Op, cfg: Config, layout: Layout, sp: bool) -> Op:
    """``op`` with the bytes it sends under ``cfg`` (the workload's ops are 16-bit):

    - ``--fp8-comm tp`` (Transformer Engine's default with fp8): the TP allgathers of
      sequence parallelism carry fp8 (1 byte an element): the activations cast to fp8
      before the QKV and MLP-in matmuls and the output gradients cast before the data
      gradient matmuls; the reduce-scatters (and allreduces) carry the matmuls' 16-bit
      outputs;
    - ``--fp8-comm all``: also the data-parallel parameter allgathers (Megatron's
      ``--fp8-param-gather``); gradients are reduced in 16 bits whatever the setting;
    - ``pp_scatter_gather`` without sequence parallelism: a PP message is split over the
      ``t`` ranks of a TP group (Megatron's scatter/gather of 2021), ``1 / t`` each."""
    n = op.nbytes
    mode = cfg.comm8
    if mode in ("tp", "all") and op.dim == "tp" and op.collective == "allgather":
        n = -(-n // 2)
    elif mode == "all" and op.collective == "allgather" \
            and op.dim.split("-")[0] in ("dp", "edp"):
        n = -(-n // 2)
    elif cfg.pp_scatter_gather and op.dim == "pp" and layout.tp > 1 and not sp:
        n = -(-n // layout.tp)
    return op if n == op.nbytes else replace(op, nbytes=n)


def plan_ops(cfg: Config, shape: Shape, layout: Layout) -> list[Op]:
    """The step's ops per GPU (:func:`commsim.workload.step_ops`) with :func:`sized_op`'s
    bytes."""
    sp = shape.sequence_parallel
    return [sized_op(op, cfg, layout, sp) for op in step_ops(shape, layout)]


def plan_timeline(cfg: Config, shape: Shape, layout: Layout, compute: dict) -> list[Phase]:
    """:func:`commsim.workload.step_timeline` with :func:`sized_op`'s bytes (and the
    phase names saying them)."""
    sp = shape.sequence_parallel
    out = []
    for ph in step_timeline(shape, layout, compute):
        ops, name = [], ph.name
        for op in ph.ops:
            new = sized_op(op, cfg, layout, sp)
            if new is not op:
                name = name.replace(f"{op.dim} {op.collective} {format_size(op.nbytes)}",
                                    f"{op.dim} {op.collective} {format_size(new.nbytes)}")
            ops.append(new)
        out.append(replace(ph, ops=tuple(ops), name=name))
    return out


# -- pricing ops on the fabric -------------------------------------------------------------

def _tokens_of(dim: str) -> tuple[str, ...]:
    out: list[str] = []
    for part in dim.split("-"):
        out.extend(t for t in _VARIES[part] if t not in out)
    return tuple(out)


def group_array(layout: Layout, dim: str) -> np.ndarray:
    """Every group of ``dim`` as rows of global ranks (as ``Layout.groups``, vectorized)."""
    varies = _tokens_of(dim)
    offsets = np.zeros(1, dtype=np.int64)
    bases = np.zeros(1, dtype=np.int64)
    for t in _TOKENS:
        steps = np.arange(layout.token_size(t), dtype=np.int64) * layout.strides[t]
        if t in varies:
            offsets = (offsets[None, :] + steps[:, None]).ravel()
        else:
            bases = (bases[None, :] + steps[:, None]).ravel()
    return np.add.outer(np.sort(bases), np.sort(offsets))


@dataclass
class Path:
    bound: str          # the link class that bounds the group's bandwidth
    alpha: float
    beta: float
    classes: list       # every class the group crosses
    per_node: int       # ranks of one group on one node (for two-level algorithms)
    size: int


class Pricer:
    """Prices a layout's ops on a fabric with the closed forms; picks algorithms."""

    def __init__(self, fabric: Fabric, layout: Layout) -> None:
        self.fabric = fabric
        self.layout = layout
        self._paths: dict[str, Path] = {}
        self.choice: dict[str, tuple[str, dict]] = {}

    def path(self, dim: str) -> Path:
        if dim not in self._paths:
            groups = group_array(self.layout, "pp" if dim == "pp" else dim)
            if groups.shape[0] > 64:   # symmetric under linear placement: a sample will do
                pick = np.unique(np.linspace(0, groups.shape[0] - 1, 64).astype(int))
                groups = groups[pick]
            bound, a, b, classes = self.fabric.group_path(groups)
            gpn = self.fabric.gpus_per_node
            first = groups[0] // gpn
            per_node = int((first == first[0]).sum())
            self._paths[dim] = Path(bound, a, b, classes, per_node, groups.shape[1])
        return self._paths[dim]

    def _hier_ok(self, path: Path) -> bool:
        g = path.per_node
        return (self.fabric.analytic and self.fabric.builder == "dgx_cluster"
                and 1 < g < path.size and path.size % g == 0)

    def time(self, dim: str, collective: str, algorithm: str, nranks: int,
             nbytes: float) -> float:
        path = self.path(dim)
        if nranks < 2 or nbytes <= 0:
            return 0.0
        if collective == "send":
            return cost.predict("broadcast", "chain", 2, nbytes, path.alpha, path.beta)
        if algorithm == "hierarchical":
            a_in, b_in = self.fabric.intra_node()
            return cost.predict(collective, "hierarchical", nranks, nbytes, a_in, b_in,
                                group_size=path.per_node, alpha_inter=path.alpha,
                                beta_inter=path.beta)
        return cost.predict(collective, algorithm, nranks, nbytes, path.alpha, path.beta)

    def choose(self, ops) -> dict[str, tuple[str, dict]]:
        """The best algorithm per ``dim:collective`` over the step's ops (least total)."""
        totals: dict[str, dict[str, float]] = {}
        for op in ops:
            key = f"{op.dim}:{op.collective}"
            path = self.path(op.dim)
            for algo in CANDIDATES[op.collective]:
                if algo == "hierarchical" and not self._hier_ok(path):
                    continue
                t = op.count * self.time(op.dim, op.collective, algo, op.ranks, op.nbytes)
                totals.setdefault(key, {}).setdefault(algo, 0.0)
                totals[key][algo] += t
        for key, by in totals.items():
            algo = min(by, key=lambda a: (by[a], CANDIDATES[key.split(":")[1]].index(a)))
            opts = {"group_size": self.path(key.split(":")[0]).per_node} \
                if algo == "hierarchical" else {}
            self.choice[key] = (algo, opts)
        return self.choice

    def op_time(self, op) -> float:
        algo = self.choice.get(f"{op.dim}:{op.collective}", ("ring", {}))[0]
        return self.time(op.dim, op.collective, algo, op.ranks, op.nbytes)

    def job_model(self) -> Callable:
        """``model(job) -> seconds`` for :func:`commsim.workload.run_step`: the job's own
        algorithm on its dimension's path (the dimension is read from the job's name,
        ``phase/dim:collective#i``)."""
        def estimate(job):
            tail = job.name.rsplit("/", 1)[-1]
            dim, _, rest = tail.partition(":")
            collective = rest.split("#")[0]
            algo = job.schedule.algorithm
            return self.time(dim, collective, algo, job.schedule.nranks, job.nbytes)
        return estimate

    def algorithms(self) -> dict:
        """The choice as ``run_step``'s ``algorithms`` mapping."""
        return {k: (a, o) if o else a for k, (a, o) in self.choice.items()}


@dataclass
class StepTimes:
    """A step priced phase by phase (model or simulator): ``time_s`` (the timeline, no
    bubble), ``compute_s``, ``phases`` as ``(name, count, comm_s, compute_s, overlap,
    dims)``, ``dims`` per dimension ``time_s`` (its collectives' time a step)."""

    time_s: float
    compute_s: float
    comm_s: float
    phases: list
    dims: dict


def model_step(timeline: list[Phase], pricer: Pricer) -> StepTimes:
    """The timeline priced by the model, added up as ``run_step`` adds it up: a phase's
    communication is its slowest op; ``max(comm, compute)`` when it overlaps, else the
    sum; each distinct phase priced once."""
    done: dict = {}
    phases = []
    dims: dict[str, float] = {}
    total = comp = comm_total = 0.0
    for ph in timeline:
        key = ph.ops
        if key not in done:
            per_dim: dict[str, float] = {}
            for op in ph.ops:
                t = pricer.op_time(op)
                per_dim[op.dim] = max(per_dim.get(op.dim, 0.0), t)
            done[key] = per_dim
        per_dim = done[key]
        c = max(per_dim.values(), default=0.0)
        one = max(c, ph.compute_s) if ph.overlap else c + ph.compute_s
        total += ph.count * one
        comp += ph.count * ph.compute_s
        comm_total += ph.count * c
        for d, t in per_dim.items():
            dims[d] = dims.get(d, 0.0) + ph.count * t
        phases.append((ph.name, ph.count, c, ph.compute_s, ph.overlap, per_dim))
    return StepTimes(total, comp, comm_total, phases,
                     {d: {"time_s": t} for d, t in dims.items()})


def _from_run_step(res) -> StepTimes:
    phases = [(p.name, p.count, p.comm_s, p.compute_s, p.overlap, dict(p.dims))
              for p in res.phases]
    return StepTimes(res.time_s, res.compute_s, res.comm_s, phases,
                     {d: {"time_s": v["time_s"]} for d, v in res.dims.items()})


# -- one row -------------------------------------------------------------------------------

@dataclass
class Row:
    scenario: str
    gpus: int
    tp: int
    pp: int
    dp: int
    ep: int
    cp: int
    step_time_s: float
    compute_s: float
    comm_exposed_s: float
    bubble_s: float
    mfu: float
    tflops_per_gpu: float
    tokens_per_s: float
    memory_gb_per_gpu: float
    fits: bool
    bottleneck: str
    source: str
    bound_link: str = "none"
    interleave: int = 1
    micro_batches: int = 1
    global_batch: int = 0
    strategy: str = ""
    short_gb: float = 0.0
    model_step_time_s: float = 0.0
    scaling_efficiency: float = 1.0
    train_days: float | None = None
    gpu_hours: float | None = None
    memory: dict = field(default_factory=dict)
    dims: dict = field(default_factory=dict)
    exposed_by: dict = field(default_factory=dict)
    algorithms: dict = field(default_factory=dict)
    classes: list = field(default_factory=list)
    wall_s: float = 0.0
    busiest_links: list = field(default_factory=list)
    link_utilization: dict = field(default_factory=dict)
    compute_memory_s: float = 0.0       # of compute_s: memory-bound kernels and optimizer
    fp8_comm: str = "none"
    overlaps: list = field(default_factory=list)

    def as_dict(self) -> dict:
        from dataclasses import asdict

        return asdict(self)


def step_compute(cfg: Config, layout: Layout, shape: Shape, gpus: int,
                 compute_gpu_s: float | None = None) -> tuple[dict, flops_mod.LayerTimes,
                                                              dict, float]:
    """``(per-layer compute for the timeline, the kernel model's times, TP overlap shares,
    memory-bound seconds a step)``: the kernel model of :mod:`commsim.plan.compute`
    (matmuls on the roofline at peak x ``mfu``, memory-bound kernels and the optimizer at
    the GPU's HBM bandwidth), or, with ``compute_gpu_s`` (``--step-compute-ms``) or a
    measured rate (``--from-ddp``), the FLOPs' forward : backward split of that compute
    (the kernel model then only says which share of a pass the matmuls take)."""
    m = cfg.model
    mb = shape.micro_batches
    batch = mb * cfg.micro_batch * layout.dp
    peak = cfg.gpu.peak(cfg.dtype)
    _w, _g, opt_bytes, _p = state_memory(m, layout, cfg.strategy)
    lt = flops_mod.layer_times(
        m, peak=peak, mfu=cfg.mfu, bandwidth=cfg.gpu.hbm_tbps * 1e12, seq_len=cfg.seq,
        micro_batch=cfg.micro_batch, micro_batches=mb, tp=layout.tp, cp=layout.cp,
        pp=layout.pp, ep=layout.ep, sequence_parallel=shape.sequence_parallel,
        flash=cfg.flash_attention, recompute=cfg.recompute, updated_params=opt_bytes / 12)
    if compute_gpu_s is None and cfg.compute_rate is None:
        per = {"forward": lt.forward, "backward": lt.backward, "optimizer": lt.optimizer}
        return per, lt, overlap_mod.tp_shares(lt.gemm), lt.memory_s
    fl = flops_mod.step_flops(m, batch * cfg.seq, cfg.seq, cfg.recompute)
    if compute_gpu_s is not None:
        compute_s = compute_gpu_s / gpus
    else:
        compute_s = flops_mod.measured_compute_time(fl, gpus, cfg.compute_rate)
    per = flops_mod.per_layer_compute(compute_s, fl, m.layers // layout.pp, mb)
    scale = {d: per[d] / getattr(lt, d) if getattr(lt, d) else 0.0
             for d in ("forward", "backward")}
    return per, lt, overlap_mod.tp_shares(lt.gemm, scale), 0.0


def overlaps(cfg: Config, layout: Layout, shape: Shape, per: dict, shares: dict
             ) -> overlap_mod.Overlaps:
    """What :func:`commsim.plan.overlap.expose` hides for ``cfg``."""
    ls, v = cfg.model.layers // layout.pp, cfg.interleave
    tp_on = cfg.tp_comm_overlap and layout.tp > 1 and shape.sequence_parallel
    return overlap_mod.Overlaps(
        tp=shares if tp_on else {}, interleave=v, overlap_p2p=cfg.overlap_p2p,
        chunk={d: per[d] * ls / v for d in ("forward", "backward")},
        param_gather=cfg.overlap_param_gather,
        pass_s={d: per[d] * ls for d in ("forward", "backward")},
        micro_batches=shape.micro_batches)


def evaluate(cfg: Config, fabric: Fabric, gpus: int, layout: Layout, *, scenario: str =
             "baseline", simulate_many: Callable | None = None, G=None,
             compute_gpu_s: float | None = None, tokens: float | None = None,
             sim_options: dict | None = None) -> Row:
    """One row: ``layout`` on ``gpus`` gpus of ``fabric``; simulated when ``simulate_many``
    and ``G`` are given, else the model (``source`` extrapolated when the fabric grew)."""
    import time as _time

    wall0 = _time.perf_counter()
    m = cfg.model
    shape = make_shape(cfg, layout)
    mb = shape.micro_batches
    batch = mb * cfg.micro_batch * layout.dp
    peak = cfg.gpu.peak(cfg.dtype)
    fl = flops_mod.step_flops(m, batch * cfg.seq, cfg.seq, cfg.recompute)
    per, _lt, shares, memory_s = step_compute(cfg, layout, shape, gpus, compute_gpu_s)
    timeline = plan_timeline(cfg, shape, layout, per)
    ops = [op for ph in timeline for op in ph.ops]
    pricer = Pricer(fabric, layout)
    all_ops = plan_ops(cfg, shape, layout)
    pricer.choose(all_ops)
    modelled = model_step(timeline, pricer)
    source = "extrapolated" if fabric.grown else "model"
    st = modelled
    busiest: list = []
    util: dict = {}
    if simulate_many is not None and G is not None:
        from commsim.workload import place_layout, run_step

        placement = place_layout(G, layout)
        res = run_step(timeline, G, layout, placement, pricer.algorithms(), simulate_many,
                       model=pricer.job_model(), **(sim_options or {}))
        st = _from_run_step(res)
        source = "simulator"
        busiest, util = _links(res, G)
    dim_class = {d: pricer.path(d).bound for d in {op.dim for op in ops}}
    ov = overlaps(cfg, layout, shape, per, shares)
    v = cfg.interleave
    ex = overlap_mod.expose(timeline, st.phases, ov, dim_class)
    bubble_share = (layout.pp - 1) / (v * mb) if layout.pp > 1 else 0.0
    bubble = bubble_share * ex.body_s
    step = ex.time_s + bubble
    comm_exposed = max(0.0, ex.time_s - ex.compute_s)
    exposed = ex.exposed
    if source == "simulator":
        mx = overlap_mod.expose(timeline, modelled.phases, ov, dim_class)
        model_time = mx.time_s + bubble_share * mx.body_s
    else:
        model_time = step
    parts = {"compute": ex.compute_s, "pipeline bubble": bubble} | exposed
    bottleneck = max(parts, key=parts.get)
    bound_link = max(exposed, key=exposed.get) if any(x > 0 for x in exposed.values()) \
        else "none"
    mem = memory(m, layout, strategy=cfg.strategy, seq_len=cfg.seq,
                 micro_batch=cfg.micro_batch, micro_batches=mb, recompute=cfg.recompute,
                 sequence_parallel=shape.sequence_parallel, interleave=v,
                 capacity=cfg.gpu.memory_bytes, flash=cfg.flash_attention)
    tokens_per_step = batch * cfg.seq
    tps = tokens_per_step / step if step > 0 else 0.0
    mfu = fl.model / (step * gpus * peak) if step > 0 else 0.0
    dims = {}
    from commsim.workload import traffic_per_gpu
    traffic = traffic_per_gpu(all_ops)
    scale = {"pp": v}          # interleaving: V times the PP messages
    for d in sorted(set(modelled.dims) | set(st.dims)):
        algos = sorted({a for k, (a, _o) in pricer.choice.items() if k.split(":")[0] == d})
        k = scale.get(d, 1)
        sim_t = st.dims.get(d, {}).get("time_s") if source == "simulator" else None
        dims[d] = {"model_s": k * modelled.dims.get(d, {}).get("time_s", 0.0),
                   "sim_s": k * sim_t if sim_t is not None else None,
                   "bytes": k * traffic.get(d, 0.0), "link": pricer.path(d).bound,
                   "classes": pricer.path(d).classes, "algorithms": algos}
    classes = sorted({c for d in dim_class for c in pricer.path(d).classes})
    on = [name for name, flag in (
        ("grad-reduce", cfg.overlap), ("tp-comm", bool(ov.tp)),
        ("param-gather", cfg.overlap_param_gather),
        ("p2p", cfg.overlap_p2p and v > 1)) if flag]
    row = Row(scenario=scenario, gpus=gpus, tp=layout.tp, pp=layout.pp, dp=layout.dp,
              ep=layout.ep, cp=layout.cp, step_time_s=step, compute_s=ex.compute_s,
              comm_exposed_s=comm_exposed, bubble_s=bubble, mfu=mfu,
              tflops_per_gpu=fl.model / step / gpus / 1e12 if step > 0 else 0.0,
              tokens_per_s=tps, memory_gb_per_gpu=mem.total / 1e9, fits=mem.fits,
              bottleneck=bottleneck, source=source, bound_link=bound_link, interleave=v,
              micro_batches=mb,
              global_batch=batch, strategy=cfg.strategy, short_gb=mem.short_by / 1e9,
              model_step_time_s=model_time,
              memory={k: (v_ / 1e9 if isinstance(v_, float) and k != "fits" else v_)
                      for k, v_ in mem.as_dict().items()},
              dims=dims, exposed_by=exposed,
              algorithms={k: a for k, (a, _o) in pricer.choice.items()}, classes=classes,
              busiest_links=busiest, link_utilization=util, compute_memory_s=memory_s,
              fp8_comm=cfg.comm8, overlaps=on)
    if tokens:
        secs = tokens / tps if tps else float("inf")
        row.train_days = secs / 86400
        row.gpu_hours = secs * gpus / 3600
    row.wall_s = _time.perf_counter() - wall0
    return row


def _links(res, G) -> tuple[list, dict]:
    """The busiest links over the step (name, class, busy share) and the utilization of
    every link that carried bytes, ``{link name: busy share of the step}``."""
    many = next((p.many for p in res.phases if p.many is not None), None)
    top = res.slowest_links(8)
    out = []
    for d in top:
        name = many.link_name(d["link"]) if many is not None else str(d["link"])
        cls = many.link_class(d["link"]) if many is not None else "-"
        out.append({"link": name, "class": cls, "busy_s": d["busy_s"], "share": d["share"]})
    util: dict = {}
    if many is not None and res.time_s > 0:
        busy: dict[int, float] = {}
        for p in res.phases:
            if p.link_busy is None:
                continue
            for k in np.flatnonzero(p.link_busy).tolist():
                busy[k] = busy.get(k, 0.0) + p.count * float(p.link_busy[k])
        util = {many.link_name(k): b / res.time_s for k, b in busy.items()}
    return out, util


# -- search --------------------------------------------------------------------------------

def _divisors(n: int) -> list[int]:
    """The divisors of ``n``, ascending, in time proportional to its square root."""
    small = [d for d in range(1, math.isqrt(n) + 1) if n % d == 0]
    return small + [n // d for d in reversed(small) if d * d != n]


def candidate_layouts(cfg: Config, gpus: int, gpn: int) -> list[Layout]:
    """Every TP x PP x DP (x EP for MoE; CP as given) layout of ``gpus`` that is valid:
    tp at most the gpus of a node and dividing the heads, pp dividing the layers."""
    out = []
    cps = [cfg.cp] if cfg.cp else [1]
    tps = [cfg.tp] if cfg.tp else [t for t in _divisors(min(gpn, gpus))]
    pps = [cfg.pp] if cfg.pp else _divisors(cfg.model.layers)
    for tp in tps:
        for pp in pps:
            for cp in cps:
                inner = tp * pp * cp
                if gpus % inner:
                    continue
                dp = gpus // inner
                eps = [cfg.ep] if cfg.ep else (
                    [e for e in _divisors(dp) if cfg.model.experts % e == 0]
                    if cfg.model.experts else [1])
                for ep in eps:
                    if dp % ep:
                        continue
                    lay = Layout(tp=tp, cp=cp, pp=pp, dp=dp, ep=ep)
                    if check_layout(cfg, lay, gpn) is None:
                        out.append(lay)
    return out


def search(cfg: Config, fabric: Fabric, gpus: int, top: int = 10, **kw) -> tuple[list, int]:
    """Every valid layout of ``gpus`` priced by the model, those that fit first, fastest
    first: ``(rows, how many were valid)``. Rows that do not fit follow only when none
    fits (least memory first)."""
    fab = fabric if gpus <= fabric.ngpus else fabric.grow(gpus)
    cfg_free = cfg
    rows = []
    for lay in candidate_layouts(cfg_free, gpus, fab.gpus_per_node):
        try:
            rows.append(evaluate(cfg_free, fab, gpus, lay, **kw))
        except CommsimError:
            continue
    fits = sorted((r for r in rows if r.fits), key=lambda r: r.step_time_s)
    if fits:
        return fits[:top], len(rows)
    return sorted(rows, key=lambda r: r.short_gb)[:top], len(rows)


# -- scenarios and the plan ----------------------------------------------------------------

def parse_what_if(text: str, fabric: Fabric) -> dict[str, str]:
    """``KEY=VALUE[,KEY=VALUE]`` -> ``{key: value}``, keys checked against the plan's own
    keys and the topology builder's parameters (:func:`commsim.plan.whatif.check_key`)."""
    out = parse_pairs(text, "--what-if", "nvlink_bw=2x",
                      check=lambda key: whatif.check_key(key, fabric.builder, fabric.name,
                                                         LAYOUT_KEYS))
    if not out:
        raise CommsimError("--what-if: give KEY=VALUE, e.g. nic_bw=800Gb/s")
    return out


def apply_config(cfg: Config, changes: dict, field: str = "--what-if") -> Config:
    """``cfg`` with the plan keys of a what-if applied (:func:`commsim.plan.whatif.
    apply_config`: ``tp=4``, ``mfu=0.45``, ``tp_comm_overlap=true``, ``gpu=h200``)."""
    return whatif.apply_config(cfg, changes, field)


@dataclass
class Scenario:
    name: str
    cfg: Config
    fabric: Fabric
    changes: dict = field(default_factory=dict)


@dataclass
class Plan:
    rows: list[Row]
    scenarios: list[Scenario]
    notes: list[str] = field(default_factory=list)
    comparisons: list[dict] = field(default_factory=list)
    searches: dict = field(default_factory=dict)


def plan(cfg: Config, fabric: Fabric, gpus_list: list[int], what_ifs: list[str] = (), *,
         simulate: bool = True, simulate_max: int = 1024, extrapolate: bool = True,
         tokens: float | None = None, progress: Callable | None = None,
         simulate_many: Callable | None = None, sim_options: dict | None = None,
         workers: int = 1) -> Plan:
    """Every (scenario, GPU count) row, scaling efficiency and the what-ifs' changes.

    ``workers``: processes the simulator may fork for a phase's groups of jobs
    (``simulate_many(workers=...)``; the rows are the same for any number)."""
    if not gpus_list:
        raise CommsimError("--gpus: give at least one gpu count, e.g. 8,64,512")
    for n in gpus_list:
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise CommsimError(f"--gpus: {n!r} must be a whole number >= 1")
    gpus_list = sorted(set(gpus_list))
    if not extrapolate and max(gpus_list) > fabric.ngpus:
        raise CommsimError(f"--gpus: {max(gpus_list)} is more than the {fabric.ngpus} gpus "
                           f"of topology {fabric.name!r} and --no-extrapolate is set; use "
                           "fewer gpus, a bigger topology, or allow extrapolation")
    scenarios = [Scenario("baseline", cfg, fabric)]
    for text in what_ifs:
        changes = parse_what_if(text, fabric)
        if "mfu" in changes and (cfg.compute_rate is not None
                                 or cfg.step_compute_gpu_s is not None):
            given = "--from-ddp" if cfg.compute_rate is not None else "--step-compute-ms"
            raise CommsimError(f"--what-if {text}: the compute comes from {given}, not "
                               "peak x mfu, so mfu changes nothing; drop mfu")
        fab_changes = {k: v for k, v in changes.items() if k not in LAYOUT_KEYS}
        fab = fabric.with_changes(fab_changes) if fab_changes else fabric
        scenarios.append(Scenario(text, apply_config(cfg, changes), fab, changes))
    if simulate and simulate_many is None:
        from commsim.sim import simulate_many as sim_many
        simulate_many = sim_many
    if simulate and "memo" not in (sim_options or {}):
        from commsim.workload.simulate import takes_memo

        if takes_memo(simulate_many):
            # one memo for every row: a group of jobs simulated at one gpu count or
            # scenario is copied wherever it meets the same links again
            sim_options = {**(sim_options or {}), "memo": {}}
    if simulate and workers > 1 and "workers" not in (sim_options or {}):
        from commsim.sim import simulate_many as simulator

        if simulate_many is simulator:
            sim_options = {**(sim_options or {}), "workers": int(workers)}
    notes: list[str] = []
    compute_gpu_s = cfg.step_compute_gpu_s
    if compute_gpu_s is not None:
        compute_gpu_s = compute_gpu_s * gpus_list[0]   # per gpu at the smallest count
    rows: list[Row] = []
    searches: dict = {}
    for sc in scenarios:
        for n in gpus_list:
            fab = sc.fabric if n <= sc.fabric.ngpus else sc.fabric.grow(n)
            if sc.cfg.fixed_layout:
                layout = make_layout(sc.cfg, n)
                why = check_layout(sc.cfg, layout, fab.gpus_per_node)
                if why:
                    raise CommsimError(f"layout at {n} gpus: {why}")
            else:
                best, valid = search(sc.cfg, fab, n, top=1, compute_gpu_s=compute_gpu_s)
                if not best:
                    raise CommsimError(f"--gpus {n}: no valid layout of {n} gpus for "
                                       f"{sc.cfg.model.name}; give --tp/--pp explicitly")
                b = best[0]
                layout = Layout(tp=b.tp, cp=b.cp, pp=b.pp, dp=b.dp, ep=b.ep)
                searches[(sc.name, n)] = valid
            sim = simulate and not fab.grown and n <= simulate_max
            if progress:
                progress(sc.name, n, "simulating" if sim else "model")
            row = evaluate(sc.cfg, fab, n, layout, scenario=sc.name,
                           simulate_many=simulate_many if sim else None,
                           G=fab.graph if sim else None, compute_gpu_s=compute_gpu_s,
                           tokens=tokens, sim_options=sim_options)
            rows.append(row)
    # scaling efficiency: tokens/s per gpu against the smallest count of the scenario
    for sc in scenarios:
        mine = [r for r in rows if r.scenario == sc.name]
        base = mine[0]
        for r in mine:
            per, per0 = r.tokens_per_s / r.gpus, base.tokens_per_s / base.gpus
            r.scaling_efficiency = per / per0 if per0 else 0.0
    if not cfg.fixed_layout:
        notes.append("layout: none given, so each row takes the fastest valid layout that "
                     "fits (--search lists them)")
    batches = {r.global_batch for r in rows}
    if cfg.global_batch is None:
        notes.append(f"global batch: {DEFAULT_GLOBAL_BATCH} sequences by default "
                     "(--global-batch)")
    if any(b != cfg.batch for b in batches):
        notes.append(f"global batch: {cfg.batch} sequences do not split evenly over "
                     "micro-batch x dp at every count; rows round the micro-batches up "
                     "(their global_batch says how many sequences)")
    return Plan(rows, scenarios, notes, compare(rows, scenarios), searches)


def compare(rows: list[Row], scenarios: list[Scenario]) -> list[dict]:
    """Each what-if against the baseline at every gpu count: change in step time and
    scaling efficiency, the bounding class, and why nothing changed when nothing did."""
    base = {r.gpus: r for r in rows if r.scenario == "baseline"}
    out = []
    for sc in scenarios[1:]:
        for r in (r for r in rows if r.scenario == sc.name):
            b = base.get(r.gpus)
            if b is None:
                continue
            change = (r.step_time_s - b.step_time_s) / b.step_time_s if b.step_time_s else 0.0
            item = {"scenario": sc.name, "gpus": r.gpus, "baseline_s": b.step_time_s,
                    "step_time_s": r.step_time_s, "change": change,
                    "efficiency_change": r.scaling_efficiency - b.scaling_efficiency,
                    "bottleneck": r.bottleneck, "baseline_bottleneck": b.bottleneck,
                    "bound_link": r.bound_link, "baseline_bound_link": b.bound_link,
                    "reason": None}
            if abs(change) < 0.005:
                item["reason"] = why_unchanged(sc.changes, b)
            out.append(item)
    return out


def why_unchanged(changes: dict, base: Row) -> str:
    """Why a what-if leaves the step time as it was."""
    reasons = []
    for key in changes:
        if key in LAYOUT_KEYS:
            reasons.append(f"{key}: the step is bound by {base.bottleneck} either way")
            continue
        cls = param_class(key)
        used = set(base.classes)
        bounds = {d["link"] for d in base.dims.values()}
        exposed = sum(base.exposed_by.values())
        if cls is None:
            reasons.append(f"{key} does not change a link class the step uses")
        elif cls not in used:
            if used <= {"nvlink"}:
                reasons.append(f"{key}: every collective stays inside the NVLink domain, "
                               f"no traffic crosses {cls} links")
            else:
                reasons.append(f"{key}: no collective of this layout crosses {cls} links "
                               f"(they cross {', '.join(sorted(used))})")
        elif base.bottleneck == "compute" and exposed < 0.01 * base.step_time_s:
            reasons.append(f"{key}: the bottleneck is compute; the {cls} traffic is hidden "
                           "behind it")
        elif cls not in bounds:
            reasons.append(f"{key}: {cls} links are not the narrowest on any path "
                           f"({', '.join(sorted(bounds))} bound the collectives)")
        else:
            share = base.exposed_by.get(cls, 0.0) / base.step_time_s if base.step_time_s else 0
            reasons.append(f"{key}: the {cls} traffic is almost all hidden behind compute "
                           f"(exposed {cls} time {share:.1%} of the step; the step is bound "
                           f"by {base.bottleneck}, its exposed communication by "
                           f"{base.bound_link})")
    return "; ".join(reasons) or "the step time is within 0.5%"
