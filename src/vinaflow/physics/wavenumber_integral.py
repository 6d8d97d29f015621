r"""Reference pressure of the Pekeris waveguide by direct wavenumber integration.

Independent of the modal solver: no roots, no branch choices beyond the radiation
condition. The field is the Hankel transform (JKPS ch. 2 and 4)

.. math:: p(r, z) = \int_0^\infty G(z, z_s; k_r) J_0(k_r r) k_r \, dk_r, \qquad
   G = \frac{\phi_1(z_<) \phi_2(z_>)}{2 \pi F(k_r)},

of the depth-separated Green's function of
:math:`\rho (\rho^{-1} G')' + (k^2 - k_r^2) G = -\delta(z - z_s) / (2\pi)` with a pressure-release
surface (:math:`\phi_1 = \sin k_z z`), the bottom impedance condition
(:math:`\phi_2 = \rho_b \cos k_z (D - z) + \rho_w \gamma \sin k_z (D - z) / k_z`) and the
Wronskian :math:`-F`, :math:`F = \rho_b k_z \cos k_z D + \rho_w \gamma \sin k_z D`, with
:math:`\operatorname{Re}\gamma > 0` (the proper sheet). The contour runs slightly below the
real axis (the contour offset of JKPS ch. 4): with attenuation every pole and the branch point
lie above it, so the offset changes nothing but the conditioning. Gauss–Legendre panels
narrower than the offset resolve the modal peaks. Slow (tens of thousands of Green's
function evaluations per tone): for validation only.
"""

from __future__ import annotations

import math

import numpy as np
from numpy.typing import ArrayLike, NDArray
from scipy.special import jv

from vinaflow.errors import ConfigError
from vinaflow.physics.pekeris import ETA

__all__ = ["green_function", "wavenumber_integral"]


def green_function(
    kr: NDArray[np.complex128],
    z: NDArray[np.float64],
    zs: float,
    depth: float,
    kw: float,
    kb: complex,
    rho_w: float,
    rho_b: float,
) -> NDArray[np.complex128]:
    """Depth-separated Green's function ``G(z, zs; kr)`` of shape ``(len(kr), len(z))``.

    Written with ``E(h) = exp(2 i kz h)`` and ``Im kz >= 0`` (``G`` is even in ``kz``) so that
    nothing overflows in the evanescent part of the spectrum.
    """
    kr = kr[:, None]
    kz = np.sqrt(kw**2 - kr**2)
    kz = np.where(kz.imag < 0, -kz, kz)
    gamma = np.sqrt(kr**2 - kb**2)
    zl = np.minimum(z, zs)[None, :]
    zg = np.maximum(z, zs)[None, :]

    def e(h: NDArray | float) -> NDArray:
        return np.exp(2j * kz * h)

    # sin(kz h) = e^{-i kz h} (E - 1) / 2i and cos(kz h) = e^{-i kz h} (E + 1) / 2; the
    # exponentials e^{-i kz ...} combine into e^{i kz (z> - z<)}, bounded by 1.
    s_low = (e(zl) - 1.0) / 2j
    eb = e(depth - zg)
    phi2 = rho_b * (eb + 1.0) / 2.0 + rho_w * gamma * (eb - 1.0) / (2j * kz)
    ed = e(depth)
    f = rho_b * kz * (ed + 1.0) / 2.0 + rho_w * gamma * (ed - 1.0) / 2j
    return np.exp(1j * kz * (zg - zl)) * s_low * phi2 / (2.0 * math.pi * f)


def wavenumber_integral(
    depth: float,
    c_b: float,
    freq: float,
    source_depth: float,
    range_m: float,
    receiver_depths: ArrayLike,
    *,
    c_w: float = 1500.0,
    rho_w: float = 1.0,
    rho_b: float = 1.76,
    attenuation: float = 0.2,
    offset: float | None = None,
    nodes_per_offset: float = 2.0,
) -> NDArray[np.complex128]:
    """Pressure ``(R,)`` at ``receiver_depths`` by numerical wavenumber integration.

    Same normalisation and time convention as :class:`~vinaflow.physics.PekerisWaveguide`.
    ``offset`` is the contour's distance below the real axis (default ``2 / range``);
    panels are ``offset / nodes_per_offset`` wide with 8 Gauss-Legendre nodes each.
    """
    zr = np.atleast_1d(np.asarray(receiver_depths, dtype=np.float64))
    if attenuation <= 0:
        raise ConfigError("the wavenumber integral needs attenuation > 0 (poles on the contour)")
    dz = float(np.min(np.abs(zr - source_depth)))
    if dz < 10.0:
        raise ConfigError("receivers must be at least 10 m from the source depth")
    omega = 2.0 * math.pi * freq
    kw = omega / c_w
    kb = omega / c_b * (1.0 + 1j * ETA * attenuation)
    eps = 2.0 / range_m if offset is None else float(offset)
    # Beyond kz = i 40 / dz the evanescent integrand is below e^-40 of its peak.
    k_max = math.sqrt(kw**2 + (40.0 / dz) ** 2)
    u1 = min(0.05 * kw, 10 * eps)
    gx, gw = np.polynomial.legendre.leggauss(8)

    def panels(a: complex, b: complex, n: int) -> tuple[NDArray, NDArray]:
        edges = a + (b - a) * np.linspace(0.0, 1.0, n + 1)
        mid = 0.5 * (edges[1:] + edges[:-1])[:, None]
        half = 0.5 * (edges[1:] - edges[:-1])[:, None]
        return (mid + half * gx).ravel(), (half * gw).ravel()

    h = eps / nodes_per_offset
    k1, w1 = panels(0.0, u1 - 1j * eps, max(4, int(math.ceil(abs(u1 - 1j * eps) / h))))
    k2, w2 = panels(u1 - 1j * eps, k_max - 1j * eps, int(math.ceil((k_max - u1) / h)))
    k = np.concatenate([k1, k2])
    w = np.concatenate([w1, w2])
    g = green_function(k, zr, float(source_depth), float(depth), kw, kb, rho_w, rho_b)
    integrand = g * (jv(0, k * range_m) * k)[:, None]
    return (w[:, None] * integrand).sum(axis=0)
