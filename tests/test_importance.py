"""Importance-sampled posterior: exactness against closed forms, diagnostics, bad input."""

import math

import pytest
import torch
from torch.distributions import MultivariateNormal

from vinaflow.errors import DataError
from vinaflow.models import ConditionalINN, Posterior
from vinaflow.models.importance import ImportanceSampledPosterior
from vinaflow.problems import make_problem


@pytest.fixture(scope="module")
def problem():
    return make_problem({"name": "gaussian-linear", "dim_x": 2, "dim_y": 2, "noise": 0.5})


def _proposal(scale: float = 1.5) -> Posterior:
    """An untrained cINN, widened: a broad proposal far from the posterior."""
    model = ConditionalINN(dim_x=2, dim_y=2, blocks=2, hidden=16, seed=3)
    model.x_norm.std.fill_(scale)
    return Posterior(model)


def test_gaussian_log_likelihood_matches_torch(problem):
    x = problem.sample_prior(5, torch.Generator().manual_seed(0)).double()
    y = torch.tensor([0.3, -0.2])
    expected = MultivariateNormal(x @ problem.A.T, 0.25 * torch.eye(2).double()).log_prob(
        y.double()
    )
    assert torch.allclose(problem.log_likelihood(x, y), expected, atol=1e-10)


def test_resampled_moments_and_evidence_match_closed_form(problem):
    y = torch.tensor([0.8, -0.4])
    isp = ImportanceSampledPosterior(_proposal(), problem.log_likelihood, problem.log_prior, 400)
    res = isp.sample_with_diagnostics(y, 500, generator=torch.Generator().manual_seed(1))
    s = res.samples[0].double()
    mu = problem.posterior_mean(y)
    assert (s.mean(0) - mu).abs().max() < 0.06
    assert torch.allclose(torch.cov(s.T), problem.post_cov, atol=0.03)
    # The untrained flow is a poor proposal: the ESS says so.
    assert 0.0 < float(res.efficiency[0]) < 0.9
    cov_y = problem.A @ problem.prior_cov @ problem.A.T + 0.25 * torch.eye(2).double()
    log_z = MultivariateNormal(problem.A @ problem.prior_mean, cov_y).log_prob(y.double())
    assert abs(float(res.log_evidence[0]) - float(log_z)) < 0.05


def test_outside_prior_support_gets_zero_weight():
    problem = make_problem({"name": "ocean-acoustics"})
    inside = torch.tensor([[210.0, 1550.0]])
    outside = torch.tensor([[199.0, 1550.0], [210.0, 1600.0]])
    assert math.isfinite(float(problem.log_prior(inside)[0]))
    assert torch.isinf(problem.log_prior(outside)).all()


def test_bad_input(problem):
    model = ConditionalINN(dim_x=2, dim_y=2, blocks=1, hidden=8, latent_dim=3)
    with pytest.raises(DataError, match="tractable density"):
        ImportanceSampledPosterior(Posterior(model), problem.log_likelihood, problem.log_prior)
    with pytest.raises(DataError, match="oversampling"):
        ImportanceSampledPosterior(_proposal(), problem.log_likelihood, problem.log_prior, 0)
    isp = ImportanceSampledPosterior(_proposal(), problem.log_likelihood, problem.log_prior)
    with pytest.raises(DataError, match="shape"):
        isp.sample([0.1, 0.2, 0.3], 10)
    never = ImportanceSampledPosterior(
        _proposal(), problem.log_likelihood, lambda x: torch.full((x.shape[0],), -math.inf)
    )
    with pytest.raises(DataError, match="zero weight"):
        never.sample([0.1, 0.2], 10)


def test_config_and_run_report_the_importance_metrics(tmp_path):
    from vinaflow.config import resolve_config
    from vinaflow.errors import ConfigError
    from vinaflow.experiments.pipeline import run

    with pytest.raises(ConfigError, match="importance_sampling"):
        resolve_config({"evaluation": {"importance_sampling": -1}})
    base = {
        "model": {"kind": "cinn", "blocks": 1, "hidden": 8},
        "training": {"steps": 20, "progress": False},
        "evaluation": {
            "num_observations": 1,
            "num_samples": 50,
            "num_calibration": 0,
            "importance_sampling": 5,
            "plots": False,
            "certificate": False,
        },
    }
    # No likelihood (the kinematics arm): the section says why it is missing.
    kin = resolve_config({**base, "problem": {"name": "kinematics", "num_simulations": 300}})
    m = run(kin, out=tmp_path / "kin", progress=False).metrics
    assert "no tractable likelihood" in m["importance"]["skipped"]
    assert "Not computed" in (tmp_path / "kin" / "report.md").read_text()
    gl = resolve_config({**base, "problem": {"name": "gaussian-linear", "num_simulations": 300}})
    m = run(gl, out=tmp_path / "gl", progress=False).metrics
    assert 0 < m["importance"]["efficiency"] <= 1 and m["importance"]["c2st"] is not None
    assert "Importance-sampled posterior" in (tmp_path / "gl" / "report.md").read_text()


def test_metrics_table_lists_the_importance_rows():
    from vinaflow.experiments.report import format_metrics_table

    table = format_metrics_table({"c2st": 0.7, "importance": {"c2st": 0.51, "efficiency": 0.4}})
    assert "is_c2st" in table and "0.51" in table and "is_efficiency" in table
    assert "is_" not in format_metrics_table({"c2st": 0.7})
