"""Per-dimension standardisation, fitted on training data and stored with the model."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vinaflow.errors import DataError

__all__ = ["Standardizer"]


class Standardizer(nn.Module):
    """``(v - mean) / std`` with statistics from training data.

    Networks train in standardised units so that one set of defaults serves
    problems whose parameters live at scale 1e-3 or 1e3. Constant columns get
    ``std = 1`` (they carry no information, and dividing by zero would).
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("std", torch.ones(dim))

    @property
    def dim(self) -> int:
        return self.mean.shape[0]

    @torch.no_grad()
    def fit(self, data: Tensor) -> Standardizer:
        if data.ndim != 2 or data.shape[1] != self.dim:
            raise DataError(f"data to standardise must have shape (n, {self.dim})")
        if not torch.isfinite(data).all():
            raise DataError("data to standardise contains non-finite values")
        mean = data.double().mean(0)
        std = data.double().std(0) if data.shape[0] > 1 else torch.ones(self.dim)
        scale = mean.abs().clamp_min(1.0)
        std = torch.where(std > 1e-12 * scale, std, torch.ones_like(std))
        self.mean.copy_(mean.float())
        self.std.copy_(std.float())
        return self

    def forward(self, v: Tensor) -> Tensor:
        return (v - self.mean) / self.std

    def inverse(self, v: Tensor) -> Tensor:
        return v * self.std + self.mean

    def log_abs_det(self) -> Tensor:
        """``log|det|`` of :meth:`forward` (a constant)."""
        return -self.std.log().sum()
