r"""Maximum mean discrepancy with inverse multiquadric and Gaussian kernels.

.. math:: \mathrm{MMD}^2(P, Q) = \mathbb{E}[k(x, x')] + \mathbb{E}[k(y, y')]
          - 2\,\mathbb{E}[k(x, y)], \quad x, x' \sim P,\; y, y' \sim Q.

The unbiased estimator (U-statistic) drops the diagonal ``i = j`` of the within-sample
sums; it is zero in expectation when :math:`P = Q` and can be slightly negative.
The biased one (V-statistic, used by Ardizzone et al.) keeps it and is >= 0.

References:
    Gretton, Borgwardt, Rasch, Schoelkopf, Smola. A Kernel Two-Sample Test. JMLR 2012.

    Ardizzone, Kruse, Wirkert, Rahner, Pellegrini, Klessen, Maier-Hein, Rother,
    Koethe. Analyzing Inverse Problems with Invertible Neural Networks. ICLR 2019.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError

__all__ = ["ARDIZZONE_WIDTHS", "mmd_gaussian", "mmd_imq"]

ARDIZZONE_WIDTHS: tuple[float, ...] = (0.05, 0.2, 0.9)
"""Kernel widths of the INN toy experiments of Ardizzone et al. (2019, FrEIA code)."""


def _check_point_clouds(x: Tensor, y: Tensor, min_points: int = 1) -> None:
    """2-D ``(n, d)`` and ``(m, d)``, same ``d``, finite, enough points (also for sinkhorn)."""
    for name, t in (("x", x), ("y", y)):
        if not isinstance(t, Tensor):
            raise DataError(f"{name} must be a torch.Tensor, got {type(t).__name__}")
        if t.ndim != 2:
            raise DataError(f"{name} must have shape (points, dim), got {tuple(t.shape)}")
        if t.shape[0] < min_points:
            raise DataError(f"{name} needs at least {min_points} points, got {t.shape[0]}")
        if not torch.isfinite(t).all():
            raise DataError(f"{name} contains NaN or inf")
    if x.shape[1] != y.shape[1]:
        raise DataError(f"x and y must have the same dim, got {x.shape[1]} and {y.shape[1]}")


def _check_positive(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{name} must be a number, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{name} must be finite and > 0, got {value!r}")
    return v


def _mmd_from_gram(kxx: Tensor, kyy: Tensor, kxy: Tensor, unbiased: bool) -> Tensor:
    n, m = kxx.shape[0], kyy.shape[0]
    if unbiased:
        sxx = (kxx.sum() - kxx.diagonal().sum()) / (n * (n - 1))
        syy = (kyy.sum() - kyy.diagonal().sum()) / (m * (m - 1))
    else:
        sxx, syy = kxx.mean(), kyy.mean()
    return sxx + syy - 2.0 * kxy.mean()


def _sq_dists(a: Tensor, b: Tensor) -> Tensor:
    # Exact differences rather than the |a|^2 + |b|^2 - 2ab expansion: the expansion
    # cancels catastrophically for near points, and these batches are small.
    return (a[:, None, :] - b[None, :, :]).square().sum(-1)


def mmd_imq(
    x: Tensor,
    y: Tensor,
    widths: Sequence[float] = ARDIZZONE_WIDTHS,
    unbiased: bool = True,
) -> Tensor:
    r"""Squared MMD with a sum of inverse multiquadric kernels.

    .. math:: k(a, b) = \sum_{h \in \text{widths}} \frac{h^2}{h^2 + \|a - b\|^2}
              = \sum_h \Big(1 + \frac{\|a-b\|^2}{h^2}\Big)^{-1},

    the form of Ardizzone et al. (2019), whose heavy tails keep gradients alive for
    distant samples; ``widths`` are length scales :math:`h`.

    Args:
        x: Samples of P, ``(n, d)``.
        y: Samples of Q, ``(m, d)``.
        widths: Length scales :math:`h > 0`.
        unbiased: U-statistic (needs ``n, m >= 2``) instead of the V-statistic.
    """
    _check_point_clouds(x, y, min_points=2 if unbiased else 1)
    hs = [_check_positive("width", h) for h in widths]
    if not hs:
        raise ConfigError("widths must contain at least one length scale")

    def k(a: Tensor, b: Tensor) -> Tensor:
        d2 = _sq_dists(a, b)
        return sum(h * h / (h * h + d2) for h in hs)

    return _mmd_from_gram(k(x, x), k(y, y), k(x, y), unbiased)


def mmd_gaussian(
    x: Tensor,
    y: Tensor,
    bandwidth: float | None = None,
    unbiased: bool = True,
) -> Tensor:
    r"""Squared MMD with the Gaussian kernel :math:`k(a,b) = \exp(-\|a-b\|^2 / 2\sigma^2)`.

    Args:
        x: Samples of P, ``(n, d)``.
        y: Samples of Q, ``(m, d)``.
        bandwidth: :math:`\sigma`; ``None`` uses the median heuristic, :math:`\sigma` =
            median distance between distinct points of the pooled sample (Gretton et
            al. 2012), computed without gradient.
        unbiased: U-statistic (needs ``n, m >= 2``) instead of the V-statistic.
    """
    _check_point_clouds(x, y, min_points=2 if unbiased else 1)
    dxx, dyy, dxy = _sq_dists(x, x), _sq_dists(y, y), _sq_dists(x, y)
    if bandwidth is None:
        with torch.no_grad():
            z = torch.cat([x, y]).detach()
            d2 = _sq_dists(z, z)
            iu = torch.triu_indices(z.shape[0], z.shape[0], offset=1, device=z.device)
            sigma2 = d2[iu[0], iu[1]].median()
        # all points equal: any bandwidth gives MMD = 0; avoid dividing by zero
        sigma2 = sigma2 if sigma2 > 0 else torch.ones_like(sigma2)
    else:
        sigma2 = torch.as_tensor(_check_positive("bandwidth", bandwidth) ** 2, dtype=x.dtype)
    return _mmd_from_gram(
        torch.exp(-dxx / (2 * sigma2)),
        torch.exp(-dyy / (2 * sigma2)),
        torch.exp(-dxy / (2 * sigma2)),
        unbiased,
    )
