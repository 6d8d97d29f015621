"""Problems: closed-form posterior, user simulators, banks, registry errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vinaflow.errors import ConfigError, DataError
from vinaflow.problems import GaussianLinear, SimulatorProblem, make_problem


def test_gaussian_linear_posterior_matches_joint_conditioning() -> None:
    # Independent derivation: condition the joint Gaussian of (x, y) (Schur complement).
    p = GaussianLinear(
        dim_x=3,
        dim_y=2,
        noise=0.3,
        prior_mean=[0.5, -1.0, 0.0],
        prior_cov=[[1.0, 0.3, 0.0], [0.3, 2.0, 0.1], [0.0, 0.1, 0.5]],
        seed=3,
    )
    A, S, m = p.A, p.prior_cov, p.prior_mean
    Syy = A @ S @ A.T + 0.09 * torch.eye(2, dtype=torch.float64)
    Sxy = S @ A.T
    y = torch.tensor([0.4, -0.2], dtype=torch.float64)
    mean = m + Sxy @ torch.linalg.solve(Syy, y - A @ m)
    cov = S - Sxy @ torch.linalg.solve(Syy, Sxy.T)
    assert torch.allclose(p.posterior_mean(y), mean, atol=1e-10)
    assert torch.allclose(p.post_cov, cov, atol=1e-10)
    samples = p.reference_posterior(y.float(), 200000, torch.Generator().manual_seed(0)).double()
    assert torch.allclose(samples.mean(0), mean, atol=0.01)
    assert torch.allclose(torch.cov(samples.T), cov, atol=0.01)


def test_gaussian_linear_simulator_noise() -> None:
    p = GaussianLinear(dim_x=2, dim_y=2, noise=0.2)
    x = torch.zeros(50000, 2)
    y = p.simulate(x, torch.Generator().manual_seed(0))
    assert abs(float(y.std()) - 0.2) < 0.005
    assert torch.allclose(p.simulate_noise_free(torch.ones(1, 2)), (p.A.sum(1)).float()[None])


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(noise=0),
        dict(dim_x=0),
        dict(matrix=[[1.0, 2.0]]),
        dict(prior_cov=[[1, 2], [2, 1]], dim_x=2, dim_y=1),
    ],
)
def test_gaussian_linear_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ConfigError):
        GaussianLinear(**kwargs)


def test_custom_problem_from_module_function_string() -> None:
    prior = {"uniform": {"low": [0.0, 0.0], "high": [1.0, 2.0]}}
    p = make_problem({"simulator": "torch:sin", "prior": prior})
    assert (p.dim_x, p.dim_y) == (2, 2)
    x = p.sample_prior(5, torch.Generator().manual_seed(0))
    assert torch.allclose(p.simulate_checked(x), torch.sin(x))
    assert (x[:, 1] <= 2).all()


def test_custom_problem_from_distribution() -> None:
    prior = torch.distributions.MultivariateNormal(torch.zeros(3), torch.eye(3))
    p = SimulatorProblem(lambda x: x[:, :1] * 2, prior)
    assert (p.dim_x, p.dim_y) == (3, 1)


def test_custom_simulator_errors() -> None:
    prior = {"normal": {"loc": [0.0], "scale": [1.0]}}
    bad_shape = SimulatorProblem(lambda x: torch.zeros(min(x.shape[0], 2), 1), prior)
    with pytest.raises(DataError, match="shape"):
        bad_shape.simulate_checked(torch.zeros(5, 1))  # 2 rows returned for 5 inputs
    nonfinite = SimulatorProblem(lambda x: x / 0.0, prior)
    with pytest.raises(DataError, match="non-finite"):
        nonfinite.simulate_checked(torch.zeros(3, 1))
    with pytest.raises(DataError, match="shape"):
        SimulatorProblem(lambda x: x.sum(), prior)
    with pytest.raises(ConfigError, match="module:function"):
        make_problem({"simulator": "no_colon", "prior": prior})
    with pytest.raises(ConfigError, match="cannot import"):
        make_problem({"simulator": "no_such_module_xyz:f", "prior": prior})
    with pytest.raises(ConfigError, match="prior"):
        make_problem({"simulator": "torch:sin", "prior": {"normal": {"loc": [0.0]}}})


def test_bank_problem(tmp_path) -> None:  # noqa: ANN001
    x = np.random.default_rng(0).normal(size=(100, 2))
    np.savez(tmp_path / "bank.npz", x=x, y=x.sum(1, keepdims=True))
    p = make_problem({"bank": str(tmp_path / "bank.npz")})
    assert (p.dim_x, p.dim_y) == (2, 1) and not p.has_reference_posterior
    np.savez(tmp_path / "nox.npz", y=x)
    with pytest.raises(DataError, match="lacks"):
        make_problem({"bank": str(tmp_path / "nox.npz")})
    np.savez(tmp_path / "nan.npz", x=np.full((30, 2), np.nan), y=x[:30])
    with pytest.raises(DataError, match="non-finite"):
        make_problem({"bank": str(tmp_path / "nan.npz")})
    np.savez(tmp_path / "len.npz", x=x, y=x[:50])
    with pytest.raises(DataError, match="lengths"):
        make_problem({"bank": str(tmp_path / "len.npz")})
    (tmp_path / "junk.npz").write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="readable"):
        make_problem({"bank": str(tmp_path / "junk.npz")})
    with pytest.raises(DataError, match="not found"):
        make_problem({"bank": str(tmp_path / "missing.npz")})


def test_registry_errors() -> None:
    with pytest.raises(ConfigError, match="unknown problem"):
        make_problem({"name": "nope"})
    with pytest.raises(ConfigError, match="unknown parameter"):
        make_problem({"name": "gaussian-linear", "colour": 3})
    with pytest.raises(ConfigError, match="exactly one"):
        make_problem({"name": "gaussian-linear", "bank": "x.npz"})
