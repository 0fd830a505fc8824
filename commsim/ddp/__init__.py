"""``commsim ddp``: train a sample model under DistributedDataParallel and put each
gradient bucket's measured communication beside the model's and the simulator's.

Launched on every rank (``torchrun --nproc-per-node N -m commsim ddp ...`` or
``./launch.sh ddp ...``); see docs/ddp.md. :func:`run` takes a :class:`DdpConfig` and
returns the exit code. Modules: :mod:`~commsim.ddp.config` (flags, presets; no torch),
:mod:`~commsim.ddp.models` and :mod:`~commsim.ddp.data` (torch.nn models, synthetic
data), :mod:`~commsim.ddp.hooks` (timing comm hooks), :mod:`~commsim.ddp.train` (the
loop), :mod:`~commsim.ddp.metrics` (marks to metrics; numpy), :mod:`~commsim.ddp.predict`
(predictions), :mod:`~commsim.ddp.output` (tables, JSON, plot, report),
:mod:`~commsim.ddp.scaling` (several world sizes). torch is imported only when a run
starts.
"""

from commsim.ddp.config import MODELS, DdpConfig


def run(cfg: DdpConfig) -> int:
    """Run ``cfg`` on this rank (or, with ``cfg.scaling``, launch one run per world size)."""
    cfg.validate()
    if cfg.scaling:
        from commsim.ddp.scaling import run as run_scaling

        return run_scaling(cfg)
    from commsim.ddp.harness import run as run_rank

    return run_rank(cfg)


__all__ = ["MODELS", "DdpConfig", "run"]
