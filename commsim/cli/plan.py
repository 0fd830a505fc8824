"""``commsim plan``: capacity planning for a training job at several GPU counts.

::

    commsim plan --model llama3-70b --gpus 64,256,1024 --tp 8 --pp 4
    commsim plan --topology dgx-h100-superpod --gpus 1024 --model 13B --what-if nic_bw=2x
    commsim plan --model 70B --gpus 512 --search
    commsim plan --model 8B --gpus 64 --from-ddp ddp.jsonl   # compute rate of a ddp run
"""

from __future__ import annotations

import argparse
import json
import math

from commsim.errors import CommsimError

# caps far past any training job that keep a plan from running for minutes (a plan's time
# grows with the gpu count and the layers; 2**20 gpus plan in seconds, 10**7 in a quarter
# of a minute, 10**8 in minutes and gigabytes; 10,000 layers in seconds a gpu count)
MAX_GPUS = 2**20            # --gpus: each count (1024k)
MAX_LAYERS = 10_000         # --layers, and the depth --params gives
# text flags whose empty value would otherwise read as not given (the output flags are
# checked by commsim.cli.common.check_output)
TEXT_FLAGS = ("model", "params", "gpu", "fp8_comm", "from_ddp", "tokens")
OUTPUTS = ("json", "markdown", "report")
# the model's shape flags, and the model fields a plan flag of the same name sets: an error
# naming the field (model.seq_len) names the flag the user typed (--seq-len)
SHAPE_DESTS = ("layers", "hidden", "heads", "kv_heads", "ffn", "vocab")
FIELD_DESTS = (*SHAPE_DESTS, "seq_len", "micro_batch")


