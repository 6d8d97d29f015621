r"""Normal modes of the Pekeris waveguide.

This module is one solver - the dispersion relation, its root finder, the mode shapes
and the modal sum share the angle parametrisation and the vectorised block layout
below - so it stays one file above the usual 500 lines.

An isovelocity water layer (sound speed :math:`c_w`, density :math:`\rho_w`, depth
:math:`D`) with a pressure-release surface lies on a fluid half-space (:math:`c_b > c_w`,
:math:`\rho_b`, attenuation :math:`\alpha` in dB per wavelength). The horizontal
wavenumbers :math:`k_r` are the complex roots of

.. math:: \rho_b k_z \cos(k_z D) + \rho_w \gamma \sin(k_z D) = 0,
   \qquad k_z = \sqrt{k_w^2 - k_r^2}, \quad \gamma = \sqrt{k_r^2 - k_b^2},

(Jensen, Kuperman, Porter & Schmidt, *Computational Ocean Acoustics*, 2nd ed., 2011,
henceforth JKPS: ch. 2 and §5.2 on the Pekeris waveguide), with the bottom wavenumber
:math:`k_b = (\omega / c_b)(1 + i \eta \alpha)`, :math:`\eta = 1 / (40 \pi \log_{10} e)`
(loss in dB per wavelength, JKPS ch. 1).

Conventions: time dependence :math:`e^{-i \omega t}`, so outgoing waves go as
:math:`e^{+i k_r r}` and physical roots have :math:`\operatorname{Im} k_r > 0`. The
pressure of a unit point source is normalised to the free field
:math:`e^{i k R} / (4 \pi R)` and given by the far-field modal sum (JKPS eq. 5.14)

.. math:: p(r, z) = \frac{i e^{-i \pi / 4}}{\rho(z_s) \sqrt{8 \pi r}}
   \sum_m \psi_m(z_s) \psi_m(z) \frac{e^{i k_{rm} r}}{\sqrt{k_{rm}}},
   \qquad \int_0^\infty \rho^{-1}(z) \psi_m^2(z) \, dz = 1,

so that the transmission loss is :math:`-20 \log_{10} |4 \pi p|` dB re 1 m.

Root finding. With :math:`x = k_z D` and the complex angle :math:`\theta` defined by
:math:`x = A \sin\theta`, :math:`\gamma D = A \cos\theta`, :math:`A = D \sqrt{k_w^2 - k_b^2}`,
the branch point :math:`\gamma = 0` disappears and mode :math:`m = 1, 2, \dots` is the
root of the labelled phase equation

.. math:: \Psi_m(\theta) = A \sin\theta - (m - \tfrac12) \pi
   - \arctan\!\Big(\frac{\cot\theta}{\rho_b / \rho_w}\Big) = 0,

which is the transverse resonance condition :math:`-R_b e^{2 i k_z D} = 1` with the
Rayleigh reflection coefficient :math:`R_b` of the bottom (JKPS ch. 2 and §5.2). In the
lossless case :math:`\Psi_m` is increasing and concave on :math:`(0, \pi/2)` and changes sign
there exactly for the :math:`M = \lfloor A / \pi + 1/2 \rfloor` trapped modes (JKPS §5.2),
so Newton's method from the lower end of the bracket converges monotonically. These
lossless roots, and an asymptotic guess :math:`x \approx (m - \frac12)\pi - i \operatorname{artanh}
(1 / q)` for the leaky modes beyond, start complex Newton iterations on :math:`\Psi_m` with the
lossy :math:`A`. Each iterate is kept on the physical sheet :math:`\operatorname{Re}\gamma >
\operatorname{Im}\gamma` (outgoing or decaying into the bottom) by the reflection
:math:`\theta \to \pi - \theta`, which flips the sign of :math:`\gamma` and keeps :math:`k_z`.
Leaky modes (:math:`\operatorname{Re} k_r < \operatorname{Re} k_b`) radiate into the bottom;
each is kept while its range decay :math:`e^{-\operatorname{Im} k_r r}` exceeds
``amplitude_tol`` and faded out smoothly below it, so the field is a continuous function of
the parameters. The modal sum leaves out the branch-line integral, which is negligible at a
few water depths of range (checked against wavenumber integration and RAM in the tests).
"""

from __future__ import annotations

import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
from numpy.typing import ArrayLike, NDArray

from vinaflow.errors import ConfigError, ConvergenceError, DataError
from vinaflow.runtime import available_cpus

__all__ = ["ETA", "Modes", "PekerisWaveguide", "transmission_loss"]

