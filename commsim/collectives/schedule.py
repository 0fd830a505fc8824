"""The schedule IR: a collective algorithm as the complete list of its transfers.

A :class:`Schedule` for ``nranks`` ranks partitions the collective's logical buffer
into ``nchunks`` element ranges and lists every point-to-point :class:`Transfer`::

    Transfer(step, src, dst, chunk, reduce)   # dst.buf[chunk] (+)= src.buf[chunk]

Execution semantics, shared by every executor: each rank runs its steps in order; in
step ``s`` it posts all its sends and receives of that step at once and moves on when
they have all completed. A send in step ``s`` carries the chunk as it was when the
sender began step ``s``. Received reductions are applied after the step's transfers
complete, so one step may reduce several messages into one chunk and may forward the
pre-step value of a chunk it is reducing into; a copying receive may not touch a
chunk that the same step also sends or reduces into (that would be a data race).

The logical buffer is the collective's whole buffer, whose size in bytes is the size
convention of REFERENCE.md: one rank's buffer for allreduce, broadcast and reduce; the
whole gathered buffer (``p`` times the per-rank part) for allgather and
reduce_scatter. It is cut into ``segments`` near-equal ranges like
``np.array_split`` (the first ranges are one element longer when the length does not
divide), and each segment again into ``nchunks // segments`` chunks the same way.
reduce_scatter and allgather use ``segments = nranks`` so segment ``r`` is exactly
rank ``r``'s part.

alltoall, whose blocks change place, uses the same copies in a larger space: its
logical buffer is ``p`` times one rank's buffer (``p n`` elements, :meth:`Schedule.
logical_length`), segment ``o`` holding rank ``o``'s input, each segment cut into
``blocks = p`` blocks like ``np.array_split`` and each block into ``m`` chunks. Chunk
``(o p + d) m + q`` is piece ``q`` of the block that rank ``o`` sends to rank ``d``: a
transfer copies it to the same position on the receiver, so positions never differ
between the ends. Rank ``d`` starts with segment ``d`` and ends holding the chunks of
block ``d`` of every segment; its result is their concatenation in segment order (the
final layout map, :meth:`Schedule.result_chunks`). Other collectives have ``blocks = 1``.

Transfers are stored as parallel numpy arrays (struct of arrays) in non-decreasing step
order, with the smallest unsigned dtype that holds their values, because schedules of
tens of thousands of ranks hold hundreds of millions of transfers. Cast to ``int64``
before doing arithmetic on them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import NamedTuple

import numpy as np

from commsim.errors import CommsimError

COLLECTIVES = ("allreduce", "reduce_scatter", "allgather", "broadcast", "reduce", "alltoall")


class Transfer(NamedTuple):
    """One message: in ``step``, ``dst``'s ``chunk`` becomes (or adds) ``src``'s."""

    step: int
    src: int
    dst: int
    chunk: int
    reduce: bool


class ScheduleError(CommsimError):
    """A schedule that does not implement its collective correctly."""


def index_dtype(maxval: int) -> np.dtype:
    """The smallest unsigned dtype that holds ``0..maxval``."""
    for dt in (np.uint8, np.uint16, np.uint32):
        if maxval <= np.iinfo(dt).max:
            return np.dtype(dt)
    return np.dtype(np.uint64)


def split_bounds(n: int, parts: int) -> np.ndarray:
    """Offsets (length ``parts + 1``) of ``np.array_split(range(n), parts)``."""
    base, extra = divmod(int(n), int(parts))
    sizes = np.full(parts, base, dtype=np.int64)
    sizes[:extra] += 1
    return np.concatenate(([0], np.cumsum(sizes)))


@dataclass(eq=False)
class Schedule:
    """A collective algorithm's complete message schedule (see the module docstring).

    ``step``, ``src``, ``dst``, ``chunk`` and ``reduce`` are parallel arrays, one entry
    per transfer, in non-decreasing ``step`` order. ``root`` is the root rank for
    broadcast and reduce; ``blocks`` the blocks of a segment (``nranks`` for alltoall,
    else 1); ``options`` records the builder's options (for display).

    ``connection`` (length ``nchunks``, or None: all 0) names the connection that
    carries each chunk between a pair of ranks: a ring's or a tree's channel, each
    with its own queue pair or stream, as NCCL's channels are. Everything else sends
    over one connection a pair of ranks (MPI's and gloo's pairs). A network's ECMP
    hashes a connection, not a message, so every message of one connection takes one
    path (:mod:`commsim.topology.routing`).
    """

    collective: str
    algorithm: str
    nranks: int
    nchunks: int
    step: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    chunk: np.ndarray
    reduce: np.ndarray
    segments: int = 1
    root: int = 0
    blocks: int = 1
    options: dict = field(default_factory=dict)
    connection: np.ndarray | None = None

    def __post_init__(self) -> None:
        if self.collective not in COLLECTIVES:
            raise ScheduleError(f"collective {self.collective!r} is not one of {COLLECTIVES}")
        if self.nranks < 1 or self.nchunks < 1 or self.segments < 1 or self.blocks < 1:
            raise ScheduleError("nranks, nchunks, segments and blocks must be at least 1")
        if self.nchunks % (self.segments * self.blocks):
            raise ScheduleError(
                f"nchunks={self.nchunks} must be a multiple of segments={self.segments} "
                f"x blocks={self.blocks}"
            )
        if self.collective == "alltoall" and (self.segments, self.blocks) != (self.nranks,) * 2:
            raise ScheduleError(f"alltoall needs segments = blocks = nranks={self.nranks}; "
                                "build it with collectives.build('alltoall', ...)")
        arrays = (self.step, self.src, self.dst, self.chunk, self.reduce)
        n = len(self.step)
        if any(len(a) != n for a in arrays):
            raise ScheduleError("step, src, dst, chunk and reduce must have one length")
        for name in ("step", "src", "dst", "chunk"):
            a = np.asarray(getattr(self, name))
            if a.dtype.kind not in "ui":
                raise ScheduleError(f"{name} must be an integer array, got {a.dtype}")
            if n and a.dtype.kind == "i" and a.min() < 0:
                raise ScheduleError(f"{name} has a negative entry")
            a = a.astype(index_dtype(int(a.max()) if n else 0), copy=False)
            a.flags.writeable = False
            setattr(self, name, a)
        self.reduce = np.asarray(self.reduce, dtype=bool)
        self.reduce.flags.writeable = False
        if self.connection is not None:
            conn = np.asarray(self.connection)
            if conn.shape != (self.nchunks,) or (conn.size and (
                    conn.dtype.kind not in "ui" or conn.min() < 0)):
                raise ScheduleError(f"connection must be {self.nchunks} integers >= 0, one "
                                    "a chunk")
            conn = conn.astype(index_dtype(int(conn.max()) if conn.size else 0))
            conn.flags.writeable = False
            self.connection = None if not conn.any() else conn
        if n > 1 and np.any(self.step[1:] < self.step[:-1]):
            order = np.argsort(self.step, kind="stable")
            for name in ("step", "src", "dst", "chunk", "reduce"):
                a = getattr(self, name)[order]
                a.flags.writeable = False
                setattr(self, name, a)
        self._transfers: tuple[Transfer, ...] | None = None

    # --- construction -------------------------------------------------------------

    @classmethod
    def from_transfers(
        cls,
        collective: str,
        algorithm: str,
        nranks: int,
        nchunks: int,
        transfers: Iterable[Transfer | tuple],
        **kwargs,
    ) -> Schedule:
        """A schedule from ``Transfer`` tuples (convenient for hand-written schedules)."""
        rows = [tuple(t) for t in transfers]
        cols = list(zip(*rows)) if rows else [(), (), (), (), ()]
        step, src, dst, chunk = (np.asarray(c, dtype=np.int64) for c in cols[:4])
        reduce = np.asarray(cols[4], dtype=bool)
        return cls(collective, algorithm, nranks, nchunks, step, src, dst, chunk, reduce,
                   **kwargs)

    # --- views ----------------------------------------------------------------------

    def __len__(self) -> int:
        return len(self.step)

    def __iter__(self) -> Iterator[Transfer]:
        return iter(self.transfers)

    def __repr__(self) -> str:
        return (f"Schedule({self.collective}/{self.algorithm}, nranks={self.nranks}, "
                f"nchunks={self.nchunks}, transfers={len(self)}, steps={self.nsteps})")

    @property
    def transfers(self) -> tuple[Transfer, ...]:
        """The transfers as ``Transfer`` tuples (materialized on first use)."""
        if self._transfers is None:
            self._transfers = tuple(
                Transfer(int(s), int(a), int(b), int(c), bool(r))
                for s, a, b, c, r in zip(self.step.tolist(), self.src.tolist(),
                                         self.dst.tolist(), self.chunk.tolist(),
                                         self.reduce.tolist())
            )
        return self._transfers

    @property
    def nsteps(self) -> int:
        """Number of steps: one more than the largest step index (0 if empty)."""
        return int(self.step[-1]) + 1 if len(self) else 0

    @property
    def chunks_per_segment(self) -> int:
        return self.nchunks // self.segments

    def logical_length(self, size: int) -> int:
        """Elements of the logical buffer for a collective of ``size`` elements (REFERENCE's
        size convention): ``nranks * size`` for alltoall, ``size`` otherwise."""
        return int(size) * self.nranks if self.collective == "alltoall" else int(size)

    def chunk_bounds(self, n: int) -> np.ndarray:
        """Element offsets (length ``nchunks + 1``) of the chunks of an ``n``-element buffer."""
        bounds = split_bounds(n, self.segments)
        for parts in (self.blocks, self.nchunks // (self.segments * self.blocks)):
            if parts > 1:
                out = [np.zeros(1, dtype=np.int64)]
                for lo, hi in zip(bounds[:-1], bounds[1:]):
                    out.append(lo + split_bounds(hi - lo, parts)[1:])
                bounds = np.concatenate(out)
        return bounds

    def chunk_sizes(self, n: int) -> np.ndarray:
        """Elements in each chunk of an ``n``-element logical buffer."""
        return np.diff(self.chunk_bounds(n))

    def transfer_sizes(self, size: int) -> np.ndarray:
        """Elements each transfer moves, for a collective of ``size`` elements (REFERENCE's
        size convention; the logical buffer is :meth:`logical_length` of it)."""
        return self.chunk_sizes(self.logical_length(size))[self.chunk]

    def block_of(self, chunk: np.ndarray | int) -> np.ndarray | int:
        """The block (within its segment) a chunk belongs to: its destination for alltoall."""
        per_block = self.nchunks // (self.segments * self.blocks)
        return (np.asarray(chunk, dtype=np.int64) % self.chunks_per_segment) // per_block

    def result_chunks(self, rank: int) -> np.ndarray:
        """The chunks whose concatenation is ``rank``'s alltoall result (block ``rank`` of
        every segment, in segment order); every chunk for the other collectives."""
        k = np.arange(self.nchunks)
        if self.collective != "alltoall":
            return k
        return k[self.block_of(k) == rank]

    def step_bounds(self) -> np.ndarray:
        """Offsets (length ``nsteps + 1``) of each step's transfers in the arrays.

        Step ``s`` is ``[bounds[s], bounds[s+1])``. The search keys share the step
        array's compact dtype: mixed dtypes would make numpy copy the whole array to
        int64 first (4 GB for half a billion transfers).
        """
        keys = np.arange(self.nsteps, dtype=self.step.dtype)
        return np.concatenate((np.searchsorted(self.step, keys, side="left"), [len(self)]))

    def segment_of(self, chunk: np.ndarray | int) -> np.ndarray | int:
        """The segment a chunk belongs to."""
        return np.asarray(chunk, dtype=np.int64) // self.chunks_per_segment

    def transfer_connections(self) -> np.ndarray:
        """Each transfer's connection (see the class docstring), an integer array."""
        if self.connection is None:
            return np.zeros(len(self), dtype=np.uint8)
        return self.connection[self.chunk]

    def connection_keys(self) -> np.ndarray:
        """Each transfer's connection as one integer over its src, its dst and
        :meth:`transfer_connections`: transfers with equal keys queue on one connection
        (a pair's channel, or one of its slots for messages in flight), the others do
        not."""
        key = self.src.astype(np.int64) * self.nranks + self.dst.astype(np.int64)
        if self.connection is None:
            return key
        return self.transfer_connections().astype(np.int64) * self.nranks**2 + key

    def both_ways(self) -> np.ndarray:
        """Per transfer: does one of its ranks both send and receive in its step?

        A ring's every transfer does (each rank sends to one neighbour while it receives
        from the other); a tree's reduce and broadcast at two ranks do not. On a host with
        fewer cores than busy threads, such steps pay a measured extra latency (a
        profile's ``exchange_overhead``, docs/calibrate.md).
        """
        if not len(self):
            return np.zeros(0, dtype=bool)
        step = self.step.astype(np.int64) * self.nranks
        sender = step + self.src.astype(np.int64)
        receiver = step + self.dst.astype(np.int64)
        busy = np.intersect1d(sender, receiver)
        return np.isin(sender, busy) | np.isin(receiver, busy)

    def bytes_sent(self, nbytes: int) -> np.ndarray:
        """Bytes each rank sends, for a collective of ``nbytes`` (1-byte elements)."""
        return np.bincount(self.src.astype(np.int64), weights=self.transfer_sizes(nbytes),
                           minlength=self.nranks)

    def bytes_received(self, nbytes: int) -> np.ndarray:
        """Bytes each rank receives, for a collective of ``nbytes`` (1-byte elements)."""
        return np.bincount(self.dst.astype(np.int64), weights=self.transfer_sizes(nbytes),
                           minlength=self.nranks)

    def rank_steps(self, rank: int) -> list[tuple[int, list[Transfer], list[Transfer]]]:
        """What ``rank`` does, step by step: ``[(step, sends, receives), ...]``.

        Only steps in which the rank takes part are listed. Within a step, sends and
        receives are in schedule order, which is the same on both ends of every pair,
        so executors can match messages between a pair by their order.
        """
        mine = np.flatnonzero((self.src == rank) | (self.dst == rank))
        out: list[tuple[int, list[Transfer], list[Transfer]]] = []
        for i in mine.tolist():
            t = Transfer(int(self.step[i]), int(self.src[i]), int(self.dst[i]),
                         int(self.chunk[i]), bool(self.reduce[i]))
            if not out or out[-1][0] != t.step:
                out.append((t.step, [], []))
            (out[-1][1] if t.src == rank else out[-1][2]).append(t)
        return out

    def dependencies(self) -> tuple[np.ndarray, np.ndarray]:
        """The dataflow view: which transfers each transfer's data comes from.

        Returns CSR arrays ``(indptr, indices)``: the predecessors of transfer ``i`` are
        ``indices[indptr[i]:indptr[i+1]]``, every transfer that wrote the chunk ``i``
        reads (``src[i]``'s ``chunk[i]``) in an earlier step.
        """
        nsteps = self.nsteps + 1
        chunk = self.chunk.astype(np.int64)
        wkey = (self.dst.astype(np.int64) * self.nchunks + chunk) * nsteps + self.step
        order = np.argsort(wkey, kind="stable")
        wkey_sorted = wkey[order]
        base = (self.src.astype(np.int64) * self.nchunks + chunk) * nsteps
        lo = np.searchsorted(wkey_sorted, base, side="left")
        hi = np.searchsorted(wkey_sorted, base + self.step, side="left")
        counts = hi - lo
        indptr = np.concatenate(([0], np.cumsum(counts)))
        total = int(indptr[-1])
        # positions lo[i] .. hi[i]-1 for every i, flattened without a Python loop
        offsets = np.arange(total, dtype=np.int64) - np.repeat(indptr[:-1], counts)
        indices = order[np.repeat(lo, counts) + offsets]
        return indptr, indices

    # --- validation -----------------------------------------------------------------

    def initial_state(self) -> np.ndarray:
        """Which rank's contribution each (rank, chunk) starts with: ``[rank, chunk, origin]``."""
        p, k = self.nranks, self.nchunks
        state = np.zeros((p, k, p), dtype=np.uint16)
        ranks = np.arange(p)
        if self.collective in ("allreduce", "reduce_scatter", "reduce"):
            state[ranks, :, ranks] = 1
        elif self.collective in ("allgather", "alltoall"):
            seg = self.segment_of(np.arange(k))
            state[seg, np.arange(k), seg] = 1
        else:  # broadcast
            state[self.root, :, self.root] = 1
        return state

    def final_state_ok(self, state: np.ndarray) -> np.ndarray:
        """A boolean ``[rank, chunk]`` array: does the rank end with what it must?"""
        p, k = self.nranks, self.nchunks
        full = (state == 1).all(axis=2)
        if self.collective == "allreduce":
            return full
        seg = self.segment_of(np.arange(k))
        if self.collective == "reduce_scatter":
            ok = np.ones((p, k), dtype=bool)
            ok[seg, np.arange(k)] = full[seg, np.arange(k)]
            return ok
        if self.collective == "reduce":
            ok = np.ones((p, k), dtype=bool)
            ok[self.root] = full[self.root]
            return ok
        if self.collective == "alltoall":  # rank d must hold block d of every segment
            c = np.arange(k)
            d = self.block_of(c)
            ok = np.ones((p, k), dtype=bool)
            ok[d, c] = state[d, c, seg] == 1
            ok[d, c] &= state[d, c].sum(axis=1) == 1
            return ok
        origin = seg if self.collective == "allgather" else np.full(k, self.root)
        expect = np.zeros((k, p), dtype=state.dtype)
        expect[np.arange(k), origin] = 1
        return (state == expect[None, :, :]).all(axis=2)

    def validate(self) -> Schedule:
        """Check that the schedule is well-formed and implements its collective.

        Raises :class:`ScheduleError` naming the first offending transfer: a rank or
        chunk out of range, a self-send, a read of a chunk the sender does not hold
        yet, a reduction that counts a contribution twice or lands on an empty chunk,
        a data race inside a step, or a final state that is not the collective's
        result. Memory is ``O(nranks**2 * nchunks)``: meant for up to a few hundred ranks.
        Returns the schedule itself, so ``build(...).validate()`` chains.
        """
        p, k = self.nranks, self.nchunks
        if not 0 <= self.root < p:
            raise ScheduleError(f"root {self.root} is out of range for {p} ranks")
        for name, bound in (("src", p), ("dst", p), ("chunk", k)):
            a = getattr(self, name)
            if len(a) and int(a.max()) >= bound:
                i = int(np.argmax(a >= bound))
                raise ScheduleError(f"{self._where(i)}: {name} is out of range (< {bound})")
        same = np.flatnonzero(self.src == self.dst)
        if len(same):
            raise ScheduleError(f"{self._where(int(same[0]))}: a rank sends to itself")
        if p * p * k > 200_000_000:
            raise ScheduleError(
                f"validate() needs nranks**2 * nchunks = {p * p * k} cells; "
                "validate a smaller instance of the same algorithm"
            )
        state = self.initial_state()
        bounds = self.step_bounds()
        for s in range(self.nsteps):
            idx = np.arange(bounds[s], bounds[s + 1])
            if len(idx):
                self._apply_step(state, idx)
        ok = self.final_state_ok(state)
        if not ok.all():
            r, c = map(int, np.argwhere(~ok)[0])
            raise ScheduleError(
                f"{self.collective}/{self.algorithm}: rank {r} ends with a wrong chunk {c} "
                f"(holds contributions of ranks {np.flatnonzero(state[r, c]).tolist()})"
            )
        return self

    def _where(self, i: int) -> str:
        return (f"{self.collective}/{self.algorithm} transfer #{i} (step {int(self.step[i])}, "
                f"{int(self.src[i])}->{int(self.dst[i])}, chunk {int(self.chunk[i])})")

    def _apply_step(self, state: np.ndarray, idx: np.ndarray) -> None:
        src = self.src[idx].astype(np.int64)
        dst = self.dst[idx].astype(np.int64)
        chunk = self.chunk[idx].astype(np.int64)
        red = self.reduce[idx]
        k = self.nchunks
        payload = state[src, chunk].copy()  # pre-step values
        empty = ~payload.any(axis=1)
        if empty.any():
            i = int(idx[np.argmax(empty)])
            raise ScheduleError(
                f"{self._where(i)}: reads chunk {int(self.chunk[i])} that rank "
                f"{int(self.src[i])} does not hold yet"
            )
        cell_recv = dst * k + chunk
        copy_cells = cell_recv[~red]
        if len(copy_cells):
            uniq, counts = np.unique(copy_cells, return_counts=True)
            clash = np.isin(copy_cells, uniq[counts > 1])
            clash |= np.isin(copy_cells, cell_recv[red])
            clash |= np.isin(copy_cells, src * k + chunk)
            if clash.any():
                i = int(idx[~red][np.argmax(clash)])
                raise ScheduleError(
                    f"{self._where(i)}: a copy into a chunk that the same step also "
                    "sends, reduces into or copies into again (a data race)"
                )
        if red.any():
            cur = state[dst[red], chunk[red]]
            lands_empty = ~cur.any(axis=1)
            if lands_empty.any():
                i = int(idx[red][np.argmax(lands_empty)])
                raise ScheduleError(
                    f"{self._where(i)}: reduces into chunk {int(self.chunk[i])} that rank "
                    f"{int(self.dst[i])} does not hold (copy it instead)"
                )
        state[dst[~red], chunk[~red]] = payload[~red]
        if red.any():
            np.add.at(state, (dst[red], chunk[red]), payload[red])
            twice = (state[dst[red], chunk[red]] > 1).any(axis=1)
            if twice.any():
                i = int(idx[red][np.argmax(twice)])
                raise ScheduleError(
                    f"{self._where(i)}: reduces a contribution into rank {int(self.dst[i])}'s "
                    f"chunk {int(self.chunk[i])} that is already there (counted twice)"
                )