def register(subparsers) -> None:
    from commsim.cli.common import add_sim_workers

    p = subparsers.add_parser(
        "plan", help="capacity planning: step time, MFU, memory and what-ifs of a training "
        "job at several gpu counts",
        description="Plan a training job: for each gpu count, a parallel layout, memory per "
        "GPU, every dimension's communication from the closed-form model and (where the "
        "topology holds the gpus) from the simulator, the pipeline bubble, exposed "
        "communication, step time, MFU, tokens/s and scaling efficiency; what-ifs side by "
        "side. Formulas and sources: docs/plan.md.")
    m = p.add_argument_group("model")
    m.add_argument("--model", metavar="NAME",
                   help="a preset (gpt3-125m .. gpt3-175b, llama2-7b/13b/70b, llama3-8b/70b/"
                   "405b, mixtral-8x7b, deepseek-v3) or a size (7B, 70B, 405B: Llama)")
    m.add_argument("--params", metavar="N", help="a dense model of N parameters (175B, 1.3B)")
    for flag in ("layers", "hidden", "heads", "kv-heads", "ffn", "vocab"):
        m.add_argument(f"--{flag}", type=int, metavar="N",
                       help=f"override the model's {flag.replace('-', ' ')}" + (
                           f" (at most {MAX_LAYERS:,})" if flag == "layers" else ""))
    t = p.add_argument_group("training")
    t.add_argument("--strategy", default="zero1",
                   help="data parallelism: ddp, zero1 (default: Megatron's distributed "
                   "optimizer), zero2, zero3, fsdp")
    for dim in ("tp", "pp", "cp", "ep", "dp"):
        t.add_argument(f"--{dim}", type=int, metavar="N",
                       help=f"{dim.upper()} degree" + (" (default: what remains)" if dim == "dp"
                                                      else ""))
    t.add_argument("--interleave", type=int, default=1, metavar="V",
                   help="interleaved 1F1B with V model chunks a GPU (bubble / V, V x the PP "
                   "messages)")
    t.add_argument("--micro-batch", type=int, default=1, metavar="B", help="sequences a "
                   "micro-batch (default 1)")
    t.add_argument("--global-batch", type=int, metavar="B",
                   help="sequences a step (default 1024; rounded up to micro-batch x dp)")
    t.add_argument("--seq-len", type=int, metavar="S",
                   help="tokens a sequence (default: the preset's context)")
    t.add_argument("--recompute", default="selective",
                   help="activation recompute: none, selective (default), full")
    t.add_argument("--sequence-parallel", action=argparse.BooleanOptionalAction, default=None,
                   help="Megatron sequence parallelism (default: on when tp > 1)")
    t.add_argument("--dtype", default="bf16", help="bf16 (default) or fp8: the compute peak")
    t.add_argument("--fp8-comm", default=None, metavar="none|tp|all",
                   help="with --dtype fp8, which communication is fp8: tp (default, as "
                   "Transformer Engine: the TP allgathers), all (also the parameter "
                   "allgathers, Megatron's --fp8-param-gather) or none; gradients stay "
                   "16-bit")
    t.add_argument("--no-overlap", action="store_true",
                   help="gradient reduction after the backward pass instead of beside it")
    t.add_argument("--tp-comm-overlap", action="store_true",
                   help="TP allgathers and reduce-scatters beside their matmuls (Megatron's "
                   "--tp-comm-overlap; needs sequence parallelism)")
    t.add_argument("--overlap-param-gather", action="store_true",
                   help="parameter allgathers beside compute: ZeRO-3/FSDP prefetch, "
                   "ZeRO-1/2's gather beside the next forward (Megatron's "
                   "--overlap-param-gather)")
    t.add_argument("--overlap-p2p-communication", action=argparse.BooleanOptionalAction,
                   default=True, help="with --interleave, PP sends beside the next model "
                   "chunk's compute (default on, as Megatron)")
    t.add_argument("--flash-attention", action=argparse.BooleanOptionalAction, default=True,
                   help="fused attention (default): no attention scores in memory; "
                   "--no-flash-attention prices softmax and dropout over them")
    h = p.add_argument_group("hardware and compute")
    h.add_argument("--gpus", default="8,64,512", metavar="N,N,...",
                   help=f"gpu counts (default 8,64,512; 64k = 65536; each at most "
                   f"{MAX_GPUS:,})")
    h.add_argument("--topology", default="dgx-h100-superpod", metavar="NAME|PATH|PROFILE",
                   help="a topology preset, YAML file or calibrated profile (default "
                   "dgx-h100-superpod)")
    h.add_argument("--gpu", help="A100, H100, H200, B200 (default: from the topology's name, "
                   "else H100)")
    h.add_argument("--mfu", type=float, default=None,
                   help="fraction of the dense peak a matmul reaches (default 0.5); "
                   "memory-bound kernels run at the GPU's HBM bandwidth; the reported MFU "
                   "also counts those, communication, bubble and recompute")
    h.add_argument("--step-compute-ms", type=float, metavar="MS",
                   help="compute a step per GPU at the smallest --gpus count, instead of "
                   "FLOPs / (peak x mfu); scaled by smallest/N at the other counts")
    h.add_argument("--from-ddp", metavar="FILE",
                   help="a commsim ddp --json file: each GPU computes at the FLOP/s that "
                   "run measured (its model's forward+backward FLOPs over the median "
                   "compute-only forward+backward time) instead of peak x mfu")
    h.add_argument("--tokens", metavar="T", help="tokens to train (2T, 15e12): days and "
                   "GPU-hours")
    s = p.add_argument_group("simulation and scenarios")
    s.add_argument("--what-if", action="append", default=[], metavar="KEY=VALUE[,...]",
                   help="a scenario beside the baseline (repeatable): a topology builder "
                   "parameter (nvlink_bw=2x, nic_bw=800Gb/s, oversubscription=1:1, "
                   "gpus_per_node=4) or a plan key (tp=4, pp, cp, ep, interleave, "
                   "micro_batch, strategy, mfu, gpu, recompute, dtype, fp8_comm, overlap, "
                   "tp_comm_overlap, overlap_param_gather, overlap_p2p, flash_attention)")
    s.add_argument("--search", action="store_true",
                   help="rank every valid TP x PP x DP (x EP) layout that fits, top 10 per "
                   "gpu count (model only)")
    s.add_argument("--simulate-max", type=int, default=1024, metavar="N",
                   help="simulate gpu counts up to N (default 1024); larger ones use the model")
    s.add_argument("--no-simulate", action="store_true", help="the model only")
    add_sim_workers(s)
    s.add_argument("--no-extrapolate", action="store_true",
                   help="refuse gpu counts beyond the topology instead of growing it")
    o = p.add_argument_group("output")
    o.add_argument("--json", metavar="FILE", help="a JSON list, one object per (scenario, gpus)")
    o.add_argument("--markdown", metavar="FILE", help="a Markdown report with PNG figures")
    o.add_argument("--report", metavar="FILE", help="a self-contained HTML report")
    p.set_defaults(func=run)


