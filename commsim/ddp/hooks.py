"""DDP communication hooks that time every bucket, modelled on torch's ``ddp_comm_hooks``.

The contract is torch's: ``hook(state, bucket) -> Future[Tensor]``, registered with
``ddp.register_comm_hook(state, hook)``; ``bucket.buffer()`` is the bucket's flat
gradient, and the future's value is what DDP writes back into the gradients. Every hook
here returns the **average** over the ranks, as DDP's default does (all-reduce the sum,
divide by the world size), so training is unchanged; it also appends a
:class:`BucketRecord` to ``state.recorder`` (bytes, launch and completion marks).

- :func:`native_hook`: the backend's own asynchronous ``all_reduce``; the completion
  mark is taken in the future's callback (CPU: when gloo's worker thread finishes;
  CUDA: an event recorded on the stream that waits for NCCL's work).
- :func:`commsim_hook`: runs ``state.schedule`` (a commsim allreduce) with
  :func:`commsim.backends.torch_dist.run` **synchronously** inside the hook and returns a
  completed future. The autograd thread waits meanwhile (on CUDA the compute stream
  waits for the transfers), so this communication never overlaps the backward pass:
  its overlap is 0 by construction (docs/ddp.md).
- :func:`noop_hook`: no communication, the local gradient as is (torch's ``noop_hook``):
  the compute-only baseline. It still records when each bucket became ready.

Marks come from a clock: :class:`HostClock` (``time.perf_counter``, seconds) or
:class:`CudaClock` (CUDA events, read after a synchronization).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import torch
import torch.distributed as dist


class HostClock:
    """Wall-clock marks in seconds; a mark is a float."""

    def now(self) -> float:
        return time.perf_counter()

    def seconds(self, mark, origin) -> float:
        return mark - origin

    def sync(self) -> None:
        pass


class CudaClock:
    """CUDA events recorded on the current stream; read them after :meth:`sync`."""

    def __init__(self, device) -> None:
        self.device = device

    def now(self):
        event = torch.cuda.Event(enable_timing=True)
        event.record()
        return event

    def seconds(self, mark, origin) -> float:
        return origin.elapsed_time(mark) / 1e3

    def sync(self) -> None:
        torch.cuda.synchronize(self.device)


@dataclass
class BucketRecord:
    """One bucket of one step: ``index`` (DDP's), ``nbytes``, and clock marks: ``launch``
    (the hook was called: the bucket's gradients are ready), ``returned`` (the hook
    returned) and ``done`` (the averaged gradient is complete)."""

    index: int
    nbytes: int
    launch: object
    returned: object = None
    done: object = None


class Recorder:
    """Collects the records of one step; :meth:`take` hands them over and starts anew."""

    def __init__(self, clock) -> None:
        self.clock = clock
        self.records: list[BucketRecord] = []

    def launch(self, bucket) -> BucketRecord:
        buf = bucket.buffer()
        rec = BucketRecord(bucket.index(), buf.numel() * buf.element_size(), self.clock.now())
        self.records.append(rec)
        return rec

    def take(self) -> list[BucketRecord]:
        out, self.records = self.records, []
        return out


@dataclass
class HookState:
    """What the hooks need: the ``recorder``, the process ``group`` (None: the world) and
    its ``world_size``; for :func:`commsim_hook` the ``schedule`` and executor ``mode``."""

    recorder: Recorder
    world_size: int
    group: object = None
    schedule: object = None
    mode: str = "dataflow"


def _completed(tensor):
    fut = torch.futures.Future(devices=[tensor.device] if tensor.is_cuda else None)
    fut.set_result(tensor)
    return fut


def native_hook(state: HookState, bucket):
    """The backend's ``all_reduce`` (sum), then divide by the world size."""
    rec = state.recorder.launch(bucket)
    work = dist.all_reduce(bucket.buffer(), group=state.group, async_op=True)
    rec.returned = state.recorder.clock.now()

    def finish(fut):
        rec.done = state.recorder.clock.now()
        return fut.value()[0].div_(state.world_size)

    return work.get_future().then(finish)


def commsim_hook(state: HookState, bucket):
    """commsim's schedule through the torch executor, synchronously, then divide."""
    from commsim.backends import torch_dist

    rec = state.recorder.launch(bucket)
    buf = bucket.buffer()
    torch_dist.run(state.schedule, buf, state.group, mode=state.mode)
    rec.done = rec.returned = state.recorder.clock.now()
    return _completed(buf.div_(state.world_size))


def noop_hook(state: HookState, bucket):
    """No communication: the compute-only baseline (the ranks' gradients stay local)."""
    rec = state.recorder.launch(bucket)
    rec.done = rec.returned = rec.launch
    return _completed(bucket.buffer())


def hook_for(comm: str):
    """``(hook, synchronous)`` for ``--comm``: native's is asynchronous, commsim's not."""
    return (native_hook, False) if comm == "native" else (commsim_hook, True)
