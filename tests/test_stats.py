"""stats.py: the t distribution without scipy, intervals and Welch's test, on hand-computable cases."""

from __future__ import annotations

import math
import statistics

import pytest

from moetrace.stats import betainc, bootstrap_interval, t_cdf, t_interval, t_quantile, welch_t


@pytest.mark.parametrize("x", [0.01, 0.2, 0.5, 0.77, 0.999])
def test_incomplete_beta_closed_forms(x):
    assert betainc(1, 1, x) == pytest.approx(x, abs=1e-12)                   # uniform
    assert betainc(3.5, 1, x) == pytest.approx(x ** 3.5, rel=1e-10)          # I_x(a, 1) = x^a
    assert betainc(1, 2.5, x) == pytest.approx(1 - (1 - x) ** 2.5, rel=1e-10)  # I_x(1, b) = 1 - (1-x)^b
    assert betainc(4.2, 4.2, 0.5) == pytest.approx(0.5, abs=1e-12)          # symmetry
    assert betainc(2, 3, x) == pytest.approx(1 - betainc(3, 2, 1 - x), abs=1e-12)


@pytest.mark.parametrize("t", [-30.0, -2.0, -0.3, 0.0, 0.7, 1.0, 4.303, 12.706, 100.0])
def test_t_cdf_closed_forms(t):
    assert t_cdf(t, 1) == pytest.approx(0.5 + math.atan(t) / math.pi, abs=1e-12)       # Cauchy
    assert t_cdf(t, 2) == pytest.approx(0.5 + t / (2 * math.sqrt(2 + t * t)), abs=1e-12)


def test_t_quantiles_match_the_printed_table():
    for df, want in ((1, 12.706), (2, 4.303), (3, 3.182), (4, 2.776), (9, 2.262), (30, 2.042)):
        assert t_quantile(0.975, df) == pytest.approx(want, abs=5e-4), df
    assert t_quantile(0.95, 10) == pytest.approx(1.812, abs=5e-4)
    assert t_quantile(0.975, 1e6) == pytest.approx(1.960, abs=5e-4)   # the normal's
    assert t_quantile(0.025, 4) == pytest.approx(-2.776, abs=5e-4)
    assert t_quantile(0.5, 3) == 0.0


def test_t_interval_by_hand():
    # [1, 2, 3]: mean 2, s 1, se 1/sqrt(3), t(0.975, 2) = 4.3027
    lo, hi = t_interval([1.0, 2.0, 3.0])
    h = 4.302653 / math.sqrt(3)
    assert (lo, hi) == (pytest.approx(2 - h, abs=1e-5), pytest.approx(2 + h, abs=1e-5))
    # [1, 3]: mean 2, s sqrt(2), se 1, t(0.975, 1) = 12.7062
    assert t_interval([1.0, 3.0]) == (pytest.approx(2 - 12.7062, abs=1e-3), pytest.approx(2 + 12.7062, abs=1e-3))
    assert t_interval([5.0]) is None and t_interval([]) is None
    assert t_interval([2.0, 2.0, 2.0]) == (2.0, 2.0)


def test_bootstrap_is_seeded_and_bounded():
    vals = [1.43, 1.68, 1.48, 1.39, 1.52]
    a = bootstrap_interval(vals)
    assert a == bootstrap_interval(vals)  # same values, same interval
    assert min(vals) <= a[0] <= statistics.median(vals) <= a[1] <= max(vals)
    # three values and the median: P(resampled median = min) = 7/27 > 2.5%, so the interval is [min, max]
    assert bootstrap_interval([3.0, 1.0, 2.0]) == (1.0, 3.0)
    assert bootstrap_interval([2.0, 2.0]) == (2.0, 2.0)
    assert bootstrap_interval([1.0]) is None


def test_bootstrap_of_the_mean_approaches_the_t_interval_for_many_values():
    vals = [float(i % 17) for i in range(200)]
    b, t = bootstrap_interval(vals, statistics.fmean), t_interval(vals)
    assert b[0] == pytest.approx(t[0], abs=0.15) and b[1] == pytest.approx(t[1], abs=0.15)


def test_welch_by_hand_and_against_r():
    # R: t.test(c(4,5,6), c(1,2,3)) -> t = 3.6742, df = 4, p-value = 0.02131
    w = welch_t([1.0, 2.0, 3.0], [4.0, 5.0, 6.0])
    assert w.t == pytest.approx(3 / math.sqrt(2 / 3)) and w.df == pytest.approx(4.0)
    assert w.p == pytest.approx(0.02131, abs=1e-5)
    assert w.p == pytest.approx(2 * (1 - t_cdf(w.t, 4)), abs=1e-12)
    # unequal sizes and variances: df by the Welch-Satterthwaite formula
    a, b = [10.0, 12.0, 11.0, 13.0], [20.0, 14.0]
    va, vb = statistics.variance(a) / 4, statistics.variance(b) / 2
    w = welch_t(a, b)
    assert w.df == pytest.approx((va + vb) ** 2 / (va ** 2 / 3 + vb ** 2 / 1))
    assert w.p == pytest.approx(2 * (1 - t_cdf(abs(w.t), w.df)), abs=1e-12) and 0.05 < w.p < 1
    assert welch_t([1.0, 2.0, 3.0], [1.0, 2.0, 3.0]).p == pytest.approx(1.0)
    assert welch_t([1.0], [2.0, 3.0]) is None
    assert welch_t([1.0, 1.0], [2.0, 2.0]).p == 0.0 and welch_t([1.0, 1.0], [1.0, 1.0]).p == 1.0