def _flag(dest: str) -> str:
    return "--" + dest.replace("_", "-")


def _check_text(args) -> None:
    """An empty value (``--gpu ''``, ``--params ' '``) is refused, not read as not
    given."""
    for dest in TEXT_FLAGS:
        value = getattr(args, dest)
        if value is not None and not str(value).strip():
            raise CommsimError(f"{_flag(dest)}: empty; give a value or leave the flag out")


def _gpus(text: str) -> list[int]:
    out = []
    for part in str(text).split(","):
        part = part.strip()
        if not part:
            continue
        try:
            n = int(float(part[:-1]) * 1024) if part.lower().endswith("k") else int(part)
        except (ValueError, OverflowError):     # OverflowError: infk
            raise CommsimError(f"--gpus: {part!r} is not a gpu count; write e.g. "
                               "8,64,512") from None
        if n < 1:
            raise CommsimError(f"--gpus: {part!r} must be at least 1")
        if n > MAX_GPUS:
            raise CommsimError(f"--gpus: {part!r} is more than {MAX_GPUS:,} gpus, the most "
                               "commsim plan prices (a larger count plans for minutes); "
                               "give a smaller count")
        out.append(n)
    if not out:
        raise CommsimError("--gpus: give at least one gpu count, e.g. 8,64,512")
    return out


def _tokens(text: str | None) -> float | None:
    if text is None:
        return None
    from commsim.plan.models import parse_count

    try:
        value = parse_count(text)
    except CommsimError:
        raise CommsimError(f"--tokens: {text!r} is not a token count; write e.g. 2T or "
                           "15e12") from None
    if not math.isfinite(value):
        raise CommsimError(f"--tokens: {text!r} is not a finite token count; write e.g. 2T "
                           "or 15e12")
    return value


def _check_counts(args) -> None:
    """The caps of :data:`MAX_LAYERS` and of ``--global-batch`` (the micro-batches a step
    that a model's shape holds, :data:`commsim.workload.step.MAX_COUNT`), before any
    work."""
    from commsim.workload.step import MAX_COUNT

    if args.layers is not None and args.layers > MAX_LAYERS:
        raise CommsimError(f"--layers: {args.layers} is more than {MAX_LAYERS:,} layers, "
                           "the most commsim plan takes (the deepest models have about "
                           "130); check the number")
    if args.global_batch is not None and args.global_batch > MAX_COUNT:
        raise CommsimError(f"--global-batch: {args.global_batch} is more than "
                           f"{MAX_COUNT:,} sequences, beyond any training run; check the "
                           "number")


def _flagged(exc: CommsimError, args) -> CommsimError:
    """``exc`` naming the plan flag the user typed instead of the model field it names
    (``model.seq_len: ...`` -> ``--seq-len: ...``); a field no flag set (``model.params``,
    which several make; the preset's heads that a ``--hidden`` does not divide) gets the
    shape flags given in front."""
    text = str(exc)
    field, sep, rest = text.partition(": ")
    if not sep or not field.startswith("model."):
        return exc
    dest = field[len("model."):]
    if dest in FIELD_DESTS and getattr(args, dest) is not None:
        return CommsimError(f"{_flag(dest)}: {rest}")
    given = [_flag(d) for d in ("params", *SHAPE_DESTS) if getattr(args, d) is not None]
    if given:   # model.params, or heads that do not divide a --hidden given
        return CommsimError(f"{', '.join(given)}: {text}")
    return exc


def _model(args):
    """The model of the flags; an error in a field a flag set names the flag."""
    try:
        spec = _spec(args)
    except CommsimError as exc:
        raise _flagged(exc, args) from None
    if spec.layers > MAX_LAYERS:    # --params N: the GPT-3 shape nearest, as deep as N needs
        raise CommsimError(f"--params: {args.params!r} makes a model of {spec.layers:,} "
                           f"layers (the GPT-3 shape nearest in size, made deeper), more than "
                           f"the {MAX_LAYERS:,} commsim plan takes; check the number")
    return spec


