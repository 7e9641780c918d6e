import math

import numpy as np
import pytest
from scipy import stats

from isloader.results import paired_ci, ratio_ci, time_to_target, value_at_time


def test_time_to_target_interpolates_between_evaluations() -> None:
    assert time_to_target([1, 2, 3], [0.5, 0.7, 0.9], 0.8) == pytest.approx(2.5)
    assert time_to_target([1, 2, 3], [0.85, 0.9, 0.95], 0.8) == 1.0
    assert math.isinf(time_to_target([1, 2], [0.1, 0.2], 0.9))


def test_value_at_time_takes_the_last_evaluation_before() -> None:
    assert value_at_time([1, 2, 3], [0.5, 0.7, 0.9], 2.5) == 0.7
    assert math.isnan(value_at_time([1, 2], [0.5, 0.7], 0.5))


def test_paired_ci_matches_scipy_t_interval() -> None:
    d = np.array([0.01, 0.03, -0.01, 0.02, 0.04])
    mean, low, high = paired_ci(d)
    want = stats.t.interval(0.95, len(d) - 1, loc=d.mean(), scale=stats.sem(d))
    assert mean == pytest.approx(d.mean())
    assert (low, high) == pytest.approx(want)


def test_ratio_ci_is_symmetric_in_log_space() -> None:
    ratio, low, high = ratio_ci([1.0, 2.0, 4.0], [2.0, 4.0, 8.0])
    assert ratio == pytest.approx(0.5)
    assert low == pytest.approx(0.5) and high == pytest.approx(0.5)
