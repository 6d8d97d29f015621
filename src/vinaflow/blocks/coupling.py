"""Affine coupling block (RealNVP / GLOW) with soft-clamped log-scales."""

from __future__ import annotations

import math
from functools import partial
from typing import ClassVar

import torch
from FrEIA.modules import GLOWCouplingBlock
from torch import Tensor, nn

from vinaflow.blocks.base import InvertibleBlock
from vinaflow.errors import ConfigError
from vinaflow.nets import ACTIVATIONS, MLP

__all__ = ["AffineCoupling", "soft_clamp"]

_CLAMP_ACTIVATIONS = ("atan", "tanh")


def soft_clamp(s: Tensor, clamp: float, activation: str = "atan") -> Tensor:
    r"""Squash raw log-scales into ``(-clamp, clamp)`` with unit slope at 0.

    ``atan``: :math:`\mathrm{clamp} \cdot \frac{2}{\pi} \arctan(s / \mathrm{clamp})`;
    ``tanh``: :math:`\mathrm{clamp} \cdot \tanh(s / \mathrm{clamp})`.
    """
    return clamp * _unit_clamp(s, clamp, activation)


def _unit_clamp(s: Tensor, clamp: float, activation: str) -> Tensor:
    # FrEIA multiplies its clamp function by ``clamp``, so this is the part inside.
    # (FrEIA's own "ATAN" is 0.636 * atan(s), whose slope at 0 is 0.636 * clamp, not 1.)
    if activation == "atan":
        return (2.0 / math.pi) * torch.atan(s / clamp)
    return torch.tanh(s / clamp)


class AffineCoupling(InvertibleBlock):
    r"""Two-sided affine coupling: every coordinate is transformed once per block.

    For ``dim >= 2`` the input is split into halves ``(x1, x2)`` and (GLOW)

    .. math::

        y_2 = x_2 \odot e^{s_1(x_1, c)} + t_1(x_1, c), \qquad
        y_1 = x_1 \odot e^{s_2(y_2, c)} + t_2(y_2, c),

    with soft-clamped log-scales :math:`s = \mathrm{clamp}\,\frac{2}{\pi}\arctan(s_{raw}/
    \mathrm{clamp})` and the condition ``c`` concatenated to each subnet input. This
    wraps :class:`FrEIA.modules.GLOWCouplingBlock` (its arithmetic and log-det are
    checked against brute-force Jacobians in the tests); only the clamp function
    is ours, so that it has unit slope at 0. Subnets end in a zero layer, so a
    fresh block is the identity.

    For ``dim == 1`` there is nothing to split: the block is the elementwise affine
    map :math:`y = x e^{s} + t` whose ``(s, t)`` come from an MLP of ``c`` (or are
    two learned scalars when ``cond_dim == 0``). Stack it with other blocks; alone
    and unconditioned it is only a learned affine map.

    Arguments:
        dim: Number of features.
        cond_dim: Size of the condition (0 for none). With ``cond_dim == 0`` any
            ``c`` passed is ignored, so sequences can hand the condition to every block.
        hidden: Subnet width.
        layers: Subnet hidden layers.
        clamp: Bound on ``|s|``, i.e. each scale lies in ``(e^{-clamp}, e^{clamp})``.
        activation: Subnet activation (see :data:`vinaflow.nets.ACTIVATIONS`).
        clamp_activation: ``"atan"`` (GLOW/FrEIA default) or ``"tanh"`` (RealNVP).

    References:
        Dinh et al., "Density estimation using Real NVP" (2017), https://arxiv.org/abs/1605.08803;
        Kingma & Dhariwal, "Glow" (2018), https://arxiv.org/abs/1807.03039;
        Ardizzone et al., "Analyzing Inverse Problems with Invertible Neural Networks"
        (2019), https://arxiv.org/abs/1808.04730.
    """

    #: Allowed values of the string arguments (read by the config checks).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        "activation": tuple(ACTIVATIONS),
        "clamp_activation": _CLAMP_ACTIVATIONS,
    }

    def __init__(
        self,
        dim: int,
        cond_dim: int = 0,
        hidden: int = 128,
        layers: int = 2,
        clamp: float = 2.0,
        activation: str = "silu",
        clamp_activation: str = "atan",
    ) -> None:
        super().__init__(dim, cond_dim)
        if isinstance(clamp, bool) or not isinstance(clamp, (int, float)) or not clamp > 0:
            raise ConfigError(f"clamp must be a positive number, got {clamp!r}")
        if clamp_activation not in _CLAMP_ACTIVATIONS:
            raise ConfigError(
                f"clamp_activation must be one of {list(_CLAMP_ACTIVATIONS)}, "
                f"got {clamp_activation!r}"
            )
        self.clamp = float(clamp)
        self.clamp_activation = clamp_activation
        subnet = partial(
            MLP, hidden=hidden, layers=layers, activation=activation, zero_init_last=True
        )

        self.coupling: GLOWCouplingBlock | None = None
        self.cond_net: nn.Module | None = None
        self.scale_shift: nn.Parameter | None = None
        if dim >= 2:
            self.coupling = GLOWCouplingBlock(
                [(dim,)],
                [(cond_dim,)] if cond_dim else [],
                subnet_constructor=subnet,
                clamp=self.clamp,
                clamp_activation=partial(
                    _unit_clamp, clamp=self.clamp, activation=clamp_activation
                ),
            )
        elif cond_dim:
            self.cond_net = subnet(cond_dim, 2)
        else:
            self.scale_shift = nn.Parameter(torch.zeros(2))

    def forward(
        self, x: Tensor, c: Tensor | None = None, rev: bool = False
    ) -> tuple[Tensor, Tensor]:
        self._check_input(x, c)
        if self.coupling is not None:
            (y,), log_det = self.coupling([x], [c] if self.cond_dim else [], rev=rev, jac=True)
            return y, log_det

        # dim == 1: elementwise affine with condition-dependent (or constant) scale/shift
        if self.cond_net is not None:
            raw = self.cond_net(c)
        else:
            raw = self.scale_shift.repeat(x.shape[0], 1)
        s = soft_clamp(raw[:, :1], self.clamp, self.clamp_activation)
        t = raw[:, 1:]
        if rev:
            return (x - t) * torch.exp(-s), -s[:, 0]
        return x * torch.exp(s) + t, s[:, 0]

    def extra_repr(self) -> str:
        return f"dim={self.dim}, cond_dim={self.cond_dim}, clamp={self.clamp}"
