"""`commsim plan` against published large training runs: step time or TFLOP/s per GPU.

Each run is a published measurement with its model shape, GPU type and count, TP/PP/CP/DP
layout, micro and global batch, sequence length, recompute, and a measured step time (s)
or achieved TFLOP/s per GPU. Each is planned with the library that ``commsim plan`` calls
(:func:`commsim.plan.planner.plan`, model only: the ``--no-simulate`` path) on a preset
topology of its GPU type (``dgx-a100-4node``, ``dgx-h100-superpod``, grown to the run's
size), and compared in the source's own unit:

- step time (s): predicted = the plan's ``step_time_s``;
- TFLOP/s per GPU: predicted = the source's FLOPs a step (its own formula, below) over the
  plan's step time and the GPUs, so both sides count the same FLOPs.

error = predicted / published - 1 (step time: + is plan slower; TFLOP/s: + is plan faster).
Goal: within 15% on each.

**One calibration parameter per GPU type**: the achievable matmul efficiency (plan's
``--mfu``: the fraction of dense peak a matmul reaches). Everything else is physical and
the same for every run: the memory-bound kernels of a layer (norms, softmax and dropout of
unfused attention, residual adds, activations, cross entropy, optimizer) at the GPU's HBM
bandwidth and each matmul on the roofline (docs/plan.md, "Compute"), and the overlaps a
run's configuration turns on. The efficiency is fitted once per GPU type to minimise the
largest |error| over that type's judged runs (golden-section search; the largest |error|
is unimodal in it because every run's error is monotonic in it), printed once, and used
for every run of that type. ``--efficiency A100=0.6`` fixes it instead. The second table
gives, per run, the efficiency at which that run alone would be exact ("exact at"), the
memory-bound share of its compute, and where the predicted step goes (compute, bubble,
exposed communication per link class).

Judged runs are those whose layout is published whole (model shape, GPUs, TP/PP/CP/DP,
micro and global batch, sequence, recompute). Runs missing a part are shown with their
error but neither fitted nor counted (``--fit-all`` fits and counts them too).

Sources (every number below was read from them; see each run's ``source`` and ``how``):

- ``megatron-sc21``: Narayanan et al. 2021, "Efficient Large-Scale Language Model Training
  on GPU Clusters Using Megatron-LM" (SC21), Table 1 (GPT 1.7B..1T, A100 80GB on Selene,
  "achieved teraFLOP/s per GPU" counting the FLOPs of eq. 3, which include full
  recompute). Table as published in NVIDIA/Megatron-LM ``images/cases_april2021.png``
  (README "Training Speed and Scalability", until commit 937571cfd4, 2024-07-15; vocab
  51,200 and sequence 2048 from that README's text). Layouts (TP, PP, micro-batch, global
  batch, layers, hidden, heads, DDP implementation, interleaving as layers per virtual
  stage, ``--activations-checkpoint-method uniform``, fp16) from the paper's own scripts,
  NVIDIA/Megatron-LM ``examples/academic_paper_scripts/sc21/run_table_1.sh`` and
  ``CONFIG.sh``; GPUs = NNODES x 8.
- ``mcore-r0.8``: NVIDIA/Megatron-LM README at commit 937571cfd4 (2024-07-15, "Updated
  README with new scaling figures on H100 GPUs"), ``images/model_table.png``: Megatron-Core
  r0.8.0 weak scaling on H100 (heads, hidden, layers, TP, PP, DP, GPUs, batch, per-GPU
  teraFLOP/s, MFU); vocab 131,072 and sequence 4096 from the README text, which also says
  DP, TP and PP communication were overlapped (``--overlap-grad-reduce
  --overlap-param-gather``, ``--tp-comm-overlap``). FLOPs: Megatron-Core r0.8.0
  ``megatron/training/training.py: num_floating_point_operations``. Only the rows without
  pipeline parallelism are used: the table gives neither micro-batch size nor virtual
  stages, which set the bubble of the others; and these four are shown, not judged (the
  micro-batch is assumed 1, recompute none).
- ``dgxc-24.11``: NVIDIA/dgxc-benchmarking at commit 35a9aec ("v24.11.1"): measured
  ``train_step_timing`` (s a step) of NeMo 24.09/24.11 on H100 (BF16 tables), with TP, PP,
  CP, VP, MBS, GBS per GPU count in ``nemo_megatron/README_175b.md``,
  ``llama3.1/README_{8b,70b,405b}.md``, ``nemotron/README_{15b,340b}.md``; shapes,
  recompute (``activations_checkpoint_granularity``), sequence parallelism and overlap
  flags from the yaml beside each README (``gpt3_175b_hydra.yaml``,
  ``llama3.1_*.yaml``, ``nemotron4-*-synth.yaml``). Each model's smallest full-size and
  largest GPU count.

Mapping notes: SC21 runs (2021) use ``ddp`` (no distributed optimizer then), overlap only
with ``--DDP-impl torch`` (Megatron's ``local`` DDP allreduced after the backward pass),
full recompute, no sequence parallelism and no flash attention (Megatron's fused
scale-mask-softmax and dropout over the scores in memory), dropout 0.1, blocking
interleaved sends, and Megatron's scatter/gather of PP activations over the TP ranks
(``pp_scatter_gather``: a PP message / t). The NeMo runs use ``zero1``
(distributed_fused_adam or mcore_distributed_optim) with gradient and parameter-gather
overlap (``overlap_grad_sync``, ``overlap_param_sync``), Transformer Engine's fused
attention, TP communication overlap where the yaml sets ``ub_tp_comm_overlap`` and
interleaved-send overlap unless it sets ``overlap_p2p_comm: False``.

    python benchmarks/plan_vs_published.py [--json FILE|-] [--efficiency GPU=VALUE]
                                           [--fit-all]

Runs in seconds, offline; exits 0 whether or not the goal is met (it is a benchmark) and
says how many runs are within 15%.
"""

