"""The paper's INN: one bijection ``T: (x, pad) <-> (y_hat, z)`` (Ardizzone et al. 2019)."""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from vinaflow.blocks import build_flow
from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel, Encoding

__all__ = ["JointINN"]


class JointINN(AmortizedModel):
    r"""Invertible network mapping parameters to ``(y_hat, z)``.

    ``D = max(dim_x, dim_y + latent_dim)``. The input ``x`` is padded with
    ``D - dim_x`` coordinates of Gaussian noise (scale ``pad_noise``); the output
    is ``[y_hat, z, extra]`` with ``extra`` (``D - dim_y - latent_dim`` coordinates,
    only when ``dim_x > dim_y + latent_dim``) trained towards zero. Posterior
    samples are ``x = T^{-1}(y, z, 0)[:dim_x]`` with ``z ~ N(0, I)``.

    The maximum-likelihood loss is
    :math:`\tfrac12\|z\|^2 - \log|\det J_T| + w_y \|\hat y - y\|^2 + w_x \|T^{-1}(y, z) - x\|^2`
    (Kruse et al. 2021, "Benchmarking invertible architectures on inverse problems").

    Example:
        >>> inn = JointINN(dim_x=4, dim_y=2, latent_dim=4, blocks=2, hidden=32)
        >>> y_s, z = torch.zeros(3, 2), inn.sample_latent(3)
        >>> inn.generate(y_s, z).shape
        torch.Size([3, 4])
    """

    kind = "inn"
    #: The encoding holds a prediction ``y_hat`` of the observation, which the forward
    #: objectives fit with their supervised ``y_weight`` term.
    predicts_y = True

    def __init__(
        self,
        dim_x: int,
        dim_y: int,
        latent_dim: int | None = None,
        arch: str = "coupling",
        blocks: int = 6,
        hidden: int = 128,
        layers: int = 2,
        pad_noise: float = 0.05,
        y_weight: float = 50.0,
        reconstruction_weight: float = 1.0,
        extra_weight: float = 50.0,
        seed: int = 0,
        **block_kwargs: Any,
    ) -> None:
        latent_dim = int(latent_dim) if latent_dim is not None else int(dim_x)
        if latent_dim < 1:
            raise ConfigError(f"model.latent_dim must be >= 1, got {latent_dim}")
        if pad_noise < 0:
            raise ConfigError(f"model.pad_noise must be >= 0, got {pad_noise}")
        super().__init__(dim_x, dim_y, latent_dim)
        self.total_dim = max(self.dim_x, self.dim_y + self.latent_dim)
        self.pad_noise = float(pad_noise)
        self.y_weight, self.reconstruction_weight = float(y_weight), float(reconstruction_weight)
        self.extra_weight = float(extra_weight)
        self._config = dict(
            dim_x=dim_x,
            dim_y=dim_y,
            latent_dim=latent_dim,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            pad_noise=pad_noise,
            y_weight=y_weight,
            reconstruction_weight=reconstruction_weight,
            extra_weight=extra_weight,
            seed=seed,
            **block_kwargs,
        )
        torch.manual_seed(seed)
        self.flow = build_flow(
            self.total_dim,
            0,
            arch=arch,
            blocks=blocks,
            hidden=hidden,
            layers=layers,
            seed=seed,
            **block_kwargs,
        )

    @property
    def n_pad(self) -> int:
        return self.total_dim - self.dim_x

    @property
    def n_extra(self) -> int:
        return self.total_dim - self.dim_y - self.latent_dim

    def _pad(self, x_s: Tensor) -> Tensor:
        if self.n_pad == 0:
            return x_s
        # drawn on the CPU generator (the same draws on every device), then moved
        noise = self.pad_noise * torch.randn(x_s.shape[0], self.n_pad, dtype=x_s.dtype).to(x_s)
        return torch.cat([x_s, noise], dim=1)

    def encode(self, x_s: Tensor, y_s: Tensor | None = None) -> Encoding:
        out, log_det = self.flow(self._pad(x_s))
        y_hat = out[:, : self.dim_y]
        z = out[:, self.dim_y : self.dim_y + self.latent_dim]
        extra = out[:, self.dim_y + self.latent_dim :] if self.n_extra else None
        return Encoding(z=z, log_det=log_det, y_hat=y_hat, extra=extra)

    def _invert(self, y_s: Tensor, z: Tensor) -> Tensor:
        parts = [y_s, z]
        if self.n_extra:
            parts.append(z.new_zeros(z.shape[0], self.n_extra))
        u, _ = self.flow(torch.cat(parts, dim=1), rev=True)
        return u

    def generate(self, y_s: Tensor, z: Tensor) -> Tensor:
        return self._invert(y_s, z)[:, : self.dim_x]

    def nll(self, x_s: Tensor, y_s: Tensor) -> Tensor:
        enc = self.encode(x_s, y_s)
        loss = 0.5 * enc.z.pow(2).sum(1) - enc.log_det
        loss = loss + self.y_weight * (enc.y_hat - y_s).pow(2).sum(1)
        if enc.extra is not None:
            loss = loss + self.extra_weight * enc.extra.pow(2).sum(1)
        if self.reconstruction_weight > 0:
            # Inverse pass from the *true* y with the inferred z: ties the sampling
            # direction to the data even where y_hat is still inaccurate.
            x_rec = self.generate(y_s, enc.z)
            loss = loss + self.reconstruction_weight * (x_rec - x_s).pow(2).sum(1)
        return loss / self.total_dim

    def config(self) -> dict[str, Any]:
        return {"kind": self.kind, **self._config}
