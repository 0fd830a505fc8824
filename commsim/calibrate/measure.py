"""What ``commsim calibrate`` measures, on every rank together (bytes, seconds).

- ``pairs``: for each link class (``intra_host``: two ranks on one host; ``inter_host``:
  ranks on two hosts), a ping-pong between rank 0 and the first rank of that class,
  the others idle: one-way time = round trip / 2, per size from 8 B to 64 MiB;
- ``ring``: every rank sending ``size`` bytes to its successor while it receives as many
  from its predecessor (a ring shift: every rank's link busy in both directions at once,
  as in a ring collective's step), so shared resources show: one memory bus, one NIC,
  fewer cores than ranks (at :data:`RING_EXTRA_SIZES` too); timed in
  :data:`RING_PASSES` passes (one before the reduction, the others at the end), each
  size the median of its passes (``ring_passes`` keeps them);
- ``reduction``: an in-place add of two buffers on the rank's device, each iteration on
  the next slices of a 64 MiB arena (or two sizes' worth, if larger), so that the data
  comes from memory as in a collective of MiBs, not from a cache that repeats warm;
- ``reduction_apart``: the same, written into a third arena (``out = a + b``): out of
  place, commsim's executor writes a range's first reduction apart from its operands,
  and a cache that allocates on writes reads the destination's lines first;
- ``warm_reduction``: the same add on the same two buffers again and again (a loop's time
  over its calls, the slowest rank's), at the sizes whose two buffers on every rank of a
  host fit in the cache they share (``cache_bytes``: :mod:`commsim.topology.warm`), as
  a benchmark's repeated calls find their data;
- ``first_touch``: writing every page of freshly allocated memory (48 to 96 MiB, above
  the C library's mmap threshold), for backends that allocate a scratch buffer a call;
- ``overhead``: commsim's executor on tiny buffers and at 256 KiB and 2 MiB (ring
  allreduce with messages cut into 1, 2, 4 and 8 pieces and rhd with 1 and 2, whose
  every step is an exchange: each rank sends and receives; and tree allreduce, whose
  steps at two ranks are one-way), for its fixed cost per one-way step, per exchange
  step and per message sent (posting it and the receive for it): what the model leaves
  unexplained of each time, at the sizes commsim's executor is used for
  (:func:`commsim.calibrate.profile.fit_all`);
- ``native``: the backend's own allreduce at 256 KiB, 2 MiB and 8 MiB, for its cost per
  message beyond the network's (a C++ loop's wake-ups and handshakes per segment).

The executor's and the native allreduce's times are means over iterations, not medians:
what they predict is ``bench``'s mean time, and on a host with fewer cores than busy
threads an exchange now and then waits a scheduler tick for its receiver to run. Each is
a median of means (:data:`MEAN_GROUPS` groups of consecutive calls), so that the ticks
every group pays count and a stall that one group alone met does not.

Every other time is the median over iterations (rank 0's clock for ping-pongs; the
slowest rank's for the others, since a collective ends when its last rank does). Buffers are
float32 and sizes whole multiples of 4 bytes.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from commsim import collectives
from commsim.bench.env import host_cache_bytes
from commsim.bench.timing import buffer, iterations, ring_shift, slowest_median
from commsim.topology import warm

SIZES = tuple(8 * 4**i for i in range(12)) + (64 << 20,)  # 8 B .. 32 MiB x4, then 64 MiB
REDUCE_SIZES = tuple(64 << 10 << 2 * i for i in range(6))  # 64 KiB .. 64 MiB
# The ring shift sets a host's shared capacity, which every large-message prediction of
# more ranks than cores depends on; on the 2-core machine its 64 MiB time moved 1.5x from
# one calibration to the next (32.5, 46.3, 50.0 ms within a minute) while 2 MiB held.
# So it is timed in passes at the start and at the end of the calibration, each size
# the median of its passes.
RING_PASSES = 3
# and at 256 KiB and 1 MiB too, between the x4 sizes: where a host's ranks' buffers fit
# in its cache, a warm speedup needs two bandwidth-bound sizes (fit.warm_speedup), and 4
# ranks on the 2-core machine, whose ring shift's alpha is about 150 us, had only 512 KiB
RING_EXTRA_SIZES = (256 << 10, 1 << 20)
# The cost per message is charged wherever ``--chunks auto`` cuts messages, up to pieces
# of 4 KiB; timed at up to 4 pieces a message, the fit could put every cost into the
# step (MPI at 4 ranks on the 2-core machine: 0 us a message, 95 us an exchange) and
# auto cut a 1 MiB ring into 64 pieces a message, measured 10.4 ms where it predicted
# 1.4 ms. A ring of 8 pieces spans the counts auto uses.
OVERHEAD_CASES = (("ring", 1), ("ring", 2), ("ring", 4), ("ring", 8), ("rhd", 1),
                  ("rhd", 2), ("tree", 1), ("tree", 2))
OVERHEAD_ITERS = 60
MEAN_GROUPS = 5  # a call's time: the median of the means of 5 groups of 12 calls
OVERHEAD_SIZES = (0, 256 << 10, 2 << 20)  # bytes; 0: the fewest the case can cut (tiny)
NATIVE_SIZES = (256 << 10, 2 << 20, 8 << 20)
WARM_LOOP_BYTES = 256 << 20  # a warm reduction's loop adds this much (about 15 ms)
WARM_LOOPS = 3
ARENA_BYTES = 64 << 20  # the reduction's buffers cycle through this much, past the caches
FIRST_TOUCH_SIZES = (48 << 20, 64 << 20, 96 << 20)  # above glibc's largest mmap threshold


@dataclass
class Series:
    """One measured curve: ``seconds[i]`` at ``sizes[i]`` bytes."""

    sizes: list[int] = field(default_factory=list)
    seconds: list[float] = field(default_factory=list)


@dataclass
class Measurements:
    hosts: list[str]
    pairs: dict[str, Series]
    pair_ranks: dict[str, tuple[int, int]]
    ring: Series
    reduction: Series
    # per timed operation: algorithm, nchunks, bytes, steps, exchanges (steps where a
    # rank sends and receives), messages (rank 0's), seconds (mean), cases (its label)
    overhead: dict[str, list] = field(default_factory=dict)
    first_touch: Series = field(default_factory=Series)   # fresh memory's first writes
    reduction_apart: Series = field(default_factory=Series)  # out = a + b, a third buffer
    native: Series = field(default_factory=Series)   # the backend's allreduce (mean)
    cores_per_rank: float = 2.0   # a host's usable cores over its ranks, the fewest
    cache_bytes: int | None = None  # the cache a host's ranks share, the least (None: unknown)
    warm_reduction: Series = field(default_factory=Series)  # adds on the same buffers
    ring_passes: list[list[float]] = field(default_factory=list)  # seconds, per pass

    def fits_cache(self, size: int) -> bool:
        """Do two buffers of ``size`` bytes on every rank of the busiest host (a ring
        shift's send and receive buffers, an add's two) fit in the cache its ranks share?
        Never where the cache is unknown."""
        per_host = max(self.hosts.count(h) for h in self.hosts)
        return bool(self.cache_bytes) and \
            warm.working_set(size, per_host, buffers=2) <= self.cache_bytes

    @property
    def overlap(self) -> bool:
        """Could the ranks' reductions overlap their transfers (cores to spare)?"""
        from commsim.model.cores import reductions_overlap

        return reductions_overlap(self.cores_per_rank)