from __future__ import annotations

import argparse
import json
import math
import sys
import time
from dataclasses import dataclass, field

from commsim.errors import CommsimError
from commsim.plan import gpus as gpu_presets
from commsim.plan import models, planner
from commsim.plan.compute import megatron_flops
from commsim.plan.fabric import Fabric
from commsim.report.tables import Table, show

GOAL = 0.15
TOPOLOGY = {"A100": "dgx-a100-4node", "H100": "dgx-h100-superpod"}

SOURCES = {
    "megatron-sc21": "Narayanan et al. 2021 (SC21), Table 1: achieved TFLOP/s per GPU, as in "
                     "NVIDIA/Megatron-LM images/cases_april2021.png (README until 937571cfd4); "
                     "layouts from examples/academic_paper_scripts/sc21/run_table_1.sh and "
                     "CONFIG.sh",
    "mcore-r0.8": "NVIDIA/Megatron-LM README at 937571cfd4, images/model_table.png: "
                  "Megatron-Core r0.8.0 weak scaling on H100, per-GPU TFLOP/s; FLOPs from "
                  "megatron/training/training.py num_floating_point_operations (core_r0.8.0)",
    "dgxc-24.11": "NVIDIA/dgxc-benchmarking at 35a9aec (v24.11.1): BF16 train_step_timing "
                  "(s/step) tables of NeMo 24.09/24.11 on H100 in the README named; options "
                  "from the yaml beside it",
}


# -- model shapes --------------------------------------------------------------------------

def megatron_gpt(name: str, layers: int, hidden: int, heads: int, vocab: int, seq: int,
                 tied: bool, positions: int) -> models.ModelSpec:
    """A Megatron GPT: MHA, GELU MLP of 4h, LayerNorm and linear biases, hidden and
    attention dropout 0.1 (Megatron-LM's defaults, ``--hidden-dropout``,
    ``--attention-dropout``)."""
    return models.ModelSpec(name, layers, hidden, heads, heads, 4 * hidden, vocab,
                            swiglu=False, tied=tied, positions=positions, biases=True,
                            seq_len=seq, dropout=0.1, source="see the run's source")


def sc21(size: str, layers: int, hidden: int, heads: int) -> models.ModelSpec:
    # GPT-2 BPE padded to 51,200 (README), learned positions, tied embeddings (Megatron GPT)
    return megatron_gpt(f"gpt-{size}", layers, hidden, heads, 51200, 2048, True, 2048)


def mcore(size: str, layers: int, hidden: int, heads: int) -> models.ModelSpec:
    # vocab 131,072; untied (the table's sizes: 1.7B = 24 x 12 h^2 + 2 V h)
    return megatron_gpt(f"gpt-{size}", layers, hidden, heads, 131072, 4096, False, 0)