#: dB/wavelength to the loss tangent: k = (omega / c) (1 + i ETA alpha) (JKPS ch. 1).
ETA = 1.0 / (40.0 * math.pi * math.log10(math.e))

_NEWTON_TOL = 1e-8  # |step| in theta; the error after it is ~1e-14
_MAX_NEWTON = 40  # converged roots take < 15 steps
_MAX_EXTEND = 8  # times the leaky-mode columns may be widened
_BLOCK = 128  # waveguides per block: keeps the working arrays in cache


def transmission_loss(p: ArrayLike) -> NDArray[np.float64]:
    """Transmission loss ``-20 log10 |4 pi p|`` in dB re 1 m for pressure from this module."""
    return -20.0 * np.log10(4.0 * np.pi * np.abs(np.asarray(p)))


@dataclass(frozen=True)
class Modes:
    """Modes of a batch of ``n`` waveguides at one frequency, padded to ``N`` columns.

    Column ``j`` holds mode ``m = j + 1`` (``m - 1/2 < Re k_z D / pi < m``). ``weight`` is the
    smooth cut of :class:`PekerisWaveguide` at the range given to :meth:`~PekerisWaveguide.modes`:
    1 for the modes that enter the modal sum (all but the fastest-decaying leaky ones), falling
    to 0 for modes whose range decay is below the amplitude tolerance, and 0 for unused columns.
    Mode shapes are ``psi(z) = sin(kz z) / sqrt(norm)`` in the water and
    ``psi(D) exp(-gamma (z - D))`` below, normalised as ``int psi^2 / rho dz = 1`` (for leaky
    modes, whose tail grows, by analytic continuation of the bottom integral).
    """

    depth: NDArray[np.float64]  # (n,)
    freq: float
    kr: NDArray[np.complex128]  # (n, N) horizontal wavenumbers
    kz: NDArray[np.complex128]  # (n, N) vertical wavenumber in the water
    gamma: NDArray[np.complex128]  # (n, N) bottom decay rate; Re < 0 far beyond cut-off
    norm: NDArray[np.complex128]  # (n, N) int rho^-1 sin^2 dz (water + bottom)
    weight: NDArray[np.float64]  # (n, N) in [0, 1]
    leaky: NDArray[np.bool_]  # (n, N) Re kr < Re kb
    n_trapped: NDArray[np.int64]  # (n,) lossless trapped-mode count (JKPS §5.2)

    @property
    def count(self) -> NDArray[np.int64]:
        """Number of modes that enter the sum (weight > 0) per waveguide."""
        return (self.weight > 0).sum(axis=1)

    def shape(self, z: ArrayLike) -> NDArray[np.complex128]:
        """Normalised mode shapes ``psi_m(z)`` of shape ``(n, N, len(z))`` (water and bottom)."""
        z = np.atleast_1d(np.asarray(z, dtype=np.float64))
        d = self.depth[:, None, None]
        kz = self.kz[..., None]
        amp = 1.0 / np.sqrt(self.norm)[..., None]
        water = np.sin(kz * np.minimum(z, d))
        tail = np.exp(-self.gamma[..., None] * np.maximum(z - d, 0.0))
        return amp * water * tail


