"""Small statistics shared by the measurement, the trace analyzer and the reports.

No scipy: the Student t distribution is computed from the regularized incomplete beta function
(a continued fraction, Numerical Recipes' ``betacf``, Lentz's method), and its quantiles by bisection
on that CDF. Tested against closed forms (t with 1 and 2 degrees of freedom, I_x(a, 1) = x^a) and
against the printed t table (t(0.975, 1) = 12.706, df 2: 4.303, df 4: 2.776).

- :func:`t_interval`: Student-t interval of a mean (used over launch means).
- :func:`bootstrap_interval`: seeded percentile bootstrap of a statistic (used over runs).
- :func:`welch_t`: Welch's unequal-variance t-test, two-sided.
"""

from __future__ import annotations

import math
import random
import statistics
from typing import Callable, NamedTuple, Sequence

__all__ = ["percentile", "betainc", "t_cdf", "t_quantile", "t_interval", "bootstrap_interval", "welch_t",
           "Welch", "BOOTSTRAP_RESAMPLES", "BOOTSTRAP_SEED"]

BOOTSTRAP_RESAMPLES = 2000
BOOTSTRAP_SEED = 0  # fixed: the same runs give the same interval in every report


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default), on sorted input."""
    if not sorted_values:
        raise ValueError("no values")
    k = (len(sorted_values) - 1) * q / 100.0
    lo, hi = math.floor(k), math.ceil(k)
    return float(sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (k - lo))


# ------------------------------------------------------------------ the t distribution
def _betacf(a: float, b: float, x: float) -> float:
    """The continued fraction of the incomplete beta function (modified Lentz)."""
    tiny, eps = 1e-300, 1e-15
    qab, qap, qam = a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 1000):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < eps:
            break
    return h


def betainc(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b), for a, b > 0 and 0 <= x <= 1."""
    if a <= 0 or b <= 0:
        raise ValueError(f"betainc needs a, b > 0, got {a}, {b}")
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):  # the fraction converges fast here; else use the symmetry
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: float) -> float:
    """P(T <= t) for Student's t with ``df`` (> 0, not necessarily whole) degrees of freedom."""
    if df <= 0:
        raise ValueError(f"degrees of freedom must be > 0, got {df}")
    if math.isinf(t):
        return 1.0 if t > 0 else 0.0
    tail = 0.5 * betainc(df / 2.0, 0.5, df / (df + t * t))  # P(T > |t|)
    return 1.0 - tail if t > 0 else tail


def t_quantile(p: float, df: float) -> float:
    """The t with P(T <= t) = p (0 < p < 1), by bisection on :func:`t_cdf` to 1e-10 relative."""
    if not 0.0 < p < 1.0:
        raise ValueError(f"p must be in (0, 1), got {p}")
    if p < 0.5:
        return -t_quantile(1.0 - p, df)
    if p == 0.5:
        return 0.0
    lo, hi = 0.0, 1.0
    while t_cdf(hi, df) < p:
        lo, hi = hi, hi * 2.0
    while hi - lo > 1e-10 * hi:
        mid = (lo + hi) / 2.0
        lo, hi = (mid, hi) if t_cdf(mid, df) < p else (lo, mid)
    return (lo + hi) / 2.0


# ------------------------------------------------------------------ intervals
def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t interval of the mean: mean +- t((1 + level) / 2, n - 1) * s / sqrt(n). None with
    fewer than two values (no spread to estimate)."""
    n = len(values)
    if n < 2:
        return None
    mean, s = statistics.fmean(values), statistics.stdev(values)
    h = t_quantile((1.0 + level) / 2.0, n - 1) * s / math.sqrt(n)
    return mean - h, mean + h


def bootstrap_interval(values: Sequence[float], statistic: Callable[[Sequence[float]], float] = statistics.median,
                       *, level: float = 0.95, resamples: int = BOOTSTRAP_RESAMPLES,
                       seed: int = BOOTSTRAP_SEED) -> tuple[float, float] | None:
    """Percentile bootstrap: resample ``values`` with replacement ``resamples`` times (a seeded
    generator: the same values give the same interval), take ``statistic`` of each resample, and
    return the (1 - level) / 2 and (1 + level) / 2 percentiles of those. None with fewer than two
    values. It never leaves the values' range, and with few values it is narrow (with 3 values and
    the median it is their min-max range): a floor on the uncertainty, not a bound."""
    n = len(values)
    if n < 2:
        return None
    rng = random.Random(seed)
    vals = list(values)
    stats = sorted(statistic([vals[rng.randrange(n)] for _ in range(n)]) for _ in range(resamples))
    a = 100.0 * (1.0 - level) / 2.0
    return percentile(stats, a), percentile(stats, 100.0 - a)


# ------------------------------------------------------------------ tests
class Welch(NamedTuple):
    t: float        # (mean(b) - mean(a)) / standard error
    df: float       # Welch-Satterthwaite degrees of freedom
    p: float        # two-sided


def welch_t(a: Sequence[float], b: Sequence[float]) -> Welch | None:
    """Welch's t-test of mean(b) - mean(a), two-sided, unequal variances. None when either side has
    fewer than two values. Both sides without spread: p = 1 if the means are equal, else 0."""
    if len(a) < 2 or len(b) < 2:
        return None
    ma, mb = statistics.fmean(a), statistics.fmean(b)
    va, vb = statistics.variance(a) / len(a), statistics.variance(b) / len(b)
    if va + vb == 0.0:
        return Welch(0.0 if ma == mb else math.copysign(math.inf, mb - ma), math.inf, 1.0 if ma == mb else 0.0)
    t = (mb - ma) / math.sqrt(va + vb)
    df = (va + vb) ** 2 / (va ** 2 / (len(a) - 1) + vb ** 2 / (len(b) - 1))
    return Welch(t, df, betainc(df / 2.0, 0.5, df / (df + t * t)))