def nemotron4(size: str, layers: int, hidden: int, heads: int) -> models.ModelSpec:
    # nemotron4-*-synth.yaml: squared-ReLU MLP of 4h (two matrices), GQA with 8 query
    # groups, no biases, untied, RoPE, no dropout; vocab 256,000 (the README's FLOP
    # notes), seq 4096
    return models.ModelSpec(f"nemotron4-{size}", layers, hidden, heads, 8, 4 * hidden, 256000,
                            swiglu=False, tied=False, seq_len=4096,
                            source="NVIDIA/dgxc-benchmarking nemotron/nemotron4-*-synth.yaml")


# -- the sources' FLOP counts (for runs published as TFLOP/s per GPU) ----------------------

def sc21_flops(m: models.ModelSpec, batch: int, seq: int) -> float:
    """Narayanan et al. 2021 eq. 3 (full recompute): ``96 B s l h^2 (1 + s/6h + V/16lh)``."""
    return megatron_flops(batch, seq, m.layers, m.hidden, m.vocab)


def mcore_flops(m: models.ModelSpec, batch: int, seq: int) -> float:
    """Megatron-Core r0.8.0 ``num_floating_point_operations`` (MHA, GELU, dense)."""
    h, L = m.hidden, m.layers
    groups_ratio = m.kv_heads / m.heads
    return 12 * batch * seq * L * h * h * ((1 + groups_ratio + seq / h)
                                           + m.ffn / h + m.vocab / (2 * L * h))


# -- the runs ------------------------------------------------------------------------------

@dataclass(frozen=True)
class Run:
    name: str
    source: str            # key of SOURCES
    gpu: str               # A100, H100
    model: models.ModelSpec
    gpus: int
    tp: int
    pp: int
    dp: int
    micro_batch: int
    global_batch: int
    seq_len: int
    metric: str            # "step_s" or "tflops"
    published: float
    cp: int = 1
    interleave: int = 1
    recompute: str = "none"
    sequence_parallel: bool = False
    strategy: str = "zero1"
    overlap: bool = True
    tp_comm_overlap: bool = False
    overlap_param_gather: bool = False
    overlap_p2p: bool = True
    flash_attention: bool = True
    pp_scatter_gather: bool = False
    flops: str = ""        # the source's FLOP formula for tflops runs: sc21, mcore
    file: str = ""         # the source file (dgxc)
    how: str = ""          # how the run's options map to plan's, and what is assumed
    excluded: str = ""     # why the run is shown but neither fitted nor judged ("": it is)

    def cite(self) -> str:
        """The source's short label (full citations: SOURCES)."""
        return f"{self.source}:{self.file}" if self.file else self.source

    def source_flops(self) -> float:
        fn = {"sc21": sc21_flops, "mcore": mcore_flops}[self.flops]
        return fn(self.model, self.global_batch, self.seq_len)


def _sc21(size, layers, hidden, heads, tp, pp, mbs, gbs, nodes, ddp, vstage, tflops) -> Run:
    """A row of Narayanan et al. 2021 Table 1 with its run_table_1.sh configuration.

    DDP ``torch`` overlaps the gradient allreduce with the backward pass; ``local`` (the
    Megatron DDP of 2021) allreduces after it (``train_step`` -> ``allreduce_gradients``),
    so no overlap. No distributed optimizer then: ``ddp``. Full recompute (``uniform``).
    No sequence parallelism and no flash attention yet (2021): the attention scores go
    through Megatron's fused scale-mask-softmax and dropout kernels in memory, and each
    TP rank repeats the layer norms, dropouts and residual adds. The PP activations go
    scatter/gather over the TP ranks (on by default at the paper's commit:
    ``--no-scatter-gather-tensors-in-pipeline``): a PP message / t. Interleaved sends
    block (``--overlap-p2p-communication`` came later)."""
    gpus = nodes * 8
    v = layers // pp // vstage if vstage else 1
    return Run(f"GPT {size} (SC21)", "megatron-sc21", "A100", sc21(size, layers, hidden, heads),
               gpus, tp, pp, gpus // (tp * pp), mbs, gbs, 2048, "tflops", tflops,
               interleave=v, recompute="full", sequence_parallel=False,
               strategy="ddp", overlap=ddp == "torch", flops="sc21", flash_attention=False,
               overlap_p2p=False, pp_scatter_gather=tp > 1 and pp > 1,
               how=f"DDP {ddp}; unfused attention" + (", PP scatter/gather"
                                                      if tp > 1 and pp > 1 else ""))