class PekerisWaveguide:
    r"""Range-independent Pekeris waveguide solved by normal modes (JKPS ch. 2 and 5).

    Args:
        c_w: water sound speed (m/s).
        rho_w: water density (g/cm^3).
        rho_b: bottom density (g/cm^3).
        attenuation: bottom attenuation (dB per wavelength), ``>= 0``.
        leaky_modes: include the leaky modes beyond the trapped ones (needs attenuation > 0).
        amplitude_tol: modes whose range decay ``exp(-Im k_r r)`` falls below this are left
            out, faded smoothly between ``10 * tol`` and ``tol`` so that the field stays a
            continuous function of the parameters (1e-3: ~0.2% of the field at 3 km).
        workers: threads used by :meth:`pressure` on large batches (NumPy releases the GIL).
    """

    def __init__(
        self,
        c_w: float = 1500.0,
        rho_w: float = 1.0,
        rho_b: float = 1.76,
        attenuation: float = 0.2,
        *,
        leaky_modes: bool = True,
        amplitude_tol: float = 1e-3,
        workers: int | None = None,
    ) -> None:
        for name, value in (("c_w", c_w), ("rho_w", rho_w), ("rho_b", rho_b)):
            if not (math.isfinite(value) and value > 0):
                raise ConfigError(f"{name} must be a positive finite number, got {value!r}")
        if not (math.isfinite(attenuation) and attenuation >= 0):
            raise ConfigError(f"attenuation must be >= 0 dB/wavelength, got {attenuation!r}")
        if leaky_modes and attenuation == 0:
            # Without loss the roots beyond cut-off pass through real "virtual" modes on the
            # improper sheet (JKPS §5.2) and the leaky family is not continuous.
            raise ConfigError("leaky modes need attenuation > 0; pass leaky_modes=False")
        if not (0 < amplitude_tol < 1):
            raise ConfigError(f"amplitude_tol must lie in (0, 1), got {amplitude_tol!r}")
        self.c_w = float(c_w)
        self.rho_w = float(rho_w)
        self.rho_b = float(rho_b)
        self.attenuation = float(attenuation)
        self.leaky_modes = bool(leaky_modes)
        self.amplitude_tol = float(amplitude_tol)
        self.workers = max(1, int(workers if workers is not None else min(2, available_cpus())))

    def __repr__(self) -> str:
        return (
            f"PekerisWaveguide(c_w={self.c_w}, rho_w={self.rho_w}, rho_b={self.rho_b}, "
            f"attenuation={self.attenuation}, leaky_modes={self.leaky_modes})"
        )

    # ------------------------------------------------------------------ helpers

    def wavenumbers(self, c_b: ArrayLike, freq: float) -> tuple[float, NDArray[np.complex128]]:
        """Water wavenumber ``k_w`` and complex bottom wavenumber ``k_b`` (JKPS ch. 1)."""
        omega = 2.0 * math.pi * float(freq)
        c_b = np.asarray(c_b, dtype=np.float64)
        return omega / self.c_w, (omega / c_b) * (1.0 + 1j * ETA * self.attenuation)

    def trapped_mode_count(self, depth: ArrayLike, c_b: ArrayLike, freq: float) -> NDArray:
        r"""Lossless trapped-mode count :math:`\lfloor k_w D \sqrt{1 - c_w^2/c_b^2} / \pi + 1/2
        \rfloor` (JKPS §5.2)."""
        depth, c_b = self._check_params(depth, c_b)
        kw = 2.0 * math.pi * float(freq) / self.c_w
        a0 = kw * depth * np.sqrt(1.0 - (self.c_w / c_b) ** 2)
        return np.floor(a0 / math.pi + 0.5).astype(np.int64)

    def dispersion(
        self,
        kr: ArrayLike,
        depth: ArrayLike,
        c_b: ArrayLike,
        freq: float,
        gamma: ArrayLike | None = None,
    ) -> NDArray[np.complex128]:
        r"""Relative residual of :math:`\rho_b k_z \cos k_z D + \rho_w \gamma \sin k_z D`.

        ``gamma`` (e.g. :attr:`Modes.gamma`) fixes the branch of
        :math:`\sqrt{k_r^2 - k_b^2}`; by default the proper one (``Re gamma >= 0``). The
        residual is divided by ``rho_b |k_z| + rho_w |gamma|``.
        """
        kr = np.asarray(kr, dtype=np.complex128)
        depth = np.asarray(depth, dtype=np.float64)
        kw, kb = self.wavenumbers(c_b, freq)
        kz = np.sqrt(kw**2 - kr**2 + 0j)
        g = np.sqrt(kr**2 - kb**2) if gamma is None else np.asarray(gamma, dtype=np.complex128)
        f = self.rho_b * kz * np.cos(kz * depth) + self.rho_w * g * np.sin(kz * depth)
        return f / (self.rho_b * np.abs(kz) + self.rho_w * np.abs(g))

    def _check_params(
        self, depth: ArrayLike, c_b: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64]]:
        depth = np.atleast_1d(np.asarray(depth, dtype=np.float64))
        c_b = np.atleast_1d(np.asarray(c_b, dtype=np.float64))
        if depth.ndim != 1 or c_b.ndim != 1:
            raise DataError("depth and c_b must be scalars or 1-D arrays")
        depth, c_b = np.broadcast_arrays(depth, c_b)
        if not np.isfinite(depth).all():
            raise DataError("water depth contains non-finite values")
        if not np.isfinite(c_b).all():
            raise DataError("sediment sound speed c_b contains non-finite values")
        if (depth <= 0).any():
            raise ConfigError(f"water depth must be > 0 m, got min {depth.min():g}")
        if (c_b <= self.c_w).any():
            raise ConfigError(
                f"sediment sound speed c_b must exceed the water sound speed c_w = {self.c_w:g} "
                f"m/s (no trapped modes otherwise), got min {c_b.min():g}"
            )
        return np.ascontiguousarray(depth), np.ascontiguousarray(c_b)

    # ------------------------------------------------------------------ modes

    def modes(
        self,
        depth: ArrayLike,
        c_b: ArrayLike,
        freq: float,
        *,
        max_range: float = 3000.0,
        leaky: bool | None = None,
    ) -> Modes:
        """Modes of ``n`` waveguides (``depth``, ``c_b`` broadcast to ``(n,)``) at ``freq`` Hz.

        ``max_range`` (m) sets which leaky modes are kept; ``leaky`` overrides
        ``leaky_modes`` (``False``: trapped modes only, i.e. ``Re k_r > Re k_b``).
        """
        depth, c_b = self._check_params(depth, c_b)
        freq = float(freq)
        if not (math.isfinite(freq) and freq > 0):
            raise ConfigError(f"frequency must be > 0 Hz, got {freq!r}")
        if not (math.isfinite(max_range) and max_range > 0):
            raise ConfigError(f"range must be > 0 m, got {max_range!r}")
        leaky = self.leaky_modes if leaky is None else bool(leaky)
        if leaky and self.attenuation == 0:
            raise ConfigError("leaky modes need attenuation > 0")
        return self._modes(depth, c_b, freq, float(max_range), leaky)

    def _modes(
        self, depth: NDArray, c_b: NDArray, freq: float, max_range: float, leaky: bool
    ) -> Modes:
        parts = [
            self._mode_block(depth[sl], c_b[sl], freq, max_range, leaky)
            for sl in _blocks(depth.shape[0], _BLOCK)
        ]
        n_cols = max(p[0].shape[1] for p in parts)

        def cat(j: int, fill: complex | float | bool) -> NDArray:
            return np.concatenate(
                [
                    np.pad(p[j], ((0, 0), (0, n_cols - p[j].shape[1])), constant_values=fill)
                    for p in parts
                ]
            )

        kr, kz, gamma, norm = cat(0, 1.0), cat(1, 1.0), cat(2, 1.0), cat(3, 1.0)
        weight, is_leaky = cat(4, 0.0), cat(5, False)
        n_trapped = np.concatenate([p[6] for p in parts])
        return Modes(depth, freq, kr, kz, gamma, norm, weight, is_leaky, n_trapped)

    def _mode_block(
        self, depth: NDArray, c_b: NDArray, freq: float, max_range: float, leaky: bool
    ) -> tuple[NDArray, ...]:
        """``kr, kz, gamma, norm, weight, leaky, n_trapped`` for a cache-sized block."""
        r = self.rho_b / self.rho_w
        kw, kb = self.wavenumbers(c_b, freq)
        kb0 = kb.real
        a0 = depth * np.sqrt(kw**2 - kb0**2)  # lossless A
        a = depth * np.sqrt(kw**2 - kb**2)  # lossy A (Im < 0)
        n_trapped = np.floor(a0 / math.pi + 0.5).astype(np.int64)
        # Modes with Re k_z > k_w are evanescent in range: never worth summing.
        m_cap = np.floor(kw * depth / math.pi + 0.5).astype(np.int64)
        if leaky:
            n_cols = self._leaky_columns(depth, a0, kw, n_trapped, m_cap, max_range, r)
        else:
            n_cols = int(n_trapped.max(initial=0))
        n_cols = max(n_cols, 1)
        for _ in range(_MAX_EXTEND):
            sin_t, cos_t, converged = _solve_roots(a0, a, n_trapped, m_cap, n_cols, r)
            x = a[:, None] * sin_t
            kz = x / depth[:, None]
            kr = np.sqrt(kw**2 - kz * kz)
            if not leaky or n_cols >= m_cap.max():
                break
            # Widen (rarely) until the last column is negligible or capped everywhere.
            decay = np.exp(-kr.imag[:, -1] * max_range)
            if bool(np.all((decay < self.amplitude_tol) | (n_cols >= m_cap))):
                break
            n_cols = int(min(m_cap.max(), math.ceil(n_cols * 1.3) + 2))
        gd = a[:, None] * cos_t  # gamma D
        ex = _expi(x)
        sx = (ex - 1.0 / ex) / 2j
        cx = (ex + 1.0 / ex) / 2.0
        # int_0^D sin^2(kz z) dz / rho_w + sin^2(kz D) / (2 rho_b gamma), JKPS §5.2
        norm = depth[:, None] * (
            (0.5 - sx * cx / (2.0 * x)) / self.rho_w + sx * sx / (2.0 * self.rho_b * gd)
        )
        m = np.arange(1, n_cols + 1)
        is_leaky = kr.real < kb0[:, None]
        if leaky:
            weight = self._fade(kr, max_range)
            weight = np.where(m[None, :] <= m_cap[:, None], weight, 0.0)
        else:
            weight = np.where((m[None, :] <= n_trapped[:, None]) & ~is_leaky, 1.0, 0.0)
        if not np.isfinite(kr[converged]).all():
            raise ConvergenceError(f"non-finite horizontal wavenumber at {freq:g} Hz")
        # With very little loss a root near cut-off can sit across the branch cut (JKPS
        # §5.2): Newton then cycles at the cut. Its share of the field belongs to the
        # branch-line integral, which the modal sum neglects, so it is left out.
        weight = np.where(converged, weight, 0.0)
        return kr, kz, gd / depth[:, None], norm, weight, is_leaky, n_trapped

    def _fade(self, kr: NDArray, range_m: float | NDArray) -> NDArray[np.float64]:
        """Smooth (C^1) weight from 1 at range decay ``10 tol`` to 0 at ``tol``.

        It keeps the field a continuous function of the parameters when a leaky mode's
        decay crosses the tolerance.
        """
        log_decay = -kr.imag * (np.asarray(range_m) / math.log(10.0))
        t = np.clip(log_decay - math.log10(self.amplitude_tol), 0.0, 1.0)
        return t * t * (3.0 - 2.0 * t)

    def _leaky_columns(
        self,
        depth: NDArray,
        a0: NDArray,
        kw: float,
        n_trapped: NDArray,
        m_cap: NDArray,
        max_range: float,
        r: float,
    ) -> int:
        """Columns needed so that the asymptotic leaky decay drops below the tolerance."""
        # Lossless leaky asymptotics x ~ (m - 1/2) pi - i artanh(1/q), q = r x / sqrt(x^2 - A^2);
        # Im k_r grows with m, so bisect for the first extra mode below 0.3 tol.
        limit = -math.log(0.3 * self.amplitude_tol) / max_range

        def im_kr(extra: NDArray) -> NDArray:
            xr = (n_trapped + extra - 0.5) * math.pi
            w = np.sqrt(np.maximum(xr**2 - a0**2, 1e-12))
            xi = np.arctanh(np.minimum(w / (r * xr), 0.999))
            kz_re = xr / depth
            kr_re = np.sqrt(np.maximum(kw**2 - kz_re**2, 1e-30))
            return kz_re * xi / depth / kr_re

        lo = np.zeros_like(n_trapped)  # decays slowly enough (or no leaky mode at all)
        hi = np.maximum(m_cap - n_trapped, 0) + 1  # beyond the cap nothing is summed
        for _ in range(int(hi.max(initial=1)).bit_length()):
            mid = (lo + hi) // 2
            ok = im_kr(mid) <= limit
            lo = np.where(ok & (hi - lo > 1), mid, lo)
            hi = np.where(~ok & (hi - lo > 1), mid, hi)
        cols = np.minimum(n_trapped + lo + 2, m_cap)
        return int(max(cols.max(initial=1), n_trapped.max(initial=1)))

    # ------------------------------------------------------------------ field

    def pressure(
        self,
        depth: ArrayLike,
        c_b: ArrayLike,
        freqs: ArrayLike,
        source_depth: float,
        ranges: ArrayLike,
        receiver_depths: ArrayLike,
        *,
        leaky: bool | None = None,
    ) -> NDArray[np.complex128]:
        """Complex pressure (JKPS eq. 5.14) for a batch of ``n`` waveguides.

        Args:
            depth: water depths ``D`` (m), scalar or ``(n,)``.
            c_b: bottom sound speeds (m/s), scalar or ``(n,)``.
            freqs: tones (Hz), ``(F,)``.
            source_depth: source depth (m), in the water.
            ranges: horizontal range (m), scalar or ``(Nr,)``.
            receiver_depths: receiver depths (m), ``(R,)``, in the water.
            leaky: overrides ``leaky_modes``.

        Returns:
            ``(n, F, R)`` for a scalar range, ``(n, F, R, Nr)`` otherwise; complex128,
            normalised to the free field ``exp(ikR) / (4 pi R)``.
        """
        depth, c_b = self._check_params(depth, c_b)
        freqs = np.atleast_1d(np.asarray(freqs, dtype=np.float64))
        scalar_range = np.ndim(ranges) == 0
        rng = np.atleast_1d(np.asarray(ranges, dtype=np.float64))
        zr = np.atleast_1d(np.asarray(receiver_depths, dtype=np.float64))
        zs = float(source_depth)
        _check_geometry(depth, freqs, zs, rng, zr)
        leaky = self.leaky_modes if leaky is None else bool(leaky)
        if leaky and self.attenuation == 0:
            raise ConfigError("leaky modes need attenuation > 0")
        n = depth.shape[0]
        out = np.empty((n, freqs.size, zr.size, rng.size), dtype=np.complex128)
        # Columns are sized for the shortest range, where leaky modes matter most; each
        # range then fades its own modes, so p(r) does not depend on the other ranges.
        r_min = float(rng.min())
        uniform = _equally_spaced(zr)

        def work(sl: slice) -> None:
            for b in _blocks(sl.stop - sl.start, _BLOCK):
                bl = slice(sl.start + b.start, sl.start + b.stop)
                for i, f in enumerate(freqs):
                    kr, kz, _, norm, weight, _, _ = self._mode_block(
                        depth[bl], c_b[bl], float(f), r_min, leaky
                    )
                    out[bl, i] = self._modal_sum(kr, kz, norm, weight, zs, rng, zr, leaky, uniform)

        chunks = _chunks(n, self.workers)
        if len(chunks) == 1:
            work(chunks[0])
        else:
            with ThreadPoolExecutor(len(chunks)) as pool:
                list(pool.map(work, chunks))
        return out[..., 0] if scalar_range else out

    def _modal_sum(
        self,
        kr: NDArray,
        kz: NDArray,
        norm: NDArray,
        weight: NDArray,
        zs: float,
        rng: NDArray,
        zr: NDArray,
        leaky: bool,
        uniform: bool | None = None,
    ) -> NDArray[np.complex128]:
        """JKPS eq. 5.14 summed over modes: ``(n, R, Nr)``.

        ``weight`` (from :meth:`_mode_block` at the shortest range) is 0 for the columns
        that are never summed; with leaky modes each range applies its own fade.
        """
        # psi(zs) psi(zr) / rho_w with psi = sin(kz z) / sqrt(norm): the root's sign cancels.
        coef = _sin_kz(kz, np.array([zs]), False)[..., 0] / (norm * np.sqrt(kr))
        coef = np.where(weight > 0, coef, 0.0)
        shape_r = _sin_kz(kz, zr, uniform)  # (n, N, R)
        if rng.size == 1:
            w = self._fade(kr, rng[0]) if leaky else weight
            coef = coef * w * _expi(kr * rng[0])
            total = np.einsum("nm,nmr->nr", coef, shape_r)[..., None]
        else:
            phase = _expi(kr[:, :, None] * rng[None, None, :])
            if leaky:
                phase = phase * self._fade(kr[:, :, None], rng[None, None, :])
            total = np.einsum("nm,nmr,nmk->nrk", coef, shape_r, phase, optimize=True)
        pref = 1j * np.exp(-0.25j * math.pi) / (self.rho_w * np.sqrt(8.0 * math.pi * rng))
        return total * pref

    def transmission_loss(self, *args, **kwargs) -> NDArray[np.float64]:
        """:meth:`pressure` converted to transmission loss in dB re 1 m."""
        return transmission_loss(self.pressure(*args, **kwargs))


