"""The training loop: a sample model under DDP with AdamW, every step timed.

:func:`train` runs on every rank: ``cfg.steps`` training steps with the timing hook of
``--comm`` (:mod:`commsim.ddp.hooks`), then ``cfg.baseline_steps`` **baseline** steps on
a copy of the initial model under a second DDP with the no-op hook: the same batches and
compute, no communication. Baseline steps update their own copy only (their gradients
are not averaged) and are not in the loss curve.

A step's marks: its start, the end of the forward pass (model and loss), the end of
``loss.backward()`` (DDP returns from it once every bucket's averaged gradient is
written back) and the end of ``optimizer.step()`` and ``zero_grad``. Making the batch
and moving it to the device happen before the start, untimed. On CUDA the marks are
events and every step ends with a synchronization. The result is in seconds
(:mod:`commsim.ddp.metrics` describes a step's dict).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch.nn.parallel import DistributedDataParallel

from commsim.bench import watchdog
from commsim.ddp import data, hooks, models


@dataclass
class Trained:
    """One rank's run: its ``steps`` and ``baseline`` steps (dicts of seconds), the loss
    of each training step on its shard, the model's size."""

    steps: list[dict]
    baseline: list[dict]
    losses: list[float]
    params: int
    grad_bytes: int


def _ddp(model, device, cap_mb: float, state, hook):
    ids = [device.index] if device.type == "cuda" else None
    ddp = DistributedDataParallel(model, device_ids=ids, bucket_cap_mb=cap_mb)
    ddp.register_comm_hook(state, hook)
    return ddp


def _step(ddp, opt, task, index: int, rank: int, batch: int, device, recorder) -> tuple:
    x, y = task.batch(index, rank, batch)
    x, y = x.to(device, non_blocking=True), y.to(device, non_blocking=True)
    clock = recorder.clock
    t0 = clock.now()
    loss = data.loss(ddp(x), y)
    t1 = clock.now()
    loss.backward()
    t2 = clock.now()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t3 = clock.now()
    clock.sync()
    sec = clock.seconds
    step = {"step": index, "forward": sec(t1, t0), "backward": sec(t2, t1),
            "optimizer": sec(t3, t2), "total": sec(t3, t0),
            "buckets": [[r.index, r.nbytes, sec(r.launch, t0), sec(r.returned, t0),
                         sec(r.done, t0)] for r in recorder.take()]}
    return step, loss.detach()


def train(cfg, comm, schedule, mode: str) -> Trained:
    """Train on this rank (every rank calls it). ``schedule``: the commsim allreduce the
    hook runs (None for ``--comm native``); ``mode``: the executor's mode."""
    spec = cfg.spec()
    device = comm.device
    model = models.build(spec, cfg.seed).to(device)
    twin = copy.deepcopy(model)  # the baseline's, from the same initial weights
    task = data.make(spec, cfg.seed)
    clock = hooks.CudaClock(device) if device.type == "cuda" else hooks.HostClock()
    recorder = hooks.Recorder(clock)
    hook, _ = hooks.hook_for(cfg.comm)
    state = hooks.HookState(recorder, comm.size, schedule=schedule, mode=mode)
    with watchdog.operation("DDP's set-up (parameter broadcast)", row=False):
        ddp = _ddp(model, device, cfg.bucket_cap_mb, state, hook)
    opt = torch.optim.AdamW(ddp.parameters(), lr=spec.lr)
    steps, losses = [], []
    for i in range(cfg.steps):
        # each step is an operation of the watchdog: its buckets' allreduces
        with watchdog.operation(f"training step {i} (gradient allreduce, --comm "
                                f"{cfg.comm})"):
            step, loss = _step(ddp, opt, task, i, comm.rank, spec.batch, device, recorder)
        steps.append(step)
        losses.append(loss)
    with watchdog.operation("the baseline's DDP set-up (parameter broadcast)", row=False):
        base = _ddp(twin, device, cfg.bucket_cap_mb, hooks.HookState(recorder, comm.size),
                    hooks.noop_hook)
    base_opt = torch.optim.AdamW(base.parameters(), lr=spec.lr)
    baseline = []
    for i in range(cfg.baseline_steps):
        with watchdog.operation(f"baseline step {i}", row=False):
            baseline.append(_step(base, base_opt, task, i, comm.rank, spec.batch, device,
                                  recorder)[0])
    return Trained(steps, baseline, torch.stack(losses).float().cpu().tolist(),
                   models.parameter_count(model), models.gradient_bytes(model))
