"""The harness's view of a backend: set-up, barriers, gathering, timing, and the ops.

:class:`TorchComm` drives torch.distributed (gloo on CPU tensors, NCCL on CUDA
tensors, one GPU per local rank); :class:`MpiComm` drives mpi4py on numpy arrays. Both
build :class:`Op` objects, one measured operation on this rank: a commsim schedule
through :mod:`commsim.backends.torch_dist` / :mod:`commsim.backends.mpi`, or the
backend's native collective through :mod:`commsim.backends.native`, out of place or in
place (nccl-tests' two buffer layouts, docs/bench.md).
"""

from __future__ import annotations

import inspect
import os
import platform
import time
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata

import numpy as np

from commsim.backends import native
from commsim.backends.plan import PLACES, segment_range
from commsim.bench.config import check_dtype, resolve_dtype
from commsim.bench.data import typed
from commsim.bench.env import RankInfo, cpu_caches, usable_cpus
from commsim.errors import CommsimError

OUT_OF_PLACE, IN_PLACE = PLACES
# outputs are filled with it before a check, so an op that writes nothing fails (all bits
# set in unsigned types: 255 in uint8)
SENTINEL = -1


@dataclass
class Op:
    """One operation on this rank: ``call()`` runs it, ``reset()`` puts the input back (and
    fills outputs with :data:`SENTINEL`), ``result()`` is the rank's result (flat)."""

    call: Callable[[], object]
    reset: Callable[[], object]
    result: Callable[[], object]


def _version(dist_name: str) -> str | None:
    try:
        return metadata.version(dist_name)
    except metadata.PackageNotFoundError:
        return None


class CpuClock:
    """Wall-clock marks (``time.perf_counter``); ops on CPU return when they are done."""

    def __init__(self) -> None:
        self.marks: list[float] = []

    def mark(self) -> None:
        self.marks.append(time.perf_counter())

    def seconds(self) -> np.ndarray:
        """Each mark in seconds after the first."""
        return np.asarray(self.marks) - self.marks[0]


class CudaClock:
    """CUDA events on the current stream: device time, no host synchronization per mark."""

    def __init__(self, torch) -> None:
        self.torch = torch
        self.events: list = []

    def mark(self) -> None:
        event = self.torch.cuda.Event(enable_timing=True)
        event.record()
        self.events.append(event)

    def seconds(self) -> np.ndarray:
        self.events[-1].synchronize()
        first = self.events[0]
        return np.array([first.elapsed_time(e) / 1e3 for e in self.events])


