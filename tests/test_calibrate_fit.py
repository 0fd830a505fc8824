"""The calibration fits: recover known alpha, beta, gamma and executor costs from noisy
synthetic timings, shrug off gross outliers, and reject bad input with one-line errors."""

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from commsim.calibrate.fit import (
    contention,
    fit_alpha_beta,
    fit_costs,
    fit_rate,
    robust_linear,
    warm_speedup,
)
from commsim.errors import CommsimError

# 8 B .. 32 MiB in x4 steps plus 64 MiB, each size timed 3 times (as calibrate repeats runs).
SIZES = np.repeat(np.append(8 * 4.0 ** np.arange(12), 64 * 2**20), 3)
NOISE = 0.03  # sigma of the multiplicative lognormal noise

alphas = st.floats(1e-6, 200e-6)
bandwidths = st.floats(0.1e9, 100e9)  # bytes per second
seeds = st.integers(0, 2**32 - 1)


def _timings(alpha, beta, seed, sizes=SIZES):
    rng = np.random.default_rng(seed)
    return (alpha + beta * sizes) * rng.lognormal(0.0, NOISE, sizes.size)


def _close(got, want, rel):
    return abs(got - want) <= rel * want


@settings(max_examples=40, deadline=None)
@given(alphas, bandwidths, seeds)
def test_fit_alpha_beta_recovers_alpha_and_beta_from_noisy_timings(alpha, bw, seed):
    fit = fit_alpha_beta(SIZES, _timings(alpha, 1 / bw, seed))
    assert _close(fit["beta"], 1 / bw, 0.10), (fit["beta"], 1 / bw)
    assert _close(fit["alpha"], alpha, 0.25), (fit["alpha"], alpha)
    assert fit.npoints == SIZES.size and fit.names == ("alpha", "beta")


@settings(max_examples=40, deadline=None)
@given(alphas, bandwidths, seeds, st.lists(st.integers(0, SIZES.size - 1), min_size=2,
                                           max_size=2, unique=True))
def test_two_gross_outliers_get_the_smallest_weights_and_do_not_move_the_fit(
        alpha, bw, seed, outliers):
    t = _timings(alpha, 1 / bw, seed)
    t[outliers] *= 10
    fit = fit_alpha_beta(SIZES, t)
    assert _close(fit["beta"], 1 / bw, 0.10), (fit["beta"], 1 / bw)
    assert _close(fit["alpha"], alpha, 0.25), (fit["alpha"], alpha)
    w = np.array(fit.weights)
    assert set(np.argsort(w)[:2]) == set(outliers)
    assert w[outliers].max() < 0.25


@settings(max_examples=30, deadline=None)
@given(st.floats(0.5e-6, 10e-6), st.floats(1e9, 100e9), seeds)
def test_fit_rate_recovers_gamma(overhead, rate, seed):
    fit = fit_rate(SIZES, _timings(overhead, 1 / rate, seed))
    assert fit.names == ("overhead", "gamma")
    assert _close(fit["gamma"], 1 / rate, 0.10), (fit["gamma"], 1 / rate)
    assert _close(fit["overhead"], overhead, 0.25), (fit["overhead"], overhead)


@settings(max_examples=30, deadline=None)
@given(st.floats(1e9, 20e9), st.floats(1.5, 4.0), seeds)
def test_fit_rate_is_the_large_sizes_rate_where_small_reductions_run_faster(rate, faster,
                                                                           seed):
    """Ranks sharing cores: a reduction that ends within a time slice runs ``faster``;
    gamma is what the large ones cost, the rate a collective of MiBs pays."""
    from commsim.calibrate.fit import RATE_LARGE_BYTES
    from commsim.calibrate.measure import REDUCE_SIZES

    sizes = np.repeat(np.array(REDUCE_SIZES, dtype=float), 3)
    per_byte = np.where(sizes >= RATE_LARGE_BYTES, 1 / rate, 1 / rate / faster)
    noise = np.random.default_rng(seed).lognormal(0, 0.02, sizes.size)
    fit = fit_rate(sizes, (2e-6 + per_byte * sizes) * noise)
    assert _close(fit["gamma"], 1 / rate, 0.10), (fit["gamma"], 1 / rate)
    assert fit["overhead"] >= 0


