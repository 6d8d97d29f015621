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
    attach_c2st_check,
    certificate_for_run,
    certify_posterior,
    certify_samples,
    check_against_c2st,
    detection_limit,
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


def test_identical_laws_give_zero_not_negative_and_are_not_resolved():
    cert = certify_samples(_gauss(4000, 0.0, 0), _gauss(4000, 0.0, 1), "kl", paired=False, **FAST)
    assert -0.01 < cert["estimate"] < 0.02
    # Nothing measured is not "TV <= 0": no bound, and the detection limit instead.
    assert cert["resolved"] is False and cert["unresolved_reason"]
    assert cert["tv_bound"] is None and cert["tv_bound_ci_high"] is None
    assert cert["detection_limit"] == pytest.approx(detection_limit("kl", cert["n_test"]))
    assert cert["detection_limit"] > 0 and 0 < cert["tv_detection_limit"] < 1


def test_detection_limit_is_the_oracle_critic_resolution():
    # KL: 4 f''(1) z^2 / n with f''(1) = 1, z = 1.96 at 95%
    assert detection_limit("kl", 5000) == pytest.approx(4 * 1.959964**2 / 5000, rel=1e-4)
    assert detection_limit("kl", 20000) == pytest.approx(detection_limit("kl", 5000) / 4)
    assert detection_limit("js", 5000) == pytest.approx(detection_limit("kl", 5000) / 2, rel=1e-3)
    assert detection_limit("tv", 5000) == pytest.approx(1.959964 / math.sqrt(10000), rel=1e-4)
    # The oracle critic's held-out estimate has the standard error the limit assumes:
    # KL(N(0,1) || N(d,1)), critic f'(p/q) = 1 + log p/q, per-pair variance ~ 4 KL.
    d, n = 0.1, 200000
    g = torch.Generator().manual_seed(0)
    p, q = torch.randn(n, generator=g).double(), torch.randn(n, generator=g).double() + d

    def log_r(u):
        return -0.5 * u**2 + 0.5 * (u - d) ** 2

    terms = (1 + log_r(p)) - log_r(q).exp()
    assert float(terms.var()) == pytest.approx(4 * d**2 / 2, rel=0.1)


def test_critic_that_cannot_learn_is_not_resolved():
    # One tiny step from the null critic, no fixed starts: nothing can be measured even
    # though the laws differ (KL 0.5).
    cert = certify_samples(
        _gauss(3000, 0.0, 0),
        _gauss(3000, 1.0, 1),
        "kl",
        paired=False,
        steps=1,
        lr=1e-9,
        gaussian_offset=False,
        quadratic_offset=False,
        bootstrap=200,
    )
    assert cert["resolved"] is False and cert["tv_bound"] is None
    assert cert["detection_limit"] > 0
    text = format_certificate(cert)
    assert "Not resolved" in text and "no TV bound" in text and "detection limit" in text


@pytest.mark.parametrize("name", ["js", "hellinger", "gan", "tv", "reverse-kl"])
def test_other_divergences_ordered(name):
    small = certify_samples(_gauss(3000, 0.0, 0), _gauss(3000, 0.3, 1), name, paired=False, **FAST)
    big = certify_samples(_gauss(3000, 0.0, 0), _gauss(3000, 2.0, 1), name, paired=False, **FAST)
    assert big["estimate"] > small["estimate"]
    if big["resolved"] and small["resolved"]:
        assert big["tv_bound"] >= small["tv_bound"]
    else:  # reverse KL's estimator is heavy-tailed at a shift of 2: interval [-3.2, 2.4]
        assert big["tv_bound"] is None or small["tv_bound"] is None
        assert name == "reverse-kl", (big["unresolved_reason"], small["unresolved_reason"])


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


class _ShiftedDensity(_ShiftedPosterior):
    """The same posterior with its density: the certificate can use the likelihood."""

    has_log_prob = True

    def log_prob(self, x, y):
        mu = self.p.posterior_mean(torch.as_tensor(y)) + self.delta
        dist = torch.distributions.MultivariateNormal(mu, self.p.post_cov)
        return dist.log_prob(torch.as_tensor(x).double())


def test_likelihood_features_resolve_a_wrong_posterior_and_not_the_exact_one():
    problem = GaussianLinear(dim_x=2, dim_y=2, noise=0.3)
    evals, evecs = torch.linalg.eigh(problem.post_cov)
    delta = evecs[:, -1] * math.sqrt(2 * 0.4 * float(evals[-1]))  # KL = 0.4
    wrong = _ShiftedDensity(problem, delta)
    cert = certify_posterior(wrong, problem, "kl", n=4000, seed=3, **FAST)
    assert cert["critic_features"].startswith("log p(y|x)")  # "auto" picked the likelihood
    assert cert["resolved"] is True
    assert abs(cert["estimate"] - wrong.exact_kl()) < 0.2 * wrong.exact_kl()
    truth = _ShiftedDensity(problem, torch.zeros(2))
    exact = certify_posterior(truth, problem, "kl", n=4000, seed=3, **FAST)
    assert exact["resolved"] is False and exact["tv_bound"] is None
    latent = certify_posterior(wrong, problem, "kl", n=4000, seed=3, features="latent", **FAST)
    assert latent["critic_features"] == "(x, y, z(x, y))"
    with pytest.raises(ConfigError, match="likelihood"):
        certify_posterior(_ShiftedPosterior(problem, delta), problem, features="likelihood")