def link_classes(hosts: list[str]) -> dict[str, tuple[int, int]]:
    """``{class: (0, peer)}``: the pair that measures each class present in ``hosts``."""
    out = {}
    same = [r for r in range(1, len(hosts)) if hosts[r] == hosts[0]]
    other = [r for r in range(1, len(hosts)) if hosts[r] != hosts[0]]
    if same:
        out["intra_host"] = (0, same[0])
    if other:
        out["inter_host"] = (0, other[0])
    return out


def measure(comm, mode: str, sizes=SIZES, reduce_sizes=REDUCE_SIZES,
            progress=None) -> Measurements:
    """Run every measurement on every rank of ``comm`` (a :mod:`commsim.bench.comm`)."""
    from commsim.bench.harness import cores_per_rank

    say = progress or (lambda text: None)
    hosts = [r["host"] for r in comm.allgather_objects({"host": comm.info.host})]
    classes = link_classes(hosts)
    result = Measurements(hosts, {}, classes, Series(), Series())
    for name, (a, b) in classes.items():
        say(f"ping-pong {name} (ranks {a} and {b})")
        series = result.pairs[name] = Series()
        for size in sizes:
            series.sizes.append(size)
            series.seconds.append(_pingpong(comm, a, b, size))
    passes = result.ring_passes
    say(f"ring shift, {comm.size} ranks at once (pass 1 of {RING_PASSES})")
    ring_sizes = sorted(set(sizes) | {n for n in RING_EXTRA_SIZES if n <= max(sizes)})
    passes.append([ring_shift(comm, size) for size in ring_sizes])
    say("local reduction")
    for size in reduce_sizes:
        result.reduction.sizes.append(size)
        result.reduction.seconds.append(_reduction(comm, size))
    say("local reduction into a third buffer")
    for size in reduce_sizes:
        result.reduction_apart.sizes.append(size)
        result.reduction_apart.seconds.append(_reduction(comm, size, apart=True))
    result.cores_per_rank = cores_per_rank(comm)
    result.cache_bytes = host_cache_bytes(comm.allgather_objects(
        {"host": comm.info.host, "caches": comm.caches()}))
    fits = [size for size in reduce_sizes if result.fits_cache(size)]
    if fits:
        say("local reduction, warm")
    for size in fits:
        result.warm_reduction.sizes.append(size)
        result.warm_reduction.seconds.append(_warm_reduction(comm, size))
    say(f"executor overhead ({mode} mode)")
    result.overhead = _overhead(comm, mode)
    say("the backend's own allreduce")
    for size in [s for s in NATIVE_SIZES if s <= max(sizes)]:  # --max-size bounds it
        result.native.sizes.append(size)
        result.native.seconds.append(_native(comm, size))
    say("first touch of fresh memory")
    for size in FIRST_TOUCH_SIZES:
        result.first_touch.sizes.append(size)
        result.first_touch.seconds.append(_first_touch(comm, size))
    while len(passes) < RING_PASSES:
        say(f"ring shift, pass {len(passes) + 1} of {RING_PASSES}")
        passes.append([ring_shift(comm, size) for size in ring_sizes])
    result.ring = Series(ring_sizes, ring_medians(passes))
    return result


