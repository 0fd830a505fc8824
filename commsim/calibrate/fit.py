"""Robust fits of the Hockney alpha-beta-gamma model to measured timings.

Sizes are bytes, times seconds, ``alpha`` seconds per message, ``beta`` and ``gamma``
seconds per byte. Timings span many decades (8 B to 64 MiB), so every fit is relative:
each row is divided by its measured time, and the residuals that decide the robust
weights are relative residuals. Pure numpy; bad input raises :class:`CommsimError`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from commsim.errors import CommsimError

HUBER_K = 1.345  # 95% efficiency at the normal distribution
_MAD_TO_SIGMA = 0.6745
_SIGMA_FLOOR = 1e-12  # relative; keeps exact data from dividing by zero
LARGE_BYTES = 1 << 20  # beta is the slope from here up: bandwidth-bound sizes
SMALL_BYTES = 64 << 10  # alpha is the latency from here down: latency-bound sizes
RATE_LARGE_BYTES = 4 << 20  # gamma is the slope from here up: a reduction of 4 MiB takes
# about a millisecond, a scheduler's time slice, so where ranks share cores it shares them


@dataclass(frozen=True)
class Fit:
    """A robust linear fit ``y ~ X @ coef``.

    ``r2`` is the coefficient of determination of the final weighted problem (each point
    weighted by ``weight / y**2``, as the fit itself): ``1 - SS_res / SS_tot``, so outliers
    count only by their weight. ``residuals`` are ``y - X @ coef`` in the units of ``y``;
    ``rel_residuals`` divide them by the measured time.
    """

    names: tuple[str, ...]
    coef: tuple[float, ...]
    r2: float
    residuals: tuple[float, ...]
    rel_residuals: tuple[float, ...]
    weights: tuple[float, ...]
    npoints: int

    def __getitem__(self, name: str) -> float:
        if name not in self.names:
            raise KeyError(f"{name!r} is not a coefficient of this fit (have {self.names})")
        return self.coef[self.names.index(name)]

    @property
    def max_rel_residual(self) -> float:
        """The largest ``|relative residual|`` over all points, outliers included."""
        return max((abs(r) for r in self.rel_residuals), default=0.0)

    def as_dict(self) -> dict:
        """Coefficients, ``r2``, ``npoints`` and ``max_rel_residual`` as plain numbers."""
        out: dict = {n: float(c) for n, c in zip(self.names, self.coef)}
        out.update(r2=float(self.r2), npoints=int(self.npoints),
                   max_rel_residual=float(self.max_rel_residual))
        return out


def robust_linear(X, y, names: Sequence[str], *, loss: str = "huber", max_iter: int = 50,
                  nonnegative: Sequence[str] = (), scale=None) -> Fit:
    """Fit ``y ~ X @ coef`` by iteratively reweighted least squares with Huber weights.

    Each row is divided by ``scale`` (default ``y``, which must then be positive), so the
    fit minimises relative residuals; the robust scale is the median absolute deviation of
    those residuals and the tuning constant 1.345. ``loss="l2"`` is plain weighted least
    squares. A name in ``nonnegative`` whose coefficient comes out negative is fixed at 0
    and the rest refitted (most negative first, until none is).
    """
    X = np.asarray(X, dtype=float)
    y = np.asarray(y, dtype=float)
    names = tuple(names)
    if X.ndim != 2 or y.ndim != 1 or X.shape[0] != y.shape[0]:
        raise CommsimError(f"X: shape {X.shape} does not match y's {y.shape}; give one row per y")
    n, k = X.shape
    if len(names) != k or len(set(names)) != k:
        raise CommsimError(f"names: {names} must be {k} distinct names, one per column of X")
    if n < k:
        raise CommsimError(f"y: {n} points for {k} coefficients; measure more points")
    if not (np.all(np.isfinite(X)) and np.all(np.isfinite(y))):
        raise CommsimError("X, y: values must be finite; drop the failed measurements")
    s = y.copy() if scale is None else np.broadcast_to(np.asarray(scale, dtype=float), y.shape)
    if not np.all(np.isfinite(s) & (s > 0)):
        field = "y" if scale is None else "scale"
        raise CommsimError(f"{field}: a relative fit needs finite positive values; drop the rest")
    if loss not in ("huber", "l2"):
        raise CommsimError(f"loss: {loss!r} is not a loss; use 'huber' or 'l2'")
    if max_iter < 1:
        raise CommsimError(f"max_iter: {max_iter} must be at least 1")
    bad = [name for name in nonnegative if name not in names]
    if bad:
        raise CommsimError(f"nonnegative: {bad} are not among the names {names}")
    if _rank(X) < k:
        raise CommsimError(f"X: the columns {names} are linearly dependent; vary them apart")

    A, b = X / s[:, None], y / s
    free = list(range(k))
    while True:
        coef, w = _irls(A, b, free, loss, max_iter)
        negative = [i for i in free if names[i] in nonnegative and coef[i] < 0]
        if not negative:
            break
        free.remove(min(negative, key=lambda i: coef[i]))

    rel = b - A @ coef
    v = w / s**2
    ybar = np.sum(v * y) / np.sum(v)
    ss_res, ss_tot = float(np.sum(w * rel**2)), float(np.sum(v * (y - ybar) ** 2))
    if ss_tot > 1e-24 * float(np.sum(v * y**2)):
        r2 = 1.0 - ss_res / ss_tot
    else:  # all points equal: perfect iff nothing is left over
        r2 = 1.0 if ss_res <= 1e-24 * n else 0.0
    return Fit(names=names, coef=tuple(float(c) for c in coef), r2=r2,
               residuals=tuple(float(r) for r in rel * s),
               rel_residuals=tuple(float(r) for r in rel),
               weights=tuple(float(x) for x in w), npoints=n)


def _irls(A, b, free, loss, max_iter):
    """Coefficients (0 where not free) and final weights of the relative problem."""
    coef, w = np.zeros(A.shape[1]), np.ones(len(b))
    for _ in range(max_iter):
        if free:
            sw = np.sqrt(w)
            coef[free] = np.linalg.lstsq(A[:, free] * sw[:, None], b * sw, rcond=None)[0]
        if loss == "l2":
            break
        r = b - A @ coef
        sigma = max(np.median(np.abs(r - np.median(r))) / _MAD_TO_SIGMA, _SIGMA_FLOOR)
        u = np.abs(r) / (HUBER_K * sigma)
        new = 1.0 / np.maximum(u, 1.0)
        done = np.max(np.abs(new - w)) < 1e-9
        w = new
        if done:
            break
    return coef, w


def _rank(X) -> int:
    """Rank with each column scaled to unit norm (bytes and ones differ by 1e8)."""
    norms = np.linalg.norm(X, axis=0)
    return int(np.linalg.matrix_rank(X / np.where(norms > 0, norms, 1.0)))


def _series(sizes, seconds, what: str) -> tuple[np.ndarray, np.ndarray]:
    x = np.asarray(sizes, dtype=float).ravel()
    t = np.asarray(seconds, dtype=float).ravel()
    if x.shape != t.shape:
        raise CommsimError(f"{what} seconds: {t.size} times for {x.size} sizes; "
                           "give one time per size")
    if not np.all(np.isfinite(x) & (x >= 0)):
        raise CommsimError(f"{what} sizes: every size must be a finite number of bytes >= 0")
    if not np.all(np.isfinite(t) & (t > 0)):
        i = int(np.flatnonzero(~(np.isfinite(t) & (t > 0)))[0])
        raise CommsimError(f"{what} seconds: time #{i} is {t[i]}; every time must be a finite "
                           "positive number of seconds (drop failed runs)")
    distinct = np.unique(x).size
    if distinct < 3:
        raise CommsimError(f"{what} sizes: {distinct} distinct sizes; measure at least 3")
    return x, t


def _line(sizes, seconds, what: str, names: tuple[str, str]) -> Fit:
    x, t = _series(sizes, seconds, what)
    fit = robust_linear(np.column_stack([np.ones_like(x), x]), t, names,
                        nonnegative=(names[0],))
    if fit[names[1]] <= 0:
        raise CommsimError(f"{what}: time does not grow with size ({names[1]} <= 0); "
                           "measure larger sizes")
    return fit


def fit_alpha_beta(sizes, seconds, what: str = "link") -> Fit:
    """``t = alpha + beta * bytes``: alpha in seconds (>= 0), beta in seconds per byte (> 0).

    Hockney's two regimes, each fitted where it shows: ``beta`` is the slope of a robust
    fit over the sizes of at least :data:`LARGE_BYTES` (the asymptotic cost per byte,
    which caches and wake-up latencies do not bend), ``alpha`` a robust relative fit of
    ``t - beta * bytes`` over the sizes of at most :data:`SMALL_BYTES` (the small-message
    latency).
    With fewer than 3 large or 2 small sizes, one fit over every size gives both.
    Residuals and ``r2`` are over every point.
    """
    return _two_regimes(sizes, seconds, what, ("alpha", "beta"), LARGE_BYTES,
                        SMALL_BYTES + 1, 2)


def _two_regimes(sizes, seconds, what: str, names: tuple[str, str], large_bytes: int,
                 small_below: int, nsmall: int) -> Fit:
    """The slope ``names[1]`` over the sizes of at least ``large_bytes``, the intercept
    ``names[0]`` (>= 0) over those below ``small_below``; one fit over every size unless
    there are 3 large and ``nsmall`` small sizes."""
    x, t = _series(sizes, seconds, what)
    large, small = x >= large_bytes, x < small_below
    whole = _line(x, t, what, names)  # raises unless time grows with size
    if np.unique(x[large]).size < 3 or np.unique(x[small]).size < nsmall:
        return whole
    slope = _line(x[large], t[large], what, names)[names[1]]
    rest = t[small] - slope * x[small]
    first = robust_linear(np.ones((rest.size, 1)), rest, (names[0],), scale=t[small],
                          nonnegative=(names[0],))[names[0]]
    return _assemble(names, (first, slope), np.column_stack([np.ones_like(x), x]), t)


def _assemble(names, coef, X, y) -> Fit:
    """A :class:`Fit` of fixed ``coef`` over every row, each weighted as the robust fit
    would weigh it (Huber, on its relative residual)."""
    rel = (y - X @ np.asarray(coef)) / y
    sigma = max(np.median(np.abs(rel - np.median(rel))) / _MAD_TO_SIGMA, _SIGMA_FLOOR)
    w = 1.0 / np.maximum(np.abs(rel) / (HUBER_K * sigma), 1.0)
    v = w / y**2
    ybar = np.sum(v * y) / np.sum(v)
    ss_tot = float(np.sum(v * (y - ybar) ** 2))
    r2 = 1.0 - float(np.sum(w * rel**2)) / ss_tot if ss_tot > 0 else 1.0
    return Fit(names=tuple(names), coef=tuple(float(c) for c in coef), r2=r2,
               residuals=tuple(float(r) for r in rel * y),
               rel_residuals=tuple(float(r) for r in rel),
               weights=tuple(float(v) for v in w), npoints=len(y))


def fit_rate(sizes, seconds, what: str = "reduction") -> Fit:
    """``t = overhead + gamma * bytes``: overhead in seconds (>= 0), gamma in seconds per byte.

    As for links, ``gamma`` is the asymptotic cost per byte: the slope over the sizes of
    at least :data:`RATE_LARGE_BYTES`, ``overhead`` from the smaller ones (one fit over
    every size with fewer than 3 such sizes or none smaller). A reduction that ends
    within the scheduler's time slice runs at a whole core's rate even where ranks share
    cores: on the 2-core machine 4 ranks at once added 64 KiB to 1 MiB at 1.6 to 5 GB/s
    each and 16 to 64 MiB at 1.3 to 2.1 GB/s. One fit over every size, in relative terms,
    gave 2.2 to 3.7 GB/s, and charged the reductions of collectives of MiBs down to half
    what they cost there (docs/calibrate.md).
    """
    return _two_regimes(sizes, seconds, what, ("overhead", "gamma"), RATE_LARGE_BYTES,
                        RATE_LARGE_BYTES, 1)


def fit_costs(columns, extra, seconds, names: Sequence[str], what: str = "overhead") -> Fit:
    """Fixed costs the model leaves out, fitted to what it leaves unexplained:
    ``extra ~ columns @ costs``, every cost in seconds and >= 0.

    ``columns[i][j]``: how many seconds operation ``i``'s predicted time grows per second
    of cost ``j`` (the cost's count on the critical path, as the model charges it: steps,
    exchange steps, messages); ``extra[i]``: its measured time less the model's with
    every cost 0 (may be negative: noise); ``seconds[i]``: its measured time, which
    scales the residuals (a relative fit, Huber-weighted). A cost whose counts are a
    combination of earlier ones' is 0: what is known is their sum, which the earlier
    ones carry."""
    X = np.asarray(columns, dtype=float)
    e = np.asarray(extra, dtype=float).ravel()
    t = np.asarray(seconds, dtype=float).ravel()
    names = tuple(names)
    if X.ndim != 2 or X.shape[1] != len(names) or not X.shape[0] == e.size == t.size:
        raise CommsimError(f"{what} seconds: {t.size} times, {e.size} residuals and "
                           f"{X.shape[0] if X.ndim == 2 else '?'} rows of counts for "
                           f"{names}; give one of each per operation")
    if t.size < max(3, len(names)):
        raise CommsimError(f"{what} seconds: {t.size} timings; time at least "
                           f"{max(3, len(names))} operations")
    if not (np.all(np.isfinite(X)) and np.all(X >= 0)):
        raise CommsimError(f"{what} counts: every count must be a finite number >= 0")
    if not np.all(np.isfinite(t) & (t > 0)):
        raise CommsimError(f"{what} seconds: every time must be a finite positive number "
                           "of seconds (drop failed runs)")
    if not np.all(np.isfinite(e)):
        raise CommsimError(f"{what} seconds: every residual must be finite")
    keep: list[int] = []
    for j in range(X.shape[1]):
        if _rank(X[:, keep + [j]]) > len(keep):
            keep.append(j)
    if not keep:
        raise CommsimError(f"{what} counts: no operation has any of {', '.join(names)}; "
                           "time operations with steps and messages")
    # a cost whose counts follow from the others' (messages one per step, as a step-mode
    # executor sends them) cannot be told apart: the model charges them together, and
    # the earlier names carry the sum
    fit = robust_linear(X[:, keep], e, [names[j] for j in keep], scale=t,
                        nonnegative=[names[j] for j in keep])
    coef = [fit.coef[keep.index(j)] if j in keep else 0.0 for j in range(len(names))]
    return Fit(names=names, coef=tuple(coef), r2=fit.r2, residuals=fit.residuals,
               rel_residuals=fit.rel_residuals, weights=fit.weights, npoints=fit.npoints)


def contention(beta_alone: float, beta_together: float) -> float:
    """``beta_together / beta_alone`` (both seconds per byte), at least 1.0: all ranks
    exchanging at once cannot beat one pair alone, so a ratio below 1 is noise."""
    for field, value in (("beta_alone", beta_alone), ("beta_together", beta_together)):
        if not (np.isfinite(value) and value > 0):
            raise CommsimError(f"{field}: {value} must be a positive number of seconds per byte")
    return max(1.0, beta_together / beta_alone)


WARM_MIN_POINTS = 2  # sizes that fit the cache and are bandwidth-bound, for a warm speedup


def warm_speedup(sizes, seconds, alpha: float, beta: float, warm) -> float | None:
    """How much faster transfers whose buffers stay in the cache ran than ``alpha`` +
    ``bytes * beta`` says: over the sizes ``warm(size)`` says fit and whose bytes take at
    least ``alpha`` at ``beta`` (bandwidth-bound), the median of ``bytes * beta /
    (seconds - alpha)``, at least 1 (a cache never slows a copy: below 1 is noise, or
    latency the line leaves out). None with fewer than :data:`WARM_MIN_POINTS` sizes."""
    ratios = [x * beta / (t - alpha) for x, t in zip(sizes, seconds)
              if warm(x) and x * beta >= alpha and t > alpha]
    if len(ratios) < WARM_MIN_POINTS:
        return None
    return max(1.0, float(np.median(ratios)))
