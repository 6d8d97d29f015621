"""Unconditional normalizing flows: a :class:`ConditionalINN` with no observation.

An unconditional flow ``x = Q(z)`` is the conditional INN with ``dim_y = 0``
(:mod:`vinaflow.models.cinn` documents its base distributions, normalizations and 1-D
blocks). :class:`NormalizingFlow` is a convenience constructor with the former
signature ``NormalizingFlow(dim, ...)``; it builds, saves and loads as a
``ConditionalINN`` (``kind: cinn``, ``dim_y: 0`` in ``model.json``).

Model files written by earlier versions (``kind: nf``) are read through
:func:`upgrade_nf_file`, which maps them onto the same ``ConditionalINN`` with the same
weights, so their densities and transforms are unchanged.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor

from vinaflow.models.cinn import (
    BASE_DISTRIBUTIONS,
    NORMALIZATIONS,
    ConditionalINN,
    MonotoneElementwise,
    make_base,
)

__all__ = [
    "BASE_DISTRIBUTIONS",
    "NORMALIZATIONS",
    "MonotoneElementwise",
    "NormalizingFlow",
    "make_base",
    "upgrade_nf_file",
]


class NormalizingFlow(ConditionalINN):
    r"""``ConditionalINN(dim_x=dim, dim_y=0, ...)``: an unconditional flow on ``R^dim``.

    Density by change of variables, :math:`\log q(x) = \log p_Z(T(x_s)) + \log|\det J_T|
    + \log|\det J_{norm}|`; ``sample(n)`` draws ``(n, dim)`` in data units. Every
    argument other than ``dim`` is a :class:`ConditionalINN` argument.

    Example:
        >>> flow = NormalizingFlow(dim=2, blocks=2, hidden=16)
        >>> flow.sample(10).shape, flow.dim_y
        (torch.Size([10, 2]), 0)
    """

    def __init__(self, dim: int, **kwargs: Any) -> None:
        super().__init__(dim_x=dim, dim_y=0, **kwargs)

    @property
    def dim(self) -> int:
        """Data dimension (``dim_x``)."""
        return self.dim_x


def upgrade_nf_file(
    cfg: Mapping[str, Any], state: Mapping[str, Tensor]
) -> tuple[str, dict[str, Any], dict[str, Tensor]]:
    """``(kind, config, weights)`` of a ``ConditionalINN`` for a ``kind: nf`` model file.

    The former flow stored ``dim`` instead of ``dim_x``, had no observation
    normalizer and stored the base centre, which is now derived from the config.
    """
    cfg = dict(cfg)
    if "dim" in cfg:
        cfg["dim_x"] = cfg.pop("dim")
    cfg["dim_y"] = 0
    state = {k: v for k, v in state.items() if k != "base_center"}
    state.setdefault("y_norm.mean", torch.zeros(0))
    state.setdefault("y_norm.std", torch.ones(0))
    return "cinn", cfg, state
