"""Measured against predicted: the numbers behind ``commsim compare``.

For every result row with status ``ok``, grouped by (collective, algorithm) across the
input files, and by place as a variant of the algorithm when both out-of-place and
in-place rows of the pair are present (``allreduce/ring out-of-place``; files written
before bench measured both count as what they ran, :func:`~commsim.bench.results.place_of`):

- measured busbw (the row's), and the busbw the model and the simulator predict:
  ``size / t x busbw_factor`` with the row's size and factor;
- the relative error of each prediction, ``(predicted - measured) / measured`` of the
  time, in %: negative when the prediction is faster than the measurement;
- a verdict per error: ``within 10%``, ``within 25%`` (``|error|`` at most that), else
  ``off``;
- the term that dominates the model at that size: :func:`commsim.model.predict` with one
  of alpha (latency), beta (bandwidth) and gamma (reduction) kept and the others zero,
  with the row's chunks and the run's execution mode. A profile's step overhead is part
  of alpha in the results file, so it counts as latency here.
"""

from __future__ import annotations

import statistics
from dataclasses import dataclass, field

from commsim import collectives, model
from commsim.bench.results import Run, place_of
from commsim.errors import CommsimError

WITHIN_10, WITHIN_25 = 10.0, 25.0
VERDICTS = ("within 10%", "within 25%", "off")
TERMS = ("latency", "bandwidth", "reduction")


def busbw_gbps(size: int, time_us: float | None, factor: float) -> float | None:
    """nccl-tests' bus bandwidth in GB/s of ``size`` bytes in ``time_us``; None without
    a positive time."""
    if time_us is None or time_us <= 0:
        return None
    return size / (time_us * 1e-6) * factor / 1e9


def rel_error(predicted_us: float | None, measured_us: float | None) -> float | None:
    """``(predicted - measured) / measured`` in %, or None when either is missing."""
    if predicted_us is None or measured_us is None or measured_us <= 0:
        return None
    return 100.0 * (predicted_us - measured_us) / measured_us


def verdict(error_pct: float | None) -> str | None:
    """``within 10%``, ``within 25%`` or ``off`` for an error in %; None for no error."""
    if error_pct is None:
        return None
    if abs(error_pct) <= WITHIN_10:
        return "within 10%"
    if abs(error_pct) <= WITHIN_25:
        return "within 25%"
    return "off"


def terms(collective: str, algorithm: str, nranks: int, size: int, prediction: dict | None,
          nchunks: int | None = None, warm: float | None = None, apart: bool = False,
          **options) -> dict[str, float] | None:
    """Seconds of each model term, ``{"latency", "bandwidth", "reduction"}``: the model
    with only alpha, only beta, only gamma (the others zero; gamma ``warm`` of the way to
    the profile's ``warm_gamma``, the row's share of data in the cache; for an
    out-of-place row, ``apart``, its schedule's reductions written apart at the profile's
    ``gamma_apart`` first, as bench priced them). None without a prediction (an older
    file), for native rows (their schedule's chunking is not in the row), or when the
    model has no formula for the algorithm."""
    from commsim.topology.warm import call_gamma

    if algorithm == "native" or not prediction or prediction.get("alpha") is None \
            or prediction.get("beta") is None:
        return None
    alpha, beta = float(prediction["alpha"]), float(prediction["beta"])
    gamma = float(prediction.get("gamma") or 0.0)
    mode = prediction.get("mode") or "step"
    overlap = bool(prediction.get("overlap", True))
    out = {}
    try:
        share = 0.0
        if apart and gamma and prediction.get("gamma_apart") is not None:
            from commsim.backends.plan import apart_share

            share = apart_share(collectives.build(collective, algorithm, nranks, nchunks,
                                                  **options))
        gamma = call_gamma(gamma, warm or 0.0, prediction.get("warm_gamma"), share,
                           prediction.get("gamma_apart"))
        for name, (a, b, g) in zip(TERMS, ((alpha, 0.0, 0.0), (0.0, beta, 0.0),
                                           (0.0, 0.0, gamma))):
            out[name] = float(model.predict(collective, algorithm, nranks, size, a, b, g,
                                            nchunks=nchunks, mode=mode, overlap=overlap,
                                            **options))
    except CommsimError:
        return None
    return out


def dominant(parts: dict[str, float] | None) -> tuple[str, float] | None:
    """The largest term and its share of the terms' sum; None when there is none."""
    if not parts:
        return None
    total = sum(parts.values())
    if total <= 0:
        return None
    name = max(parts, key=parts.get)
    return name, parts[name] / total


@dataclass
class Point:
    """One (file, size) of a group."""

    run: int  # index of the input file
    label: str  # the file's label
    size: int
    time_us: float
    busbw: float | None
    model_us: float | None
    sim_us: float | None
    model_busbw: float | None
    sim_busbw: float | None
    model_err: float | None
    sim_err: float | None
    model_verdict: str | None
    sim_verdict: str | None
    terms: dict[str, float] | None
    dominant: tuple[str, float] | None
    wrong: int = 0
    line: int = 0
    warm: float | None = None  # the share of the call's data a profile's cache held