def _solve_roots(
    a0: NDArray[np.float64],
    a: NDArray[np.complex128],
    n_trapped: NDArray[np.int64],
    m_cap: NDArray[np.int64],
    n_cols: int,
    r: float,
) -> tuple[NDArray[np.complex128], NDArray[np.complex128], NDArray[np.bool_]]:
    """``sin(theta)``, ``cos(theta)`` and a convergence flag (n, n_cols) of modes 1..n_cols.

    Columns beyond ``m_cap`` are not iterated (they are never summed) and flagged converged.
    """
    n = a0.shape[0]
    m = np.broadcast_to(np.arange(1, n_cols + 1, dtype=np.float64), (n, n_cols))
    trapped = m <= n_trapped[:, None]
    u = np.empty((n, n_cols))  # Re theta
    v = np.zeros((n, n_cols))  # Im theta

    # Lossless trapped roots: Psi is increasing and concave in theta on (0, pi/2), so Newton
    # from theta_l = asin((m - 1/2) pi / A), where Psi < 0, increases monotonically to the root.
    idx = np.nonzero(trapped)
    if idx[0].size:
        am = a0[idx[0]]
        mm = m[idx] * math.pi
        th = np.arcsin(np.minimum((mm - 0.5 * math.pi) / am, 1.0))
        active = np.arange(th.size)
        for _ in range(_MAX_NEWTON):
            t = th[active]
            s, c = np.sin(t), np.cos(t)
            aa = am[active]
            phi = aa * s + np.arctan2(r * s, c) - mm[active]
            step = phi / (aa * c + r / (c * c + r * r * s * s))
            th[active] = t - step
            active = active[np.abs(step) > _NEWTON_TOL]
            if active.size == 0:
                break
        u[idx] = th

    # Leaky guesses from the lossless asymptotics x ~ (m - 1/2) pi - i artanh(1/q) with
    # q = r x / sqrt(x^2 - A^2) (transverse resonance with a real reflection coefficient).
    lidx = np.nonzero(~trapped)
    if lidx[0].size:
        a0l = a0[lidx[0]]
        xr = (m[lidx] - 0.5) * math.pi
        w = np.sqrt(np.maximum(xr**2 - a0l**2, 1e-12))
        x0 = xr - 1j * np.arctanh(np.minimum(w / (r * xr), 0.999))
        t = 0.5 * math.pi + 1j * np.arccosh(x0 / a[lidx[0]])
        u[lidx] = t.real
        v[lidx] = t.imag

    # Complex Newton on Psi_m with the lossy A, kept on the physical sheet Re g > Im g by
    # theta -> pi - theta (sin kept, cos negated). Everything is written in real arithmetic,
    # several times faster than NumPy's complex transcendental functions.
    ar = np.broadcast_to(a.real[:, None], (n, n_cols)).ravel()
    ai = np.broadcast_to(a.imag[:, None], (n, n_cols)).ravel()
    mh = (m - 0.5).ravel() * math.pi
    u, v = u.ravel(), v.ravel()
    active = np.flatnonzero(m <= m_cap[:, None])
    r2 = r * r
    for _ in range(_MAX_NEWTON):
        tu, tv, xr_, xi_ = u[active], v[active], ar[active], ai[active]
        su, cu = np.sin(tu), np.cos(tu)
        ev = np.exp(tv)
        ch, sh = 0.5 * (ev + 1.0 / ev), 0.5 * (ev - 1.0 / ev)
        sr, si = su * ch, cu * sh  # sin(theta)
        cr, ci = cu * ch, -su * sh  # cos(theta)
        flip = (xr_ * cr - xi_ * ci) < (xr_ * ci + xi_ * cr)  # Re g < Im g, g = A cos
        tu = np.where(flip, math.pi - tu, tu)
        tv = np.where(flip, -tv, tv)
        cr = np.where(flip, -cr, cr)
        ci = np.where(flip, -ci, ci)
        # w = cos / (r sin); principal arctan(w) (Abramowitz & Stegun 4.4.39)
        den = r * (sr * sr + si * si)
        wr = (cr * sr + ci * si) / den
        wi = (ci * sr - cr * si) / den
        w2 = wr * wr
        atr = 0.5 * np.arctan2(2.0 * wr, 1.0 - w2 - wi * wi)
        ati = 0.25 * np.log(((1.0 + wi) ** 2 + w2) / ((1.0 - wi) ** 2 + w2))
        pr = xr_ * sr - xi_ * si - mh[active] - atr  # Psi
        pi_ = xr_ * si + xi_ * sr - ati
        # Psi' = A cos + r / (r^2 sin^2 + cos^2)
        qr = r2 * (sr * sr - si * si) + cr * cr - ci * ci
        qi = 2.0 * (r2 * sr * si + cr * ci)
        qq = r / (qr * qr + qi * qi)
        dr = xr_ * cr - xi_ * ci + qq * qr
        di = xr_ * ci + xi_ * cr - qq * qi
        dd = dr * dr + di * di
        stepr = (pr * dr + pi_ * di) / dd
        stepi = (pi_ * dr - pr * di) / dd
        # Re theta <= 0 would reach the spurious root theta = 0 (k_z = 0) of mode 1.
        nu = tu - stepr
        u[active] = np.where(nu > 0.0, nu, 0.5 * tu)
        v[active] = tv - stepi
        # Quadratic convergence: after a step below tol the error is ~tol^2 |Psi''/Psi'|.
        done = stepr * stepr + stepi * stepi <= _NEWTON_TOL**2
        active = active[~done]
        if active.size == 0:
            break
    converged = np.ones(u.size, dtype=bool)
    converged[active] = False
    # Columns never iterated or not converged get a harmless placeholder (weight 0 later).
    placeholder = ~converged | (m > m_cap[:, None]).ravel()
    u[placeholder] = 0.25 * math.pi
    v[placeholder] = 0.0
    su, cu = np.sin(u), np.cos(u)
    ev = np.exp(v)
    ch, sh = 0.5 * (ev + 1.0 / ev), 0.5 * (ev - 1.0 / ev)
    sin_t = su * ch + 1j * (cu * sh)
    cos_t = cu * ch - 1j * (su * sh)
    # The last step may have crossed the sheet boundary: reflect once more.
    g = np.broadcast_to(a[:, None], (n, n_cols)).ravel() * cos_t
    cos_t = np.where(g.real < g.imag, -cos_t, cos_t)
    return sin_t.reshape(n, n_cols), cos_t.reshape(n, n_cols), converged.reshape(n, n_cols)


