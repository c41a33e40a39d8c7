"""Seed statistics for reports: mean, spread, and whether a difference exceeds seed noise.

With 3 seeds a standard deviation says little on its own; a 95% confidence
interval of a *paired* difference (same seed, same data order, different
subnetwork) says whether a gap is larger than seed-to-seed noise. Pure
functions of lists of floats.
"""
from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from typing import Optional, Sequence

# Two-sided 95% quantiles of Student's t by degrees of freedom (scipy-free; df > 30 uses 1.96).
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228,
         11: 2.201, 12: 2.179, 13: 2.160, 14: 2.145, 15: 2.131, 16: 2.120, 17: 2.110, 18: 2.101, 19: 2.093,
         20: 2.086, 21: 2.080, 22: 2.074, 23: 2.069, 24: 2.064, 25: 2.060, 26: 2.056, 27: 2.052, 28: 2.048,
         29: 2.045, 30: 2.042}


def t_quantile(df: int) -> float:
    """The 97.5% quantile of Student's t with ``df`` degrees of freedom."""
    if df < 1:
        raise ValueError("a confidence interval needs at least two values")
    return _T975.get(df, 1.96)


@dataclass(frozen=True)
class Interval:
    """A mean with its 95% confidence interval (``low``/``high`` are None with one value)."""

    mean: float
    low: Optional[float]
    high: Optional[float]
    n: int

    @property
    def excludes_zero(self) -> bool:
        """True when the interval lies entirely on one side of zero: the difference exceeds seed noise."""
        return self.low is not None and self.high is not None and (self.low > 0 or self.high < 0)

    def format(self, scale: float = 100.0, digits: int = 2) -> str:
        """``-2.41 [-3.90, -0.92]`` (scaled, e.g. fractions to points)."""
        m = f"{scale * self.mean:+.{digits}f}"
        if self.low is None or self.high is None:
            return m
        return f"{m} [{scale * self.low:+.{digits}f}, {scale * self.high:+.{digits}f}]"


def mean_interval(values: Sequence[float]) -> Interval:
    """Mean and t-based 95% confidence interval of ``values``."""
    n = len(values)
    if n == 0:
        raise ValueError("no values")
    mean = statistics.fmean(values)
    if n == 1:
        return Interval(mean, None, None, 1)
    half = t_quantile(n - 1) * statistics.stdev(values) / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, n)


def _paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
    """``a[s] - b[s]`` over the seeds ``s`` both have, in seed order."""
    return [a[s] - b[s] for s in sorted(set(a) & set(b))]


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Optional[Interval]:
    """95% interval of ``a[s] - b[s]`` over the seeds ``s`` both have (None if they share none)."""
    values = _paired(a, b)
    return mean_interval(values) if values else None


# -- tests: p-values, equivalence, multiple comparisons --------------------------------


def _betacf(a: float, b: float, x: float) -> float:
    """Continued fraction of the regularized incomplete beta function (modified Lentz)."""
    tiny, qab, qap, qam = 1e-300, a + b, a + 1.0, a - 1.0
    c, d = 1.0, 1.0 - qab * x / qap
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 300):
        m2 = 2 * m
        for aa in (m * (b - m) * x / ((qam + m2) * (a + m2)), -(a + m) * (qab + m) * x / ((a + m2) * (qap + m2))):
            d = 1.0 + aa * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + aa / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
            last = d * c
        if abs(last - 1.0) < 1e-15:
            break
    return h


def _incomplete_beta(a: float, b: float, x: float) -> float:
    """The regularized incomplete beta function I_x(a, b)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    front = math.exp(math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b) + a * math.log(x) + b * math.log1p(-x))
    if x < (a + 1.0) / (a + b + 2.0):
        return front * _betacf(a, b, x) / a
    return 1.0 - front * _betacf(b, a, 1.0 - x) / b


def t_cdf(t: float, df: int) -> float:
    """P(T <= t) for Student's t with ``df`` degrees of freedom."""
    tail = 0.5 * _incomplete_beta(df / 2.0, 0.5, df / (df + t * t))
    return 1.0 - tail if t > 0 else tail


def t_ppf(p: float, df: int) -> float:
    """The ``p`` quantile of Student's t (bisection on :func:`t_cdf`)."""
    lo, hi = -1e6, 1e6
    for _ in range(200):
        mid = (lo + hi) / 2
        if t_cdf(mid, df) < p:
            lo = mid
        else:
            hi = mid
    return (lo + hi) / 2


@dataclass(frozen=True)
class PairedTest:
    """A paired difference over seeds: its 95% interval, the two-sided t-test's p-value (H0: no difference),
    and the 90% interval the equivalence test reads (``None`` bounds and p with one seed or no spread)."""

    diff: Interval
    p: Optional[float]
    low90: Optional[float]
    high90: Optional[float]

    def equivalent(self, margin: float) -> bool:
        """Two one-sided tests at alpha 0.05: the 90% interval lies inside (-margin, +margin)."""
        return self.low90 is not None and self.high90 is not None and -margin < self.low90 and self.high90 < margin


def paired_test(a: dict[int, float], b: dict[int, float]) -> Optional[PairedTest]:
    """:func:`paired_difference` with its p-value and 90% interval (None if the seeds share none)."""
    values = _paired(a, b)
    if not values:
        return None
    diff = mean_interval(values)
    if len(values) < 2:
        return PairedTest(diff, None, None, None)
    se = statistics.stdev(values) / math.sqrt(len(values))
    df = len(values) - 1
    if se == 0:
        p = 1.0 if diff.mean == 0 else 0.0
        return PairedTest(diff, p, diff.mean, diff.mean)
    half90 = t_ppf(0.95, df) * se
    return PairedTest(diff, 2 * (1 - t_cdf(abs(diff.mean) / se, df)), diff.mean - half90, diff.mean + half90)


def holm(pvalues: Sequence[Optional[float]]) -> list[Optional[float]]:
    """Holm-Bonferroni adjusted p-values over the family (None entries stay None and are not counted)."""
    ranked = sorted((p, i) for i, p in enumerate(pvalues) if p is not None)
    m, out, running = len(ranked), [None] * len(pvalues), 0.0
    for k, (p, i) in enumerate(ranked):
        running = max(running, min(1.0, (m - k) * p))
        out[i] = running
    return out


def proportion_se(p: float, n: int) -> float:
    """Binomial standard error of an accuracy ``p`` measured on ``n`` questions (the eval set's own noise)."""
    return math.sqrt(max(p * (1 - p), 0.0) / n) if n > 0 else float("nan")
