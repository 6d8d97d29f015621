"""Posterior-accuracy certificates."""

from __future__ import annotations

import argparse
import math

import pytest
import torch

from vinaflow.cli.certify import register as register_certify
from vinaflow.errors import ConfigError, DataError
from vinaflow.evaluation.certificate import (
    CertificateConfig,
    GaussianOffset,
    certificate_for_run,
    certify_posterior,
    certify_samples,
    format_certificate,
)
from vinaflow.objectives.divergences import get_divergence
from vinaflow.problems.bank import BankProblem, SimulationBank
from vinaflow.problems.gaussian_linear import GaussianLinear

FAST = {"steps": 600, "bootstrap": 200, "eval_every": 50}


def _gauss(n: int, shift: float, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 2, generator=g) + torch.tensor([shift, 0.0])


def test_kl_estimate_close_to_exact_for_shifted_gaussians():
    # KL(N(0, I) || N(d e1, I)) = d^2 / 2
    d = 1.0
    cert = certify_samples(_gauss(8000, 0.0, 0), _gauss(8000, d, 1), "kl", paired=False, **FAST)
    exact = d**2 / 2
    assert abs(cert["estimate"] - exact) < 0.2 * exact
    assert cert["ci_low"] <= cert["estimate"] <= cert["ci_high"]
    assert cert["tv_bound"] == pytest.approx(min(1, math.sqrt(cert["estimate"] / 2)))
    assert "lower bound" in cert["label"] and "estimate" in cert["label"]


def test_identical_laws_give_zero_not_negative():
    cert = certify_samples(_gauss(4000, 0.0, 0), _gauss(4000, 0.0, 1), "kl", paired=False, **FAST)
    assert -0.01 < cert["estimate"] < 0.02
    assert cert["tv_bound"] < 0.1


@pytest.mark.parametrize("name", ["js", "hellinger", "gan", "tv", "reverse-kl"])
def test_other_divergences_ordered(name):
    small = certify_samples(_gauss(3000, 0.0, 0), _gauss(3000, 0.3, 1), name, paired=False, **FAST)
    big = certify_samples(_gauss(3000, 0.0, 0), _gauss(3000, 2.0, 1), name, paired=False, **FAST)
    assert big["estimate"] > small["estimate"]
    assert big["tv_bound"] >= small["tv_bound"]


def test_bad_inputs():
    with pytest.raises(DataError, match="at least 200"):
        certify_samples(torch.randn(50, 2), torch.randn(50, 2))
    with pytest.raises(DataError, match="same dim"):
        certify_samples(torch.randn(500, 2), torch.randn(500, 3), paired=False)
    bad = torch.randn(500, 2)
    bad[0, 0] = float("nan")
    with pytest.raises(DataError, match="NaN"):
        certify_samples(bad, torch.randn(500, 2))
    with pytest.raises(ConfigError, match="unknown setting"):
        certify_samples(torch.randn(500, 2), torch.randn(500, 2), config={"stepz": 3})
    with pytest.raises(ConfigError, match="test_fraction"):
        CertificateConfig(test_fraction=1.5)


class _ShiftedPosterior:
    """Exact gaussian-linear posterior with a shifted mean; ``latent`` whitens it."""

    def __init__(self, problem: GaussianLinear, delta: torch.Tensor) -> None:
        self.p, self.delta = problem, delta.double()

    def sample(self, y, n, generator=None):
        mu = self.p.posterior_mean(torch.as_tensor(y)) + self.delta
        eps = torch.randn(mu.shape[0], n, self.p.dim_x, generator=generator, dtype=torch.float64)
        return (mu[:, None] + eps @ self.p._post_cov_chol.T).float()

    def latent(self, x, y):
        r = x.double() - self.p.posterior_mean(torch.as_tensor(y)) - self.delta
        return torch.linalg.solve_triangular(self.p._post_cov_chol, r.T, upper=False).T.float()

    def exact_kl(self) -> float:
        return 0.5 * float(self.delta @ torch.linalg.inv(self.p.post_cov) @ self.delta)


