"""Conditional INN: ``x <-> z`` given ``y`` (Ardizzone et al. 2019b, "Guided image generation")."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from vinaflow.blocks import build_flow
from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel, Encoding
from vinaflow.nets import MLP

__all__ = ["ConditionalINN"]


class ConditionalINN(AmortizedModel):
    r"""A conditional normalizing flow ``z = T(x; h(y))`` with ``z ~ N(0, I)``.

    ``h`` is the identity or, with ``embedding_dim``, a learned MLP summary of ``y``
    (useful for long observation vectors). With ``latent_dim > dim_x`` the
    parameters are padded with Gaussian noise (scale ``pad_noise``) and samples
    drop the padding; the log-density is then not available.

    The log-density is :math:`\log p(x|y) = \log N(T(x;y); 0, I) + \log|\det J_T|`.

    Example:
        >>> cinn = ConditionalINN(dim_x=2, dim_y=3, blocks=2, hidden=16)
        >>> cinn.generate(torch.zeros(5, 3), cinn.sample_latent(5)).shape
        torch.Size([5, 2])
    """

    kind = "cinn"

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        latent_dim: int | None = None,
        arch: str = "coupling",
        blocks: int = 6,
        hidden: int = 128,
        layers: int = 2,
        embedding_dim: int | None = None,
        embedding_hidden: int = 128,
        pad_noise: float = 0.05,
        seed: int = 0,
        **block_kwargs: Any,
    ) -> None:
        latent_dim = int(latent_dim) if latent_dim is not None else int(dim_x)
        if latent_dim < dim_x:
            raise ConfigError(
                f"model.latent_dim of a cinn must be >= dim_x={dim_x} (a conditional flow "
                f"over x cannot have fewer latent coordinates), got {latent_dim}"
            )
        super().__init__(dim_x, dim_y, latent_dim)
        self.pad_noise = float(pad_noise)
        self._config = dict(
            dim_x=dim_x,
            dim_y=dim_y,
            latent_dim=latent_dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            embedding_dim=embedding_dim,
            embedding_hidden=embedding_hidden,
            pad_noise=pad_noise,
            seed=seed,
            **block_kwargs,
        )
        torch.manual_seed(seed)
        if embedding_dim:
            self.embedding: nn.Module = MLP(dim_y, int(embedding_dim), embedding_hidden, layers=2)
            cond_dim = int(embedding_dim)
        else:
            self.embedding = nn.Identity()
            cond_dim = dim_y
        self.flow = build_flow(
            latent_dim,
            cond_dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            seed=seed,
            **block_kwargs,
        )

    @property
    def n_pad(self) -> int:
        return self.latent_dim - self.dim_x

    @property
    def has_log_prob(self) -> bool:
        return self.n_pad == 0

    def encode(self, x_s: Tensor, y_s: Tensor) -> Encoding:
        if self.n_pad:
            noise = self.pad_noise * torch.randn(x_s.shape[0], self.n_pad, dtype=x_s.dtype)
            x_s = torch.cat([x_s, noise], dim=1)
        z, log_det = self.flow(x_s, self.embedding(y_s))
        return Encoding(z=z, log_det=log_det)

    def generate(self, y_s: Tensor, z: Tensor) -> Tensor:
        x, _ = self.flow(z, self.embedding(y_s), rev=True)
        return x[:, : self.dim_x]

    def log_prob_standardized(self, x_s: Tensor, y_s: Tensor) -> Tensor:
        if self.n_pad:
            raise NotImplementedError("log_prob is not tractable with padded latent dimensions")
        enc = self.encode(x_s, y_s)
        log_norm = -0.5 * self.latent_dim * math.log(2 * math.pi)
        return log_norm - 0.5 * enc.z.pow(2).sum(1) + enc.log_det

    def nll(self, x_s: Tensor, y_s: Tensor) -> Tensor:
        enc = self.encode(x_s, y_s)
        return (0.5 * enc.z.pow(2).sum(1) - enc.log_det) / self.latent_dim

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._config}