@dataclass
class Summary:
    """One file's errors in a group: median ``|error|`` and sizes within 25%."""

    run: int
    label: str
    sizes: int
    model_median: float | None
    model_within25: int
    model_n: int
    sim_median: float | None
    sim_within25: int
    sim_n: int


@dataclass
class Group:
    collective: str
    algorithm: str
    points: list[Point] = field(default_factory=list)
    place: str | None = None  # set when the pair has rows of both places

    @property
    def name(self) -> str:
        return f"{self.collective}/{self.algorithm}" + (f" {self.place}" if self.place else "")

    @property
    def title(self) -> str:
        return f"{self.collective} / {self.algorithm}" + (f" ({self.place})" if self.place
                                                          else "")

    def runs(self) -> list[int]:
        return sorted({p.run for p in self.points})

    def sizes(self) -> list[int]:
        return sorted({p.size for p in self.points})

    def of_run(self, run: int) -> list[Point]:
        return sorted((p for p in self.points if p.run == run), key=lambda p: p.size)

    def has_predictions(self) -> bool:
        return any(p.model_us is not None or p.sim_us is not None for p in self.points)

    def summaries(self) -> list[Summary]:
        out = []
        for run in self.runs():
            pts = self.of_run(run)
            m = [abs(p.model_err) for p in pts if p.model_err is not None]
            s = [abs(p.sim_err) for p in pts if p.sim_err is not None]
            out.append(Summary(run=run, label=pts[0].label, sizes=len(pts),
                               model_median=statistics.median(m) if m else None,
                               model_within25=sum(e <= WITHIN_25 for e in m), model_n=len(m),
                               sim_median=statistics.median(s) if s else None,
                               sim_within25=sum(e <= WITHIN_25 for e in s), sim_n=len(s)))
        return out


@dataclass
class Skipped:
    label: str
    line: int
    collective: str
    algorithm: str
    size: int
    status: str
    note: str | None
    place: str | None = None


@dataclass
class Comparison:
    runs: list[Run]
    groups: list[Group]
    skipped: list[Skipped]


def _options(run: Run, row: dict) -> dict:
    """The build options that change a prediction: hierarchical's group size."""
    settings = run.config.get("config") or {}
    if row["algorithm"] == "hierarchical" and settings.get("group_size"):
        return {"group_size": settings["group_size"]}
    return {}


def point(run_index: int, run: Run, row: dict) -> Point:
    """A :class:`Point` from one ok result row of ``run``."""
    size, factor, t = row["size"], row["busbw_factor"], row["time_us"]
    model_us, sim_us = row["t_model_us"], row["t_sim_us"]
    parts = None
    if model_us is not None:
        parts = terms(row["collective"], row["algorithm"], row["nranks"], size,
                      run.prediction, row["nchunks"], row.get("warm"),
                      row.get("place") == "out-of-place", **_options(run, row))
    m_err, s_err = rel_error(model_us, t), rel_error(sim_us, t)
    measured = row["busbw_gbps"]
    if measured is None:
        measured = busbw_gbps(size, t, factor)
    return Point(run=run_index, label=run.label, size=size, time_us=t, busbw=measured,
                 model_us=model_us, sim_us=sim_us,
                 model_busbw=busbw_gbps(size, model_us, factor),
                 sim_busbw=busbw_gbps(size, sim_us, factor),
                 model_err=m_err, sim_err=s_err, model_verdict=verdict(m_err),
                 sim_verdict=verdict(s_err), terms=parts, dominant=dominant(parts),
                 wrong=int(row.get("wrong") or 0), line=row.get("_line", 0),
                 warm=row.get("warm"))


def compare(runs: list[Run]) -> Comparison:
    """Groups in order of first appearance; rows whose status is not ok are skipped. A
    (collective, algorithm) with rows of both places is two groups, one per place."""
    places: dict[tuple[str, str], set] = {}
    for run in runs:
        for row in run.rows:
            places.setdefault((row["collective"], row["algorithm"]), set()).add(place_of(row))
    groups: dict[tuple, Group] = {}
    order: dict[tuple, int] = {}
    skipped = []
    for i, run in enumerate(runs):
        for row in run.rows:
            pair = (row["collective"], row["algorithm"])
            place = place_of(row) if len(places[pair]) > 1 else None
            key = (*pair, place)
            order.setdefault(key, len(order))
            if row["status"] != "ok":
                skipped.append(Skipped(label=run.label, line=row.get("_line", 0),
                                       collective=row["collective"],
                                       algorithm=row["algorithm"], size=row["size"],
                                       status=row["status"], note=row.get("note"),
                                       place=row.get("place")))
                continue
            group = groups.setdefault(key, Group(*pair, place=place))
            group.points.append(point(i, run, row))
    for group in groups.values():
        group.points.sort(key=lambda p: (p.size, p.run))
    ordered = sorted(groups.values(),
                     key=lambda g: order[(g.collective, g.algorithm, g.place)])
    return Comparison(runs=runs, groups=ordered, skipped=skipped)
