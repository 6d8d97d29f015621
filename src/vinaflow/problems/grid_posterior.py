r"""Exact posteriors of two-parameter problems on adaptively refined grids.

For a uniform prior on a box and a likelihood that can be evaluated anywhere, the
posterior density is the normalised likelihood. :class:`GridPosterior` tabulates the
log-likelihood on a grid of cells over the box and refines it where the mass is:

1. a base grid (``base_shape`` cells) is evaluated at the cell centres;
2. the cells within ``tau`` nats of the best one, dilated by ``dilate`` cells, are split
   along each axis by a factor chosen so that neighbouring cells that carry mass differ by
   at most ``resolution`` nats; the children are evaluated, and so on, until no axis needs
   splitting or ``max_cells`` is reached.

The posterior is then piecewise constant on the leaf cells (midpoint rule), which is what
:meth:`GridPosterior.sample` draws from: a leaf by its mass, then a uniform point inside it.
:attr:`GridPosterior.effective_cells` (``1 / sum w_i^2``) says how many leaves carry the
mass; the refinement makes it large even when the posterior is far narrower than a base cell.
:attr:`GridPosterior.frontier_mass` (the largest density, relative to the peak, at the edge
of the refined region) says whether the refinement enclosed the mass; ``max_frontier_mass``
turns it into a check, and :meth:`GridPosterior.diagnostics` records it with the rest.

:class:`FieldLattice` caches a smooth vector-valued forward map on a regular lattice and
interpolates it with Keys' cubic convolution (Keys 1981, IEEE Trans. ASSP 29(6), a = -1/2,
third-order accurate), so that the likelihood costs no forward-model call once the lattice
is filled: the field is the same for every observation.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from numpy.typing import NDArray
from scipy.ndimage import binary_dilation
from torch import Tensor

from vinaflow.errors import ConfigError, ConvergenceError

__all__ = ["FieldLattice", "GridPosterior", "keys_weights"]


def keys_weights(t: NDArray[np.float64]) -> NDArray[np.float64]:
    """Cubic-convolution weights ``(..., 4)`` for nodes at offsets -1, 0, 1, 2 (Keys, a=-1/2)."""
    t = np.asarray(t, dtype=np.float64)[..., None]
    x = np.abs(np.array([-1.0, 0.0, 1.0, 2.0]) - t)
    near = (1.5 * x - 2.5) * x * x + 1.0
    far = ((-0.5 * x + 2.5) * x - 4.0) * x + 2.0
    return np.where(x <= 1.0, near, np.where(x < 2.0, far, 0.0))


class FieldLattice:
    """A complex forward map ``f(a, b) -> C^k`` tabulated on a regular lattice.

    Nodes are ``lo[i] + j * step[i]`` for ``j = -2 .. n[i] + 2`` so that cubic interpolation
    is available everywhere in the box ``[lo, lo + n * step]``.

    Args:
        fn: maps ``(m,)`` arrays ``a``, ``b`` to ``(m, k)`` complex values.
        lo, hi: corners of the box.
        shape: lattice intervals ``(n_a, n_b)`` across the box.
        chunk: nodes per call of ``fn``.
    """

    def __init__(
        self,
        fn: Callable[[NDArray, NDArray], NDArray],
        lo: Sequence[float],
        hi: Sequence[float],
        shape: Sequence[int],
        chunk: int = 8192,
    ) -> None:
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        self.shape = (int(shape[0]), int(shape[1]))
        self.step = (self.hi - self.lo) / np.asarray(self.shape)
        ia = np.arange(-2, self.shape[0] + 3)
        ib = np.arange(-2, self.shape[1] + 3)
        aa, bb = np.meshgrid(
            self.lo[0] + ia * self.step[0], self.lo[1] + ib * self.step[1], indexing="ij"
        )
        a, b = aa.ravel(), bb.ravel()
        parts = [fn(a[i : i + chunk], b[i : i + chunk]) for i in range(0, a.size, chunk)]
        values = np.concatenate(parts)
        self.values = values.reshape(ia.size, ib.size, -1)

    @property
    def nbytes(self) -> int:
        return int(self.values.nbytes)

    def __call__(self, a: NDArray, b: NDArray) -> NDArray[np.complex128]:
        """Interpolated values ``(m, k)`` at points inside the box."""
        return self.interpolate(a, b, self.values)

    def interpolate(self, a: NDArray, b: NDArray, table: NDArray) -> NDArray:
        """Interpolate ``table`` (node values ``(n_a + 5, n_b + 5, ...)``) at ``(a, b)``.

        Interpolation is linear in the node values, so a likelihood that is linear in the
        field can be tabulated per observation and interpolated as a scalar.
        """
        ua = (np.asarray(a, dtype=np.float64) - self.lo[0]) / self.step[0]
        ub = (np.asarray(b, dtype=np.float64) - self.lo[1]) / self.step[1]
        ia = np.clip(np.floor(ua).astype(np.int64), 0, self.shape[0] - 1)
        ib = np.clip(np.floor(ub).astype(np.int64), 0, self.shape[1] - 1)
        wa = keys_weights(ua - ia)  # (m, 4)
        wb = keys_weights(ub - ib)
        out = np.zeros(ua.shape + table.shape[2:], dtype=table.dtype)
        extra = (slice(None),) + (None,) * (table.ndim - 2)
        # lattice node j is stored at index j + 2
        for p in range(4):
            for q in range(4):
                out += (wa[:, p] * wb[:, q])[extra] * table[ia + 1 + p, ib + 1 + q]
        return out


@dataclass
class _Stage:
    """One refinement level: a window of equal cells, some evaluated, some split further."""

    origin: NDArray[np.float64]  # lower corner of the window
    size: NDArray[np.float64]  # cell size per axis
    loglik: NDArray[np.float64]  # (n_a, n_b), -inf where not evaluated
    evaluated: NDArray[np.bool_]
    refined: NDArray[np.bool_] = field(init=False)

    def __post_init__(self) -> None:
        self.refined = np.zeros_like(self.evaluated)

    def centres(self, mask: NDArray[np.bool_]) -> NDArray[np.float64]:
        i, j = np.nonzero(mask)
        return self.origin + (np.stack([i, j], axis=1) + 0.5) * self.size


class GridPosterior:
    r"""Posterior ``p(x | y) ∝ L(x)`` on a box under a uniform prior, by adaptive grids.

    Args:
        loglik: maps points ``(m, 2)`` to log-likelihoods ``(m,)`` (additive constants are
            irrelevant).
        lo, hi: the prior box.
        names: parameter names (for :attr:`marginals`).
        base_shape: cells of the base grid per axis.
        tau: cells within ``tau`` nats of the best are refined (40 at the base level, where
            a narrow peak may sit between centres).
        resolution: target log-density difference between neighbouring cells with mass.
        max_cells: cap on likelihood evaluations; :class:`ConvergenceError` beyond it.
        min_effective_cells: refine (2 x 2) until at least this many leaf cells carry the
            mass (``1 / sum w_i^2``), even when neighbouring cells already agree.
        max_stages: cap on refinement levels.
        max_frontier_mass: if given, :class:`ConvergenceError` when :attr:`frontier_mass`
            exceeds it (the refined region's edge still carries non-negligible density, so
            coarse cells next to it may misplace mass).
    """

    def __init__(
        self,
        loglik: Callable[[NDArray[np.float64]], NDArray[np.float64]],
        lo: Sequence[float],
        hi: Sequence[float],
        names: Sequence[str] = ("x1", "x2"),
        *,
        base_shape: Sequence[int] = (256, 64),
        tau: float = 25.0,
        base_tau: float = 40.0,
        resolution: float = 0.5,
        dilate: int = 1,
        max_factor: int = 8,
        max_cells: int = 4_000_000,
        min_effective_cells: float = 500.0,
        max_stages: int = 12,
        max_frontier_mass: float | None = None,
    ) -> None:
        self.lo = np.asarray(lo, dtype=np.float64)
        self.hi = np.asarray(hi, dtype=np.float64)
        if self.lo.shape != (2,) or not np.all(self.hi > self.lo):
            raise ConfigError("the grid posterior needs a 2-D box with hi > lo")
        self.names = list(names)
        self._loglik = loglik
        shape = np.asarray(base_shape, dtype=np.int64)
        size = (self.hi - self.lo) / shape
        full = np.ones(tuple(shape), dtype=bool)
        stage = _Stage(self.lo.copy(), size, np.full(tuple(shape), -np.inf), full)
        stage.loglik[full] = self._evaluate(stage.centres(full))
        self.stages = [stage]
        self.n_evaluations = int(full.sum())
        threshold = base_tau
        while True:
            top = max(float(np.max(s.loglik)) for s in self.stages)
            factors = self._factors(stage, top, resolution, max_factor)
            if factors == (1, 1):
                # Resolved; still insist on enough cells carrying the mass.
                self._finish()
                if self.effective_cells >= min_effective_cells:
                    break
                factors = (2, 2)
            if len(self.stages) >= max_stages:
                raise ConvergenceError(
                    f"grid posterior not resolved after {max_stages} refinements "
                    f"({self.n_evaluations} evaluations)"
                )
            select = stage.evaluated & (stage.loglik >= top - threshold)
            region = binary_dilation(select, iterations=dilate) & stage.evaluated
            children = int(region.sum()) * factors[0] * factors[1]
            if self.n_evaluations + children > max_cells:
                raise ConvergenceError(
                    f"grid posterior needs more than max_cells={max_cells} evaluations; "
                    "the posterior is too narrow for this grid (lower the SNR or raise max_cells)"
                )
            stage = self._refine(stage, region, factors)
            self.stages.append(stage)
            threshold = tau
        #: largest density (relative to the peak) of a refined cell on the refined region's edge
        self.frontier_mass = self._frontier(max(float(np.max(s.loglik)) for s in self.stages))
        if max_frontier_mass is not None and not self.frontier_mass <= max_frontier_mass:
            raise ConvergenceError(
                f"grid posterior: frontier_mass {self.frontier_mass:.3g} exceeds "
                f"{max_frontier_mass:g}: the refinement did not enclose the mass "
                "(raise tau or dilate)"
            )

    # ------------------------------------------------------------------ building

    def _evaluate(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        out = np.asarray(self._loglik(points), dtype=np.float64).reshape(-1)
        if out.shape[0] != points.shape[0]:
            raise ConfigError("loglik must return one value per point")
        return np.where(np.isnan(out), -np.inf, out)

    @staticmethod
    def _factors(stage: _Stage, top: float, resolution: float, cap: int) -> tuple[int, int]:
        """Split factors so that neighbouring cells with mass differ by ~resolution nats."""
        ll = np.where(stage.evaluated, stage.loglik, 0.0)  # no -inf - -inf below
        heavy = stage.evaluated & (stage.loglik >= top - 12.0)
        out = []
        for axis in (0, 1):
            a = np.moveaxis(ll, axis, 0)
            h = np.moveaxis(heavy, axis, 0)
            e = np.moveaxis(stage.evaluated, axis, 0)
            pair = (h[1:] | h[:-1]) & e[1:] & e[:-1]
            diff = np.abs(a[1:] - a[:-1])[pair]
            worst = float(diff.max()) if diff.size else 0.0
            out.append(int(min(cap, max(1, math.ceil(worst / resolution)))))
        return out[0], out[1]

    def _refine(self, parent: _Stage, region: NDArray[np.bool_], k: tuple[int, int]) -> _Stage:
        i, j = np.nonzero(region)
        i0, j0 = i.min(), j.min()
        shape = ((i.max() - i0 + 1) * k[0], (j.max() - j0 + 1) * k[1])
        origin = parent.origin + np.array([i0, j0]) * parent.size
        evaluated = np.zeros(shape, dtype=bool)
        sub = region[i0 : i.max() + 1, j0 : j.max() + 1]
        evaluated[:] = np.kron(sub, np.ones(k, dtype=bool))
        child = _Stage(origin, parent.size / np.asarray(k), np.full(shape, -np.inf), evaluated)
        child.loglik[evaluated] = self._evaluate(child.centres(evaluated))
        parent.refined |= region
        self.n_evaluations += int(evaluated.sum())
        return child

    def _frontier(self, top: float) -> float:
        """Largest density (relative to the peak) of a refined cell next to an unrefined one.

        Near 0 when the refinement enclosed all the mass; a large value would mean that mass
        was left at a coarser level (the dilation or ``tau`` was too small).
        """
        worst = 0.0
        for s in self.stages[1:]:
            pad = np.pad(s.evaluated, 1)
            ring = binary_dilation(pad) & ~pad
            i, j = np.nonzero(ring)
            c = s.origin + (np.stack([i - 1, j - 1], axis=1) + 0.5) * s.size
            inside = np.all((c > self.lo) & (c < self.hi), axis=1)
            ring[i[~inside], j[~inside]] = False
            near = binary_dilation(ring)[1:-1, 1:-1] & s.evaluated
            if near.any():
                worst = max(worst, float(np.exp(s.loglik[near].max() - top)))
        return worst

    def _finish(self) -> None:
        centres, sizes, lls = [], [], []
        for s in self.stages:
            leaf = s.evaluated & ~s.refined
            centres.append(s.centres(leaf))
            sizes.append(np.broadcast_to(s.size, (int(leaf.sum()), 2)))
            lls.append(s.loglik[leaf])
        self.centres = np.concatenate(centres)
        self.sizes = np.concatenate(sizes)
        loglik = np.concatenate(lls)
        #: log-likelihood at each leaf centre (to compare two grids' likelihoods cell by cell)
        self.leaf_loglik = loglik
        logw = loglik + np.log(self.sizes[:, 0] * self.sizes[:, 1])
        top = float(np.max(logw))
        if not np.isfinite(top):
            raise ConvergenceError("the likelihood is zero everywhere on the prior box")
        w = np.exp(logw - top)
        total = float(w.sum())
        self.weights = w / total
        #: log of the normalising constant of ``exp(loglik)`` over the box
        self.log_evidence = top + math.log(total)
        self.effective_cells = float(1.0 / np.sum(self.weights**2))

    # ------------------------------------------------------------------ summaries

    def diagnostics(self) -> dict[str, float | int]:
        """What a results file should record about this grid (JSON-ready): likelihood
        evaluations, refinement stages, leaves, effective cells, frontier mass, log evidence."""
        return {
            "n_evaluations": int(self.n_evaluations),
            "stages": len(self.stages),
            "leaves": int(self.centres.shape[0]),
            "effective_cells": float(self.effective_cells),
            "frontier_mass": float(self.frontier_mass),
            "log_evidence": float(self.log_evidence),
        }

    @property
    def mean(self) -> Tensor:
        """Posterior mean ``(2,)``."""
        return torch.as_tensor(self.weights @ self.centres)

    @property
    def std(self) -> Tensor:
        """Posterior standard deviation ``(2,)`` (cells are uniform, hence the ``h^2 / 12``)."""
        m = self.weights @ self.centres
        second = self.weights @ (self.centres**2 + self.sizes**2 / 12.0)
        return torch.as_tensor(np.sqrt(np.maximum(second - m * m, 0.0)))

    def cdf(self, axis: int, values: NDArray[np.float64]) -> NDArray[np.float64]:
        """Marginal CDF of parameter ``axis`` at ``values`` (exact for the piecewise density).

        With leaf ``i`` uniform on ``[a_i, b_i]`` with density ``d_i``,
        ``F(v) = sum_{a_i < v} d_i (v - a_i) - sum_{b_i < v} d_i (v - b_i)``: two sorted
        prefix sums, ``O((N + Q) log N)``.
        """
        a = self.centres[:, axis] - 0.5 * self.sizes[:, axis]
        b = a + self.sizes[:, axis]
        d = self.weights / self.sizes[:, axis]
        v = np.asarray(values, dtype=np.float64)
        out = np.zeros(v.shape)
        for ends, sign in ((a, 1.0), (b, -1.0)):
            order = np.argsort(ends)
            e, dd = ends[order], d[order]
            s0 = np.concatenate([[0.0], np.cumsum(dd)])
            s1 = np.concatenate([[0.0], np.cumsum(dd * e)])
            k = np.searchsorted(e, v, side="left")
            out += sign * (v * s0[k] - s1[k])
        return np.clip(out, 0.0, 1.0)

    @property
    def marginals(self) -> dict[str, tuple[NDArray[np.float64], NDArray[np.float64]]]:
        """``name -> (bin edges (257,), density (256,))`` over the region that has mass."""
        out = {}
        for axis, name in enumerate(self.names):
            lo, hi = self._support(axis)
            edges = np.linspace(lo, hi, 257)
            c = self.cdf(axis, edges)
            out[name] = (edges, np.diff(c) / np.diff(edges))
        return out

    def _support(self, axis: int, eps: float = 1e-9) -> tuple[float, float]:
        keep = self.weights > eps * self.weights.max()
        a = self.centres[keep, axis] - 0.5 * self.sizes[keep, axis]
        b = self.centres[keep, axis] + 0.5 * self.sizes[keep, axis]
        return float(a.min()), float(b.max())

    def credible_interval(self, level: float = 0.95) -> Tensor:
        """Equal-tailed marginal credible intervals ``(2, 2)``: rows are parameters."""
        if not 0 < level < 1:
            raise ConfigError(f"credible level must lie in (0, 1), got {level}")
        out = np.empty((2, 2))
        for axis in (0, 1):
            lo, hi = self._support(axis, 1e-14)
            grid = np.linspace(lo, hi, 4097)
            c = self.cdf(axis, grid)
            q = np.array([(1 - level) / 2, (1 + level) / 2])
            out[axis] = np.interp(q, c, grid)
        return torch.as_tensor(out)

    def log_density_at(self, points: NDArray[np.float64]) -> NDArray[np.float64]:
        """Normalised log posterior density at ``points`` ``(m, 2)`` (``-inf`` outside the box)."""
        points = np.asarray(points, dtype=np.float64).reshape(-1, 2)
        inside = np.all((points >= self.lo) & (points <= self.hi), axis=1)
        out = np.full(points.shape[0], -np.inf)
        if inside.any():
            out[inside] = self._evaluate(points[inside]) - self.log_evidence
        return out

    def log_density(
        self, n: int = 200, window: Sequence[float] | None = None
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """``(a, b, logp)``: normalised log density on an ``n x n`` grid for contour plots.

        ``window = (a_lo, a_hi, b_lo, b_hi)`` defaults to the region with mass, padded.
        """
        if window is None:
            (a0, a1), (b0, b1) = self._support(0, 1e-8), self._support(1, 1e-8)
            pa, pb = 0.1 * (a1 - a0), 0.1 * (b1 - b0)
            window = (
                max(a0 - pa, self.lo[0]),
                min(a1 + pa, self.hi[0]),
                max(b0 - pb, self.lo[1]),
                min(b1 + pb, self.hi[1]),
            )
        a = np.linspace(window[0], window[1], n)
        b = np.linspace(window[2], window[3], n)
        aa, bb = np.meshgrid(a, b, indexing="ij")
        lp = self.log_density_at(np.stack([aa.ravel(), bb.ravel()], axis=1))
        return a, b, lp.reshape(n, n)

    # ------------------------------------------------------------------ sampling

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` draws ``(n, 2)`` float64: a leaf cell by mass, then uniform inside it."""
        keep = np.flatnonzero(self.weights > 1e-16)
        w = torch.as_tensor(self.weights[keep])
        idx = keep[torch.multinomial(w, int(n), replacement=True, generator=generator).numpy()]
        u = torch.rand(int(n), 2, generator=generator, dtype=torch.float64).numpy()
        x = self.centres[idx] + (u - 0.5) * self.sizes[idx]
        return torch.as_tensor(x)

    def __repr__(self) -> str:
        m, s = self.mean.tolist(), self.std.tolist()
        return (
            f"GridPosterior(mean={m}, std={s}, leaves={self.centres.shape[0]}, "
            f"effective_cells={self.effective_cells:.0f}, stages={len(self.stages)})"
        )