def _expi(x: NDArray[np.complex128]) -> NDArray[np.complex128]:
    """``exp(i x)`` for complex ``x`` with real functions (faster than ``np.exp``)."""
    e = np.exp(-x.imag)
    return e * np.cos(x.real) + 1j * (e * np.sin(x.real))


def _equally_spaced(z: NDArray[np.float64]) -> bool:
    return z.size > 2 and bool(np.all(np.abs(np.diff(z) - (z[1] - z[0])) <= 1e-9))


def _sin_kz(
    kz: NDArray[np.complex128], z: NDArray[np.float64], uniform: bool | None = None
) -> NDArray[np.complex128]:
    """``sin(kz z)`` of shape ``kz.shape + (len(z),)``."""
    if _equally_spaced(z) if uniform is None else uniform:
        # Equally spaced: e^{i kz z_j} by repeated multiplication (a few ulps over ~10 steps).
        q = np.empty(kz.shape + (z.size,), dtype=np.complex128)
        q[..., 0] = _expi(kz * z[0])
        step = _expi(kz * (z[1] - z[0]))
        for j in range(1, z.size):
            q[..., j] = q[..., j - 1] * step
    else:
        q = _expi(kz[..., None] * z)
    # sin = (q - 1/q) / 2i with 1/q = conj(q) / |q|^2, in real arithmetic
    qr, qi = q.real, q.imag
    inv = 1.0 / (qr * qr + qi * qi)
    out = np.empty(q.shape, dtype=np.complex128)
    out.real = 0.5 * qi * (1.0 + inv)
    out.imag = 0.5 * qr * (inv - 1.0)
    return out


