"""Tests of vinaflow.evaluation: distances, summaries, calibration and plots."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy import stats

from vinaflow.errors import DataError
from vinaflow.evaluation import (
    c2st,
    expected_coverage,
    mmd,
    plot_coverage,
    plot_loss_curves,
    plot_posterior_pairs,
    plot_sbc_histogram,
    posterior_summary,
    resimulation_error,
    sbc_ranks,
    sbc_uniformity_pvalues,
    w1,
)

__all__: list[str] = []


def _gauss(n: int, d: int, seed: int, shift: float = 0.0) -> np.ndarray:
    x = np.random.default_rng(seed).normal(size=(n, d))
    x[:, 0] += shift
    return x


# --- C2ST ---------------------------------------------------------------------------


def test_c2st_same_distribution_is_chance():
    acc = c2st(_gauss(1000, 4, 1), _gauss(1000, 4, 2))
    assert abs(acc - 0.5) < 0.06


def test_c2st_far_apart_is_separable():
    acc = c2st(_gauss(500, 4, 1), _gauss(500, 4, 2, shift=10.0))
    assert acc > 0.95


def test_c2st_near_bayes_optimal_for_shifted_gaussians():
    # Bayes-optimal accuracy between N(0, I) and N(delta e1, I) is Phi(delta / 2).
    acc = c2st(_gauss(1000, 4, 1), torch.as_tensor(_gauss(1000, 4, 2, shift=1.0)))
    assert abs(acc - stats.norm.cdf(0.5)) < 0.05


def test_c2st_balances_classes_and_validates():
    acc = c2st(_gauss(300, 2, 1), _gauss(900, 2, 2), max_samples=200)
    assert 0.0 <= acc <= 1.0
    with pytest.raises(DataError, match="at least 10"):
        c2st(_gauss(5, 2, 1), _gauss(100, 2, 2))
    with pytest.raises(DataError, match="dim=2"):
        c2st(_gauss(100, 2, 1), _gauss(100, 3, 2))


# --- W1 -----------------------------------------------------------------------------


def test_w1_translation_equals_shift_norm():
    a = _gauss(200, 3, 0)
    v = np.array([0.3, -1.2, 0.5])
    assert w1(a, a + v) == pytest.approx(np.linalg.norm(v), rel=1e-9)


@pytest.mark.parametrize("nb", [400, 250])
def test_w1_matches_scipy_in_1d(nb):
    a, b = _gauss(400, 1, 0), _gauss(nb, 1, 1, shift=0.7) * 1.5
    expected = stats.wasserstein_distance(a[:, 0], b[:, 0])
    assert w1(a, b) == pytest.approx(expected, rel=1e-8)


def test_w1_symmetric_and_zero_on_self():
    a, b = _gauss(300, 2, 0), _gauss(300, 2, 1, shift=1.0)
    assert w1(a, b) == pytest.approx(w1(b, a), rel=1e-10)
    assert w1(a, a) == pytest.approx(0.0, abs=1e-12)


# --- MMD ----------------------------------------------------------------------------


def _mmd_brute(a: np.ndarray, b: np.ndarray, h: float) -> float:
    def k(x, y):
        return np.exp(-np.sum((x - y) ** 2) / (2 * h**2))

    m, n = len(a), len(b)
    kaa = sum(k(a[i], a[j]) for i in range(m) for j in range(m) if i != j) / (m * (m - 1))
    kbb = sum(k(b[i], b[j]) for i in range(n) for j in range(n) if i != j) / (n * (n - 1))
    kab = sum(k(a[i], b[j]) for i in range(m) for j in range(n)) / (m * n)
    return kaa + kbb - 2 * kab


def test_mmd_matches_brute_force():
    a, b = _gauss(7, 2, 0), _gauss(5, 2, 1, shift=0.5)
    assert mmd(a, b, bandwidth=0.8) == pytest.approx(_mmd_brute(a, b, 0.8), rel=1e-10)
    pooled = np.concatenate([a, b])
    d = np.linalg.norm(pooled[:, None] - pooled[None], axis=-1)
    h = np.median(d[np.triu_indices(len(pooled), 1)])
    assert mmd(a, b) == pytest.approx(_mmd_brute(a, b, h), rel=1e-10)


def test_mmd_same_vs_shifted():
    a, b = _gauss(500, 3, 0), _gauss(500, 3, 1)
    same = mmd(a, b)
    shifted = mmd(a, _gauss(500, 3, 2, shift=1.0))
    assert abs(same) < 0.01
    assert shifted > 0.05 > same


# --- summaries ----------------------------------------------------------------------


def test_posterior_summary_matches_numpy():
    x = _gauss(1000, 3, 0) * np.array([1.0, 2.0, 0.5])
    truth = np.array([0.0, 10.0, 0.1])
    s = posterior_summary(torch.as_tensor(x), truth=truth, level=0.9)
    json.dumps(s)
    lo, hi = np.quantile(x, [0.05, 0.95], axis=0)
    np.testing.assert_allclose(s["mean"], x.mean(0))
    np.testing.assert_allclose(s["std"], x.std(0, ddof=1))
    np.testing.assert_allclose(s["ci_low"], lo)
    np.testing.assert_allclose(s["ci_high"], hi)
    np.testing.assert_allclose(s["ci_width"], hi - lo)
    np.testing.assert_allclose(s["sq_error"], (x.mean(0) - truth) ** 2)
    assert s["covered"] == [True, False, True]
    assert "sq_error" not in posterior_summary(x)


def test_resimulation_error():
    y_obs = np.array([1.0, 2.0])
    y_pred = y_obs + np.array([[3.0, 4.0], [0.0, 0.0], [0.0, -1.0]])
    assert resimulation_error(y_pred, y_obs) == pytest.approx(2.0)
    assert resimulation_error(y_pred, y_obs[None]) == pytest.approx(2.0)
    with pytest.raises(DataError, match="y_obs"):
        resimulation_error(y_pred, np.zeros(3))


# --- calibration with a conjugate Gaussian model ------------------------------------

N_OBS, N_POST, DIM, NOISE = 1000, 200, 2, 0.5


@pytest.fixture(scope="module")
def conjugate():
    """Truths x ~ N(0, 1), y = x + N(0, s^2); exact posterior N(m, v) per dimension."""
    rng = np.random.default_rng(123)
    x = rng.normal(size=(N_OBS, DIM))
    y = x + NOISE * rng.normal(size=x.shape)
    var = 1.0 / (1.0 + 1.0 / NOISE**2)
    mean = var * y / NOISE**2
    eps = rng.normal(size=(N_OBS, N_POST, DIM))

    def posterior(scale: float) -> np.ndarray:
        return mean[:, None, :] + scale * np.sqrt(var) * eps

    return x, posterior


def test_sbc_exact_posterior_is_uniform(conjugate):
    truths, posterior = conjugate
    ranks = sbc_ranks(posterior(1.0), truths)
    assert ranks.shape == (N_OBS, DIM) and ranks.min() >= 0 and ranks.max() <= N_POST
    assert (sbc_uniformity_pvalues(ranks, N_POST) > 0.01).all()
    assert (sbc_uniformity_pvalues(ranks, N_POST, method="chi2") > 0.01).all()
    bad = sbc_ranks(posterior(0.5), truths)
    assert (sbc_uniformity_pvalues(bad, N_POST) < 0.01).all()
    assert (sbc_uniformity_pvalues(bad, N_POST, method="chi2") < 0.01).all()


def test_sbc_ranks_break_ties_randomly():
    samples = np.zeros((2000, 9, 1))
    ranks = sbc_ranks(samples, np.zeros((2000, 1)))
    assert sbc_uniformity_pvalues(ranks, 9)[0] > 0.01


@pytest.mark.parametrize("joint", ["mahalanobis", "kde"])
def test_expected_coverage_exact_posterior(conjugate, joint):
    truths, posterior = conjugate
    n = N_OBS if joint == "mahalanobis" else 400  # KDE is quadratic in samples
    cov = expected_coverage(posterior(1.0)[:n], truths[:n], joint=joint)
    json.dumps(cov)
    levels = np.asarray(cov["levels"])
    assert np.abs(np.asarray(cov["coverage_marginal"]) - levels).max() < 0.06
    assert np.abs(np.asarray(cov["coverage_joint"]) - levels).max() < 0.06
    assert np.asarray(cov["coverage_marginal_per_dim"]).shape == (19, DIM)
    assert abs(cov["coverage_95"] - 0.95) < 0.03
    assert cov["coverage_error"] < 0.03


def test_expected_coverage_detects_miscalibration(conjugate):
    truths, posterior = conjugate
    over = expected_coverage(posterior(0.5), truths)
    under = expected_coverage(posterior(2.0), truths)
    levels = np.asarray(over["levels"])
    mid = (levels > 0.2) & (levels < 0.9)
    for key in ("coverage_marginal", "coverage_joint"):
        assert (np.asarray(over[key])[mid] < levels[mid] - 0.1).all()
        assert (np.asarray(under[key])[mid] > levels[mid] + 0.1).all()
    assert over["coverage_95"] < 0.8 and under["coverage_95"] > 0.99


# --- plots --------------------------------------------------------------------------


def _is_png(path) -> bool:
    with open(path, "rb") as fh:
        return fh.read(8) == b"\x89PNG\r\n\x1a\n"


def test_plots_write_png(tmp_path, conjugate):
    truths, posterior = conjugate
    ranks = sbc_ranks(posterior(1.0), truths)
    cov = expected_coverage(posterior(1.0), truths)
    x = _gauss(500, 3, 0)
    paths = [
        plot_loss_curves(
            {"train": [3.0, 2.0, 1.0, 0.5], "val": [3.5, 1.5]},
            tmp_path / "loss.png",
            steps={"val": [1, 3]},
        ),
        plot_loss_curves({"train": [1.0, -2.0, float("nan")]}, tmp_path / "loss_neg.png"),
        plot_posterior_pairs(
            x, reference=x + 0.2, truth=[0, 0, 0], names=["a", "b", "c"], path=tmp_path / "p.png"
        ),
        plot_posterior_pairs(x[:, :1], path=tmp_path / "sub" / "p1.png"),
        plot_sbc_histogram(ranks, N_POST, tmp_path / "sbc.png", names=["a", "b"]),
        plot_coverage(
            cov["levels"],
            {"marginal": cov["coverage_marginal"], "joint": cov["coverage_joint"]},
            tmp_path / "cov.png",
            n_obs=N_OBS,
        ),
    ]
    for p in paths:
        assert p.stat().st_size > 1000 and _is_png(p)
    assert not list(tmp_path.rglob("*.tmp"))


# --- input validation ---------------------------------------------------------------


@pytest.mark.parametrize(
    "call",
    [
        lambda: w1(np.array([[0.0, np.nan]]), np.zeros((3, 2))),
        lambda: mmd(np.zeros(10), np.zeros(10)),
        lambda: c2st(np.zeros((50, 2)), np.zeros((50, 2, 1))),
        lambda: w1(np.zeros((5, 2)), np.zeros((5, 3))),
        lambda: posterior_summary(np.zeros(10)),
        lambda: posterior_summary(np.zeros((10, 2)), truth=np.zeros(3)),
        lambda: posterior_summary(np.zeros((10, 2)), level=1.5),
        lambda: mmd(np.zeros((4, 1)), np.ones((4, 1)), bandwidth=-1.0),
        lambda: sbc_ranks(np.zeros((4, 10)), np.zeros((4, 1))),
        lambda: sbc_ranks(np.zeros((4, 10, 2)), np.zeros((4, 3))),
        lambda: expected_coverage(np.full((4, 10, 1), np.inf), np.zeros((4, 1))),
        lambda: expected_coverage(np.zeros((4, 10, 1)), np.zeros((4, 1)), levels=[0.5, 1.0]),
        lambda: sbc_uniformity_pvalues(np.array([[0], [11]]), 10),
        lambda: plot_coverage([0.1, 0.5], [0.1], "unused.png"),
    ],
)
def test_bad_inputs_raise_data_error(call):
    with pytest.raises(DataError):
        call()


def test_samples_outside_the_simulators_domain_are_reported_not_fatal() -> None:
    """An untrained ocean posterior puts samples where the sediment is slower than the
    water, which the simulator refuses; evaluation re-simulates the rest and says how
    many fell outside the prior."""
    from vinaflow.evaluation.posterior import score_posterior
    from vinaflow.models import ConditionalINN, Posterior
    from vinaflow.problems import make_problem

    problem = make_problem({"name": "ocean-acoustics"})
    model = ConditionalINN(dim_x=problem.dim_x, dim_y=problem.dim_y, blocks=2, hidden=16, seed=0)
    g = torch.Generator().manual_seed(0)
    x = problem.sample_prior(500, g)
    # Normalisation three times too wide: samples spread far beyond the prior box.
    model.fit_normalization(x * 3 - x.mean(0) * 2, problem.simulate(x, g))
    cfg = {"num_observations": 2, "num_samples": 200, "num_calibration": 0, "c2st": False}
    m = score_posterior(Posterior(model), problem, cfg).metrics
    assert 0 < m["outside_prior"] < 1 and np.isfinite(m["resim_error"])
