"""Calibration of amortized posteriors: SBC ranks and expected coverage.

Inputs are posterior samples for many observations, shape ``(n_obs, n_samples, dim)``,
and the parameters that generated those observations, shape ``(n_obs, dim)``
(truths drawn from the prior). A calibrated posterior puts each truth at a uniformly
distributed rank among its samples and covers it at the nominal rate of every
credible level.

References:
    Talts et al. (2018), "Validating Bayesian inference algorithms with
    simulation-based calibration", arXiv:1804.06788.
    Hermans et al. (2022), "A trust crisis in simulation-based inference? Your
    posterior approximations can be unfaithful", TMLR (expected coverage).
"""

from __future__ import annotations

from typing import Any

import numpy as np
from scipy import stats
from scipy.special import logsumexp

from vinaflow.errors import DataError
from vinaflow.evaluation.metrics import as_numpy

__all__ = ["sbc_ranks", "sbc_uniformity_pvalues", "expected_coverage", "DEFAULT_LEVELS"]

DEFAULT_LEVELS = np.round(np.linspace(0.05, 0.95, 19), 10)


def _check_posterior(posterior_samples: Any, truths: Any) -> tuple[np.ndarray, np.ndarray]:
    s = as_numpy("posterior_samples", posterior_samples)
    t = as_numpy("truths", truths)
    if s.ndim != 3:
        raise DataError(
            "posterior_samples must be a 3-D array of shape (n_obs, n_samples, dim), "
            f"got shape {s.shape}"
        )
    n_obs, n_samples, dim = s.shape
    if t.shape != (n_obs, dim):
        raise DataError(f"truths must have shape (n_obs, dim) = {(n_obs, dim)}, got {t.shape}")
    if n_obs < 1 or n_samples < 2 or dim < 1:
        raise DataError(
            f"posterior_samples needs n_obs >= 1, n_samples >= 2 and dim >= 1, got shape {s.shape}"
        )
    for name, arr in (("posterior_samples", s), ("truths", t)):
        if not np.isfinite(arr).all():
            bad = int((~np.isfinite(arr)).sum())
            raise DataError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")
    return s, t


def sbc_ranks(posterior_samples: Any, truths: Any, seed: int = 0) -> np.ndarray:
    """SBC rank of each true parameter among its posterior samples, per dimension.

    Returns integers in ``[0, n_samples]`` of shape ``(n_obs, dim)``: the number of
    samples below the truth. Ties (e.g. samples clipped to a prior boundary) are
    broken uniformly at random so that ranks stay uniform under calibration.

    References:
        Talts et al. (2018), algorithm 1.
    """
    s, t = _check_posterior(posterior_samples, truths)
    below = (s < t[:, None, :]).sum(axis=1)
    ties = (s == t[:, None, :]).sum(axis=1)
    if ties.any():
        rng = np.random.default_rng(seed)
        below = below + rng.integers(0, ties + 1)
    return below.astype(np.int64)


