"""All ranks of a dataflow plan in one process: a thread per rank over an adversarial transport.

Each rank runs :func:`commsim.backends.dataflow.execute` in its own thread on numpy
buffers. Messages are delivered by the test's driver, one at a time and only when every
rank is blocked: it picks a random deliverable message (a posted send whose receiver has
posted the matching receive; a pair's messages match in order) and copies the sender's
slice **at delivery time**, so a rank that writes a range it is still sending, or reads
a range before its receive landed, produces a wrong result. When every rank is blocked
and nothing is deliverable, the plan deadlocked.
"""

from __future__ import annotations

import random
import threading
from collections import deque

import numpy as np

from commsim.backends import dataflow
from commsim.backends.mpi import move_numpy
from commsim.backends.plan import logical_length


class Deadlock(AssertionError):
    pass


class _Handle:
    __slots__ = ("done", "view")

    def __init__(self, view):
        self.view = view
        self.done = False


class Transport:
    def __init__(self, nranks: int, seed: int) -> None:
        self.cond = threading.Condition()
        self.rng = random.Random(seed)
        self.sends = {}   # (src, dst) -> deque of handles
        self.recvs = {}   # (src, dst) -> deque of handles
        self.waiting: dict[int, _Handle] = {}  # rank -> the handle it is blocked on
        self.running = nranks
        self.error: BaseException | None = None

    def post(self, table, key, view) -> _Handle:
        h = _Handle(view)
        with self.cond:
            table.setdefault(key, deque()).append(h)
        return h

    def wait(self, rank: int, h: _Handle) -> None:
        with self.cond:
            self.waiting[rank] = h
            self.cond.notify_all()
            while not h.done and self.error is None:
                self.cond.wait()
            del self.waiting[rank]
            if self.error is not None:
                raise self.error

    def _all_blocked(self) -> bool:
        stuck = sum(1 for h in self.waiting.values() if not h.done)
        return stuck == self.running or self.error is not None

    def finish(self) -> None:
        with self.cond:
            self.running -= 1
            self.cond.notify_all()

    def drive(self, timeout: float = 30.0) -> int:
        """Deliver messages until every rank finished; returns the messages delivered."""
        delivered = 0
        with self.cond:
            while True:
                ok = self.cond.wait_for(self._all_blocked, timeout)
                if self.error is not None:
                    return delivered
                if not ok:
                    self.error = Deadlock("a rank neither blocked nor finished (timeout)")
                    self.cond.notify_all()
                    return delivered
                if self.running == 0:
                    return delivered
                ready = [k for k, q in self.sends.items() if q and self.recvs.get(k)]
                if not ready:
                    self.error = Deadlock("every rank waits and no message can move")
                    self.cond.notify_all()
                    return delivered
                key = self.rng.choice(ready)
                s, r = self.sends[key].popleft(), self.recvs[key].popleft()
                if s.view.shape != r.view.shape:
                    self.error = AssertionError(f"message {key}: sizes {s.view.shape} and "
                                                f"{r.view.shape} do not match")
                    self.cond.notify_all()
                    return delivered
                r.view[...] = s.view
                s.done = r.done = True
                delivered += 1
                self.cond.notify_all()


def run(schedule, bufs: list[np.ndarray], seed: int = 0, pollable: bool = True,
        outs: list[np.ndarray] | None = None) -> int:
    """Run ``schedule`` in dataflow mode on every rank; returns the number of messages
    delivered. In place on each rank's logical buffer ``bufs[r]``, or, with ``outs``, out
    of place: ``bufs[r]`` is rank ``r``'s input, made read-only (a write to it raises),
    and ``outs[r]`` its receive buffer. Raises :class:`Deadlock` or the first rank's
    error."""
    p = schedule.nranks
    transport = Transport(p, seed)

    def rank_main(rank: int) -> None:
        inp = bufs[rank]
        if outs is None:
            out, n = inp, inp.size
        else:
            out, n = outs[rank], logical_length(schedule, inp.size)
            inp.flags.writeable = False
        plan = dataflow.flow_plan(schedule, rank, n, pollable, outplace=outs is not None)
        junk = np.nan if inp.dtype.kind == "f" else -99
        arrays = (inp, out, np.full(plan.work, junk, dtype=inp.dtype),
                  np.full(plan.scratch, junk, dtype=inp.dtype))

        def isend(i):
            peer, b, lo, hi = plan.sends[i]
            return transport.post(transport.sends, (rank, peer), arrays[b][lo:hi])

        def irecv(j):
            peer, b, lo, hi = plan.recvs[j]
            return transport.post(transport.recvs, (peer, rank), arrays[b][lo:hi])

        try:
            dataflow.execute(plan, isend, irecv, lambda h: transport.wait(rank, h),
                             lambda h: h.done, lambda moves: move_numpy(arrays, moves))
        except BaseException as exc:  # noqa: BLE001 - handed to the driver
            with transport.cond:
                if transport.error is None:
                    transport.error = exc
                transport.cond.notify_all()
        finally:
            transport.finish()

    threads = [threading.Thread(target=rank_main, args=(r,), daemon=True) for r in range(p)]
    for t in threads:
        t.start()
    delivered = transport.drive()
    for t in threads:
        t.join(5)
    if transport.error is not None:
        raise transport.error
    return delivered