def _mcore(size, heads, hidden, layers, tp, dp, gpus, batch, tflops) -> Run:
    """A row of the Megatron-Core r0.8.0 H100 table (no PP). As its README says: DP, TP
    and param-gather overlap (``--overlap-grad-reduce --overlap-param-gather
    --tp-comm-overlap``), Transformer Engine's fused attention. Not published, assumed:
    micro-batch 1, no recompute, sequence parallelism with TP (``--tp-comm-overlap``
    requires it), distributed optimizer."""
    return Run(f"GPT {size} (MCore r0.8)", "mcore-r0.8", "H100", mcore(size, layers, hidden, heads),
               gpus, tp, 1, dp, 1, batch, 4096, "tflops", tflops,
               sequence_parallel=tp > 1, flops="mcore", tp_comm_overlap=tp > 1,
               overlap_param_gather=True,
               how="assumed: mbs 1, recompute none; zero1, TP and param-gather overlap",
               excluded="micro-batch not published")


def _dgxc(name, file, model, gpus, tp, pp, cp, vp, mbs, gbs, seq, step, recompute="none",
          sp=True, tp_overlap=True, p2p=True) -> Run:
    """A BF16 row of a dgxc-benchmarking README (NeMo on Megatron-Core with Transformer
    Engine's fused attention; distributed optimizer with ``overlap_grad_sync`` and
    ``overlap_param_sync``: ``zero1`` with gradient and param-gather overlap;
    ``ub_tp_comm_overlap`` as the yaml says; ``overlap_p2p_comm`` with interleaving as
    the yaml says, else Megatron's default, on)."""
    return Run(name, "dgxc-24.11", "H100", model, gpus, tp, pp, gpus // (tp * pp * cp), mbs,
               gbs, seq, "step_s", step, cp=cp, interleave=vp, recompute=recompute,
               sequence_parallel=sp and tp > 1, file=file,
               tp_comm_overlap=tp_overlap and tp > 1 and sp, overlap_param_gather=True,
               overlap_p2p=p2p,
               how=("TP comm overlap" if tp_overlap and tp > 1 else "no TP comm overlap")
               + ", param-gather overlap" + ("" if vp == 1 else
                                            ", p2p overlap" if p2p else ", p2p blocking"))


LLAMA405_16KV = models.custom(base=models.get("llama3-405b"), kv_heads=16)

