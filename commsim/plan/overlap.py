"""Which communication a step hides behind compute, and which it exposes.

The step's timeline (:func:`commsim.workload.step_timeline`) is priced phase by phase, by
the model or the simulator (:class:`commsim.plan.planner.StepTimes`). A phase takes
``max(comm, compute)`` when its communication runs beside its compute, else their sum;
that already covers the data-parallel gradient buckets beside the backward pass
(``--no-overlap`` turns it off). :func:`expose` then applies the overlaps the timeline does
not express, to the priced phases (so the model and the simulator get them alike):

- **TP communication overlap** (Megatron's ``--tp-comm-overlap``, Transformer Engine's
  userbuffers; needs sequence parallelism): each TP collective runs beside the matmul it
  feeds or drains: forward, the allgathers before the QKV and MLP-in matmuls and the
  reduce-scatters after the projection and MLP-out matmuls; backward, the allgathers of
  the output gradients before the projection's and MLP-out's data-gradient matmuls and
  the reduce-scatters of the QKV and MLP-in data gradients beside their weight-gradient
  matmuls. A collective of ``c`` seconds beside a matmul of ``g`` exposes ``max(0, c -
  g)``; ``g`` is the mean of the two matmuls a kind of collective pairs with in a pass
  (:func:`tp_shares`).
- **Parameter-gather overlap** (``--overlap-param-gather``): ZeRO-3 / FSDP prefetch the
  parameters of the next layers beside the current layers' compute, so a micro-batch's
  allgathers of a pass (``A`` seconds) expose ``max(0, A - C)`` with ``C`` the pass's
  compute on the stage, less the compute already hiding gradient buckets in a backward
  pass; ZeRO-1 / ZeRO-2's allgather of the updated parameters runs beside the next step's
  first forward pass (Megatron's ``--overlap-param-gather``): ``max(0, A - C_forward)``.
- **Interleaved pipeline** (``--interleave V``): every GPU sends ``V`` times the PP
  messages (``V m`` a direction); with ``--overlap-p2p-communication`` (Megatron's
  default for interleaved schedules) each send runs beside the next model chunk's compute
  (``L / (pp V)`` layers of a micro-batch) and exposes ``max(0, c - C_chunk)``; without
  it, or without interleaving (1F1B's sends block), all of it is exposed. The bubble is
  ``(pp - 1) / (V m)`` of the pipeline's busy time (:mod:`commsim.plan.planner`).

Every overlap only lowers a phase's exposed time, so turning one on never exposes more
communication (``tests/test_plan_overlap.py`` checks it as a property).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# which matmuls a TP collective runs beside (Transformer Engine's userbuffer pairing)
TP_PAIRS = {("forward", "allgather"): ("qkv", "fc1"),
            ("forward", "reduce_scatter"): ("proj", "fc2"),
            ("backward", "allgather"): ("proj", "fc2"),
            ("backward", "reduce_scatter"): ("qkv", "fc1")}


def tp_shares(gemm: dict, scale: dict | None = None) -> dict:
    """Seconds of matmul each kind of TP collective runs beside, per direction:
    ``gemm`` the forward seconds of each linear layer's matmul (a backward data- or
    weight-gradient matmul takes as long as the forward one); ``scale`` per direction
    (when the compute comes from elsewhere than the kernel model)."""
    scale = scale or {}
    out = {}
    for (direction, kind), names in TP_PAIRS.items():
        mean = sum(gemm.get(n, 0.0) for n in names) / len(names)
        out[(direction, kind)] = mean * scale.get(direction, 1.0)
    return out


@dataclass(frozen=True)
class Overlaps:
    """What :func:`expose` hides: ``tp`` (seconds of matmul per (direction, collective)
    kind; empty: no TP overlap), ``interleave`` and ``overlap_p2p`` with ``chunk`` (the
    compute of one model chunk and micro-batch per direction), ``param_gather`` with
    ``pass_s`` (the compute of one micro-batch's pass through the stage per direction) and
    ``micro_batches``."""

    tp: dict = field(default_factory=dict)
    interleave: int = 1
    overlap_p2p: bool = False
    chunk: dict = field(default_factory=dict)
    param_gather: bool = False
    pass_s: dict = field(default_factory=dict)
    micro_batches: int = 1


@dataclass
class Exposure:
    """A priced step after the overlaps: ``time_s`` (no bubble), ``compute_s``,
    ``body_s`` (the pipeline's busy time: forward and backward passes), ``exposed``
    (seconds per link class), ``pp_s`` (the PP sends' whole time, ``V`` times the
    timeline's)."""

    time_s: float
    compute_s: float
    body_s: float
    exposed: dict
    pp_s: float = 0.0


def _is_param_gather(op) -> bool:
    return op.collective == "allgather" and op.dim.split("-")[0] in ("dp", "edp")


def _is_grad(op) -> bool:
    return op.phase == "grad-sync"


def expose(timeline: list, phases: list, ov: Overlaps, dim_class: dict) -> Exposure:
    """The step's time, busy time and exposed communication per link class, with the
    overlaps of ``ov`` applied to ``phases`` (priced :class:`~commsim.workload.step.Phase`
    s of ``timeline``, in its order: ``(name, count, comm, compute, overlap, per_dim)``)."""
    total = compute = body = pp_s = 0.0
    exposed: dict[str, float] = {}
    gathers: dict[str, float] = {}          # param allgather seconds a step, per pass kind
    gather_cls: dict[str, str] = {}
    hidden_grads = 0.0                       # gradient seconds hidden by backward compute

    def expose_to(cls: str, t: float) -> None:
        if t > 0:
            exposed[cls] = exposed.get(cls, 0.0) + t

    for ph, (name, count, comm, comp, overlap, per_dim) in zip(timeline, phases):
        ops = ph.ops
        dims = dict(per_dim)
        in_body = name.startswith(("forward", "backward")) or name.endswith("beside backward")
        if ops and all(o.dim == "pp" for o in ops):
            c = dims.get("pp", comm)
            n = count * ov.interleave
            pp_s += n * c
            each = c
            if ov.overlap_p2p and ov.interleave > 1:
                each = max(0.0, c - ov.chunk.get(ops[0].phase, 0.0))
            t = n * each + count * comp
            total += t
            compute += count * comp
            body += t if in_body else 0.0
            expose_to(dim_class.get("pp", "link"), n * each)
            continue
        if ov.param_gather and ops and all(_is_param_gather(o) for o in ops) and not comp:
            kind = ops[0].phase
            gathers[kind] = gathers.get(kind, 0.0) + count * comm
            gather_cls.setdefault(kind, dim_class.get(ops[0].dim, "link"))
            continue
        if ov.tp and "tp" in dims:
            tp_op = next((o for o in ops if o.dim == "tp"), None)
            if tp_op is not None:
                share = ov.tp.get((tp_op.phase, tp_op.collective), 0.0)
                dims["tp"] = max(0.0, dims["tp"] - share)
                comm = max(dims.values())
        one = max(comm, comp) if overlap else comm + comp
        total += count * one
        compute += count * comp
        if in_body:
            body += count * one
        extra = one - comp
        if extra > 0 and dims:
            dim = max(dims, key=dims.get)
            expose_to(dim_class.get(dim, "link"), count * extra)
        if overlap and comp > 0 and any(_is_grad(o) for o in ops):
            hidden_grads += count * min(comm, comp)
    m = max(1, ov.micro_batches)
    for kind, a in gathers.items():
        if kind == "optimizer":      # beside the next step's first forward pass
            t = max(0.0, a - ov.pass_s.get("forward", 0.0))
        else:                        # every micro-batch's pass, beside its compute
            budget = ov.pass_s.get(kind, 0.0)
            if kind == "backward":
                budget = max(0.0, budget - hidden_grads / m)
            t = m * max(0.0, a / m - budget)
            body += t
        total += t
        expose_to(gather_cls[kind], t)
    return Exposure(total, compute, body, exposed, pp_s)
