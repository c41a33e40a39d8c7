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


def paired_difference(a: dict[int, float], b: dict[int, float]) -> Optional[Interval]:
    """95% interval of ``a[s] - b[s]`` over the seeds ``s`` both have (None if they share none)."""
    seeds = sorted(set(a) & set(b))
    if not seeds:
        return None
    return mean_interval([a[s] - b[s] for s in seeds])