class ScheduleBuilder:
    """Collects transfers (scalars or equal-length arrays) and makes a :class:`Schedule`."""

    def __init__(self) -> None:
        self._parts: list[tuple[np.ndarray, ...]] = []

    def add(self, step, src, dst, chunk, reduce) -> None:
        """Add transfers; arguments broadcast against each other like numpy arrays."""
        arrays = np.broadcast_arrays(np.asarray(step, dtype=np.int64),
                                     np.asarray(src, dtype=np.int64),
                                     np.asarray(dst, dtype=np.int64),
                                     np.asarray(chunk, dtype=np.int64),
                                     np.asarray(reduce, dtype=bool))
        if arrays[0].size:
            self._parts.append(tuple(a.ravel() for a in arrays))

    def extend(self, other: ScheduleBuilder, step_offset: int = 0) -> None:
        """Append another builder's transfers, their steps shifted by ``step_offset``."""
        for s, a, b, c, r in other._parts:
            self._parts.append((s + step_offset, a, b, c, r))

    @property
    def nsteps(self) -> int:
        return max((int(p[0].max()) + 1 for p in self._parts), default=0)

    def build(self, collective: str, algorithm: str, nranks: int, nchunks: int,
              **kwargs) -> Schedule:
        if self._parts:
            cols = [np.concatenate([p[i] for p in self._parts]) for i in range(5)]
        else:
            cols = [np.zeros(0, dtype=np.int64)] * 4 + [np.zeros(0, dtype=bool)]
        return Schedule(collective, algorithm, nranks, nchunks, *cols, **kwargs)