def test_posterior_certificate_matches_exact_kl_on_gaussian_linear():
    problem = GaussianLinear(dim_x=2, dim_y=2, noise=0.3)
    evals, evecs = torch.linalg.eigh(problem.post_cov)
    delta = evecs[:, -1] * math.sqrt(2 * 0.4 * float(evals[-1]))  # KL = 0.4
    post = _ShiftedPosterior(problem, delta)
    cert = certify_posterior(post, problem, "kl", n=8000, seed=3, **FAST)
    assert cert["critic_features"] == "(x, y, z(x, y))"
    assert abs(cert["estimate"] - post.exact_kl()) < 0.2 * post.exact_kl()


def test_certificate_for_run_skips_bank_without_heldout():
    bank = BankProblem(SimulationBank(torch.randn(100, 2), torch.randn(100, 1)))
    out = certificate_for_run(None, bank, dataset=None, evaluation={})
    assert "skipped" in out and "no held-out data" in out["skipped"]
    assert "not computed" in format_certificate(out)
    with pytest.raises(DataError, match="held-out"):
        certify_posterior(None, bank)


def test_pinsker_constants_checked_numerically():
    """c_f is valid on Bernoulli pairs: TV <= c_f sqrt(D_f + s_f) (grid search)."""
    for name in ("kl", "js", "hellinger", "gan", "tv"):
        div = get_divergence(name)
        for a in torch.linspace(0.01, 0.99, 25):
            for b in torch.linspace(0.01, 0.99, 25):
                p = torch.tensor([a, 1 - a], dtype=torch.float64)
                q = torch.tensor([b, 1 - b], dtype=torch.float64)
                d = float((q * div.f(p / q)).sum())
                tv = float(abs(a - b))
                assert tv <= div.tv_bound(d) + 1e-9, (name, float(a), float(b))


def test_cli_registration_and_run_dir_errors(tmp_path):
    parser = argparse.ArgumentParser()
    sub = parser.add_subparsers(dest="command", required=True)
    register_certify(sub)
    args = parser.parse_args(["certify", str(tmp_path / "missing")])
    with pytest.raises(DataError, match="not found"):
        args.func(args)


def test_gaussian_offset_is_the_optimal_critic_of_two_gaussians():
    p, q = _gauss(20000, 0.0, 0), _gauss(20000, 1.0, 1) * 1.5
    off = GaussianOffset(p, q, get_divergence("kl"))
    u = torch.randn(100, 2)
    exact = torch.distributions.MultivariateNormal(torch.zeros(2), torch.eye(2)).log_prob(
        u
    ) - torch.distributions.MultivariateNormal(
        torch.tensor([1.5, 0.0]), 2.25 * torch.eye(2)
    ).log_prob(u)
    torch.testing.assert_close(off.log_ratio(u).float(), exact, atol=0.1, rtol=0.05)
    # raw output maps back through g_f to f'(r) = 1 + log r for KL
    v = off(u)
    torch.testing.assert_close(
        get_divergence("kl").g(v).double(), 1 + off.log_ratio(u), atol=1e-6, rtol=0
    )


def test_gaussian_offset_sharpens_small_divergences():
    # KL(N(0, I) || N(0.1 e1, I)) = 0.005: the Gaussian start resolves it from 20k pairs
    p, q = _gauss(20000, 0.0, 0), _gauss(20000, 0.1, 1)
    with_offset = certify_samples(p, q, "kl", paired=False, quadratic_offset=False, **FAST)
    assert with_offset["gaussian_offset_used"]
    assert abs(with_offset["estimate"] - 0.005) < 0.003


def test_quadratic_offset_resolves_small_divergences_on_degenerate_features():
    """Features ``(x, x A)`` lie on a plane (like the certificate's ``(x, y, z(x, y))``);
    KL(N(0, I) || N(0.1 e1, I)) = 0.005 is recovered by the bound-fitted quadratic critic."""
    a = torch.tensor([[1.0, 2.0], [-0.5, 1.0]])

    def features(x: torch.Tensor) -> torch.Tensor:
        return torch.cat([x, x @ a], 1)

    p, q = features(_gauss(20000, 0.0, 0)), features(_gauss(20000, 0.1, 1))
    cert = certify_samples(p, q, "kl", paired=False, **FAST)
    assert cert["quadratic_offset_used"]
    assert abs(cert["estimate"] - 0.005) < 0.002, cert["estimate"]
    same = certify_samples(
        features(_gauss(20000, 0.0, 2)), features(_gauss(20000, 0.0, 3)), "kl", paired=False, **FAST
    )
    assert abs(same["estimate"]) < 0.002  # no spurious divergence from 14 extra parameters