def _spec(args):
    from commsim.plan import models

    shapes = dict(layers=args.layers, hidden=args.hidden, heads=args.heads,
                  kv_heads=args.kv_heads, ffn=args.ffn, vocab=args.vocab)
    if args.model and args.params:
        raise CommsimError("--model and --params exclude each other; give one")
    if args.model:
        return models.custom(base=models.get(args.model), **shapes)
    if args.params:
        if any(v is not None for v in shapes.values()):
            raise CommsimError("--params with shape flags: give either --params N or "
                               "--layers/--hidden/--heads")
        count = models.parse_count(args.params)
        if not math.isfinite(count):
            raise CommsimError(f"--params: {args.params!r} is not a finite parameter "
                               "count; write e.g. 7B, 350M or 1.3e9")
        return models.custom(count)
    if any(v is not None for v in shapes.values()):
        return models.custom(**shapes)
    raise CommsimError("--model: give a model (--model llama3-70b, --model 70B) or "
                       "--params N")


def _check_shape(cfg, args) -> None:
    """The model's shape as the planner builds it (the caps of
    :class:`commsim.workload.Shape` on layers, hidden, seq_len, micro-batches,
    parameters ...), checked once before planning: a layout search would otherwise take
    each failure for an invalid layout. Its errors name the flags typed."""
    from commsim.plan import planner
    from commsim.workload.layout import Layout

    try:
        planner.make_shape(cfg, Layout())
    except CommsimError as exc:
        raise _flagged(exc, args) from None


def _check_compute_flags(args) -> None:
    """``--from-ddp`` measures the compute: it excludes the flags that give it."""
    if args.from_ddp is None:
        return
    if args.step_compute_ms is not None:
        raise CommsimError("--from-ddp and --step-compute-ms exclude each other: the file "
                           "measures the compute, --step-compute-ms gives it; drop one")
    if args.mfu is not None:
        raise CommsimError("--from-ddp and --mfu exclude each other: the compute rate is "
                           "the one the file measured, not peak x mfu; drop --mfu")


def _config(args, fabric, measured=None):
    from commsim.plan import gpus
    from commsim.plan.planner import Config

    gpu = gpus.get(args.gpu) if args.gpu is not None else gpus.default_for(fabric.name)
    if args.step_compute_ms is not None and not args.step_compute_ms > 0:
        raise CommsimError("--step-compute-ms: must be a positive number of milliseconds")
    rate = measured.rate if measured is not None else None
    strategy = args.strategy.strip().lower()
    recompute = args.recompute.strip().lower()
    dtype = args.dtype.strip().lower()
    return Config(model=_model(args), gpu=gpu, strategy=strategy, tp=args.tp, pp=args.pp,
                  cp=args.cp, ep=args.ep, dp=args.dp, interleave=args.interleave,
                  micro_batch=args.micro_batch, global_batch=args.global_batch,
                  seq_len=args.seq_len, recompute=recompute,
                  sequence_parallel=args.sequence_parallel, dtype=dtype,
                  mfu=args.mfu if args.mfu is not None else 0.5, compute_rate=rate,
                  step_compute_gpu_s=(args.step_compute_ms / 1e3
                                      if args.step_compute_ms is not None else None),
                  overlap=not args.no_overlap, tp_comm_overlap=args.tp_comm_overlap,
                  overlap_param_gather=args.overlap_param_gather,
                  overlap_p2p=args.overlap_p2p_communication,
                  flash_attention=args.flash_attention,
                  fp8_comm=(args.fp8_comm.strip().lower() if args.fp8_comm is not None
                            else None))


