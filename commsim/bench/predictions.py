"""What the model and the simulator predict for each measured row (rank 0 only).

``t_model`` is the model on the topology
(:class:`commsim.model.on_topology.TopologyModel`: every transfer of the schedule that
ran on its own route, the step's own flows sharing links evenly, so a profile's host
capacity is shared as measured); ``t_sim`` is :func:`commsim.sim.simulate` of the very
schedule that ran.
Both use the execution mode that ran and ``gamma``, the reduction cost per byte that the
harness measured on the ranks (or a profile's). ``native`` rows are predicted as the
schedule of what the backend runs (:meth:`Predictor.native`). Both are in seconds here
and ``None`` when not available: for a native algorithm no commsim schedule models, when
the topology has fewer gpus than the run has ranks, or when the model or simulator
cannot answer (the reason is printed once, never raised).
"""

from __future__ import annotations

import functools
import sys

from commsim import collectives
from commsim import model as closed_form  # the class has a method named model
from commsim import topology as topo
from commsim.errors import CommsimError
from commsim.model.setup import executor_alpha, prediction_setting
from commsim.topology import warm


class Predictor:
    """Predictions on one topology for ``nranks`` ranks; notes say why any are missing."""

    def __init__(self, topology: str, nranks: int, warn=None, mode: str = "step") -> None:
        self.topology_name = topology
        self.nranks = nranks
        self.mode = mode
        self.gamma = 0.0  # seconds per byte reduced: the harness measures it on the ranks
        self.gamma_source = "measured"
        self.overlap = True  # can reductions overlap transfers (cores to spare)?
        self.overlap_known = False  # the profile said (its cores_per_rank)
        self.notes: list[str] = []
        self._warned: set = set()
        self._warn = warn or (lambda text: print(f"commsim bench: {text}", file=sys.stderr))
        self.graph = None
        self.alpha_beta: tuple[float, float] | None = None
        self.contention = 1.0  # a profile's: all ranks at once vs one pair alone
        self._models: dict = {}  # (native?, id of the topology or its warm view) -> model
        self.step_overhead = 0.0  # a profile's: commsim's executor, seconds a step
        self.message_overhead = 0.0  # and seconds a message
        self.exchange_overhead = None  # a step where ranks send and receive (None: a step's)
        self.exchange_latency = None  # the host's, reported (not charged)
        self.first_touch = 0.0  # a profile's: seconds a byte of fresh memory's first write
        self.drift = None  # the profile's ring shift timed again (commsim.bench.drift)
        # calls repeat on the same buffers back to back (bench's): a profile's warm rates
        # apply where their data stays in the cache (commsim.topology.warm)
        self.repeated = True
        G = topo.load(topology)  # a bad name or file is the user's to fix: it raises
        self.topology_name = G.graph.get("name", topology)
        measured = (G.graph.get("profile") or {}).get("nranks")
        if measured is not None and measured != nranks:
            raise CommsimError(f"--profile: {topology} was measured on {measured} ranks and this "
                               f"run has {nranks}; calibrate with {nranks} ranks "
                               f"(torchrun --nproc-per-node {nranks} -m commsim calibrate)")
        ngpus = len(topo.gpus(G))
        if ngpus < nranks:
            self.notes.append(f"topology {self.topology_name!r} has {ngpus} gpus for "
                              f"{nranks} ranks: no predictions")
            return
        self.graph = G
        self.step_overhead = float(topo.model_parameter(G, "step_overhead", 0.0))
        self.message_overhead = float(topo.model_parameter(G, "message_overhead", 0.0))
        self.exchange_overhead = topo.model_parameter(G, "exchange_overhead")
        self.exchange_latency = topo.model_parameter(G, "exchange_latency")
        self.contention = float(topo.model_parameter(G, "contention", 1.0))
        self.first_touch = float(topo.model_parameter(G, "first_touch", 0.0))
        self.overlap_known = topo.model_parameter(G, "cores_per_rank") is not None
        self.overlap = prediction_setting(G, mode)[1]
        try:
            alpha, beta = closed_form.alpha_beta(G, nranks)
            # a profile's measured executor overhead: every step of commsim's pays it
            self.alpha_beta = (alpha + executor_alpha(G), beta)
        except CommsimError as exc:
            self.notes.append(f"no model predictions: {exc}")

    def set_drift(self, drift: dict | None) -> None:
        """Record how this machine's ring shift compares with the profile's
        (:func:`commsim.bench.drift.measure`), and note it when it has moved."""
        from commsim.bench.drift import note

        self.drift = drift
        text = note(drift)
        if text:
            self.notes.append(text)

    def parameters(self) -> dict:
        """What the predictions assumed, for the config line: ``alpha`` (s, the profile's
        step overhead included), ``beta`` (s/byte, one pair alone) and ``gamma`` (s/byte;
        null when unknown), ``contention``, ``step_overhead``, ``exchange_overhead`` and
        ``message_overhead`` (s, commsim's executor: not charged to ``native`` rows),
        ``exchange_latency`` (s, the host's, reported: no prediction charges it),
        ``warm_gamma`` (s/byte: a profile's, for calls whose data stays in its cache;
        null otherwise), ``gamma_apart`` (s/byte: a profile's, for the reductions that
        commsim's executor writes apart from their operands out of place, :meth:`rates`;
        null otherwise), ``gamma_source``, ``mode``, ``overlap`` and ``drift`` (the
        profile's ring shift timed again: :mod:`commsim.bench.drift`; null without a
        profile)."""
        alpha, beta = self.alpha_beta or (None, None)
        warm_gamma = topo.model_parameter(self.graph, "warm_gamma")
        return {"alpha": alpha, "beta": beta, "gamma": self.gamma or None,
                "warm_gamma": warm_gamma if self.repeated else None,
                "gamma_apart": topo.model_parameter(self.graph, "gamma_apart"),
                "contention": self.contention, "step_overhead": self.step_overhead,
                "message_overhead": self.message_overhead,
                "exchange_overhead": self.exchange_overhead,
                "exchange_latency": self.exchange_latency,
                "gamma_source": self.gamma_source, "mode": self.mode, "overlap": self.overlap,
                "drift": self.drift}

    def native(self, backend: str, collective: str, nbytes: int, dtype_size: int,
               versions: dict, root: int, nnodes: int):
        """``(choice, schedule)``: what ``backend``'s own collective runs here
        (:func:`commsim.backends.native_as.native_as`) and the commsim schedule that models
        it, or ``None`` when none does (the reason is noted once)."""
        from commsim.backends.native_as import native_as

        try:
            choice = native_as(backend, collective, self.nranks, nbytes, dtype_size=dtype_size,
                               versions=versions, root=root, nnodes=nnodes)
        except CommsimError as exc:
            self._once(("native", collective), f"native {collective}: {exc}")
            return None, None
        try:
            return choice, native_schedule(choice, self.nranks)
        except CommsimError as exc:
            self._once(("native", collective), f"native {collective}: {exc}")
            return choice, None

    def native_extra(self, choice, nbytes: int = 0, out_of_place: bool = False) -> float:
        """Seconds a native collective of ``nbytes`` a rank pays beyond its schedule: the
        first touch of the scratch memory it maps each call (``choice.scratch`` bytes), at
        the profile's ``first_touch`` rate (0 without one), and out of place the copy of
        its input into its result (``choice.copy_out_of_place`` bytes) at the call's
        reduction rate (a copy, like an in-place add, reads two bytes and writes one for
        each byte: the destination's line is read before it is written)."""
        extra = float(getattr(choice, "scratch", 0) or 0) * self.first_touch
        copied = getattr(choice, "copy_out_of_place", 0) or 0
        if out_of_place and copied and self.graph is not None:
            extra += copied * self.for_call(nbytes, out_of_place)[1]
        return extra

    def for_call(self, nbytes: int, out_of_place: bool = False) -> tuple:
        """``(topology, gamma)`` to predict a call of ``nbytes`` a rank on: the profile's
        warm view and its gamma where some of the call's data stays in the cache
        (:mod:`commsim.topology.warm`; out of place, its input is one buffer more) and
        calls are :attr:`repeated`, else the topology and :attr:`gamma`."""
        if not self.repeated:
            return self.graph, self.gamma
        return warm.call(self.graph, nbytes, self.nranks, self.gamma,
                         warm.call_buffers(out_of_place))

    def rates(self, schedule, nbytes: int, native: bool = False,
              out_of_place: bool = False) -> tuple:
        """``(topology, gamma)`` for ``schedule`` as a call of ``nbytes`` a rank:
        :meth:`for_call`'s, and out of place on commsim's executor (not ``native``), the
        cold rate of a profile that measured reductions written into a third buffer
        (``gamma_apart``) for the share of the schedule's reductions that write apart
        from their operands (:func:`commsim.backends.plan.apart_share`; the rest add in
        place), mixed with the warm rate as :mod:`commsim.topology.warm` mixes it."""
        G, gamma = self.for_call(nbytes, out_of_place)
        apart = topo.model_parameter(self.graph, "gamma_apart")
        if native or not out_of_place or apart is None or schedule is None:
            return G, gamma
        from commsim.backends.plan import apart_share

        return G, warm.call_gamma(self.gamma, float(G.graph.get("warm", 0.0)),
                                  topo.model_parameter(self.graph, "warm_gamma"),
                                  apart_share(schedule), apart)

    def warm_share(self, nbytes: int, out_of_place: bool = False) -> float | None:
        """The share of a call's data that the profile's cache holds, as predicted
        (:func:`commsim.topology.warm.hit_fraction`; 0 where none does), or None without a
        topology."""
        if self.graph is None:
            return None
        return float(self.for_call(nbytes, out_of_place)[0].graph.get("warm", 0.0))

    def flat(self, nbytes: int) -> tuple:
        """``(alpha_beta, gamma)`` of the flat closed form for a call of ``nbytes`` a rank
        (what ``--chunks auto`` cuts by): :attr:`alpha_beta` and :attr:`gamma`, or the
        warm view's where the call's data stays in the cache."""
        G, gamma = self.for_call(nbytes)
        if G is self.graph or self.alpha_beta is None:
            return self.alpha_beta, gamma
        alpha, beta = closed_form.alpha_beta(G, self.nranks)
        return (alpha + executor_alpha(G), beta), gamma

    def _once(self, key, text: str) -> None:
        if key not in self._warned:
            self._warned.add(key)
            self.notes.append(text)
            self._warn(text)

    def model(self, schedule, nbytes: int, native: bool = False,
              out_of_place: bool = False) -> float | None:
        """Seconds from the model on the topology for ``schedule``, or None. ``native``:
        the backend's own collective, which pays none of commsim's executor overheads;
        ``out_of_place``: the call's input is a buffer of its own (:meth:`for_call`)."""
        if schedule is None or self.graph is None:
            return None
        try:
            G, gamma = self.rates(schedule, nbytes, native, out_of_place)
            tm = self._models.get((native, id(G)))
            if tm is None:
                from commsim.model.on_topology import TopologyModel

                tm = self._models[(native, id(G))] = TopologyModel(
                    G, self.nranks, **topo.executor_overheads(G, native))
            return float(tm.estimate(schedule, nbytes, gamma, self.mode, self.overlap).time)
        except Exception as exc:  # noqa: BLE001 - a prediction never stops a measurement
            self._once(("model", schedule.algorithm),
                       f"no model prediction for {schedule.algorithm}: {exc}")
            return None

    def sim(self, schedule, nbytes: int, native: bool = False,
            out_of_place: bool = False) -> float | None:
        """Seconds from the flow-level simulator for ``schedule``, or None (``native``
        and ``out_of_place``: as for :meth:`model`)."""
        if schedule is None or self.graph is None:
            return None
        try:
            from commsim.sim import simulate

            G, gamma = self.rates(schedule, nbytes, native, out_of_place)
            return float(simulate(
                schedule, G, nbytes, mode=self.mode, gamma=gamma,
                overlap=self.overlap, **topo.executor_overheads(G, native)).time)
        except Exception as exc:  # noqa: BLE001 - a prediction never stops a measurement
            self._once(("sim", schedule.algorithm),
                       f"no simulator prediction for {schedule.algorithm}: {exc}")
            return None


def native_schedule(choice, nranks: int):
    """The commsim schedule that models ``choice`` (a
    :class:`commsim.backends.native_as.NativeChoice`) on ``nranks`` ranks, or None when
    none does. Raises :class:`CommsimError` when it cannot be built."""
    if choice.algorithm is None:
        return None
    options = dict(choice.options)
    nchunks = options.pop("nchunks", None)
    return build_schedule(choice.collective, choice.algorithm, nranks, nchunks,
                          tuple(sorted(options.items())), choice.in_flight)


@functools.lru_cache(maxsize=64)
def build_schedule(collective, algorithm, nranks, nchunks, options: tuple,
                   in_flight: int = 1):
    """:func:`commsim.collectives.build`, cached: a sweep asks for the same schedule at
    many sizes. ``options`` is a sorted tuple of ``(name, value)`` pairs; ``in_flight``
    deals its pieces over that many connections a pair (:func:`collectives.in_flight`)."""
    return collectives.in_flight(
        collectives.build(collective, algorithm, nranks, nchunks, **dict(options)), in_flight)