RUNS: list[Run] = [
    # Narayanan et al. 2021 Table 1: size, layers, hidden, heads, TP, PP, MBS, GBS, nodes,
    # DDP, layers per virtual stage (0: not interleaved), achieved TFLOP/s per GPU
    _sc21("1.7B", 24, 2304, 24, 1, 1, 16, 512, 4, "torch", 0, 137),
    _sc21("3.6B", 30, 3072, 32, 2, 1, 16, 512, 8, "torch", 0, 138),
    _sc21("7.5B", 36, 4096, 32, 4, 1, 16, 512, 16, "torch", 0, 142),
    _sc21("18B", 40, 6144, 48, 8, 1, 8, 1024, 32, "torch", 0, 135),
    _sc21("39B", 48, 8192, 64, 8, 2, 4, 1536, 64, "local", 0, 138),
    _sc21("76B", 60, 10240, 80, 8, 4, 2, 1792, 128, "local", 5, 140),
    _sc21("145B", 80, 12288, 96, 8, 8, 2, 2304, 192, "local", 5, 148),
    _sc21("310B", 96, 16384, 128, 8, 16, 1, 2160, 240, "local", 3, 155),
    _sc21("530B", 105, 20480, 128, 8, 35, 1, 2520, 315, "local", 1, 163),
    _sc21("1T", 128, 25600, 160, 8, 64, 1, 3072, 384, "local", 0, 163),
    # Megatron-Core r0.8.0 on H100: size, heads, hidden, layers, TP, DP, GPUs, batch,
    # per-GPU TFLOP/s (the rows with pipeline parallelism are left out: see the docstring)
    _mcore("1.7B", 16, 2048, 24, 1, 48, 48, 192, 408.8),
    _mcore("7.1B", 32, 4096, 30, 2, 48, 96, 192, 465.9),
    _mcore("16B", 48, 6144, 32, 4, 48, 192, 192, 489.1),
    _mcore("32B", 56, 7168, 48, 8, 48, 384, 192, 459.6),
    # dgxc-benchmarking v24.11.1, BF16: name, file, model, gpus, TP, PP, CP, VP, MBS, GBS,
    # seq, measured s/step
    _dgxc("GPT-3 175B 128 GPUs", "nemo_megatron/README_175b.md", models.get("gpt3-175b"),
          128, 4, 8, 1, 12, 1, 256, 2048, 8.91),
    _dgxc("GPT-3 175B 2048 GPUs", "nemo_megatron/README_175b.md", models.get("gpt3-175b"),
          2048, 4, 8, 1, 12, 1, 4096, 2048, 9.02),
    _dgxc("Llama 3.1 8B 8 GPUs", "llama3.1/README_8b.md", models.get("llama3-8b"),
          8, 1, 1, 2, 1, 1, 128, 8192, 12.91, sp=False, tp_overlap=False),
    _dgxc("Llama 3.1 8B 128 GPUs", "llama3.1/README_8b.md", models.get("llama3-8b"),
          128, 1, 1, 2, 1, 1, 2048, 8192, 13.10, sp=False, tp_overlap=False),
    _dgxc("Llama 3.1 70B 64 GPUs", "llama3.1/README_70b.md", models.get("llama3-70b"),
          64, 4, 4, 2, 5, 1, 128, 8192, 14.72),
    _dgxc("Llama 3.1 70B 2048 GPUs", "llama3.1/README_70b.md", models.get("llama3-70b"),
          2048, 4, 4, 2, 5, 1, 4096, 8192, 14.98),
    # llama3.1_405b.yaml sets num_query_groups 16 (Llama 3.1 405B itself has 8)
    _dgxc("Llama 3.1 405B 576 GPUs", "llama3.1/README_405b.md", LLAMA405_16KV,
          576, 8, 9, 2, 7, 1, 252, 8192, 17.20),
    _dgxc("Llama 3.1 405B 2304 GPUs", "llama3.1/README_405b.md", LLAMA405_16KV,
          2304, 8, 9, 2, 7, 1, 1008, 8192, 17.62),
    _dgxc("Nemotron-4 15B 16 GPUs", "nemotron/README_15b.md", nemotron4("15b", 32, 6144, 48),
          16, 4, 1, 1, 1, 4, 64, 4096, 2.83),
    _dgxc("Nemotron-4 15B 2048 GPUs", "nemotron/README_15b.md",
          nemotron4("15b", 32, 6144, 48), 2048, 4, 1, 1, 1, 4, 8192, 4096, 2.96),
    # nemotron4-340b-synth.yaml: selective recompute, ub_tp_comm_overlap False,
    # overlap_p2p_comm False
    _dgxc("Nemotron-4 340B 128 GPUs", "nemotron/README_340b.md",
          nemotron4("340b", 96, 18432, 96), 128, 8, 8, 1, 12, 1, 32, 4096, 4.61,
          recompute="selective", tp_overlap=False, p2p=False),
    _dgxc("Nemotron-4 340B 2048 GPUs", "nemotron/README_340b.md",
          nemotron4("340b", 96, 18432, 96), 2048, 8, 8, 1, 12, 1, 512, 4096, 4.84,
          recompute="selective", tp_overlap=False, p2p=False),
]


# -- predicting ----------------------------------------------------------------------------

@dataclass
class Result:
    run: Run
    efficiency: float
    row: planner.Row
    predicted: float
    published_step_s: float
    error: float = field(init=False)
    exact: float | None = None    # the efficiency at which this run alone has no error

    def __post_init__(self) -> None:
        self.error = self.predicted / self.run.published - 1

    @property
    def speed(self) -> float:
        """Published step / predicted step - 1: + when plan is too fast."""
        return self.published_step_s / self.row.step_time_s - 1


_FABRICS: dict[str, Fabric] = {}


def _fabric(gpu: str) -> Fabric:
    if gpu not in _FABRICS:
        _FABRICS[gpu] = Fabric.load(TOPOLOGY[gpu])
    return _FABRICS[gpu]