# rings (every step an exchange) at 1, 2 and 4 pieces, rhd, and trees (one-way steps and
# a few exchanges): (one-way steps, exchange steps, messages) on the critical path
CASES = np.array([(0, 2, 2), (0, 2, 4), (0, 2, 8), (0, 2, 2), (0, 2, 4), (2, 0, 1),
                  (4, 0, 2), (4, 2, 6)], dtype=float)
NAMES = ("per_step", "per_exchange", "per_message")


def _costs_data(costs, seed, network=2e-4):
    """Each case at three sizes: the model's time without costs (``network`` s at the
    smallest, x10 and x100 above), and a measured time of that plus the costs, noisy."""
    X = np.repeat(CASES, 3, axis=0)
    t0 = network * np.tile([1.0, 10.0, 100.0], len(CASES))
    rng = np.random.default_rng(seed)
    t = (t0 + X @ np.asarray(costs)) * rng.lognormal(0, NOISE, t0.size)
    return X, t - t0, t


@settings(max_examples=30, deadline=None)
@given(st.floats(0.0, 50e-6), st.floats(20e-6, 2e-3), st.floats(2e-6, 200e-6), seeds)
def test_fit_costs_recovers_each_kind_of_step_and_a_message(per_step, per_exchange,
                                                            per_message, seed):
    """What the model leaves unexplained, over operations whose one-way steps, exchanges
    and messages vary apart: each cost recovered to within 10% of itself plus 3% noise's
    reach (a quarter of the smallest operation's time: 300 random draws needed 15%)."""
    X, extra, t = _costs_data((per_step, per_exchange, per_message), seed)
    fit = fit_costs(X, extra, t, NAMES)
    assert fit.names == NAMES
    tol = 0.25 * min(t)
    for name, want in zip(NAMES, (per_step, per_exchange, per_message)):
        assert abs(fit[name] - want) <= tol + 0.1 * want, (name, fit[name], want)


def test_fits_of_clean_data_are_exact_with_r2_one():
    ab = fit_alpha_beta(SIZES, 10e-6 + SIZES / 25e9)
    assert ab["alpha"] == pytest.approx(10e-6, rel=1e-9)
    assert ab["beta"] == pytest.approx(1 / 25e9, rel=1e-9)
    assert ab.r2 == pytest.approx(1.0, abs=1e-12)
    assert max(abs(r) for r in ab.rel_residuals) < 1e-9
    X = np.repeat(CASES, 3, axis=0)
    extra = X @ [3e-6, 40e-6, 2e-6]
    oh = fit_costs(X, extra, 1e-3 + extra, NAMES)
    assert oh["per_step"] == pytest.approx(3e-6, rel=1e-9)
    assert oh["per_exchange"] == pytest.approx(40e-6, rel=1e-9)
    assert oh["per_message"] == pytest.approx(2e-6, rel=1e-9)


def test_r2_is_near_one_for_clean_data_and_drops_with_noise():
    clean = 10e-6 + SIZES / 25e9
    r2 = [fit_alpha_beta(SIZES, clean * np.random.default_rng(0).lognormal(0, s, SIZES.size)).r2
          for s in (0.0, 0.03, 0.3)]
    assert r2[0] > 1 - 1e-12
    assert 0.99 < r2[1] < r2[0] - 1e-4
    assert r2[2] < r2[1] - 0.02


def test_r2_is_one_for_constant_data_fitted_exactly():
    fit = robust_linear(np.ones((4, 1)), [2.0] * 4, ["c"])
    assert fit["c"] == pytest.approx(2.0) and fit.r2 == 1.0


def test_nonnegative_coefficients_are_fixed_at_zero_and_the_rest_refitted():
    sizes = np.array([1e6, 2e6, 4e6, 8e6])
    t = -50e-6 + sizes / 10e9  # a negative intercept: the unconstrained fit keeps it
    X = np.column_stack([np.ones_like(sizes), sizes])
    free = robust_linear(X, t, ["alpha", "beta"])
    assert free["alpha"] == pytest.approx(-50e-6, rel=1e-6)
    kept = robust_linear(X, t, ["alpha", "beta"], nonnegative=["alpha"])
    assert kept["alpha"] == 0.0
    assert kept["beta"] > 0 and kept["beta"] != pytest.approx(1 / 10e9, rel=1e-3)
    ab = fit_alpha_beta(sizes, t)
    assert ab["alpha"] == 0.0 and ab["beta"] == pytest.approx(kept["beta"])