def sbc_uniformity_pvalues(
    ranks: Any,
    n_samples: int,
    method: str = "ks",
    n_bins: int | None = None,
    seed: int = 0,
) -> np.ndarray:
    """Per-dimension p-values of the hypothesis that SBC ranks are uniform.

    ``method="ks"`` (default): Kolmogorov-Smirnov test of the randomised PIT
    values ``(rank + U) / (n_samples + 1)``, ``U ~ Uniform(0, 1)``, which are exactly
    Uniform(0, 1) under calibration (a KS test on raw discrete ranks would not be).
    ``method="chi2"``: Pearson chi^2 test on ``n_bins`` rank bins (default: about 20
    ranks per bin expected, at most 20 bins, following Talts et al.).
    Small p-values (say < 0.01) indicate miscalibration.
    """
    r = as_numpy("ranks", ranks)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] < 2:
        raise DataError(f"ranks must have shape (n_obs >= 2, dim), got {r.shape}")
    if n_samples < 1:
        raise DataError(f"n_samples must be >= 1, got {n_samples}")
    if not np.isfinite(r).all() or (r < 0).any() or (r > n_samples).any():
        raise DataError(f"ranks must be integers in [0, n_samples={n_samples}]")
    n_obs, dim = r.shape
    if method == "ks":
        rng = np.random.default_rng(seed)
        u = (r + rng.uniform(size=r.shape)) / (n_samples + 1)
        return np.array([stats.kstest(u[:, j], "uniform").pvalue for j in range(dim)])
    if method == "chi2":
        n_values = n_samples + 1
        if n_bins is None:
            n_bins = int(np.clip(n_obs // 20, 2, 20))
        n_bins = int(min(n_bins, n_values))
        if n_bins < 2:
            raise DataError(f"n_bins must be >= 2, got {n_bins}")
        # Integer edges; unequal bin widths get their own expected counts.
        edges = np.unique(np.round(np.linspace(0, n_values, n_bins + 1)).astype(int))
        expected = n_obs * np.diff(edges) / n_values
        pvals = []
        for j in range(dim):
            counts, _ = np.histogram(r[:, j], bins=edges - 0.5)
            pvals.append(stats.chisquare(counts, expected).pvalue)
        return np.array(pvals)
    raise DataError(f"method must be 'ks' or 'chi2', got {method!r}")


def _mahalanobis_sq(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Squared Mahalanobis distances of samples and truth to the sample mean."""
    n_obs, _, dim = s.shape
    mu = s.mean(axis=1, keepdims=True)
    c = s - mu
    cov = np.einsum("oni,onj->oij", c, c) / (s.shape[1] - 1)
    # Ridge keeps degenerate (e.g. collapsed) posteriors factorisable.
    scale = np.trace(cov, axis1=1, axis2=2) / dim
    cov = cov + (1e-9 * scale + 1e-12)[:, None, None] * np.eye(dim)
    chol = np.linalg.cholesky(cov)
    zs = np.linalg.solve(chol, c.transpose(0, 2, 1))
    zt = np.linalg.solve(chol, (t[:, None, :] - mu).transpose(0, 2, 1))
    return (zs**2).sum(axis=1), (zt**2).sum(axis=1)[:, 0]


def _kde_neg_logdens(s: np.ndarray, t: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Negative Gaussian-KDE log-densities (Scott's rule, sample covariance).

    Sample points are scored leave-one-out, so that they are not favoured over
    the truth, which is not part of the KDE.
    """
    n_obs, n, dim = s.shape
    h2 = n ** (-2.0 / (dim + 4))
    mu = s.mean(axis=1, keepdims=True)
    c = s - mu
    cov = np.einsum("oni,onj->oij", c, c) / (n - 1) * h2
    scale = np.trace(cov, axis1=1, axis2=2) / dim
    cov = cov + (1e-9 * scale + 1e-12)[:, None, None] * np.eye(dim)
    chol = np.linalg.cholesky(cov)
    zs = np.linalg.solve(chol, c.transpose(0, 2, 1)).transpose(0, 2, 1)
    zt = np.linalg.solve(chol, (t[:, None, :] - mu).transpose(0, 2, 1)).transpose(0, 2, 1)
    ds = np.empty((n_obs, n))
    # Bound the (chunk, n, n, dim) difference tensor to ~160 MB.
    chunk = max(1, int(2e7 // (n * n * dim)))
    for i in range(0, n_obs, chunk):
        z = zs[i : i + chunk]
        sq = ((z[:, :, None, :] - z[:, None, :, :]) ** 2).sum(-1)
        sq[:, np.arange(n), np.arange(n)] = np.inf
        ds[i : i + chunk] = -logsumexp(-0.5 * sq, axis=2)
    dt = -logsumexp(-0.5 * ((zt - zs) ** 2).sum(-1), axis=1)
    return ds, dt


def expected_coverage(
    posterior_samples: Any,
    truths: Any,
    levels: Any = DEFAULT_LEVELS,
    joint: str = "mahalanobis",
) -> dict[str, Any]:
    """Empirical coverage of credible regions at each credible level.

    Marginal: the fraction of truths inside the per-dimension central credible
    interval (sample quantiles ``(1 - l)/2`` and ``(1 + l)/2``); reported per
    dimension and averaged over dimensions.

    Joint: a highest-density-style region, i.e. the truth is covered at level ``l``
    when fewer than a fraction ``l`` of the posterior samples have a higher density
    proxy than the truth (the expected-coverage test of Hermans et al., 2022, with
    a proxy in place of the model's density, so that any sampler can be checked).
    The proxy is chosen with ``joint``:

    - ``"mahalanobis"`` (default): minus the squared Mahalanobis distance to the
      sample mean under the sample covariance. Exact (up to Monte Carlo error) for
      Gaussian posteriors, an elliptical approximation otherwise: multimodal or
      strongly curved posteriors get too large regions.
    - ``"kde"``: a leave-one-out Gaussian KDE log-density (Scott's rule); handles
      non-elliptical posteriors but costs ``O(n_obs * n_samples^2 * dim)``.

    Returns JSON-ready ``levels``, ``coverage_marginal``, ``coverage_marginal_per_dim``
    (``[level][dim]``), ``coverage_joint``, the coverage at level 0.95
    (``coverage_95`` marginal, ``coverage_95_joint``), and the mean absolute
    coverage error over levels (``coverage_error``, ``coverage_error_joint``).
    Coverage below the level means over-confidence, above means under-confidence.
    """
    s, t = _check_posterior(posterior_samples, truths)
    lv = as_numpy("levels", levels).reshape(-1)
    if lv.size == 0 or not np.isfinite(lv).all() or (lv <= 0).any() or (lv >= 1).any():
        raise DataError("levels must be a non-empty list of credible levels in (0, 1)")
    all_levels = np.append(lv, 0.95)

    probs = np.concatenate([(1.0 - all_levels) / 2.0, (1.0 + all_levels) / 2.0])
    q = np.quantile(s, probs, axis=1)  # (2 * n_levels, n_obs, dim)
    k = len(all_levels)
    inside = (q[:k] <= t) & (t <= q[k:])  # (n_levels, n_obs, dim)
    per_dim = inside.mean(axis=1)  # (n_levels, dim)
    marginal = per_dim.mean(axis=1)

    if joint == "mahalanobis":
        ds, dt = _mahalanobis_sq(s, t)
    elif joint == "kde":
        ds, dt = _kde_neg_logdens(s, t)
    else:
        raise DataError(f"joint must be 'mahalanobis' or 'kde', got {joint!r}")
    # Fraction of samples more probable than the truth, per observation.
    alpha = (ds < dt[:, None]).mean(axis=1)
    joint_cov = (alpha[None, :] < all_levels[:, None]).mean(axis=1)

    return {
        "levels": lv.tolist(),
        "coverage_marginal": marginal[:-1].tolist(),
        "coverage_marginal_per_dim": per_dim[:-1].tolist(),
        "coverage_joint": joint_cov[:-1].tolist(),
        "coverage_95": float(marginal[-1]),
        "coverage_95_joint": float(joint_cov[-1]),
        "coverage_error": float(np.abs(marginal[:-1] - lv).mean()),
        "coverage_error_joint": float(np.abs(joint_cov[:-1] - lv).mean()),
        "joint_method": joint,
        "n_obs": int(s.shape[0]),
    }