def config(run: Run, efficiency: float) -> planner.Config:
    """The ``commsim plan`` configuration of ``run`` (what the CLI's ``_config`` builds)."""
    return planner.Config(model=run.model, gpu=gpu_presets.get(run.gpu), strategy=run.strategy,
                          tp=run.tp, pp=run.pp, cp=run.cp, dp=run.dp,
                          interleave=run.interleave, micro_batch=run.micro_batch,
                          global_batch=run.global_batch, seq_len=run.seq_len,
                          recompute=run.recompute, sequence_parallel=run.sequence_parallel,
                          mfu=efficiency, overlap=run.overlap,
                          tp_comm_overlap=run.tp_comm_overlap,
                          overlap_param_gather=run.overlap_param_gather,
                          overlap_p2p=run.overlap_p2p, flash_attention=run.flash_attention,
                          pp_scatter_gather=run.pp_scatter_gather)


def predict(run: Run, efficiency: float) -> Result:
    """``run`` planned at ``efficiency`` (model only, as ``commsim plan --no-simulate``)."""
    res = planner.plan(config(run, efficiency), _fabric(run.gpu), [run.gpus], simulate=False)
    row = res.rows[0]
    if row.global_batch != run.global_batch:
        raise RuntimeError(f"{run.name}: plan ran a global batch of {row.global_batch}, "
                           f"not {run.global_batch}")
    if run.metric == "step_s":
        return Result(run, efficiency, row, row.step_time_s, run.published)
    flops = run.source_flops()
    predicted = flops / (row.step_time_s * run.gpus) / 1e12
    return Result(run, efficiency, row, predicted, flops / (run.published * 1e12 * run.gpus))


def worst(runs: list[Run], efficiency: float) -> float:
    return max(abs(predict(r, efficiency).error) for r in runs)


def fit(runs: list[Run], lo: float = 0.2, hi: float = 1.0, tol: float = 1e-4) -> float:
    """The efficiency in [lo, hi] that minimises the largest |error| over ``runs``
    (golden-section search), rounded to 3 decimals."""
    g = (math.sqrt(5) - 1) / 2
    a, b = lo, hi
    c, d = b - g * (b - a), a + g * (b - a)
    fc, fd = worst(runs, c), worst(runs, d)
    while b - a > tol:
        if fc <= fd:
            b, d, fd = d, c, fc
            c = b - g * (b - a)
            fc = worst(runs, c)
        else:
            a, c, fc = c, d, fd
            d = a + g * (b - a)
            fd = worst(runs, d)
    best = round((a + b) / 2, 3)
    return min((best - 0.001, best, best + 0.001), key=lambda e: worst(runs, e))


def exact(run: Run, lo: float = 0.05, hi: float = 1.0, steps: int = 14) -> float | None:
    """The efficiency at which ``run`` is predicted exactly (bisection: a higher efficiency
    only shortens the step); None when even ``hi`` leaves the plan too slow."""
    if predict(run, hi).speed < 0:
        return None
    for _ in range(steps):
        mid = (lo + hi) / 2
        if predict(run, mid).speed < 0:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


# -- output --------------------------------------------------------------------------------

def _layout(r: Run) -> str:
    parts = [f"tp{r.tp}", f"pp{r.pp}"] + ([f"cp{r.cp}"] if r.cp > 1 else []) + [f"dp{r.dp}"]
    text = " ".join(parts)
    if r.interleave > 1:
        text += f" v{r.interleave}"
    return f"{text} mbs{r.micro_batch} gbs{r.global_batch} s{r.seq_len} rc:{r.recompute}"


def _fmt(value: float, metric: str) -> str:
    return f"{value:.2f} s" if metric == "step_s" else f"{value:.1f} TF/s"


def _judged(x: Result, fit_all: bool) -> bool:
    return fit_all or not x.run.excluded


def _verdict(x: Result, fit_all: bool) -> str:
    if not _judged(x, fit_all):
        return f"n/a: {x.run.excluded}"
    return "yes" if abs(x.error) <= GOAL else "NO"


