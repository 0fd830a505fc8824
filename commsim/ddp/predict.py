"""What the model and the simulator predict for each bucket, and for the whole step.

Reuses :class:`commsim.bench.predictions.Predictor` as ``commsim bench`` sets it up: the
topology or profile (default ``localhost``, nominal numbers), the reduction cost per
byte measured on the ranks (or the profile's) and whether reductions can overlap
transfers. A bucket of ``n`` bytes is predicted as an allreduce of ``n`` bytes with the
algorithm that ran: ``--comm native`` as the schedule of what the backend runs
(:meth:`Predictor.native`), otherwise the very commsim schedule of the hook. Seconds;
``None`` where the Predictor has no answer (its notes say why).

Per step (:func:`expect`): the baseline's compute (measured with the no-op hook) plus
the communication that the predicted bucket times leave exposed when each bucket starts
as its gradients are ready (:func:`commsim.ddp.metrics.pipeline`), and the
communication that perfect overlap would hide.
"""

from __future__ import annotations

import sys

from commsim.bench.predictions import Predictor
from commsim.ddp import metrics


def make_predictor(topology: str, comm, lead: bool, mode: str) -> Predictor:
    """A Predictor for ``comm``'s ranks, set up like bench's. Call it on every rank (it
    measures the reduction rate and the cores with collectives); only rank 0 warns."""
    from commsim.bench.config import resolve_dtype
    from commsim.bench.harness import cores_to_spare, reduction_gamma
    from commsim.topology import model_parameter

    predictor = Predictor(topology, comm.size, warn=_warn if lead else (lambda text: None),
                          mode=mode)
    profiled = model_parameter(predictor.graph, "gamma")
    predictor.gamma = profiled if profiled is not None else \
        reduction_gamma(comm, resolve_dtype("float32"))
    predictor.gamma_source = "profile" if profiled is not None else "measured"
    predictor.overlap = cores_to_spare(comm)
    # a training step's forward and backward passes run between two calls on a bucket:
    # its data is not in the cache as a benchmark's repeated calls find theirs
    predictor.repeated = False
    return predictor


def _warn(text: str) -> None:
    print(f"commsim ddp: {text}", file=sys.stderr)


class BucketPredictions:
    """``(t_model, t_sim)`` in seconds for a bucket of ``nbytes``, cached per size."""

    def __init__(self, predictor: Predictor, comm: str, schedule, backend: str,
                 versions: dict, nnodes: int) -> None:
        self.predictor, self.comm, self.schedule = predictor, comm, schedule
        self.backend, self.versions, self.nnodes = backend, versions, nnodes
        self.native_as: str | None = None
        self._cache: dict[int, tuple] = {}

    def __call__(self, nbytes: int) -> tuple[float | None, float | None]:
        if nbytes not in self._cache:
            self._cache[nbytes] = self._predict(nbytes)
        return self._cache[nbytes]

    def _predict(self, nbytes: int):
        if self.predictor.nranks < 2:
            return 0.0, 0.0  # one rank communicates nothing
        native = self.comm == "native"
        schedule = self.schedule
        if native:
            choice, schedule = self.predictor.native(self.backend, "allreduce", nbytes, 4,
                                                     self.versions, 0, self.nnodes)
            self.native_as = choice and choice.name
        return (self.predictor.model(schedule, nbytes, native),
                self.predictor.sim(schedule, nbytes, native))

    @staticmethod
    def best(t_model: float | None, t_sim: float | None) -> float | None:
        """The prediction efficiency is measured against: the simulator's, else the
        model's (as bench's eff%)."""
        return t_sim if t_sim is not None else t_model


def expect(baseline: list[dict], durations: list[float | None], synchronous: bool) -> dict:
    """A step as theory expects it, from the baseline's steps (compute only, buckets in
    the training run's layout) and each bucket's predicted time (``None``: unknown).

    The backward's compute ends when the last bucket is ready (the rest of
    ``loss.backward()`` is DDP waiting for and writing back the buckets), so the last
    bucket's communication can never be hidden. ``comm``: the predicted communication;
    ``hideable``: what perfect overlap would hide (everything but the last bucket, as far
    as it fits between the first and the last bucket's readiness); ``exposed``: what the
    in-order pipeline leaves exposed (all of it for a synchronous hook); ``step``: the
    baseline step plus ``exposed``; ``starts``: each bucket's predicted start since the
    backward began. Seconds; all None when a bucket has no prediction."""
    total = metrics.median(baseline, "total")
    forward = metrics.median(baseline, "forward")
    ready = [b["launch"] - forward for b in metrics.bucket_medians(baseline)]
    if not ready or any(d is None for d in durations) or len(ready) != len(durations):
        return {"comm": None, "hideable": None, "exposed": None, "step": None, "starts": None}
    comm = float(sum(durations))
    last = max(range(len(ready)), key=lambda j: ready[j])
    hideable = min(comm - durations[last], ready[last] - min(ready))
    starts, _, exposed = metrics.pipeline(ready, durations, ready[last], not synchronous)
    order = sorted(range(len(ready)), key=lambda j: ready[j])
    by_bucket = [0.0] * len(ready)
    for j, s in zip(order, starts):
        by_bucket[j] = s
    return {"comm": comm, "hideable": hideable, "exposed": exposed, "step": total + exposed,
            "starts": by_bucket}
