r"""The variational (f-GAN) lower bound and the losses built from it.

.. math:: \hat D_f = \frac1n\sum_i g_f(v^P_i) - \frac1m\sum_j f^*(g_f(v^Q_j))
          \;\le\; D_f(P \| Q) \quad\text{in expectation, for any critic,}

with equality at :math:`g_f(V) = f'(dP/dQ)`. ``v_p`` are raw critic outputs on samples
of :math:`P` (data), ``v_q`` on samples of :math:`Q` (model). The critic maximises
:math:`\hat D_f`, the generator minimises it (Nowozin et al. 2016, Eq. 6).

For a held-out estimate of :math:`D_f`, train a *fresh* critic on training pairs and
evaluate :func:`variational_bound` on held-out samples: it is then an (approximately
unbiased) estimate of a lower bound, never an upper bound.
"""

from __future__ import annotations

import torch
from torch import Tensor

from vinaflow.errors import DataError
from vinaflow.objectives.divergences import Divergence, get_divergence

__all__ = [
    "critic_loss",
    "generator_loss",
    "optimal_critic_output",
    "primal_estimate",
    "variational_bound",
]


def _flat(v: Tensor, what: str) -> Tensor:
    if not isinstance(v, Tensor):
        raise DataError(f"{what} must be a torch.Tensor, got {type(v).__name__}")
    if v.ndim == 2 and v.shape[1] == 1:
        v = v[:, 0]
    if v.ndim != 1 or v.shape[0] == 0:
        raise DataError(f"{what} must have shape (batch,) or (batch, 1), got {tuple(v.shape)}")
    return v


def variational_bound(v_p: Tensor, v_q: Tensor, divergence: str | Divergence) -> Tensor:
    r"""Monte-Carlo f-GAN bound :math:`\mathrm{mean}\, g(v_p) - \mathrm{mean}\, f^*(g(v_q))`.

    Args:
        v_p: Raw critic outputs on data samples (:math:`P`), shape ``(n,)`` or ``(n, 1)``.
        v_q: Raw critic outputs on model samples (:math:`Q`), shape ``(m,)`` or ``(m, 1)``.
        divergence: Name or :class:`Divergence`.

    Returns:
        A scalar; finite with finite gradients for any finite raw outputs (the
        activations of :mod:`vinaflow.objectives.divergences` are bounded). For
        ``"gan"`` this is the raw :math:`D_{GAN}` (add ``divergence.shift`` for 2 JSD).
    """
    div = get_divergence(divergence)
    v_p = _flat(v_p, "v_p")
    v_q = _flat(v_q, "v_q")
    return div.g(v_p).mean() - div.f_star_g(v_q).mean()


def critic_loss(v_p: Tensor, v_q: Tensor, divergence: str | Divergence) -> Tensor:
    """Loss the critic minimises: the negated :func:`variational_bound`."""
    return -variational_bound(v_p, v_q, divergence)


def generator_loss(v_p: Tensor | None, v_q: Tensor, divergence: str | Divergence) -> Tensor:
    r"""Loss the generator minimises: the :func:`variational_bound` itself.

    Pass ``v_p=None`` when :math:`P` does not depend on the generator (data): the
    :math:`P`-term is then constant and :math:`-\mathrm{mean}\, f^*(g(v_q))` is returned,
    which has the same gradient. Keep ``v_p`` when it does (the INN forward/latent loss,
    where :math:`P` is the law of :math:`T(X)`).
    """
    div = get_divergence(divergence)
    if v_p is None:
        return -div.f_star_g(_flat(v_q, "v_q")).mean()
    return variational_bound(v_p, v_q, div)


def optimal_critic_output(ratio: Tensor, divergence: str | Divergence) -> Tensor:
    r"""The maximiser of the bound in activated units: :math:`T^* = f'(dP/dQ)`."""
    return get_divergence(divergence).f_prime(torch.as_tensor(ratio))


def primal_estimate(log_ratio_q: Tensor, divergence: str | Divergence) -> Tensor:
    r"""Plug-in estimate :math:`\mathrm{mean}_j f(\hat r(x_j))`, :math:`x_j \sim Q`.

    ``log_ratio_q`` holds estimates of :math:`\log dP/dQ` at model samples, e.g.
    ``aux.log_ratio(critic(x_q))`` from an auxiliary critic of a smooth member. This is
    how a non-smooth :math:`f` (the PR divergence) gets a generator gradient: through
    :math:`\hat r` evaluated at generated samples (Verine et al. 2023).
    """
    div = get_divergence(divergence)
    # JS/GAN read-outs are unbounded; keep exp finite in float32
    log_r = _flat(log_ratio_q, "log_ratio_q").clamp(-50.0, 50.0)
    return div.f(torch.exp(log_r)).mean()