def summary(results: list[Result], efficiencies: dict[str, float], fitted: dict[str, bool],
            fit_all: bool) -> list[str]:
    """The calibration per GPU type (once) and the goal's count."""
    lines = []
    judged = [x for x in results if _judged(x, fit_all)]
    for gpu, eff in efficiencies.items():
        mine = [abs(x.error) for x in judged if x.run.gpu == gpu]
        peak = gpu_presets.get(gpu).peak("bf16") / 1e12
        how = ("fitted: the least largest |error| over its judged runs" if fitted[gpu]
               else "given with --efficiency")
        lines.append(f"calibration {gpu}: matmul efficiency {eff:.3f} of its {peak:.0f} TFLOP/s "
                     f"dense BF16/FP16 peak = {eff * peak:.0f} TFLOP/s ({how}); topology "
                     f"{TOPOLOGY[gpu]}; {len(mine)} judged runs, "
                     f"{sum(e <= GOAL for e in mine)} within 15%, mean |err| "
                     f"{sum(mine) / max(1, len(mine)):.1%}, max |err| {max(mine, default=0):.1%}")
    n_ok = sum(abs(x.error) <= GOAL for x in judged)
    missed = [x.run.name for x in judged if abs(x.error) > GOAL]
    lines.append(f"goal (within 15% on each): {n_ok} of {len(judged)} judged runs within 15%"
                 + (f"; missed: {', '.join(missed)}" if missed else "; met"))
    shown = [x for x in results if not _judged(x, fit_all)]
    if shown:
        lines.append(f"{len(shown)} runs shown but neither fitted nor judged "
                     f"({shown[0].run.excluded}; --fit-all includes them): "
                     + ", ".join(f"{x.run.name} {x.error * 100:+.1f}%" for x in shown))
    return lines


def tables(results: list[Result], efficiencies: dict[str, float], fitted: dict[str, bool],
           fit_all: bool = False) -> list[Table]:
    main = Table("commsim plan vs published training runs (err = predicted / published - 1, "
                 "in the source's unit)",
                 ["run", "source", "gpu", "gpus", "layout", "published", "predicted",
                  "err (%)", "plan is", "within 15%"],
                 align=["l", "l", "l", "r", "l", "r", "r", "r", "l", "l"])
    for x in results:
        r = x.run
        verdict = _verdict(x, fit_all)
        cls = {"yes": "good", "NO": "bad"}.get(verdict, "dim")
        main.add([r.name, r.cite(), r.gpu, str(r.gpus), _layout(r), _fmt(r.published, r.metric),
                  _fmt(x.predicted, r.metric), f"{x.error * 100:+.1f}",
                  "too fast" if x.speed > 0 else "too slow", verdict],
                 [None] * 7 + [cls, None, cls])
    main.notes.append("plan is too fast: its step is shorter than the published one (a "
                      "TFLOP/s run's published step = the source's FLOPs / (TFLOP/s x GPUs))")
    main.notes.extend(f"source {k}: {v}" for k, v in SOURCES.items())
    main.notes.extend(summary(results, efficiencies, fitted, fit_all))
    parts = Table("where the predicted step goes (seconds a step; exposed = communication the "
                  "timeline does not hide)",
                  ["run", "published step (s)", "predicted step (s)", "compute",
                   "memory-bound", "bubble", "exposed", "exposed by class", "mfu", "exact at",
                   "mem (GB)", "fits", "plan options"],
                  align=["l"] + ["r"] * 7 + ["l", "r", "r", "r", "l", "l"])
    for x in results:
        row, r = x.row, x.run
        by = ", ".join(f"{k} {v:.2f}" for k, v in sorted(row.exposed_by.items()) if v > 5e-4)
        share = row.compute_memory_s / row.compute_s if row.compute_s else 0.0
        parts.add([r.name, f"{x.published_step_s:.2f}", f"{row.step_time_s:.2f}",
                   f"{row.compute_s:.2f}", f"{share:.1%}", f"{row.bubble_s:.2f}",
                   f"{row.comm_exposed_s:.2f}",
                   by or "-", f"{row.mfu:.1%}",
                   f"{x.exact:.3f}" if x.exact is not None else "> 1",
                   f"{row.memory_gb_per_gpu:.0f}",
                   "yes" if row.fits else f"no (+{row.short_gb:.0f})",
                   f"{r.strategy}{'' if r.overlap else ' no-overlap'}"
                   f"{' sp' if r.sequence_parallel else ''}; {r.how}"])
    parts.notes.append("memory-bound: the share of the compute in memory-bound kernels "
                       "(elementwise, norms, softmax, cross entropy, optimizer) at the GPU's "
                       "HBM bandwidth; it falls as the hidden size grows, which is what a "
                       "single matmul efficiency per GPU type could not absorb. exact at: the "
                       "matmul efficiency at which that run alone would be predicted exactly "
                       "('> 1': not even at peak). mem/fits: plan's memory model (no "
                       "workspace, fragmentation or logits counted)")
    return [main, parts]


