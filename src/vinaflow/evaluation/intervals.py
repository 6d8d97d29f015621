"""Seed summaries: the one mean-and-interval convention for every reported number.

Every table that reports a metric over seeds uses :func:`seed_interval`: the mean, the
sample standard deviation (``ddof=1``) and a two-sided Student-t interval for the mean,
``mean ± t_{(1+level)/2, n-1} · s / sqrt(n)``. A t interval rather than a bootstrap:
with the 3-5 seeds a benchmark can afford, a percentile bootstrap under-covers badly.

A target is *met* only when the whole interval is on the right side of it
(:func:`target_verdict`).

A proportion (a coverage: how many of ``n`` independent draws a credible interval
contained) is a binomial count, not a mean over seeds: :func:`binomial_interval` gives
its exact Clopper-Pearson interval in the same dictionary shape, so the same verdict and
formatting apply.

>>> s = seed_interval([0.52, 0.54, 0.53])
>>> round(s["mean"], 3), s["n"]
(0.53, 3)
>>> round(s["low"], 3), round(s["high"], 3)
(0.505, 0.555)
>>> target_verdict(s, 0.56)
'met'
>>> target_verdict(s, 0.54)
'within noise'
>>> target_verdict(s, 0.50)
'not met'
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import numpy as np
from scipy import stats

from vinaflow.errors import DataError

VERDICTS = ("met", "within noise", "not met")


def seed_interval(values: Iterable[float | None], level: float = 0.95) -> dict[str, Any]:
    """Mean, ``std`` (ddof=1), count and Student-t ``level`` interval of the finite values.

    ``None`` and non-finite values are skipped (a failed seed is not a zero). With one
    value the interval is ``[nan, nan]``: a single run has no interval.
    """
    if not 0.0 < level < 1.0:
        raise DataError(f"level must be in (0, 1), got {level}")
    v = np.array([float(x) for x in values if x is not None and math.isfinite(float(x))])
    n = len(v)
    if n == 0:
        return summary_interval(math.nan, math.nan, 0, level)
    return summary_interval(float(v.mean()), float(v.std(ddof=1)) if n > 1 else math.nan, n, level)


def summary_interval(mean: float, std: float, n: int, level: float = 0.95) -> dict[str, Any]:
    """:func:`seed_interval` of values known only by their ``mean``, sample standard
    deviation ``std`` (``ddof=1``) and count ``n`` (e.g. a results file that recorded
    those, not the values).

    >>> s = summary_interval(0.53, 0.01, 3)
    >>> round(s["low"], 3), round(s["high"], 3)
    (0.505, 0.555)
    """
    if not 0.0 < level < 1.0:
        raise DataError(f"level must be in (0, 1), got {level}")
    out: dict[str, Any] = {"n": int(n), "level": level, "mean": math.nan, "std": math.nan}
    out.update(low=math.nan, high=math.nan)
    if n == 0:
        return out
    out["mean"] = float(mean)
    if n > 1 and math.isfinite(std):
        half = float(stats.t.ppf(0.5 + level / 2.0, n - 1)) * std / math.sqrt(n)
        out.update(std=float(std), low=out["mean"] - half, high=out["mean"] + half)
    return out


def binomial_interval(successes: int, n: int, level: float = 0.95) -> dict[str, Any]:
    """Proportion ``successes / n`` with its exact two-sided Clopper-Pearson ``level``
    interval (Clopper & Pearson 1934, Biometrika 26(4)), shaped like :func:`seed_interval`
    (``mean`` is the proportion, ``std`` its binomial standard error ``sqrt(p (1-p) / n)``).

    Clopper-Pearson rather than Wald: exact coverage (conservative) also near 0 and 1,
    where a coverage of 0.95 over a few hundred draws sits.

    >>> s = binomial_interval(460, 500)
    >>> round(s["mean"], 3), round(s["low"], 3), round(s["high"], 3)
    (0.92, 0.893, 0.942)
    """
    if not 0.0 < level < 1.0:
        raise DataError(f"level must be in (0, 1), got {level}")
    k, n = int(successes), int(n)
    if n < 0 or not 0 <= k <= max(n, 0):
        raise DataError(f"need 0 <= successes <= n, got successes={successes}, n={n}")
    out: dict[str, Any] = {"n": n, "level": level, "mean": math.nan, "std": math.nan}
    out.update(low=math.nan, high=math.nan, successes=k, method="clopper-pearson")
    if n == 0:
        return out
    p, alpha = k / n, 1.0 - level
    low = float(stats.beta.ppf(alpha / 2.0, k, n - k + 1)) if k > 0 else 0.0
    high = float(stats.beta.ppf(1.0 - alpha / 2.0, k + 1, n - k)) if k < n else 1.0
    out.update(mean=p, std=math.sqrt(p * (1.0 - p) / n), low=low, high=high)
    return out


def _finite(v: float | None) -> bool:
    """Whether an interval end exists: results files store a missing one as ``null``."""
    return v is not None and math.isfinite(v)


def target_verdict(summary: dict[str, Any], target: float, lower_is_better: bool = True) -> str:
    """``"met"`` when the whole interval meets ``target``, ``"not met"`` when the whole
    interval misses it, ``"within noise"`` when the interval straddles it (or is absent)."""
    low, high = summary["low"], summary["high"]
    if not (_finite(low) and _finite(high)):
        return "within noise"
    good, bad = (high, low) if lower_is_better else (low, high)
    if (good <= target) if lower_is_better else (good >= target):
        return "met"
    if (bad > target) if lower_is_better else (bad < target):
        return "not met"
    return "within noise"


def format_interval(summary: dict[str, Any], digits: int = 3) -> str:
    """``"0.530 [0.505, 0.555]"``; ``"0.530 (1 seed)"`` without an interval; ``"n/a"``."""
    if summary["n"] == 0:
        return "n/a"
    mean = f"{summary['mean']:.{digits}f}"
    if not (_finite(summary["low"]) and _finite(summary["high"])):
        return f"{mean} (1 seed)"
    return f"{mean} [{summary['low']:.{digits}f}, {summary['high']:.{digits}f}]"


def intervals_disjoint(a: dict[str, Any], b: dict[str, Any]) -> bool:
    """Whether two seed intervals do not overlap (both must exist)."""
    finite = all(_finite(s[k]) for s in (a, b) for k in ("low", "high"))
    return finite and (a["high"] < b["low"] or b["high"] < a["low"])
