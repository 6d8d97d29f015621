"""Gaussian linear problem with a closed-form posterior."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import MultivariateNormal

from vinaflow.errors import ConfigError
from vinaflow.problems.base import Problem

__all__ = ["GaussianLinear"]


def _as_matrix(name: str, value: Any, shape: tuple[int, int]) -> Tensor:
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.shape != shape:
        raise ConfigError(f"problem.{name} must have shape {list(shape)}, got {list(t.shape)}")
    if not torch.isfinite(t).all():
        raise ConfigError(f"problem.{name} must be finite")
    return t


class GaussianLinear(Problem):
    r"""``x ~ N(m, S)``, ``y = A x + eps``, ``eps ~ N(0, s^2 I)``.

    The posterior is Gaussian with covariance
    :math:`\Sigma = (S^{-1} + A^T A / s^2)^{-1}` and mean
    :math:`\mu = \Sigma (S^{-1} m + A^T y / s^2)` (Bishop, PRML, eq. 2.116).

    Arguments:
        dim_x: Number of parameters.
        dim_y: Number of observations.
        noise: Observation noise standard deviation ``s``.
        matrix: The forward matrix ``A`` (``dim_y x dim_x``); random ``N(0, 1/dim_x)``
            entries drawn with ``seed`` when omitted.
        prior_mean: ``m`` (default zeros).
        prior_cov: ``S`` (default identity); a list of lists or a scalar variance.
        seed: Seed of the random forward matrix.

    Example:
        >>> problem = GaussianLinear(dim_x=4, dim_y=2, noise=0.1)
        >>> x = problem.sample_prior(5)
        >>> problem.simulate(x).shape
        torch.Size([5, 2])
    """

    name = "gaussian-linear"

    def __init__(
        self,
        dim_x: int = 4,
        dim_y: int = 2,
        noise: float = 0.1,
        matrix: Sequence[Sequence[float]] | None = None,
        prior_mean: Sequence[float] | None = None,
        prior_cov: Sequence[Sequence[float]] | float | None = None,
        seed: int = 0,
    ) -> None:
        if int(dim_x) < 1 or int(dim_y) < 1:
            raise ConfigError(f"problem.dim_x and problem.dim_y must be >= 1, got {dim_x}, {dim_y}")
        if not (float(noise) > 0):
            raise ConfigError(f"problem.noise must be a positive number, got {noise}")
        self.dim_x, self.dim_y, self.noise, self.seed = int(dim_x), int(dim_y), float(noise), seed
        self.param_names = [f"x{i + 1}" for i in range(self.dim_x)]
        if matrix is None:
            g = torch.Generator().manual_seed(int(seed))
            A = torch.randn(self.dim_y, self.dim_x, generator=g, dtype=torch.float64)
            A = A / self.dim_x**0.5
        else:
            A = _as_matrix("matrix", matrix, (self.dim_y, self.dim_x))
        m = torch.zeros(self.dim_x, dtype=torch.float64)
        if prior_mean is not None:
            m = torch.as_tensor(prior_mean, dtype=torch.float64)
            if m.shape != (self.dim_x,):
                raise ConfigError(f"problem.prior_mean must have {self.dim_x} entries")
        if prior_cov is None:
            S = torch.eye(self.dim_x, dtype=torch.float64)
        elif isinstance(prior_cov, (int, float)):
            if prior_cov <= 0:
                raise ConfigError("problem.prior_cov must be a positive variance or a matrix")
            S = float(prior_cov) * torch.eye(self.dim_x, dtype=torch.float64)
        else:
            S = _as_matrix("prior_cov", prior_cov, (self.dim_x, self.dim_x))
        try:
            torch.linalg.cholesky(S)
        except RuntimeError as err:
            raise ConfigError("problem.prior_cov must be symmetric positive definite") from err
        self.A, self.prior_mean, self.prior_cov = A, m, S
        self.prior = MultivariateNormal(m.float(), covariance_matrix=S.float())
        S_inv = torch.linalg.inv(S)
        self.post_cov = torch.linalg.inv(S_inv + A.T @ A / self.noise**2)
        self._post_cov_chol = torch.linalg.cholesky(self.post_cov)
        self._S_inv_m = S_inv @ m

    def simulate_noise_free(self, x: Tensor) -> Tensor:
        return (x.double() @ self.A.T).to(x.dtype)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        return self.simulate_with_clean(x, generator)[0]

    @property
    def observation_noise_std(self) -> Tensor:
        return torch.full((self.dim_y,), self.noise)

    def simulate_with_clean(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor]:
        eps = torch.randn(x.shape[0], self.dim_y, generator=generator, dtype=torch.float64)
        clean = x.double() @ self.A.T
        return (clean + self.noise * eps).to(x.dtype), clean.to(x.dtype)

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """``log N(y; A x, s^2 I)`` ``(n,)`` for ``x`` ``(n, dim_x)`` and one ``y``."""
        r = torch.as_tensor(y, dtype=torch.float64).reshape(-1) - x.double() @ self.A.T
        norm = self.dim_y * (math.log(self.noise) + 0.5 * math.log(2 * math.pi))
        return -0.5 * (r * r).sum(-1) / self.noise**2 - norm

    def posterior_mean(self, y: Tensor) -> Tensor:
        """Closed-form posterior mean for ``y`` of shape ``(dim_y,)`` or ``(n, dim_y)``."""
        rhs = self._S_inv_m + y.double() @ self.A / self.noise**2
        return rhs @ self.post_cov.T

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        mu = self.posterior_mean(y.reshape(-1))
        eps = torch.randn(n, self.dim_x, generator=generator, dtype=torch.float64)
        return (mu + eps @ self._post_cov_chol.T).float()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(noise=self.noise, seed=self.seed, matrix=self.A.tolist())
        return d
