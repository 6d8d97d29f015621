"""sbibm's ``two_moons``, ``gaussian_linear`` and ``gaussian_mixture`` as vinaflow problems.

Implemented from the task definitions in sbibm 1.1.0 (``sbibm/tasks/<task>/task.py``,
Lueckmann et al. 2021, "Benchmarking Simulation-Based Inference"):

- ``two_moons``: ``theta ~ U([-1, 1]^2)``; ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``,
  ``p = (r cos a + 0.25, r sin a)``; with ``z0 = (theta0 + theta1) / sqrt 2`` and
  ``z1 = (theta1 - theta0) / sqrt 2`` (rotation by -pi/4), ``y = p + (-|z0|, z1)``.
- ``gaussian_linear`` (dim 10): ``theta ~ N(0, 0.1 I)`` (covariance), ``y ~ N(theta, 0.1 I)``;
  posterior ``N(y / 2, 0.05 I)``.
- ``gaussian_mixture`` (dim 2): ``theta ~ U([-10, 10]^2)``;
  ``y ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``; posterior: the same mixture centred on
  ``y``, truncated to the prior box.

:func:`posterior_predictive_check` compares simulations at reference posterior samples with
the observation they were drawn for.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, Normal, Uniform

from vinaflow.problems.base import Problem

__all__ = [
    "GaussianLinearTask",
    "GaussianMixtureTask",
    "TwoMoonsTask",
    "make_task",
    "posterior_predictive_check",
]


class TwoMoonsTask(Problem):
    """sbibm ``two_moons``: a crescent-shaped, bimodal posterior in 2-D."""

    name = "two_moons"

    def __init__(self) -> None:
        self.dim_x = self.dim_y = 2
        self.param_names = ["theta1", "theta2"]
        self.prior = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        n = x.shape[0]
        u = torch.rand(n, generator=generator, dtype=x.dtype)
        a = (u - 0.5) * math.pi
        r = 0.1 + 0.01 * torch.randn(n, generator=generator, dtype=x.dtype)
        p = torch.stack((torch.cos(a) * r + 0.25, torch.sin(a) * r), dim=1)
        c = s = 1.0 / math.sqrt(2.0)  # cos(-pi/4) = 1/sqrt2, sin(-pi/4) = -1/sqrt2
        z0 = c * x[:, 0] + s * x[:, 1]
        z1 = -s * x[:, 0] + c * x[:, 1]
        return p + torch.stack((-torch.abs(z0), z1), dim=1)


class GaussianLinearTask(Problem):
    """sbibm ``gaussian_linear``: ``theta ~ N(0, s_p^2 I)``, ``y ~ N(theta, s_n^2 I)``."""

    name = "gaussian_linear"

    def __init__(self, dim: int = 10, prior_var: float = 0.1, noise_var: float = 0.1) -> None:
        self.dim_x = self.dim_y = dim
        self.param_names = [f"theta{i + 1}" for i in range(dim)]
        self.prior_var, self.noise_var = prior_var, noise_var
        self.prior = Independent(
            Normal(torch.zeros(dim), math.sqrt(prior_var) * torch.ones(dim)), 1
        )

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        eps = torch.randn(x.shape, generator=generator, dtype=x.dtype)
        return x + math.sqrt(self.noise_var) * eps

    def posterior_moments(self, y: Tensor) -> tuple[Tensor, float]:
        """Posterior mean (dim,) and per-coordinate variance for one observation ``y``."""
        var = 1.0 / (1.0 / self.prior_var + 1.0 / self.noise_var)
        return var / self.noise_var * y.reshape(-1), var

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        mean, var = self.posterior_moments(y)
        eps = torch.randn(n, self.dim_x, generator=generator, dtype=mean.dtype)
        return mean + math.sqrt(var) * eps


class GaussianMixtureTask(Problem):
    """sbibm ``gaussian_mixture``: ``y ~ 0.5 N(theta, I) + 0.5 N(theta, 0.1^2 I)``."""

    name = "gaussian_mixture"
    scales = (1.0, 0.1)

    def __init__(self, dim: int = 2, bound: float = 10.0) -> None:
        self.dim_x = self.dim_y = dim
        self.bound = bound
        self.param_names = [f"theta{i + 1}" for i in range(dim)]
        self.prior = Independent(Uniform(-bound * torch.ones(dim), bound * torch.ones(dim)), 1)

    def _scale(self, n: int, generator: torch.Generator | None, dtype: torch.dtype) -> Tensor:
        idx = torch.rand(n, 1, generator=generator) < 0.5
        return torch.where(idx, self.scales[0], self.scales[1]).to(dtype)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        scale = self._scale(x.shape[0], generator, x.dtype)
        return x + scale * torch.randn(x.shape, generator=generator, dtype=x.dtype)

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        y = y.reshape(1, -1).to(torch.get_default_dtype())
        out: list[Tensor] = []
        have = 0
        while have < n:
            m = 2 * (n - have) + 16
            s = y + self._scale(m, generator, y.dtype) * torch.randn(
                m, self.dim_x, generator=generator, dtype=y.dtype
            )
            s = s[(s.abs() <= self.bound).all(dim=1)]
            out.append(s)
            have += len(s)
        return torch.cat(out)[:n]


_TASKS: dict[str, type[Problem]] = {
    "two_moons": TwoMoonsTask,
    "gaussian_linear": GaussianLinearTask,
    "gaussian_mixture": GaussianMixtureTask,
}


def make_task(name: str) -> Problem:
    """The task called ``name`` (``two_moons``, ``gaussian_linear``, ``gaussian_mixture``)."""
    if name not in _TASKS:
        raise KeyError(f"unknown task {name!r}; known: {sorted(_TASKS)}")
    return _TASKS[name]()


def posterior_predictive_check(
    task: Problem,
    samples: np.ndarray | Tensor,
    observation: np.ndarray | Tensor,
    n: int = 2000,
    k: int = 10,
    seed: int = 0,
) -> dict[str, float]:
    """Is the observation typical of simulations at (reference) posterior samples?

    Simulates ``y_i ~ p(y | theta_i)`` at ``n`` of the ``samples`` and returns

    - ``knn_pvalue``: the fraction of predictive draws whose mean distance to their ``k``
      nearest other draws is at least the observation's (a density-rank p-value; small
      means the observation sits where the predictive puts little mass, as a wrong
      simulator or a wrong reference would make it),
    - ``mahalanobis_pvalue``: the same with the Mahalanobis distance to the predictive
      mean (rougher, for unimodal predictives),
    - ``mean_z``: the largest absolute z-score of the observation per coordinate.

    Under a correct simulator and reference both p-values are roughly uniform over
    observations; values below about 1e-3 flag a mismatch.
    """
    g = torch.Generator().manual_seed(seed)
    theta = torch.as_tensor(np.asarray(samples), dtype=torch.float32)
    obs = torch.as_tensor(np.asarray(observation), dtype=torch.float32).reshape(1, -1)
    idx = torch.randperm(len(theta), generator=g)[:n]
    y = task.simulate(theta[idx], generator=g)
    mu, sd = y.mean(0, keepdim=True), y.std(0, keepdim=True).clamp_min(1e-12)
    yz, oz = (y - mu) / sd, (obs - mu) / sd
    d_yy = torch.cdist(yz, yz)
    d_yy.fill_diagonal_(float("inf"))
    knn_y = d_yy.topk(k, largest=False).values.mean(1)
    knn_o = torch.cdist(oz, yz).topk(k, largest=False).values.mean()
    cov = torch.cov(y.T.double()).reshape(y.shape[1], y.shape[1])
    prec = torch.linalg.pinv(cov)
    dy = (y - mu).double()
    m_y = ((dy @ prec) * dy).sum(1)
    do = (obs - mu).double()
    m_o = ((do @ prec) * do).sum()
    return {
        "knn_pvalue": float((knn_y >= knn_o).float().mean()),
        "mahalanobis_pvalue": float((m_y >= m_o).double().mean()),
        "mean_z": float(oz.abs().max()),
    }