def _wrong_and_exact_certificates():
    problem = GaussianLinear(dim_x=2, dim_y=2, noise=0.3)
    evals, evecs = torch.linalg.eigh(problem.post_cov)
    delta = evecs[:, -1] * math.sqrt(2 * 0.4 * float(evals[-1]))  # KL = 0.4
    wrong = _ShiftedPosterior(problem, delta)
    exact = _ShiftedPosterior(problem, torch.zeros(2))
    cert_wrong = certify_posterior(wrong, problem, "kl", n=8000, seed=3, **FAST)
    cert_exact = certify_posterior(exact, problem, "kl", n=8000, seed=3, **FAST)
    return wrong, cert_wrong, cert_exact


@pytest.fixture(scope="module")
def gaussian_linear_certificates():
    return _wrong_and_exact_certificates()


def test_posterior_certificate_matches_exact_kl_on_gaussian_linear(gaussian_linear_certificates):
    post, cert, _ = gaussian_linear_certificates
    assert cert["critic_features"] == "(x, y, z(x, y))"
    assert abs(cert["estimate"] - post.exact_kl()) < 0.2 * post.exact_kl()
    assert cert["resolved"] is True and cert["unresolved_reason"] is None
    assert cert["tv_bound"] == pytest.approx(math.sqrt(cert["estimate"] / 2))
    assert cert["estimate"] > 10 * cert["detection_limit"]
    assert "TV bound c_f·" in format_certificate(cert)


def test_exact_posterior_certificate_is_not_resolved(gaussian_linear_certificates):
    _, _, cert = gaussian_linear_certificates
    assert cert["resolved"] is False and cert["tv_bound"] is None
    assert cert["detection_limit"] == pytest.approx(detection_limit("kl", cert["n_test"]))
    text = format_certificate(cert)
    assert "Not resolved" in text and "TV bound c_f·" not in text
    assert cert["label"].startswith("not resolved")


def test_c2st_check_flags_a_contradiction_and_passes_a_consistent_case(
    gaussian_linear_certificates,
):
    _, wrong, exact = gaussian_linear_certificates
    # The exact posterior's certificate found nothing (TV value ~0): a C2ST of 0.7 at every
    # observation (TV >= 0.4) contradicts it.
    bad = check_against_c2st(exact, [0.70, 0.69, 0.71, 0.70, 0.72, 0.68, 0.70, 0.71])
    assert bad["consistent"] is False
    assert bad["c2st_tv_lower"] == pytest.approx(0.4025)
    assert bad["certificate_tv"] < 0.1 and bad["implied_divergence_lower"] > 0.05
    attached = attach_c2st_check(dict(exact), [0.7] * 8)
    assert attached["consistent_with_c2st"] is False
    assert "Contradicts C2ST" in format_certificate(attached)
    # A certificate of TV ~0.45 (KL 0.4) beside a C2ST of 0.62 (TV >= 0.24): consistent.
    ok = check_against_c2st(wrong, [0.60, 0.62, 0.64, 0.61, 0.63])
    assert ok["consistent"] is True and ok["certificate_tv"] > ok["c2st_tv_lower"]
    assert "Consistent with C2ST" in format_certificate(attach_c2st_check(dict(wrong), [0.62]))
    # A tight constructed case: a resolved-looking TV of 0 against C2ST 0.7.
    zero = {**wrong, "estimate": 0.0, "ci_low": 0.0, "ci_high": 0.0}
    assert check_against_c2st(zero, [0.7] * 10)["consistent"] is False
    assert check_against_c2st(wrong, None) == {}
    assert check_against_c2st({"skipped": "x"}, [0.7]) == {}


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


def test_run_metrics_table_never_quotes_an_unresolved_value(gaussian_linear_certificates):
    from vinaflow.experiments.report import format_metrics_table

    _, wrong, exact = gaussian_linear_certificates
    contradicted = attach_c2st_check(dict(exact), [0.7] * 8)
    table = format_metrics_table({"c2st": 0.7, "certificate": contradicted})
    assert "TV bound" not in table and "not resolved (detection limit" in table
    assert "CONTRADICTS" in table
    table = format_metrics_table({"certificate": wrong})
    assert "TV bound (estimate)" in table and "not resolved" not in table


def test_clamped_critic_is_not_swung_by_one_model_draw_far_in_the_tail():
    # P = N(0, I), Q = N(0.5 e1, I): KL 0.125, log dP/dQ = -0.5 x1 + 1/16 grows without
    # bound as x1 -> -inf. One Q test row at x1 = -40 (a flow's tail draw), where the
    # fitted critic extrapolates, takes the unclamped estimate below zero; clamping the
    # critic to the range it took where it was fitted keeps it at the divergence.
    n = 8000
    p, q = _gauss(n, 0.0, 0), _gauss(n, 0.5, 1)
    split = torch.Generator().manual_seed(0 + 1)  # certify_samples' split for seed 0
    torch.randperm(n, generator=split)  # P's rows
    q[torch.randperm(n, generator=split)[0], 0] = -40.0  # Q's first permuted row: a test row
    clamped = certify_samples(p, q, "kl", paired=False, seed=0, **FAST)
    assert clamped["critic_output_range"] is not None
    assert 0.06 < clamped["estimate"] < 0.19 and clamped["resolved"]
    free = certify_samples(p, q, "kl", paired=False, seed=0, clip_output=False, **FAST)
    assert free["critic_output_range"] is None and free["estimate"] < -0.3  # swung below 0
