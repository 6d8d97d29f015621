"""What every amortized-inference model offers the objectives and the posterior."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from vinaflow.models.normalization import Standardizer
from vinaflow.models.summary import SetSummary, tie_set_normalization

__all__ = ["AmortizedModel", "Encoding"]


@dataclass
class Encoding:
    """Result of the density direction ``x -> latent`` in standardised units.

    ``y_hat`` is the predicted observation (joint INN only), ``z`` the latent,
    ``log_det`` the log-Jacobian of the bijection and ``extra`` any output
    coordinates that should be zero (the joint INN's output padding).
    """

    z: Tensor
    log_det: Tensor
    y_hat: Tensor | None = None
    extra: Tensor | None = None


class AmortizedModel(nn.Module, ABC):
    """A bijective model of ``p(x | y)``, trained in standardised units.

    Subclasses implement :meth:`encode` (``x -> z`` given ``y``), :meth:`generate`
    (``z -> x`` given ``y``) and :meth:`nll`. Users interact through
    :class:`vinaflow.models.Posterior`. ``dim_y = 0`` means no observation: the model
    is then an unconditional density of ``x`` and ``y_s`` is a zero-width tensor
    ``(n, 0)`` (or ``None`` where a method says so).
    """

    kind: str = "model"

    def __init__(self, dim_x: int, dim_y: int, latent_dim: int) -> None:
        super().__init__()
        self.dim_x, self.dim_y, self.latent_dim = int(dim_x), int(dim_y), int(latent_dim)
        self.x_norm = Standardizer(self.dim_x)
        self.y_norm = Standardizer(self.dim_y)

    def fit_normalization(self, x: Tensor, y: Tensor | None = None) -> None:
        self.x_norm.fit(x)
        if y is not None or self.dim_y:  # nothing to fit without an observation
            self._fit_y_norm(y)

    @property
    def set_shape(self) -> tuple[int, int] | None:
        """``(m, set_dim)`` of each observation for a set summary, else ``None``."""
        summary = getattr(self, "embedding", None)
        if isinstance(summary, SetSummary):
            return summary.set_size, summary.set_dim
        return None

    def _fit_y_norm(self, y: Tensor) -> None:
        self.y_norm.fit(y)  # validates shape and finiteness
        shape = self.set_shape
        if shape is not None:
            tie_set_normalization(self.y_norm, y, *shape)

    def sample_latent(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        return torch.randn(n, self.latent_dim, generator=generator)

    @abstractmethod
    def encode(self, x_s: Tensor, y_s: Tensor) -> Encoding:
        """Density direction on standardised ``x_s`` given standardised ``y_s``."""

    @abstractmethod
    def generate(self, y_s: Tensor, z: Tensor) -> Tensor:
        """Sampling direction: standardised ``x`` for standardised ``y_s`` and latent ``z``."""

    @abstractmethod
    def nll(self, x_s: Tensor, y_s: Tensor) -> Tensor:
        """Per-sample maximum-likelihood loss in standardised units."""

    @property
    def has_log_prob(self) -> bool:
        return False

    def log_prob_standardized(self, x_s: Tensor, y_s: Tensor) -> Tensor:
        raise NotImplementedError(f"{self.kind} has no tractable log-density")

    @abstractmethod
    def config(self) -> dict[str, Any]:
        """Constructor arguments, enough to rebuild the model before loading weights."""
