"""The one seed-interval convention (Student t, ddof=1) and the target verdicts."""

import doctest
import math

import numpy as np
import pytest
from scipy import stats

from vinaflow.errors import DataError
from vinaflow.evaluation import intervals
from vinaflow.evaluation.intervals import (
    format_interval,
    intervals_disjoint,
    seed_interval,
    target_verdict,
)


def test_doctests() -> None:
    assert doctest.testmod(intervals).failed == 0


def test_interval_matches_scipy_t_interval() -> None:
    v = np.array([0.61, 0.58, 0.64, 0.57, 0.60])
    s = seed_interval(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=v.mean(), scale=stats.sem(v))
    assert s["n"] == 5 and s["std"] == pytest.approx(v.std(ddof=1))
    assert (s["low"], s["high"]) == pytest.approx((lo, hi))


def test_failed_seeds_skipped_and_single_value_has_no_interval() -> None:
    s = seed_interval([0.5, None, float("nan")])
    assert s["n"] == 1 and s["mean"] == 0.5 and math.isnan(s["low"])
    assert format_interval(s) == "0.500 (1 seed)"
    assert target_verdict(s, 0.9) == "within noise"
    assert format_interval(seed_interval([])) == "n/a"


def test_verdicts_both_directions_and_disjoint() -> None:
    a, b = seed_interval([0.50, 0.51, 0.52]), seed_interval([0.60, 0.61, 0.62])
    assert target_verdict(b, 0.65, lower_is_better=False) == "not met"
    assert target_verdict(b, 0.55, lower_is_better=False) == "met"
    assert intervals_disjoint(a, b) and not intervals_disjoint(a, a)


def test_bad_level() -> None:
    with pytest.raises(DataError, match="level"):
        seed_interval([1.0, 2.0], level=95)


def test_summary_interval_is_seed_interval_of_the_values() -> None:
    v = np.array([0.0109, 0.0131, 0.0098, 0.0125])
    a = seed_interval(v)
    b = intervals.summary_interval(float(v.mean()), float(v.std(ddof=1)), len(v))
    assert (b["low"], b["high"], b["std"], b["n"]) == pytest.approx(
        (a["low"], a["high"], a["std"], a["n"])
    )
    assert math.isnan(intervals.summary_interval(0.5, 0.1, 1)["low"])
