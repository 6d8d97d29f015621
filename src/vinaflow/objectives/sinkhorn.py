r"""Debiased Sinkhorn divergence between point clouds (via GeomLoss).

.. math:: S_\varepsilon(\alpha, \beta) = \mathrm{OT}_\varepsilon(\alpha, \beta)
          - \tfrac12 \mathrm{OT}_\varepsilon(\alpha, \alpha)
          - \tfrac12 \mathrm{OT}_\varepsilon(\beta, \beta),

with uniform weights on the points and ground cost :math:`C(a, b) = \tfrac1p\|a-b\|^p`
(GeomLoss's convention: for ``p=2`` the cost is *half* the squared distance, so
:math:`S_\varepsilon \to \tfrac12 W_2^2` as :math:`\varepsilon \to 0`; for a cloud
translated by :math:`\delta` that is :math:`\tfrac12\|\delta\|^2`).
``blur`` :math:`\sigma` is a length scale: the entropic temperature is
:math:`\varepsilon = \sigma^p`; features smaller than ``blur`` are smoothed out.

References:
    Feydy, Sejourne, Vialard, Amari, Trouve, Peyre. Interpolating between Optimal
    Transport and MMD using Sinkhorn Divergences. AISTATS 2019.
"""

from __future__ import annotations

from geomloss import SamplesLoss
from torch import Tensor

from vinaflow.errors import ConfigError
from vinaflow.objectives.mmd import _check_point_clouds, _check_positive

__all__ = ["sinkhorn_divergence"]


def sinkhorn_divergence(
    x: Tensor,
    y: Tensor,
    blur: float = 0.05,
    p: int = 2,
    scaling: float = 0.9,
    debias: bool = True,
    backend: str = "tensorized",
) -> Tensor:
    r"""Sinkhorn divergence between the empirical laws of ``x`` and ``y``.

    Args:
        x: Points ``(n, d)``.
        y: Points ``(m, d)``.
        blur: Length scale :math:`\sigma`, temperature :math:`\varepsilon = \sigma^p`.
            Should be small compared with the data's spread (0.05 suits data of unit scale).
        p: Exponent of the cost :math:`\tfrac1p\|a - b\|^p`, 1 or 2.
        scaling: Ratio of successive :math:`\sigma` in GeomLoss's
            :math:`\varepsilon`-scaling (closer to 1: more accurate, slower).
        debias: Subtract the self-transport terms (the Sinkhorn *divergence*, zero for
            equal inputs); ``False`` gives the biased entropic OT cost.
        backend: GeomLoss backend; ``"tensorized"`` needs no KeOps (O(nm) memory).

    Returns:
        A scalar tensor, differentiable with respect to ``x`` and ``y``.
    """
    _check_point_clouds(x, y)
    blur = _check_positive("blur", blur)
    if p not in (1, 2):
        raise ConfigError(f"p must be 1 or 2, got {p!r}")
    scaling = _check_positive("scaling", scaling)
    if scaling >= 1.0:
        raise ConfigError(f"scaling must be in (0, 1), got {scaling}")
    if backend not in ("tensorized", "online", "multiscale", "auto"):
        raise ConfigError(
            f"backend must be tensorized, online, multiscale or auto, got {backend!r}"
        )
    loss = SamplesLoss("sinkhorn", p=p, blur=blur, scaling=scaling, debias=debias, backend=backend)
    return loss(x, y)
