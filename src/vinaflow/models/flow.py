"""Normalizing flow ``Q: z -> x`` for generative modelling (MISSION §1)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn
from torch.distributions import Distribution, Independent, Normal, StudentT, Uniform

from vinaflow.blocks import build_flow
from vinaflow.errors import ConfigError, DataError
from vinaflow.models.normalization import Standardizer

__all__ = ["BASE_DISTRIBUTIONS", "NormalizingFlow", "make_base"]

BASE_DISTRIBUTIONS = ("gaussian", "uniform", "student-t")


def make_base(
    dim: int, name: str = "gaussian", offset: float = 0.0, df: float = 5.0, width: float = 1.0
) -> Distribution:
    """Base distribution on ``R^dim``.

    ``uniform`` is ``U(offset, offset + width)^dim`` (a displaced support, used in the
    support-mismatch study); ``student-t`` has ``df`` degrees of freedom (heavy tails).
    """
    zeros, ones = torch.zeros(dim), torch.ones(dim)
    if name == "gaussian":
        return Independent(Normal(zeros, ones), 1)
    if name == "uniform":
        if width <= 0:
            raise ConfigError(f"model.base_width must be > 0, got {width}")
        return Independent(Uniform(zeros + offset, zeros + offset + width), 1)
    if name == "student-t":
        if df <= 0:
            raise ConfigError(f"model.base_df must be > 0, got {df}")
        return Independent(StudentT(df * ones, zeros, ones), 1)
    raise ConfigError(
        f"model.base: unknown base {name!r}; allowed: {', '.join(BASE_DISTRIBUTIONS)}"
    )


class NormalizingFlow(nn.Module):
    r"""Unconditional flow: ``x = Q(z)``, ``z ~ base``; density by change of variables.

    Internally ``x`` is standardised and the bijection maps ``x_s -> z``
    (density direction = ``rev=False``), so :math:`\log q(x) = \log p_Z(T(x_s)) +
    \log|\det J_T| + \log|\det J_{std}|`.

    Example:
        >>> flow = NormalizingFlow(dim=2, blocks=2, hidden=16)
        >>> flow.sample(10).shape
        torch.Size([10, 2])
    """

    kind = "nf"

    def __init__(
        self,
        dim: int,
        arch: str = "coupling",
        blocks: int = 6,
        hidden: int = 128,
        layers: int = 2,
        base: str = "gaussian",
        base_offset: float = 0.0,
        base_df: float = 5.0,
        base_width: float = 1.0,
        seed: int = 0,
        **block_kwargs: Any,
    ) -> None:
        super().__init__()
        self.dim = int(dim)
        self.base = make_base(self.dim, base, base_offset, base_df, base_width)
        self._config = dict(
            dim=dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            base=base,
            base_offset=base_offset,
            base_df=base_df,
            base_width=base_width,
            seed=seed,
            **block_kwargs,
        )
        torch.manual_seed(seed)
        self.x_norm = Standardizer(self.dim)
        self.flow = build_flow(
            self.dim,
            0,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            seed=seed,
            **block_kwargs,
        )

    def fit_normalization(self, x: Tensor) -> None:
        self.x_norm.fit(x)

    def sample_base(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if generator is None:
            return self.base.rsample((n,))
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.base.rsample((n,))

    def generate_standardized(self, z: Tensor) -> Tensor:
        x_s, _ = self.flow(z, rev=True)
        return x_s

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, dim)`` in data units."""
        with torch.no_grad():
            return self.x_norm.inverse(self.generate_standardized(self.sample_base(n, generator)))

    def log_prob_standardized(self, x_s: Tensor) -> Tensor:
        z, log_det = self.flow(x_s)
        return self.base.log_prob(z) + log_det

    def log_prob(self, x: Tensor) -> Tensor:
        x = torch.as_tensor(x, dtype=torch.float32)
        if x.ndim != 2 or x.shape[1] != self.dim:
            raise DataError(f"x must have shape (n, {self.dim}), got {tuple(x.shape)}")
        return self.log_prob_standardized(self.x_norm(x)) + self.x_norm.log_abs_det()

    def nll(self, x_s: Tensor) -> Tensor:
        return -self.log_prob_standardized(x_s) / self.dim

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._config}
