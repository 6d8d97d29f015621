r"""Prior penalties on generated samples :math:`x` (weighted by :math:`\lambda'`).

* Gaussian prior :math:`N(\mu, \mathrm{diag}\,s^2)`: the negative log-density up to a
  constant, :math:`\tfrac12\|(x-\mu)/s\|^2`, averaged over the batch.
* Box (uniform) prior on :math:`[l, h]`: the squared Euclidean distance to the box,
  :math:`\sum_d \max(l_d - x_d, 0)^2 + \max(x_d - h_d, 0)^2`, averaged over the batch;
  zero inside the support, a squared hinge outside.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError

__all__ = ["box_prior_penalty", "gaussian_prior_penalty"]


def _check_x(x: Tensor) -> None:
    if not isinstance(x, Tensor):
        raise DataError(f"x must be a torch.Tensor, got {type(x).__name__}")
    if x.ndim != 2 or x.shape[0] == 0:
        raise DataError(f"x must have shape (batch, dim) with batch >= 1, got {tuple(x.shape)}")


def _param(name: str, value: float | Tensor, x: Tensor) -> Tensor:
    """A scalar or ``(dim,)`` parameter as a finite tensor matching ``x``."""
    t = torch.as_tensor(value, dtype=x.dtype, device=x.device)
    if t.ndim > 1 or (t.ndim == 1 and t.shape[0] != x.shape[1]):
        raise ConfigError(
            f"{name} must be a scalar or have shape ({x.shape[1]},), got {tuple(t.shape)}"
        )
    if not torch.isfinite(t).all():
        raise ConfigError(f"{name} must be finite")
    return t


def gaussian_prior_penalty(
    x: Tensor, loc: float | Tensor = 0.0, scale: float | Tensor = 1.0
) -> Tensor:
    r""":math:`\frac1n\sum_i \tfrac12\|(x_i - \mathrm{loc}) / \mathrm{scale}\|^2`.

    ``loc`` and ``scale`` are scalars or per-dimension ``(dim,)``; ``scale > 0``.
    """
    _check_x(x)
    loc = _param("loc", loc, x)
    scale = _param("scale", scale, x)
    if not (scale > 0).all():
        raise ConfigError("scale must be > 0")
    return 0.5 * ((x - loc) / scale).square().sum(-1).mean()


def box_prior_penalty(x: Tensor, low: float | Tensor, high: float | Tensor) -> Tensor:
    r""":math:`\frac1n\sum_i \operatorname{dist}(x_i, [\mathrm{low}, \mathrm{high}])^2`.

    ``low`` and ``high`` are scalars or per-dimension ``(dim,)`` with ``low < high``.
    """
    _check_x(x)
    low = _param("low", low, x)
    high = _param("high", high, x)
    if not (low < high).all():
        raise ConfigError("box prior needs low < high in every dimension")
    below = torch.relu(low - x)
    above = torch.relu(x - high)
    return (below.square() + above.square()).sum(-1).mean()
