"""The ocean reference from the exact modal sum: it agrees with the tabulated one within
the interpolation error, and every grid records (and bounds) its frontier mass."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vinaflow.errors import ConfigError, ConvergenceError
from vinaflow.evaluation.intervals import binomial_interval
from vinaflow.evaluation.posterior import evaluate_posterior
from vinaflow.models import ConditionalINN
from vinaflow.models.posterior import Posterior
from vinaflow.problems.grid_posterior import GridPosterior
from vinaflow.problems.ocean_acoustics import FRONTIER_BOUND, OceanAcousticsProblem

# Largest |lattice - modal sum| of the unit-power field (test_ocean_problem measures < 2e-3).
FIELD_ERROR = 2e-3


@pytest.fixture(scope="module")
def problem() -> OceanAcousticsProblem:
    return OceanAcousticsProblem()


@pytest.fixture(scope="module")
def observation(problem: OceanAcousticsProblem) -> torch.Tensor:
    g = torch.Generator().manual_seed(11)
    return problem.simulate(problem.sample_prior(1, g), g)[0]


def test_exact_and_tabulated_likelihoods_differ_by_at_most_the_interpolation_bound(
    problem, observation
):
    # |a - q - e|^2 - |a - q|^2 is at most |e| (2 |a - q| + |e|) per entry: the lattice's
    # field error bounds its log-likelihood error point by point.
    qo = problem.to_complex(observation.double())
    rng = np.random.default_rng(3)
    box = np.stack([rng.uniform(200.5, 236.5, 200), rng.uniform(1532, 1592, 200)], axis=1)
    bulk = problem.grid_posterior(observation).sample(200, torch.Generator().manual_seed(1))
    pts = np.concatenate([box, bulk.numpy()])
    tab = problem._tabulated_loglik(qo)(pts)
    exact = problem._exact_loglik(qo)(pts)
    resid = np.abs(qo.reshape(1, -1) - problem.exact_field(pts))
    inv = np.repeat(1.0 / problem.noise_variance, problem.n_recv)
    bound = (FIELD_ERROR * (2.0 * resid + FIELD_ERROR)) @ inv
    assert np.all(np.abs(tab - exact) <= bound)
    assert np.abs(tab - exact)[200:].max() < 0.05  # nats, where the posterior is
    # the same normalisation as the problem's own (exact) likelihood, up to its constant
    full = problem.log_likelihood(torch.as_tensor(pts), observation).numpy()
    np.testing.assert_allclose(full - exact, (full - exact)[0], atol=1e-8)


def test_exact_grid_posterior_agrees_with_the_tabulated_one(problem, observation):
    tab = problem.grid_posterior(observation)
    exact = problem.grid_posterior(
        observation, likelihood="exact", resolution=1.0, min_effective_cells=250.0
    )
    assert exact is problem.grid_posterior(
        observation, likelihood="exact", resolution=1.0, min_effective_cells=250.0
    )
    assert exact is not problem.grid_posterior(
        observation, resolution=1.0, min_effective_cells=250.0
    )
    m_t, s_t = tab.mean.numpy(), tab.std.numpy()
    m_e, s_e = exact.mean.numpy(), exact.std.numpy()
    assert np.all(np.abs(m_e - m_t) < 0.02 * s_t)
    np.testing.assert_allclose(s_e, s_t, rtol=0.01)
    for post in (tab, exact):
        d = post.diagnostics()
        assert d["frontier_mass"] == post.frontier_mass < FRONTIER_BOUND
        assert d["n_evaluations"] == post.n_evaluations and d["leaves"] == post.leaf_loglik.size
    with pytest.raises(ConfigError, match="likelihood"):
        problem.grid_posterior(observation, likelihood="lattice")


def test_frontier_mass_is_bounded():
    def loglik(p: np.ndarray) -> np.ndarray:
        return -0.5 * (((p[:, 0] - 0.5) / 0.01) ** 2 + ((p[:, 1] - 0.5) / 0.02) ** 2)

    kw = {"base_shape": (32, 32), "min_effective_cells": 50.0}
    post = GridPosterior(loglik, (0, 0), (1, 1), **kw, max_frontier_mass=1e-3)
    assert 0 < post.frontier_mass < 1e-3
    # tau = 1 nat leaves density at the refined region's edge: the bound must catch it
    with pytest.raises(ConvergenceError, match="frontier_mass"):
        GridPosterior(loglik, (0, 0), (1, 1), **kw, tau=1.0, base_tau=1.0, max_frontier_mass=1e-3)


def test_evaluation_records_the_reference_frontier_mass(problem):
    torch.manual_seed(0)
    post = Posterior(ConditionalINN(dim_x=2, dim_y=problem.dim_y, blocks=1, hidden=8))
    cfg = {"num_observations": 2, "num_samples": 50, "num_calibration": 0, "c2st": False}
    m = evaluate_posterior(post, problem, cfg)
    assert m["reference_frontier_mass_max"] < FRONTIER_BOUND
    d = m["reference_diagnostics"]
    assert len(d["frontier_mass"]) == 2 and d["frontier_bound"] == [FRONTIER_BOUND] * 2


def test_binomial_interval_is_clopper_pearson():
    from scipy import stats

    s = binomial_interval(184, 200)
    ci = stats.binomtest(184, 200).proportion_ci(0.95, method="exact")
    assert s["mean"] == 0.92 and s["n"] == 200
    assert s["low"] == pytest.approx(ci.low) and s["high"] == pytest.approx(ci.high)
    assert s["high"] > 0.95  # 0.92 over 200 draws is within noise of 0.95 ...
    assert binomial_interval(460, 500)["high"] < 0.95  # ... over 500 it is not
    assert binomial_interval(0, 5)["low"] == 0.0 and binomial_interval(5, 5)["high"] == 1.0
