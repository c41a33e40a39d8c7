"""Seed statistics: intervals a reader can check by hand."""
import math

import pytest

from lxsweep.stats import Interval, mean_interval, paired_difference, t_quantile


def test_interval_by_hand():
    iv = mean_interval([0.50, 0.52, 0.54])  # mean 0.52, sd 0.02, t(2) = 4.303
    half = 4.303 * 0.02 / math.sqrt(3)
    assert iv.mean == pytest.approx(0.52) and iv.low == pytest.approx(0.52 - half) and iv.high == pytest.approx(0.52 + half)
    assert iv.excludes_zero and iv.format() == f"+52.00 [{100 * (0.52 - half):+.2f}, {100 * (0.52 + half):+.2f}]"


def test_paired_difference_uses_shared_seeds_and_detects_noise():
    low = {0: 0.80, 1: 0.82, 2: 0.81}
    random = {0: 0.70, 1: 0.73, 2: 0.71, 3: 0.10}  # seed 3 has no partner and is ignored
    gap = paired_difference(low, random)
    assert gap.n == 3 and gap.mean == pytest.approx(0.0966667, abs=1e-6) and gap.excludes_zero
    noise = paired_difference({0: 0.80, 1: 0.78, 2: 0.81}, {0: 0.79, 1: 0.80, 2: 0.80})
    assert not noise.excludes_zero
    assert paired_difference({0: 1.0}, {1: 1.0}) is None
    one = paired_difference({0: 0.9}, {0: 0.8})
    assert one.low is None and not one.excludes_zero and one.format() == "+10.00"


def test_t_quantiles():
    assert t_quantile(2) == 4.303 and t_quantile(1000) == 1.96
    with pytest.raises(ValueError):
        t_quantile(0)
    assert Interval(0.0, -0.1, 0.1, 3).excludes_zero is False