def run(args) -> int:
    from commsim.cli.common import check_output, console, sim_workers
    from commsim.plan import planner, view
    from commsim.plan.fabric import Fabric
    from commsim.report import html, markdown, tables
    from commsim.report.files import write_atomic

    _check_text(args)
    for flag in OUTPUTS:
        if getattr(args, flag) is not None:
            check_output(getattr(args, flag), f"--{flag}")
    workers = sim_workers(args)
    if args.simulate_max < 0:
        raise CommsimError("--simulate-max: must be 0 or more")
    _check_compute_flags(args)
    gpus_list = _gpus(args.gpus)
    _check_counts(args)
    tokens = _tokens(args.tokens)
    measured = None
    if args.from_ddp is not None:
        from commsim.plan import from_ddp

        measured = from_ddp.load(args.from_ddp)
    fabric = Fabric.load(args.topology)
    cfg = _config(args, fabric, measured)
    _check_shape(cfg, args)
    err = console(stderr=True)
    progress = None
    bar = None
    if err.is_terminal:
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        bar = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                       console=err, transient=True)
        task = bar.add_task("planning", total=None)
        bar.start()

        def progress(scenario, n, what):
            bar.update(task, description=f"{what}: {scenario}, {n} gpus")
    try:
        result = planner.plan(cfg, fabric, gpus_list, args.what_if,
                              simulate=not args.no_simulate, simulate_max=args.simulate_max,
                              extrapolate=not args.no_extrapolate, tokens=tokens,
                              progress=progress, workers=workers)
        search_tables = []
        if args.search:
            for n in sorted(set(gpus_list)):
                if progress:
                    progress("search", n, "searching")
                rows, valid = planner.search(
                    cfg, fabric, n, top=10,
                    compute_gpu_s=(cfg.step_compute_gpu_s * min(gpus_list)
                                   if cfg.step_compute_gpu_s is not None else None))
                search_tables.append(view.search_table(rows, n, valid))
    finally:
        if bar is not None:
            bar.stop()
    m = cfg.model
    gpu_line = (f"gpu {cfg.gpu.name}: {cfg.gpu.peak(cfg.dtype) / 1e12:.0f} TFLOP/s dense "
                f"{cfg.dtype}, {cfg.gpu.memory_gb:.0f} GB")
    if measured is not None:
        gpu_line += "; its peak is only MFU's denominator"
    elif cfg.step_compute_gpu_s is None:
        gpu_line += (f"; matmuls at mfu {cfg.mfu:g} of peak, memory-bound kernels at "
                     f"{cfg.gpu.hbm_tbps:g} TB/s")
    else:
        gpu_line = (f"gpu {cfg.gpu.name}; compute given: {args.step_compute_ms:g} ms a step "
                    f"per GPU at {min(gpus_list)} gpus")
    inputs = [f"model {m.name}: {m.params() / 1e9:.2f}B parameters ({m.active_params() / 1e9:.2f}B "
              f"active), {m.layers} layers, hidden {m.hidden}, {m.heads} heads "
              f"({m.kv_heads} kv), ffn {m.ffn}, vocab {m.vocab}; source: {m.source}",
              gpu_line] + ([measured.describe()] if measured is not None else []) + [
              f"topology {fabric.describe()}; simulated up to {args.simulate_max} gpus"
              + (" (off)" if args.no_simulate else ""),
              f"training: {cfg.strategy}, sequence {cfg.seq}, micro-batch {cfg.micro_batch}, "
              f"global batch {cfg.batch}, recompute {cfg.recompute}, interleave "
              f"{cfg.interleave}, attention {'flash' if cfg.flash_attention else 'unfused'}, "
              f"fp8 communication {cfg.comm8}; overlap: gradients "
              f"{'on' if cfg.overlap else 'off'}, TP {'on' if cfg.tp_comm_overlap else 'off'}"
              f", param gather {'on' if cfg.overlap_param_gather else 'off'}, p2p "
              f"{'on' if cfg.overlap_p2p else 'off'}"]
    out = console()
    for line in inputs:
        out.print(line, markup=False, highlight=False)
    shown = view.tables_for(result) + search_tables
    tables.show(shown, lines=[f"note: {n}" for n in result.notes])
    if args.json is not None:
        try:
            text = json.dumps(view.json_rows(result), indent=1, allow_nan=False)
        except ValueError:
            raise CommsimError("--json: a row holds inf or nan; nothing written") from None
        try:
            write_atomic(args.json, text + "\n")
        except OSError as exc:
            raise CommsimError(f"--json: cannot write {args.json!r}: "
                               f"{exc.strerror or exc}") from None
    title = f"commsim plan: {m.name} on {fabric.name}"
    if args.report is not None or args.markdown is not None:
        doc = view.document(result, title, inputs, search_tables)
        if args.report is not None:
            html.write(doc, args.report)
        if args.markdown is not None:
            markdown.write(doc, args.markdown)
    return 0
