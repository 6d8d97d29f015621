"""Exact log-posteriors of two sbibm tasks (Lueckmann et al. 2021) and of a ring problem,
for exact KLs.

Both tasks are the simulators of :mod:`benchmarks.peers.tasks`; their posteriors are not
Gaussian, and ``log p(theta | y)`` is computed here without sampling:

* ``gaussian_mixture`` (:func:`gaussian_mixture_log_posterior`): ``theta ~ U([-10, 10]^2)``,
  ``y ~ 0.5 N(theta, I) + 0.5 N(theta, 0.01 I)``. The likelihood is symmetric in
  ``theta - y``, so the posterior is the same mixture centred on ``y`` truncated to the
  box; its normaliser is the closed form
  ``Z(y) = sum_k 0.5 prod_i [Phi((10 - y_i) / s_k) - Phi((-10 - y_i) / s_k)]``.
* ``two_moons`` (:func:`two_moons_log_posterior`): ``y = p + (-|z0|, z1)`` with
  ``z = R theta`` (rotation by -pi/4) and ``p = (r cos a + 0.25, r sin a)``,
  ``a ~ U(-pi/2, pi/2)``, ``r ~ N(0.1, 0.01^2)``. Undoing the shift gives
  ``(u, v) = (y0 + |z0| - 0.25, y1 - z1) = r (cos a, sin a)``, whose density is
  ``N(r; 0.1, 0.01^2) / (pi r)`` (polar change of variables) for ``u > 0`` and 0
  otherwise. The prior is uniform on ``[-1, 1]^2``, so ``p(theta | y) = p(y | theta) / Z(y)``
  with ``Z(y) = int_box p(y | theta) dtheta``. In ``z`` the box is the diamond
  ``|z0| + |z1| <= sqrt 2``, symmetric in ``z0``, so ``Z(y) = 2 P[(u, v) in D(y)]`` with
  ``D(y)`` the image of its ``z0 >= 0`` half: three linear constraints on ``(u, v)``. Along a
  ray of angle ``a`` they bound ``r`` to an interval, whose Gaussian probability is
  closed form; the remaining integral over ``a`` is a midpoint rule
  (:data:`TWO_MOONS_ANGLES` nodes; its error is checked against four times as many nodes
  and against a brute-force grid over ``theta`` in ``tests/test_certificates_heldout.py``).
* ``ring`` (:func:`ring_log_posterior`; not an sbibm task, a development case of the
  certificate): ``theta ~ U([-1, 1]^2)``, ``y = |theta| + 0.02 eps``, a thin curved
  posterior. In polar coordinates ``p(theta | y) = N(y; r, s^2) / Z(y)`` with
  ``Z(y) = int N(y; r, s^2) L(r) dr`` and ``L(r)`` the length of the circle of radius ``r``
  inside the box (``2 pi r`` up to ``r = 1``, then ``r (2 pi - 8 arccos(1 / r))``): a
  trapezoid rule over :data:`RING_RADII` radii.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

__all__ = [
    "RING_NOISE",
    "RING_RADII",
    "TWO_MOONS_ANGLES",
    "gaussian_mixture_log_likelihood",
    "gaussian_mixture_log_normaliser",
    "gaussian_mixture_log_posterior",
    "ring_log_normaliser",
    "ring_log_posterior",
    "two_moons_log_likelihood",
    "two_moons_log_normaliser",
    "two_moons_log_posterior",
]

#: Midpoint nodes over the angle ``a`` in the two_moons normaliser.
TWO_MOONS_ANGLES = 4096
#: Noise of the ring problem's observed radius, and trapezoid nodes of its normaliser.
RING_NOISE = 0.02
RING_RADII = 4001

_MIX_SCALES = (1.0, 0.1)
_MIX_BOUND = 10.0
_R_MEAN, _R_STD = 0.1, 0.01
_SQRT2 = math.sqrt(2.0)


def _log_normal(x: Tensor, std: float) -> Tensor:
    return -0.5 * (x / std) ** 2 - math.log(std) - 0.5 * math.log(2 * math.pi)


def gaussian_mixture_log_likelihood(theta: Tensor, y: Tensor) -> Tensor:
    """``log p(y | theta)`` of sbibm ``gaussian_mixture`` (rows; float64)."""
    d = (y.double() - theta.double()).reshape(theta.shape[0], -1)
    terms = [
        math.log(0.5) + _log_normal(d, s).sum(1)  # independent coordinates
        for s in _MIX_SCALES
    ]
    return torch.logsumexp(torch.stack(terms, 1), 1)


def gaussian_mixture_log_normaliser(y: Tensor, bound: float = _MIX_BOUND) -> Tensor:
    """``log Z(y) = log int_box p(y | theta) dtheta`` (closed form; float64)."""
    y = y.double()
    terms = []
    for s in _MIX_SCALES:
        mass = torch.special.ndtr((bound - y) / s) - torch.special.ndtr((-bound - y) / s)
        terms.append(math.log(0.5) + mass.clamp_min(1e-300).log().sum(1))
    return torch.logsumexp(torch.stack(terms, 1), 1)


def gaussian_mixture_log_posterior(theta: Tensor, y: Tensor) -> Tensor:
    """Exact ``log p(theta | y)`` of sbibm ``gaussian_mixture`` (``-inf`` outside the box)."""
    inside = (theta.abs() <= _MIX_BOUND).all(1)
    lp = gaussian_mixture_log_likelihood(theta, y) - gaussian_mixture_log_normaliser(y)
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))


def _two_moons_uv(theta: Tensor, y: Tensor) -> tuple[Tensor, Tensor]:
    theta, y = theta.double(), y.double()
    z0 = (theta[:, 0] + theta[:, 1]) / _SQRT2
    z1 = (theta[:, 1] - theta[:, 0]) / _SQRT2
    return y[:, 0] + z0.abs() - 0.25, y[:, 1] - z1


def two_moons_log_likelihood(theta: Tensor, y: Tensor, r_std: float = _R_STD) -> Tensor:
    """``log p(y | theta)`` of sbibm ``two_moons`` (rows; float64; ``-inf`` where no
    angle in ``(-pi/2, pi/2)`` reaches ``y``). ``r_std`` other than 0.01 gives the
    likelihood of a moon of another width (a perturbed posterior)."""
    u, v = _two_moons_uv(theta, y)
    r = torch.sqrt(u * u + v * v)
    out = _log_normal(r - _R_MEAN, r_std) - math.log(math.pi) - r.log()
    return torch.where(u > 0, out, torch.full_like(out, -math.inf))


def _ray_bound(alpha: Tensor, beta: Tensor, lo: Tensor, hi: Tensor) -> tuple[Tensor, Tensor]:
    """Intersect ``[lo, hi]`` with ``{r : alpha r <= beta}``."""
    pos, neg = alpha > 0, alpha < 0
    safe = torch.where(alpha == 0, torch.ones_like(alpha), alpha)
    cut = beta / safe
    hi = torch.where(pos, torch.minimum(hi, cut), hi)
    lo = torch.where(neg, torch.maximum(lo, cut), lo)
    empty = (alpha == 0) & (beta < 0)
    hi = torch.where(empty, lo, hi)
    return lo, hi


def two_moons_log_normaliser(
    y: Tensor, angles: int = TWO_MOONS_ANGLES, chunk: int = 2048, r_std: float = _R_STD
) -> Tensor:
    """``log Z(y) = log int_{[-1,1]^2} p(y | theta) dtheta`` of sbibm ``two_moons``.

    ``Z = 2 P[(u, v) in D(y)]`` for ``(u, v) = r (cos a, sin a)``: along each ray the
    constraints ``u >= c``, ``(u - c) + (y1 - v) <= sqrt 2`` and ``(u - c) - (y1 - v) <=
    sqrt 2`` (``c = y0 - 0.25``) bound ``r`` to an interval (intersected with ``r > 0``),
    whose probability under ``N(0.1, 0.01^2)`` is a CDF difference; the angle is
    integrated by a midpoint rule with ``angles`` nodes. Where the half-disk of radius
    ``R = 0.1 + 8 r_std`` lies inside ``D(y)`` (``c <= 0`` and ``|y1| - c + sqrt 2 R <=
    sqrt 2``), ``Z = 2`` up to the ring's mass beyond ``R`` (below 1e-15) and no
    quadrature is done.
    """
    y = y.double()
    big_r = _R_MEAN + 8.0 * r_std
    c_all = y[:, 0] - 0.25
    inner = (c_all <= 0) & (y[:, 1].abs() - c_all + _SQRT2 * big_r <= _SQRT2)
    result = torch.full((y.shape[0],), math.log(2.0), dtype=torch.float64)
    rest = (~inner).nonzero().flatten()
    if rest.numel():
        result[rest] = _two_moons_quadrature(y[rest], angles, chunk, r_std)
    return result


def _two_moons_quadrature(y: Tensor, angles: int, chunk: int, r_std: float) -> Tensor:
    a = (torch.arange(angles, dtype=torch.float64) + 0.5) / angles * math.pi - math.pi / 2
    ca, sa = torch.cos(a)[None], torch.sin(a)[None]
    out = []
    for i in range(0, y.shape[0], chunk):
        yy = y[i : i + chunk]
        c, y1 = yy[:, :1] - 0.25, yy[:, 1:2]
        lo = torch.zeros(yy.shape[0], angles, dtype=torch.float64)
        hi = torch.full_like(lo, math.inf)
        lo = torch.maximum(lo, c / ca)  # r cos a >= c, cos a > 0
        lo, hi = _ray_bound(ca - sa, (_SQRT2 + c - y1).expand_as(lo), lo, hi)
        lo, hi = _ray_bound(ca + sa, (_SQRT2 + c + y1).expand_as(lo), lo, hi)
        p = torch.special.ndtr((hi - _R_MEAN) / r_std) - torch.special.ndtr((lo - _R_MEAN) / r_std)
        p = torch.where(hi > lo, p, torch.zeros_like(p))
        out.append(math.log(2.0) + p.mean(1).clamp_min(1e-300).log())
    return torch.cat(out)


def two_moons_log_posterior(
    theta: Tensor, y: Tensor, angles: int = TWO_MOONS_ANGLES, r_std: float = _R_STD
) -> Tensor:
    """Exact ``log p(theta | y)`` of sbibm ``two_moons`` (``-inf`` outside ``[-1, 1]^2``);
    with ``r_std`` the posterior of a moon of another width."""
    inside = (theta.abs() <= 1.0).all(1)
    lp = two_moons_log_likelihood(theta, y, r_std) - two_moons_log_normaliser(
        y, angles, r_std=r_std
    )
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))


def _ring_arc(r: Tensor) -> Tensor:
    """Length of the circle of radius ``r`` inside ``[-1, 1]^2``: each side cuts an arc of
    angle ``2 arccos(1 / r)`` once ``r > 1``."""
    cut = torch.arccos(torch.clamp(1.0 / r.clamp_min(1e-12), max=1.0))
    return r * (2 * math.pi - 8 * cut)


def ring_log_normaliser(
    y: Tensor, noise: float = RING_NOISE, radii: int = RING_RADII, chunk: int = 2000
) -> Tensor:
    """``log Z(y) = log int_box N(y; |theta|, noise^2) dtheta`` per row of ``y`` ``(n, 1)``."""
    r = torch.linspace(0.0, _SQRT2, radii, dtype=torch.float64)
    arc = _ring_arc(r)[None]
    y = y.double().reshape(-1, 1)
    out = []
    for i in range(0, y.shape[0], chunk):
        dens = _log_normal(y[i : i + chunk] - r[None], noise).exp() * arc
        out.append(torch.trapezoid(dens, r, dim=1).clamp_min(1e-300).log())
    return torch.cat(out)


def ring_log_posterior(theta: Tensor, y: Tensor, noise: float = RING_NOISE) -> Tensor:
    """Exact ``log p(theta | y)`` of the ring problem (``-inf`` outside ``[-1, 1]^2``); with
    ``noise`` the posterior of a ring of another width."""
    theta, y = theta.double(), y.double().reshape(-1, 1)
    distinct, index = torch.unique(y, dim=0, return_inverse=True)  # one normaliser each
    log_z = ring_log_normaliser(distinct, noise)[index.reshape(-1)]
    lp = _log_normal(y[:, 0] - theta.norm(dim=1), noise) - log_z
    inside = (theta.abs() <= 1.0).all(1)
    return torch.where(inside, lp, torch.full_like(lp, -math.inf))