def json_rows(results: list[Result], efficiencies: dict[str, float], fitted: dict[str, bool],
              fit_all: bool = False) -> dict:
    return {
        "goal": GOAL,
        "efficiency": efficiencies,
        "efficiency_fitted": fitted,
        "topology": TOPOLOGY,
        "sources": SOURCES,
        "judged": sum(_judged(x, fit_all) for x in results),
        "within_goal": sum(_judged(x, fit_all) and abs(x.error) <= GOAL for x in results),
        "summary": summary(results, efficiencies, fitted, fit_all),
        "runs": [{
            "run": x.run.name, "source": x.run.cite(), "gpu": x.run.gpu, "gpus": x.run.gpus,
            "tp": x.run.tp, "pp": x.run.pp, "cp": x.run.cp, "dp": x.run.dp,
            "interleave": x.run.interleave, "micro_batch": x.run.micro_batch,
            "global_batch": x.run.global_batch, "seq_len": x.run.seq_len,
            "recompute": x.run.recompute, "sequence_parallel": x.run.sequence_parallel,
            "strategy": x.run.strategy, "overlap": x.run.overlap, "how": x.run.how,
            "metric": x.run.metric, "published": x.run.published, "predicted": x.predicted,
            "error": x.error, "judged": _judged(x, fit_all),
            "excluded": x.run.excluded or None,
            "within_goal": abs(x.error) <= GOAL,
            "published_step_s": x.published_step_s, "predicted_step_s": x.row.step_time_s,
            "compute_s": x.row.compute_s, "bubble_s": x.row.bubble_s,
            "comm_exposed_s": x.row.comm_exposed_s, "exposed_by": x.row.exposed_by,
            "compute_memory_s": x.row.compute_memory_s, "overlaps": x.row.overlaps,
            "flash_attention": x.run.flash_attention,
            "dims_model_s": {d: v["model_s"] for d, v in x.row.dims.items()},
            "bottleneck": x.row.bottleneck, "mfu": x.row.mfu, "exact_efficiency": x.exact,
            "memory_gb_per_gpu": x.row.memory_gb_per_gpu, "fits": x.row.fits,
        } for x in results],
    }


def _efficiency_args(items: list[str]) -> dict[str, float]:
    out = {}
    for item in items:
        gpu, _, value = item.partition("=")
        try:
            eff = float(value)
        except ValueError:
            eff = 0.0
        if not 0 < eff <= 1:
            raise SystemExit(f"--efficiency: {item!r} is not GPU=VALUE with VALUE in (0, 1]")
        out[gpu_presets.get(gpu.strip()).name] = eff
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--json", metavar="FILE", help="write the results as JSON ('-': stdout)")
    ap.add_argument("--efficiency", action="append", default=[], metavar="GPU=VALUE",
                    help="use this matmul efficiency for a GPU type instead of fitting it")
    ap.add_argument("--fit-all", action="store_true",
                    help="fit and judge the runs whose layout is incomplete too")
    args = ap.parse_args(argv)
    try:
        given = _efficiency_args(args.efficiency)
    except CommsimError as exc:
        raise SystemExit(f"--efficiency: {exc}") from None
    t0 = time.perf_counter()
    efficiencies: dict[str, float] = {}
    fitted: dict[str, bool] = {}
    for gpu in dict.fromkeys(r.gpu for r in RUNS):
        mine = [r for r in RUNS if r.gpu == gpu and (args.fit_all or not r.excluded)]
        fitted[gpu] = gpu not in given
        efficiencies[gpu] = given[gpu] if gpu in given else fit(mine)
    results = [predict(r, efficiencies[r.gpu]) for r in RUNS]
    for x in results:
        x.exact = exact(x.run)
    out = tables(results, efficiencies, fitted, args.fit_all)
    out[-1].notes.append(f"{len(RUNS)} runs, fit and plan in {time.perf_counter() - t0:.1f} s")
    if args.json != "-":
        show(out)
    if args.json:
        text = json.dumps(json_rows(results, efficiencies, fitted, args.fit_all), indent=1)
        if args.json == "-":
            print(text)
        else:
            with open(args.json, "w") as fh:
                fh.write(text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
