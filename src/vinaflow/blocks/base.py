"""The one interface every invertible block shares.

A block maps ``x -> out`` bijectively (optionally conditioned on ``c``) and returns
``(out, log_det)`` where ``log_det`` has shape ``(batch,)`` and is
``log|det d out / d x|`` *of the direction that was called*: with ``rev=True``
it is the log-determinant of the inverse map. This is FrEIA's convention
(Ardizzone et al., https://github.com/vislearn/FrEIA) with single tensors
instead of lists.
"""

from __future__ import annotations

from abc import ABC, abstractmethod

import torch
from torch import Tensor, nn

__all__ = ["InvertibleBlock"]


class InvertibleBlock(nn.Module, ABC):
    """Abstract invertible block on ``R^dim`` with optional condition of size ``cond_dim``."""

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        if dim < 1:
            raise ValueError(f"dim must be a positive integer, got {dim}")
        self.dim = int(dim)
        self.cond_dim = int(cond_dim)

    @abstractmethod
    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        """Apply the block (``rev=False``) or its inverse (``rev=True``)."""

    def inverse(self, y: Tensor, c: Tensor | None = None) -> tuple[Tensor, Tensor]:
        """Shorthand for ``self(y, c, rev=True)``."""
        return self(y, c, rev=True)

    def _check_condition(self, x: Tensor, c: Tensor | None) -> None:
        if self.cond_dim and (c is None or c.shape != (x.shape[0], self.cond_dim)):
            got = None if c is None else tuple(c.shape)
            raise ValueError(
                f"condition c must have shape (batch={x.shape[0]}, {self.cond_dim}), got {got}"
            )

    @staticmethod
    def _zeros_like_batch(x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