def _blocks(n: int, size: int) -> list[slice]:
    return [slice(i, min(i + size, n)) for i in range(0, n, size)]


def _check_geometry(depth: NDArray, freqs: NDArray, zs: float, rng: NDArray, zr: NDArray) -> None:
    if freqs.ndim != 1 or freqs.size == 0:
        raise ConfigError("freqs must be a non-empty 1-D array")
    if not np.isfinite(freqs).all() or (freqs <= 0).any():
        raise ConfigError(f"frequencies must be finite and > 0 Hz, got {freqs.tolist()}")
    if rng.ndim != 1 or not np.isfinite(rng).all() or (rng <= 0).any():
        raise ConfigError(f"ranges must be finite and > 0 m, got {rng.tolist()}")
    if zr.ndim != 1 or zr.size == 0 or not np.isfinite(zr).all():
        raise ConfigError("receiver depths must be a non-empty 1-D array of finite values")
    if not math.isfinite(zs) or zs <= 0:
        raise ConfigError(f"source depth must be > 0 m, got {zs!r}")
    dmin = float(depth.min())
    if zs >= dmin:
        raise ConfigError(
            f"source depth {zs:g} m is at or below the seabed (water depth {dmin:g} m)"
        )
    if (zr < 0).any():
        raise ConfigError(f"receiver depths must be >= 0 m, got {zr.tolist()}")
    if (zr > dmin).any():
        raise ConfigError(
            f"receiver depth {zr.max():g} m is below the seabed (water depth {dmin:g} m)"
        )


def _chunks(n: int, workers: int) -> list[slice]:
    # Threads only pay off once the per-chunk arrays are large.
    k = max(1, min(workers, n // 256))
    edges = np.linspace(0, n, k + 1).astype(int)
    return [slice(int(lo), int(hi)) for lo, hi in zip(edges[:-1], edges[1:], strict=True)]
