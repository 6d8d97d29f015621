r"""Critic network :math:`V` for the variational f-divergence bound.

The network returns the *raw* output :math:`v \in \mathbb{R}`; the divergence's output
activation :math:`g_f` (bounded, see :mod:`vinaflow.objectives.divergences`) is applied
by :meth:`Critic.activated` or inside :func:`~vinaflow.objectives.variational.variational_bound`.
Spectral normalisation (Miyato et al., ICLR 2018) optionally makes the critic
Lipschitz, which damps critic collapse and exploding generator gradients.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm as _spectral_norm

from vinaflow.errors import ConfigError, DataError
from vinaflow.nets import MLP
from vinaflow.objectives.divergences import Divergence, get_divergence
from vinaflow.objectives.variational import variational_bound

__all__ = ["Critic"]


class Critic(nn.Module):
    """MLP critic ``in_dim -> hidden x layers -> 1`` tied to one f-divergence.

    Arguments:
        in_dim: Total input features (e.g. ``dim_x + dim_y`` for a joint critic).
        hidden: Width of the hidden layers.
        layers: Number of hidden layers.
        divergence: Name or :class:`Divergence` whose ``g`` activates the output.
        spectral_norm: Wrap every linear layer in spectral normalisation.
        activation: Hidden activation name (see :data:`vinaflow.nets.ACTIVATIONS`).
    """

    def __init__(
        self,
        in_dim: int,
        hidden: int = 128,
        layers: int = 3,
        divergence: str | Divergence = "kl",
        spectral_norm: bool = False,
        activation: str = "silu",
    ) -> None:
        super().__init__()
        self.divergence = get_divergence(divergence)
        self.net = MLP(in_dim, 1, hidden=hidden, layers=layers, activation=activation)
        if spectral_norm:
            for i, module in enumerate(self.net):
                if isinstance(module, nn.Linear):
                    self.net[i] = _spectral_norm(module)
        self.in_dim = int(in_dim)

    def forward(self, *inputs: Tensor) -> Tensor:
        """Raw output ``v`` of shape ``(batch,)``; several inputs are concatenated."""
        shapes = [tuple(x.shape) for x in inputs]
        ok = (
            len(inputs) > 0
            and all(x.ndim == 2 and x.shape[0] == inputs[0].shape[0] for x in inputs)
            and sum(x.shape[1] for x in inputs) == self.in_dim
        )
        if not ok:
            raise DataError(
                f"critic expects 2-D inputs with one batch size and {self.in_dim} features "
                f"in total, got shapes {shapes}"
            )
        x = inputs[0] if len(inputs) == 1 else torch.cat(inputs, dim=-1)
        return self.net(x).squeeze(-1)

    def activated(self, v: Tensor) -> Tensor:
        """Apply the divergence's output activation :math:`g_f` to raw outputs."""
        return self.divergence.g(v)

    def bound(self, p_inputs: tuple[Tensor, ...], q_inputs: tuple[Tensor, ...]) -> Tensor:
        """Variational bound with this critic on samples of ``P`` (data) and ``Q`` (model)."""
        return variational_bound(self(*p_inputs), self(*q_inputs), self.divergence)

    def log_ratio(self, *inputs: Tensor) -> Tensor:
        """Implied estimate of ``log dP/dQ`` (for members with invertible ``f'``)."""
        if self.divergence.log_ratio is None:
            raise ConfigError(f"divergence {self.divergence.name!r} gives no ratio estimate")
        return self.divergence.log_ratio(self(*inputs))
