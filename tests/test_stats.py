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


def test_t_distribution_against_printed_tables():
    from lxsweep.stats import t_cdf, t_ppf

    # Student's t tables: t(2) 0.975 = 4.303, t(2) 0.95 = 2.920, t(10) 0.995 = 3.169; symmetric about 0
    assert t_cdf(4.303, 2) == pytest.approx(0.975, abs=1e-4) and t_cdf(-4.303, 2) == pytest.approx(0.025, abs=1e-4)
    assert t_ppf(0.95, 2) == pytest.approx(2.920, abs=1e-3) and t_ppf(0.995, 10) == pytest.approx(3.169, abs=1e-3)
    assert t_cdf(0.0, 5) == pytest.approx(0.5)
    # df = 1 is the Cauchy distribution: P(T <= 1) = 3/4 exactly
    assert t_cdf(1.0, 1) == pytest.approx(0.75, abs=1e-12)


def test_paired_test_p_value_and_equivalence_by_hand():
    from lxsweep.stats import paired_test

    # differences 0.01, 0.02, 0.00: mean 0.01, sd 0.01, se 0.01/sqrt(3), t = sqrt(3) = 1.732 on 2 df -> p = 0.2254
    test = paired_test({0: 0.51, 1: 0.52, 2: 0.50}, {0: 0.50, 1: 0.50, 2: 0.50})
    assert test.p == pytest.approx(0.2254, abs=1e-4)
    half90 = 2.920 * 0.01 / math.sqrt(3)
    assert test.low90 == pytest.approx(0.01 - half90, abs=1e-4) and test.high90 == pytest.approx(0.01 + half90, abs=1e-4)
    assert test.equivalent(0.03) and not test.equivalent(0.02)  # 90% interval [-0.0069, 0.0269]
    # an interval that includes 0 is not equivalence: wide noise fails the test at a 2-point margin
    wide = paired_test({0: 0.55, 1: 0.45, 2: 0.50}, {0: 0.50, 1: 0.50, 2: 0.50})
    assert not wide.diff.excludes_zero and not wide.equivalent(0.02)
    assert paired_test({0: 0.9}, {0: 0.8}).p is None and paired_test({0: 0.9}, {1: 0.8}) is None


def test_holm_adjusts_the_family_in_order():
    from lxsweep.stats import holm

    # sorted 0.01 (x3), 0.03 (x2), 0.04 (x1, but never below the previous): 0.03, 0.06, 0.06
    assert holm([0.01, 0.04, None, 0.03]) == [pytest.approx(0.03), pytest.approx(0.06), None, pytest.approx(0.06)]
    assert holm([0.5, 0.9]) == [pytest.approx(1.0), pytest.approx(1.0)]
    assert holm([]) == []


def test_proportion_se():
    from lxsweep.stats import proportion_se

    assert proportion_se(0.5, 2500) == pytest.approx(0.01) and proportion_se(1.0, 100) == 0.0