class TorchComm:
    """torch.distributed, initialized from the launcher's environment. ``timeout``
    (seconds, the verbs' ``--timeout``): the process group's own timeout, never below
    :data:`commsim.bench.watchdog.BACKEND_TIMEOUT_FLOOR` (joining waits for every rank to
    start); the watchdog enforces ``timeout`` itself."""

    def __init__(self, backend: str, info: RankInfo, timeout: float | None = None) -> None:
        import torch
        import torch.distributed as dist

        self.torch, self.dist, self.backend, self.info = torch, dist, backend, info
        if backend == "nccl":
            check_backend(backend, info.local_world_size)
            self.device = torch.device("cuda", info.local_rank % torch.cuda.device_count())
            torch.cuda.set_device(self.device)
        else:
            self.device = torch.device("cpu")
        if not dist.is_initialized():
            # torchrun sets these; mpirun or srun launches need a rendezvous too
            os.environ.setdefault("MASTER_ADDR", "127.0.0.1")
            os.environ.setdefault("MASTER_PORT", "29500")
            kwargs = {}
            if backend == "nccl" and "device_id" in inspect.signature(
                    dist.init_process_group).parameters:
                kwargs["device_id"] = self.device  # eager NCCL init, bound to our GPU
            if timeout is not None:
                from commsim.bench.watchdog import backend_timeout

                kwargs["timeout"] = backend_timeout(timeout)
            dist.init_process_group(backend, rank=info.rank, world_size=info.world_size,
                                    **kwargs)
        self.rank, self.size = dist.get_rank(), dist.get_world_size()

    # --- description ----------------------------------------------------------------
    def versions(self) -> dict:
        out = {"torch": self.torch.__version__, "backend": self.backend}
        if self.backend == "nccl":
            v = self.torch.cuda.nccl.version()
            out["nccl"] = ".".join(map(str, v)) if isinstance(v, tuple) else str(v)
            out["cuda"] = self.torch.version.cuda
        else:
            out["gloo"] = f"bundled with torch {self.torch.__version__}"
        return out

    def device_name(self) -> str:
        if self.device.type == "cuda":
            return f"{self.device} ({self.torch.cuda.get_device_name(self.device)})"
        return f"cpu ({platform.processor() or platform.machine()})"

    def caches(self) -> dict[str, int]:
        """The cache this rank's data passes through, ``{name: bytes}``: its GPU's L2
        (its own), else the last-level caches of the cores it may run on
        (:func:`commsim.bench.env.cpu_caches`)."""
        if self.device.type == "cuda":
            props = self.torch.cuda.get_device_properties(self.device)
            size = int(getattr(props, "L2_cache_size", 0) or 0)
            return {f"{self.device}": size} if size else {}
        return cpu_caches(usable_cpus())

    # --- collectives the harness itself needs -----------------------------------------
    def barrier(self) -> None:
        if self.device.type == "cuda":
            self.dist.barrier(device_ids=[self.device.index])
        else:
            self.dist.barrier()

    def synchronize(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize(self.device)

    def allgather_floats(self, values) -> np.ndarray:
        """Every rank's ``values`` (equal lengths) as a ``(nranks, len)`` float64 array."""
        t = self.torch.as_tensor(np.asarray(values, dtype=np.float64), device=self.device)
        parts = [self.torch.empty_like(t) for _ in range(self.size)]
        self.dist.all_gather(parts, t)
        return self.torch.stack(parts).cpu().numpy()

    def allgather_objects(self, obj) -> list:
        out = [None] * self.size
        self.dist.all_gather_object(out, obj)
        return out

    def clock(self):
        return CudaClock(self.torch) if self.device.type == "cuda" else CpuClock()

    # --- buffers and ops --------------------------------------------------------------
    def _dtype(self, name: str):
        return getattr(self.torch, name)

    def array(self, base: np.ndarray, length: int, dtype: str):
        """``base`` tiled to ``length`` elements, as a tensor of ``dtype`` on the device."""
        t = self.convert(base, dtype)
        reps = -(-length // max(1, len(base)))
        return (t.repeat(reps)[:length] if reps > 1 else t[:length]).contiguous()

    def convert(self, base: np.ndarray, dtype: str):
        """Whole numbers ``base`` (float64) as a tensor of ``dtype``; integer types wrap
        modulo 2^bits (:func:`commsim.bench.data.typed`)."""
        values = typed(base, resolve_dtype(dtype))
        return self.torch.from_numpy(values).to(device=self.device, dtype=self._dtype(dtype))

    def empty(self, length: int, dtype: str):
        return self.torch.empty(length, dtype=self._dtype(dtype), device=self.device)

    def add(self, into, other) -> None:
        """``into += other`` in place, as the executor reduces (float8 through float32)."""
        from commsim.backends.torch_dist import add_into

        add_into(into, other)

    def add_apart(self, out, a, b) -> None:
        """``out = a + b`` into a buffer apart from both operands, as the executor's first
        reduction into a range out of place (:func:`commsim.backends.torch_dist.summer`)."""
        from commsim.backends.torch_dist import summer

        summer(out.dtype)(out, a, b)

    def exchange(self, sends, recvs) -> None:
        """Post every ``(tensor, peer)`` send and receive at once; return when all are done."""
        dist = self.dist
        ops = [dist.P2POp(dist.isend, t, peer) for t, peer in sends]
        ops += [dist.P2POp(dist.irecv, t, peer) for t, peer in recvs]
        for work in dist.batch_isend_irecv(ops) if ops else ():
            work.wait()

    def make_op(self, collective: str, schedule, local, count: int, root: int,
                mode: str, place: str = IN_PLACE) -> Op:
        """An op over ``local`` (this rank's input, as :mod:`commsim.bench.data` makes it),
        ``out-of-place`` or ``in-place`` (nccl-tests' layouts, :mod:`commsim.backends.native`);
        a schedule runs in execution ``mode``. Raises :class:`~commsim.backends.native.
        Unsupported` for a form the backend (or commsim) lacks."""
        from commsim.backends import torch_dist

        rank = self.rank
        if schedule is not None:
            if place == OUT_OF_PLACE:  # the input is only read; nothing to put back
                out = torch_dist.new_output(schedule, local, rank)
                return Op(lambda: torch_dist.run(schedule, local, mode=mode, out=out),
                          lambda: out.fill_(SENTINEL), lambda: out)
            check_schedule_in_place(collective)
            buf = torch_dist.logical_buffer(schedule, local, rank)
            # alltoall's result is gathered from the buffer, after the run
            return Op(lambda: torch_dist.run(schedule, buf, mode=mode),
                      _refill(buf, local, collective, self.size, rank, torch_copy, torch_fill),
                      lambda: torch_dist.result_view(schedule, buf, rank))
        run = native.torch_native
        if place == IN_PLACE:
            if collective == "alltoall":
                raise native.Unsupported(native.NO_IN_PLACE_ALLTOALL)
            if collective == "reduce_scatter":  # receives into its slot of the send buffer
                whole = local.clone()
                lo, hi = segment_range(self.size, whole.numel(), rank)
                mine = whole[lo:hi]
                return Op(lambda: run(collective, whole, mine, root),
                          lambda: whole.copy_(local), lambda: mine)
            if collective == "allgather":  # sends from its slot of the receive buffer
                recv = self.empty(count * self.size, _name(local))
                lo, hi = segment_range(self.size, recv.numel(), rank)
                mine = recv[lo:hi]
                return Op(lambda: run(collective, mine, recv, root),
                          _refill(recv, local, collective, self.size, rank, torch_copy,
                                  torch_fill), lambda: recv)
            recv = local.clone()
            return Op(lambda: run(collective, recv, recv, root),
                      lambda: recv.copy_(local), lambda: recv)
        if collective in native.IN_PLACE_ONLY:
            raise native.Unsupported(native.torch_in_place_only(collective))
        recv = self.empty(native.recv_length(collective, count, self.size, rank), _name(local))
        return Op(lambda: run(collective, local, recv, root),
                  lambda: recv.fill_(SENTINEL), lambda: recv)

    def close(self) -> None:
        if self.dist.is_initialized():
            self.dist.destroy_process_group()


class MpiComm:
    """mpi4py's COMM_WORLD on numpy buffers."""

    def __init__(self, info: RankInfo) -> None:
        from commsim.backends.mpi import mpi_module

        self.MPI = mpi_module()
        self.comm = self.MPI.COMM_WORLD
        self.rank, self.size = self.comm.rank, self.comm.size
        self.backend, self.info = "mpi", info
        if info.world_size not in (1, self.size):
            raise CommsimError(f"the launcher says {info.world_size} ranks but MPI has "
                               f"{self.size}; launch --backend mpi with mpirun")

    def versions(self) -> dict:
        lib = self.MPI.Get_library_version().strip().splitlines()[0]
        return {"mpi": lib.split(",")[0], "mpi_standard": "{}.{}".format(*self.MPI.Get_version()),
                "mpi4py": _version("mpi4py"), "torch": _version("torch"), "backend": "mpi"}

    def device_name(self) -> str:
        return f"cpu ({platform.processor() or platform.machine()})"

    def caches(self) -> dict[str, int]:
        """The last-level caches of the cores this rank may run on
        (:func:`commsim.bench.env.cpu_caches`)."""
        return cpu_caches(usable_cpus())

    def barrier(self) -> None:
        self.comm.Barrier()

    def synchronize(self) -> None:
        pass

    def allgather_floats(self, values) -> np.ndarray:
        mine = np.ascontiguousarray(values, dtype=np.float64)
        out = np.empty((self.size, mine.size), dtype=np.float64)
        self.comm.Allgather(mine, out)
        return out

    def allgather_objects(self, obj) -> list:
        return self.comm.allgather(obj)

    def clock(self):
        return CpuClock()

    def _dtype(self, name: str) -> np.dtype:
        return np.dtype(check_dtype(name, "mpi").name)

    def array(self, base: np.ndarray, length: int, dtype: str) -> np.ndarray:
        """``base`` tiled to ``length`` elements (np.tile: np.resize concatenates a tuple of
        one copy a period, seconds for a one-element base and a 16 MiB buffer)."""
        values = self.convert(base, dtype)
        if not values.size:
            return np.resize(values, length)
        return np.tile(values, -(-length // values.size))[:length].copy()

    def convert(self, base: np.ndarray, dtype: str) -> np.ndarray:
        """Whole numbers ``base`` (float64) as ``dtype``; integer types wrap modulo 2^bits
        (:func:`commsim.bench.data.typed`)."""
        return typed(base, resolve_dtype(dtype)).astype(self._dtype(dtype))

    def add(self, into: np.ndarray, other: np.ndarray) -> None:
        """``into += other`` in place, as the executor reduces."""
        np.add(into, other, out=into)

    def add_apart(self, out: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
        """``out = a + b`` into a buffer apart from both operands, as the executor's first
        reduction into a range out of place."""
        np.add(a, b, out=out)

    def exchange(self, sends, recvs) -> None:
        """Post every ``(array, peer)`` send and receive at once; return when all are done."""
        reqs = [self.comm.Irecv(a, source=peer, tag=7118) for a, peer in recvs]
        reqs += [self.comm.Isend(a, dest=peer, tag=7118) for a, peer in sends]
        self.MPI.Request.Waitall(reqs)

    def make_op(self, collective: str, schedule, local: np.ndarray, count: int,
                root: int, mode: str, place: str = IN_PLACE) -> Op:
        """As :meth:`TorchComm.make_op`, on numpy arrays; native in place is ``MPI_IN_PLACE``
        (a reduce_scatter's result at the start of the buffer, MPI's convention)."""
        from commsim.backends import mpi

        comm, rank = self.comm, self.rank
        if schedule is not None:
            if place == OUT_OF_PLACE:  # the input is only read; nothing to put back
                out = mpi.new_output(schedule, local, rank)
                return Op(lambda: mpi.run(schedule, local, comm, mode=mode, out=out),
                          lambda: out.fill(_sentinel(out)), lambda: out)
            check_schedule_in_place(collective)
            buf = mpi.logical_buffer(schedule, local, rank)
            # alltoall's result is gathered from the buffer, after the run
            return Op(lambda: mpi.run(schedule, buf, comm, mode=mode),
                      _refill(buf, local, collective, self.size, rank, np.copyto, _np_fill),
                      lambda: mpi.result_view(schedule, buf, rank))
        run = native.mpi_native
        if place == IN_PLACE:
            if collective == "reduce_scatter":  # MPI_IN_PLACE: the result at the start
                whole = local.copy()
                return Op(lambda: run(collective, None, whole, comm, root),
                          lambda: np.copyto(whole, local), lambda: whole[:count])
            if collective == "allgather":
                recv = np.empty(count * self.size, dtype=local.dtype)
                return Op(lambda: run(collective, None, recv, comm, root),
                          _refill(recv, local, collective, self.size, rank, np.copyto,
                                  _np_fill), lambda: recv)
            recv = local.copy()
            return Op(lambda: run(collective, None, recv, comm, root),
                      lambda: np.copyto(recv, local), lambda: recv)
        if collective == "broadcast":
            raise native.Unsupported(native.MPI_BCAST_IN_PLACE_ONLY)
        recv = np.empty(native.recv_length(collective, count, self.size, rank)
                        if collective not in native.IN_PLACE else count, dtype=local.dtype)
        return Op(lambda: run(collective, local, recv, comm, root),
                  lambda: recv.fill(_sentinel(recv)), lambda: recv)

    def close(self) -> None:
        pass


def check_schedule_in_place(collective: str) -> None:
    """commsim's schedules run every collective in place except alltoall: its schedules
    move blocks within a ``p``-times buffer (the input in one segment, the result spread
    over all), and a true in-place alltoall (``send is recv``) would need staging that
    no schedule has. NCCL has none either, and nccl-tests does not check one."""
    if collective == "alltoall":
        raise native.Unsupported("commsim's alltoall schedules have no in-place form (send "
                                 "is recv; NCCL has none either): N/A")


def _name(tensor) -> str:
    return str(tensor.dtype).replace("torch.", "")


def torch_copy(into, data) -> None:
    into.copy_(data)


def torch_fill(into) -> None:
    into.fill_(SENTINEL)


def _sentinel(array: np.ndarray):
    return np.array(SENTINEL).astype(array.dtype)


def _np_fill(array: np.ndarray) -> None:
    array.fill(_sentinel(array))


def _refill(buf, local, collective: str, p: int, rank: int, copy, fill) -> Callable[[], None]:
    """Put an in-place buffer back: ``local`` in it, or for allgather in the rank's slot,
    the other slots (outputs) filled with :data:`SENTINEL` so that a slot never written
    shows."""
    if collective != "allgather":
        return lambda: copy(buf, local)
    lo, hi = segment_range(p, buf.shape[0], rank)

    def reset() -> None:
        fill(buf)
        copy(buf[lo:hi], local)
    return reset


def check_backend(backend: str, local_ranks: int) -> None:
    """Can ``backend`` start with ``local_ranks`` ranks on this host? A one-line
    CommsimError before any process group exists, instead of the backend's traceback."""
    if backend == "mpi":
        from commsim.backends.mpi import mpi_module

        mpi_module()
        return
    if backend != "nccl":  # gloo: torch must be there (finding it is enough: no import)
        from importlib.util import find_spec

        if find_spec("torch") is None:
            raise CommsimError(f"--backend {backend} needs torch: pip install "
                               "'commsim[torch]'; or use --backend mpi")
        return
    try:
        import torch
    except ImportError:
        raise CommsimError(f"--backend {backend} needs torch: pip install 'commsim[torch]'; "
                           "or use --backend mpi") from None
    if not torch.cuda.is_available():
        raise CommsimError("--backend nccl needs CUDA GPUs; use --backend gloo on CPUs")
    gpus = torch.cuda.device_count()
    if local_ranks > gpus:
        raise CommsimError(f"--backend nccl: {local_ranks} ranks on this host but {gpus} "
                           f"GPU{'s' if gpus > 1 else ''}; NCCL needs one GPU a rank (it "
                           f"refuses two on one GPU): launch at most {gpus} ranks a host, "
                           "or use --backend gloo")


def connect(backend: str, info: RankInfo, timeout: float | None = None):
    """The harness's comm for ``backend`` (``gloo``, ``nccl`` or ``mpi``); ``timeout``: see
    :class:`TorchComm` (MPI has none: the watchdog, :mod:`commsim.bench.watchdog`, is it)."""
    if backend == "mpi":
        return MpiComm(info)
    check_backend(backend, info.local_world_size)
    return TorchComm(backend, info, timeout)