def test_fit_reports_residuals_and_a_plain_dict():
    t = 10e-6 + SIZES / 25e9
    t[5] *= 3
    fit = fit_alpha_beta(SIZES, t)
    pred = fit["alpha"] + fit["beta"] * SIZES
    np.testing.assert_allclose(fit.residuals, t - pred, rtol=1e-9, atol=1e-18)
    np.testing.assert_allclose(fit.rel_residuals, (t - pred) / t, rtol=1e-9, atol=1e-12)
    d = fit.as_dict()
    assert set(d) == {"alpha", "beta", "r2", "npoints", "max_rel_residual"}
    assert d["max_rel_residual"] == pytest.approx(2 / 3, rel=1e-6)
    assert d["npoints"] == SIZES.size and d["beta"] == fit["beta"]
    assert json.loads(json.dumps(d)) == d
    with pytest.raises(KeyError):
        fit["gamma"]


def test_contention_is_the_ratio_clamped_at_one():
    assert contention(1e-10, 3e-10) == pytest.approx(3.0)
    assert contention(1e-10, 0.8e-10) == 1.0
    _rejects(contention, 0.0, 1e-10, field="beta_alone", fix="positive")
    _rejects(contention, float("nan"), 1e-10, field="beta_alone", fix="positive")
    _rejects(contention, 1e-10, -1e-10, field="beta_together", fix="positive")


def _rejects(fn, *args, field, fix=""):
    with pytest.raises(CommsimError) as info:
        fn(*args)
    msg = str(info.value)
    assert "\n" not in msg and field in msg and fix in msg, msg


SMALL = [8, 64, 512, 4096]
GOOD = [1e-5, 1.1e-5, 1.5e-5, 4e-5]


@pytest.mark.parametrize("fn,name", [(fit_alpha_beta, "beta"), (fit_rate, "gamma")])
def test_line_fits_reject_bad_timings(fn, name):
    fn(SMALL, GOOD)  # the good series passes
    _rejects(fn, [8, 8, 64, 64], GOOD, field="sizes", fix="at least 3")
    _rejects(fn, SMALL, GOOD[:3], field="seconds", fix="one time per size")
    _rejects(fn, SMALL, [1e-5, float("nan"), 2e-5, 3e-5], field="seconds", fix="positive")
    _rejects(fn, SMALL, [1e-5, float("inf"), 2e-5, 3e-5], field="seconds", fix="positive")
    _rejects(fn, SMALL, [1e-5, 0.0, 2e-5, 3e-5], field="seconds", fix="positive")
    _rejects(fn, SMALL, [1e-5, -1e-5, 2e-5, 3e-5], field="seconds", fix="positive")
    _rejects(fn, [8, -64, 512, 4096], GOOD, field="sizes")
    with pytest.raises(CommsimError) as info:
        fn(SMALL, GOOD[::-1], what="nic")
    assert str(info.value) == (f"nic: time does not grow with size ({name} <= 0); "
                               "measure larger sizes")


def test_costs_that_cannot_be_told_apart_are_carried_by_the_earlier_name():
    """Messages one per step (a step-mode executor): the step carries both costs."""
    X = np.array([[1, 0, 1], [2, 0, 2], [0, 2, 2], [0, 4, 4]], dtype=float)
    fit = fit_costs(X, X @ [3e-6, 40e-6, 2e-6], np.full(4, 1e-3), NAMES)
    assert fit.coef == pytest.approx((5e-6, 42e-6, 0.0), rel=1e-9)


