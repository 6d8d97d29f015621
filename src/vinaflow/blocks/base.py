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
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from numbers import Integral

import torch
from torch import Tensor, nn

from vinaflow.errors import ConfigError, DataError

__all__ = ["InvertibleBlock", "logdet_needed", "without_logdet"]

_SKIP_LOGDET: ContextVar[bool] = ContextVar("vinaflow_skip_logdet", default=False)


@contextmanager
def without_logdet() -> Iterator[None]:
    """Within this context, blocks whose log-det costs more than the map may return zeros.

    For callers that use only the mapped values, such as the sample-based losses in the
    backward direction (f-divergences through a critic, MMD, Sinkhorn), which never read
    the log-det of the sampling direction. :class:`~vinaflow.blocks.IResNetBlock` honours
    it (its log-det needs a Jacobian or a power series of vector-Jacobian products);
    blocks with a cheap log-det may ignore it.
    """
    token = _SKIP_LOGDET.set(True)
    try:
        yield
    finally:
        _SKIP_LOGDET.reset(token)


def logdet_needed() -> bool:
    """``False`` inside :func:`without_logdet`."""
    return not _SKIP_LOGDET.get()


class InvertibleBlock(nn.Module, ABC):
    """Abstract invertible block on ``R^dim`` with optional condition of size ``cond_dim``."""

    def __init__(self, dim: int, cond_dim: int = 0) -> None:
        super().__init__()
        if isinstance(dim, bool) or not isinstance(dim, Integral) or dim < 1:
            raise ConfigError(f"dim must be a positive integer, got {dim!r}")
        if isinstance(cond_dim, bool) or not isinstance(cond_dim, Integral) or cond_dim < 0:
            raise ConfigError(f"cond_dim must be a non-negative integer, got {cond_dim!r}")
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

    def _check_input(self, x: Tensor, c: Tensor | None) -> None:
        """Raise :class:`DataError` unless ``x`` is ``(batch, dim)`` and ``c`` fits."""
        if not isinstance(x, Tensor) or x.ndim != 2 or x.shape[1] != self.dim:
            got = tuple(x.shape) if isinstance(x, Tensor) else type(x).__name__
            raise DataError(
                f"{type(self).__name__}: input x must have shape (batch, {self.dim}), got {got}"
            )
        self._check_condition(x, c)

    def _check_condition(self, x: Tensor, c: Tensor | None) -> None:
        if self.cond_dim and (
            not isinstance(c, Tensor) or tuple(c.shape) != (x.shape[0], self.cond_dim)
        ):
            got = None if c is None else tuple(getattr(c, "shape", ()))
            raise DataError(
                f"condition c must have shape (batch={x.shape[0]}, {self.cond_dim}), got {got}"
            )

    @staticmethod
    def _zeros_like_batch(x: Tensor) -> Tensor:
        return torch.zeros(x.shape[0], dtype=x.dtype, device=x.device)
