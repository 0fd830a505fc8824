"""The fixed costs a profile charges beyond the network, fitted where they are used.

- commsim's executor: seconds per one-way step, per exchange step (a rank both sends and
  receives) and per message, from its allreduces on tiny buffers and at 256 KiB and 2 MiB;
- the backend's own allreduce: seconds per message of the algorithm it runs (a C++
  loop's wake-ups and handshakes per segment), from its allreduces at 256 KiB, 2 MiB and
  8 MiB (those of them up to calibrate's ``--max-size``; with fewer than 3, none).

Each cost is what the model on the profile's links
(:class:`commsim.model.on_topology.TopologyModel`, with the measured alpha, beta, host
capacity and gamma) leaves unexplained of those measured times, fitted over operations
whose steps, exchanges and messages vary apart. Costs measured on tiny calls alone
overstate them where a host has fewer cores than busy threads: back to back, such calls
catch many more of the scheduler's ticks than a step that moves a MiB (docs/calibrate.md).
"""

from __future__ import annotations

from commsim import collectives
from commsim.calibrate import fit as fitting
from commsim.errors import CommsimError
from commsim.topology import warm

EXECUTOR = ("per_step", "per_exchange", "per_message")
NATIVE = ("per_message",)
# the TopologyModel argument that charges each cost
_ARGUMENT = {"per_step": "overhead", "per_exchange": "exchange_overhead",
             "per_message": "message_overhead"}
_PROBE = 1e-5  # s: each cost's count on the critical path is the model's slope at this cost


class _Probe:
    """The model on ``G`` with every cost 0, and with each named cost alone at
    :data:`_PROBE`: predicted seconds and each cost's count per operation. A call whose
    data stays in the cache is priced on the profile's warm view
    (:func:`commsim.topology.warm.for_call`), as the predictions price it."""

    def __init__(self, G, nranks: int, names, gamma: float, mode: str, overlap: bool):
        self.G, self.nranks, self.names = G, nranks, names
        self.gamma, self.mode, self.overlap = gamma, mode, overlap
        self._models: dict = {}

    def _on(self, view, gamma: float):
        from commsim.model.on_topology import TopologyModel

        if id(view) not in self._models:
            zero = {"overhead": 0.0, "exchange_overhead": 0.0, "message_overhead": 0.0}
            base = TopologyModel(view, self.nranks, **zero)
            probes = [TopologyModel(view, self.nranks, router=base.router,  # routed once
                                    **{**zero, _ARGUMENT[n]: _PROBE}) for n in self.names]
            self._models[id(view)] = (base, probes, (gamma, self.mode, self.overlap))
        return self._models[id(view)]

    def __call__(self, schedule, nbytes: int) -> tuple[float, list[float]]:
        base, probes, args = self._on(*warm.call(self.G, nbytes, self.nranks, self.gamma))
        t0 = base.estimate(schedule, nbytes, *args).time
        return t0, [(m.estimate(schedule, nbytes, *args).time - t0) / _PROBE for m in probes]


def fit_executor(overhead: dict, G, nranks: int, gamma: float, mode: str,
                 overlap: bool) -> fitting.Fit:
    """:data:`EXECUTOR` costs (s) from ``overhead`` (:attr:`Measurements.overhead`:
    ``algorithm``, ``nchunks``, ``bytes`` and mean ``seconds`` per timed allreduce)."""
    missing = [k for k in ("algorithm", "nchunks", "bytes", "seconds") if k not in overhead]
    if missing:
        raise CommsimError(f"overhead: the measurements lack {missing}; calibrate again")
    probe = _Probe(G, nranks, EXECUTOR, gamma, mode, overlap)
    rows, extra = [], []
    for algorithm, k, nbytes, t in zip(overhead["algorithm"], overhead["nchunks"],
                                       overhead["bytes"], overhead["seconds"]):
        schedule = collectives.build("allreduce", algorithm, nranks, int(k))
        t0, row = probe(schedule, int(nbytes))
        rows.append(row)
        extra.append(t - t0)
    return fitting.fit_costs(rows, extra, overhead["seconds"], EXECUTOR, what="overhead")


def fit_native(native, G, nranks: int, gamma: float, mode: str, overlap: bool,
               backend: str, versions: dict, nnodes: int,
               first_touch: float = 0.0) -> fitting.Fit | None:
    """The backend's own allreduce's :data:`NATIVE` cost (s) from ``native`` (a
    :class:`~commsim.calibrate.measure.Series` of mean seconds), or None when no commsim
    schedule models what it runs. ``first_touch``: seconds per byte of fresh scratch
    memory, which the predictions charge it too."""
    from commsim.backends.native_as import native_as
    from commsim.bench.predictions import native_schedule

    if len(native.sizes) < 3:
        return None
    probe = _Probe(G, nranks, NATIVE, gamma, mode, overlap)
    rows, extra = [], []
    for nbytes, t in zip(native.sizes, native.seconds):
        choice = native_as(backend, "allreduce", nranks, int(nbytes), dtype_size=4,
                           versions=versions, nnodes=nnodes)
        schedule = native_schedule(choice, nranks)
        if schedule is None:
            return None
        t0, row = probe(schedule, int(nbytes))
        rows.append(row)
        extra.append(t - t0 - (choice.scratch or 0) * first_touch)
    if not any(r[0] > 0 for r in rows):
        return None
    return fitting.fit_costs(rows, extra, native.seconds, NATIVE, what="native")