def test_fit_costs_rejects_too_few_points_and_counts_all_zero():
    X = [[1, 1], [2, 4], [4, 4]]
    fit_costs(X, [1e-5, 3e-5, 4e-5], [2e-5, 5e-5, 7e-5], ("a", "b"))  # passes
    _rejects(fit_costs, X[:2], [1e-5, 3e-5], [2e-5, 5e-5], ("a", "b"), field="overhead",
             fix="3")
    _rejects(fit_costs, [[0, 0], [0, 0], [0, 0]], [1e-5, 3e-5, 4e-5], [2e-5, 4e-5, 8e-5],
             ("a", "b"), field="counts", fix="steps and messages")
    _rejects(fit_costs, X, [1e-5, 3e-5], [2e-5, 5e-5, 7e-5], ("a", "b"), field="seconds")
    _rejects(fit_costs, X, [1e-5, 3e-5, 4e-5], [2e-5, 0.0, 7e-5], ("a", "b"),
             field="seconds")
    _rejects(fit_costs, [[1, -1], [2, 4], [4, 4]], [1e-5, 3e-5, 4e-5], [2e-5, 5e-5, 7e-5],
             ("a", "b"), field="counts")
    _rejects(fit_costs, X, [1e-5, float("nan"), 4e-5], [2e-5, 5e-5, 7e-5], ("a", "b"),
             field="seconds")


def test_robust_linear_rejects_bad_arguments():
    X, y = np.column_stack([np.ones(4), np.arange(4.0)]), np.arange(1.0, 5.0)
    _rejects(robust_linear, X, y, ["a"], field="names")
    _rejects(robust_linear, X, y[:3], ["a", "b"], field="X")
    _rejects(robust_linear, X, -y, ["a", "b"], field="y", fix="positive")
    _rejects(robust_linear, np.column_stack([X[:, 1], 2 * X[:, 1]]), y, ["a", "b"],
             field="X", fix="linearly dependent")
    with pytest.raises(CommsimError, match="loss"):
        robust_linear(X, y, ["a", "b"], loss="cauchy")
    with pytest.raises(CommsimError, match="nonnegative"):
        robust_linear(X, y, ["a", "b"], nonnegative=["c"])


def test_median_of_means_keeps_common_ticks_and_drops_a_lone_stall():
    from commsim.calibrate.measure import median_of_means

    calm = [1.0] * 60
    assert median_of_means(calm) == 1.0
    stalled = calm[:30] + [31.0] + calm[31:]          # one call in 60 waits 30 s more
    assert median_of_means(stalled) == 1.0            # the plain mean would be 1.5
    ticks = [5.0 if i % 4 == 0 else 1.0 for i in range(60)]   # every group pays them
    assert median_of_means(ticks) == pytest.approx(np.mean(ticks))
    assert median_of_means([2.0, 4.0]) == 3.0         # fewer values than groups


@given(st.floats(1.0, 3.0), st.integers(0, 2**16))
def test_warm_speedup_recovers_how_much_faster_sizes_that_fit_the_cache_ran(speedup, seed):
    """Sizes up to 2 MiB fit the cache and run ``speedup`` times faster a byte than the
    line; the latency-bound and the cold sizes do not count."""
    rng = np.random.default_rng(seed)
    alpha, beta = 20e-6, 1 / 4e9
    sizes = [8 * 4**i for i in range(12)] + [64 << 20]
    fits = lambda n: n <= 2 << 20   # noqa: E731
    # 0.5% noise on the time: at 128 KiB, whose bytes take about alpha, the ratio moves
    # 1.6 times as much
    seconds = [(alpha + n * beta / (speedup if fits(n) else 1.0)) * rng.lognormal(0, 0.005)
               for n in sizes]
    assert warm_speedup(sizes, seconds, alpha, beta, fits) == pytest.approx(speedup, rel=0.05)


def test_warm_speedup_needs_two_bandwidth_bound_sizes_and_is_never_below_one():
    alpha, beta = 20e-6, 1 / 4e9
    sizes = [8, 4096, 512 << 10, 2 << 20]
    slow = [alpha + 2 * n * beta for n in sizes]   # the fitting sizes ran slower: noise
    assert warm_speedup(sizes, slow, alpha, beta, lambda n: True) == 1.0
    # only one size both fits and is bandwidth-bound (4 KiB takes less than alpha)
    assert warm_speedup(sizes, slow, alpha, beta, lambda n: n < 1 << 20) is None