def ring_medians(passes: list[list[float]]) -> list[float]:
    """Per size, the median of the ring shift's passes (seconds)."""
    return [float(t) for t in np.median(np.asarray(passes, dtype=np.float64), axis=0)]


def _pingpong(comm, a: int, b: int, size: int) -> float:
    out, into = buffer(comm, size), buffer(comm, size)
    n = iterations(size)
    laps = []
    comm.barrier()
    for _ in range(n + 1):  # the first round trip warms the path up
        clock = comm.clock()
        clock.mark()
        if comm.rank == a:
            comm.exchange([(out, b)], [])
            comm.exchange([], [(into, b)])
        elif comm.rank == b:
            comm.exchange([], [(into, a)])
            comm.exchange([(out, a)], [])
        comm.synchronize()
        clock.mark()
        laps.append(float(clock.seconds()[-1]) / 2)
    times = comm.allgather_floats(laps[1:])
    return float(np.median(times[a]))


def _reduction(comm, size: int, apart: bool = False) -> float:
    """Seconds of an add of ``size`` bytes from memory (each iteration on the next slices
    of the arenas), in place or (``apart``) into a third arena; the slowest rank's
    median."""
    count = size // 4
    slots = max(2, ARENA_BYTES // max(size, 1))
    a, b = buffer(comm, slots * size), buffer(comm, slots * size)
    c = buffer(comm, slots * size) if apart else None
    laps = []
    for i in range(iterations(size) + 1):
        lo = (i % slots) * count
        into, other = a[lo:lo + count], b[lo:lo + count]
        clock = comm.clock()
        clock.mark()
        if apart:
            comm.add_apart(c[lo:lo + count], into, other)
        else:
            comm.add(into, other)
        comm.synchronize()
        clock.mark()
        laps.append(float(clock.seconds()[-1]))
    return slowest_median(comm, laps[1:])


def _warm_reduction(comm, size: int) -> float:
    """Seconds of an in-place add of ``size`` bytes on the same two buffers, every rank
    adding back to back at once: a loop of :data:`WARM_LOOP_BYTES` over its calls, the
    slowest rank's, the median of :data:`WARM_LOOPS` loops. A loop's time, not each
    add's: adds that end within a time slice would time a whole core's rate where ranks
    share cores, and a collective's ranks reduce together."""
    into, other = buffer(comm, size), buffer(comm, size)
    calls = max(8, WARM_LOOP_BYTES // size)
    comm.add(into, other)
    loops = []
    for _ in range(WARM_LOOPS):
        comm.barrier()
        clock = comm.clock()
        clock.mark()
        for _ in range(calls):
            comm.add(into, other)
        comm.synchronize()
        clock.mark()
        loops.append(float(clock.seconds()[-1]) / calls)
    return slowest_median(comm, loops)


def _first_touch(comm, size: int) -> float:
    """Seconds to write every page of ``size`` freshly mapped bytes once, on every rank
    at once (the slowest's median): what a backend pays when it allocates a scratch
    buffer per call above the C library's mmap threshold (Open MPI's rhd allreduce)."""
    laps = []
    for _ in range(4):
        comm.barrier()
        clock = comm.clock()
        clock.mark()
        fresh = np.empty(size, dtype=np.uint8)
        fresh[::4096] = 1
        clock.mark()
        laps.append(float(clock.seconds()[-1]))
        del fresh
    return slowest_median(comm, laps[1:])


def _mean_call(comm, op, iters: int) -> float:
    """The mean time (s) of a call of ``op``, the slowest rank's, after one untimed call:
    over ``iters`` calls, the median of the means of :data:`MEAN_GROUPS` groups of
    consecutive calls. A median of means keeps the ticks that most groups pay and drops
    a stall that one group alone met: with plain means, Open MPI's own 256 KiB
    allreduce at 2 ranks measured 0.07 ms in two calibrations and 0.38 and 0.21 ms in
    two others, and those fitted it 108 and 36 us a message instead of 0."""
    laps = []
    comm.barrier()
    for _ in range(iters + 1):
        clock = comm.clock()
        clock.mark()
        op.call()
        comm.synchronize()
        clock.mark()
        laps.append(float(clock.seconds()[-1]))
    return median_of_means(comm.allgather_floats(laps[1:]).max(axis=0))


def median_of_means(values, groups: int = MEAN_GROUPS) -> float:
    """The median of the means of ``groups`` runs of consecutive ``values``, split as
    evenly as they go (at most one group per value)."""
    parts = np.array_split(np.asarray(values, dtype=np.float64), max(1, min(groups,
                                                                          len(values))))
    return float(np.median([part.mean() for part in parts]))


def _overhead(comm, mode: str) -> dict[str, list]:
    """Allreduces through commsim's executor, each case at each of
    :data:`OVERHEAD_SIZES`: the schedule's steps, those of them that are exchanges
    (:meth:`Schedule.both_ways`), the messages rank 0 sends per call, and the mean
    seconds a call (the slowest rank's, per iteration)."""
    from commsim.backends.dataflow import flow_plan
    from commsim.backends.plan import rank_plan

    p = comm.size
    out: dict[str, list] = {key: [] for key in ("algorithm", "nchunks", "bytes", "steps",
                                                "exchanges", "messages", "seconds", "cases")}
    for algorithm, pieces in OVERHEAD_CASES:
        k = pieces * collectives.chunk_unit("allreduce", algorithm, p)
        schedule = collectives.build("allreduce", algorithm, p, k)
        plan = flow_plan(schedule, 0, k) if mode == "dataflow" else rank_plan(schedule, 0, k)
        for size in OVERHEAD_SIZES:
            count = max(k, size // 4 // k * k)  # whole chunks of float32
            local = comm.array(np.ones(1), count, "float32")
            op = comm.make_op("allreduce", schedule, local, count, 0, mode)
            out["algorithm"].append(algorithm)
            out["nchunks"].append(k)
            out["bytes"].append(4 * count)
            out["steps"].append(schedule.nsteps)
            out["exchanges"].append(int(np.unique(schedule.step[schedule.both_ways()]).size))
            out["messages"].append(plan.messages_sent)
            out["seconds"].append(_mean_call(comm, op, OVERHEAD_ITERS))
            out["cases"].append(f"{algorithm} x{pieces}")
    return out


def _native(comm, size: int) -> float:
    """The backend's own allreduce of ``size`` bytes (float32): mean seconds a call."""
    count = size // 4
    local = comm.array(np.ones(1), count, "float32")
    op = comm.make_op("allreduce", None, local, count, 0, "dataflow")
    return _mean_call(comm, op, OVERHEAD_ITERS)
