"""Activation normalisation with data-dependent initialisation."""

from __future__ import annotations

import torch
from torch import Tensor, nn

from vinaflow.blocks.base import InvertibleBlock

__all__ = ["ActNorm"]


class ActNorm(InvertibleBlock):
    r"""Per-feature affine map :math:`y = x e^{s} + b`, ``log_det = sum(s)``.

    The first ``forward(rev=False)`` call in training mode sets ``(s, b)`` so that
    this batch leaves with zero mean and unit (biased) variance per feature. If the
    first call is ``rev=True`` (e.g. training by sampling) the block stays the
    identity instead, since latent-side batches say nothing about the data scale.
    Calls in eval mode use the current parameters and leave the block uninitialised.

    The ``initialized`` flag is a buffer, so a loaded ``state_dict`` is not
    re-initialised on its first batch (FrEIA's ``ActNorm`` keeps it as a plain
    attribute and also initialises on reverse calls, hence this re-implementation).
    Any condition passed is ignored.

    References:
        Kingma & Dhariwal, "Glow" (2018), https://arxiv.org/abs/1807.03039
    """

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__(dim, 0)
        self.eps = float(eps)
        self.log_scale = nn.Parameter(torch.zeros(dim))
        self.bias = nn.Parameter(torch.zeros(dim))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def initialize(self, x: Tensor) -> None:
        """Set the parameters so that ``x`` maps to zero mean, unit variance."""
        x = x.detach()
        # a constant feature (or a batch of one) has no spread; eps keeps the scale finite
        std = x.std(dim=0, unbiased=False).clamp_min(self.eps)
        if x.shape[0] == 1:
            std = torch.ones_like(std)
        self.log_scale.copy_(-torch.log(std))
        self.bias.copy_(-x.mean(dim=0) / std)
        self.initialized.fill_(True)

    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check_input(x, None)
        if not bool(self.initialized) and self.training:
            if rev:
                self.initialized.fill_(True)
            else:
                self.initialize(x)
        log_det = self.log_scale.sum().repeat(x.shape[0])
        if rev:
            return (x - self.bias) * torch.exp(-self.log_scale), -log_det
        return x * torch.exp(self.log_scale) + self.bias, log_det
