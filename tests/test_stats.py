"""compose_rl.stats: the one home of the intervals, pinned against values computed by hand."""
from __future__ import annotations

import math

import pytest

from compose_rl.stats import mean_ci, paired_ci, wilson


def test_mean_ci_t_interval_by_hand():
    # [1, 2, 3]: mean 2, sd 1, t(2 df) = 4.303 -> half-width 4.303 / sqrt(3) = 2.48434
    m, h = mean_ci([1.0, 2.0, 3.0])
    assert m == 2.0 and h == pytest.approx(2.48434, abs=1e-5)
    assert mean_ci([0.7]) == (0.7, 0.0)  # one value: no interval
    # 12 values: df 11 is past the table, the normal 1.96 is used; sd of 0/1 alternating x6 = sqrt(12/44)
    m, h = mean_ci([0.0, 1.0] * 6)
    assert m == 0.5 and h == pytest.approx(1.96 * math.sqrt(12 / 44) / math.sqrt(12))


def test_paired_ci_is_the_t_interval_of_the_differences():
    # differences [2, 3]: mean 2.5, sd 0.70711, t(1 df) = 12.706 -> 12.706 * 0.70711 / sqrt(2) = 6.353
    d, h = paired_ci([3.0, 5.0], [1.0, 2.0])
    assert d == 2.5 and h == pytest.approx(6.353, abs=1e-3)
    with pytest.raises(ValueError, match="equal lengths"):
        paired_ci([1.0], [1.0, 2.0])


def test_wilson_by_hand_and_edges():
    # 0 of 20: centre = half = (3.8416 / 40) / 1.19208 = 0.080565 -> [0, 0.16113]
    lo, hi = wilson(0, 20)
    assert lo == 0.0 and hi == pytest.approx(0.16113, abs=1e-5)
    lo, hi = wilson(10, 20)
    assert lo == pytest.approx(0.29929, abs=1e-4) and hi == pytest.approx(1 - lo)
    assert wilson(0.5 * 20, 20) == pytest.approx((lo, hi))  # a float count (accuracy x n) is the same
    assert wilson(0, 0) == (0.0, 1.0)  # no items: the whole range
