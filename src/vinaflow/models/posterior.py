"""The user-facing posterior: ``sample(y, n)`` and ``log_prob(x, y)`` in the problem's units."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import DataError
from vinaflow.models.base import AmortizedModel

__all__ = ["Posterior", "as_observations"]


def as_observations(y: Any, dim_y: int, name: str = "observations") -> Tensor:
    """Validate one observation ``(dim_y,)`` or a batch ``(n_obs, dim_y)``; returns 2-D float32."""
    try:
        arr = y if isinstance(y, Tensor) else np.asarray(y)
        is_complex = arr.is_complex() if isinstance(arr, Tensor) else np.iscomplexobj(arr)
        if not is_complex:
            t = torch.as_tensor(arr if isinstance(arr, Tensor) else arr.astype(np.float64))
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(f"{name} must be a numeric array, got {type(y).__name__}") from err
    if is_complex:
        raise DataError(f"{name} must be real numbers, got complex values")
    if t.ndim == 1:
        t = t[None]
    if t.ndim != 2 or t.shape[1] != dim_y:
        raise DataError(
            f"{name} must have shape ({dim_y},) or (n_obs, {dim_y}), got {tuple(t.shape)}"
        )
    if t.shape[0] == 0:
        raise DataError(f"{name} is empty")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contain NaN or inf")
    t = t.to(torch.float32)
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contain values beyond the float32 range (|v| > 3.4e38)")
    return t


class Posterior:
    """Amortized posterior ``q(x | y)`` of a trained model.

    Example:
        >>> from vinaflow.models import ConditionalINN
        >>> post = Posterior(ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8))
        >>> post.sample([0.3], 100).shape
        torch.Size([1, 100, 2])
    """

    def __init__(self, model: AmortizedModel, batch_size: int = 65536) -> None:
        self.model = model
        self.batch_size = int(batch_size)

    @property
    def dim_x(self) -> int:
        return self.model.dim_x

    @property
    def dim_y(self) -> int:
        return self.model.dim_y

    @torch.inference_mode()
    def sample(self, y: Any, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Draw ``n`` samples for each observation; returns ``(n_obs, n, dim_x)``."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise DataError(f"number of samples n must be an integer >= 1, got {n!r}")
        n = int(n)
        obs = as_observations(y, self.dim_y)
        was_training = self.model.training
        self.model.eval()
        try:
            y_s = self.model.y_norm(obs)
            flat_y = y_s.repeat_interleave(n, dim=0)
            out = []
            for start in range(0, flat_y.shape[0], self.batch_size):
                yb = flat_y[start : start + self.batch_size]
                z = self.model.sample_latent(yb.shape[0], generator)
                out.append(self.model.generate(yb, z))
            x = self.model.x_norm.inverse(torch.cat(out))
        finally:
            self.model.train(was_training)
        x = x.reshape(obs.shape[0], n, self.dim_x)
        bad = (~torch.isfinite(x)).flatten(1).any(1)
        if bad.any():
            raise DataError(
                f"posterior samples overflow for observation(s) {bad.nonzero()[:5, 0].tolist()}: "
                "the observations lie far outside the range of the training data"
            )
        return x

    @property
    def has_log_prob(self) -> bool:
        return self.model.has_log_prob

    @torch.no_grad()
    def log_prob(self, x: Any, y: Any) -> Tensor:
        """``log q(x | y)`` for ``x`` ``(n, dim_x)`` and one ``y`` or ``n`` of them."""
        if not self.has_log_prob:
            raise NotImplementedError(f"model kind {self.model.kind!r} has no tractable log_prob")
        xs = as_observations(x, self.dim_x, name="x")
        obs = as_observations(y, self.dim_y)
        if obs.shape[0] == 1:
            obs = obs.expand(xs.shape[0], -1)
        elif obs.shape[0] != xs.shape[0]:
            raise DataError(f"x has {xs.shape[0]} rows but observations have {obs.shape[0]}")
        self.model.eval()
        lp = self.model.log_prob_standardized(self.model.x_norm(xs), self.model.y_norm(obs))
        return lp + self.model.x_norm.log_abs_det()
