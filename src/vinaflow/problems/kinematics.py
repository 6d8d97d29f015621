"""Inverse kinematics of a planar arm on a vertical rail.

The arm of Ardizzone et al. (2019, "Analyzing inverse problems with invertible neural
networks", ICLR) and Kruse et al. (2021, "Benchmarking invertible architectures on
inverse problems"): ``x1`` is the height of the base on the rail, ``x2..x4`` are joint
angles, and the observation is the position of the end effector.

The ground-truth posterior is approximate Bayesian computation (ABC) by rejection from
the prior: keep prior draws whose noise-free end effector lies within ``eps`` of the
observation. It is vectorised in batches and cached on disk per observation, with the
tolerance and acceptance rate stored beside the samples.
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Independent, Normal

from vinaflow.atomic import atomic_path
from vinaflow.errors import ConfigError, DataError
from vinaflow.problems.base import Problem

__all__ = ["InverseKinematics", "abc_rejection", "default_cache_dir", "forward_kinematics"]

#: Format of the cache files; bump when the sampler changes what it stores.
_CACHE_VERSION = 1


def default_cache_dir() -> Path:
    """``$VINAFLOW_CACHE/kinematics-abc`` or ``~/.cache/vinaflow/kinematics-abc``."""
    root = os.environ.get("VINAFLOW_CACHE")
    base = Path(root) if root else Path.home() / ".cache" / "vinaflow"
    return base / "kinematics-abc"


def forward_kinematics(x: Tensor, lengths: Tensor) -> Tensor:
    r"""End-effector position ``(n, 2)`` of arms ``x`` ``(n, 4)``.

    With :math:`\phi_1 = x_2`, :math:`\phi_2 = x_2 + x_3`, :math:`\phi_3 = x_2 + x_3 + x_4`:
    :math:`y = (\sum_i l_i \cos\phi_i,\; x_1 + \sum_i l_i \sin\phi_i)`.
    """
    phi = torch.cumsum(x[..., 1:], dim=-1)
    lengths = lengths.to(x)
    return torch.stack(
        [(lengths * phi.cos()).sum(-1), x[..., 0] + (lengths * phi.sin()).sum(-1)], dim=-1
    )


def joint_positions(x: Tensor, lengths: Tensor) -> Tensor:
    """Positions ``(n, 4, 2)`` of the base and the three joint ends (for drawing)."""
    phi = torch.cumsum(x[..., 1:], dim=-1)
    lengths = lengths.to(x)
    steps = torch.stack([lengths * phi.cos(), lengths * phi.sin()], dim=-1)  # (n, 3, 2)
    base = torch.stack([torch.zeros_like(x[..., 0]), x[..., 0]], dim=-1)[..., None, :]
    return torch.cat([base, base + torch.cumsum(steps, dim=-2)], dim=-2)


def abc_rejection(
    y: Tensor,
    n: int,
    eps: float,
    lengths: Tensor,
    sigmas: Tensor,
    noise: float = 0.0,
    generator: torch.Generator | None = None,
    batch_size: int = 1_000_000,
    max_draws: int = 50_000_000,
) -> tuple[Tensor, dict[str, float]]:
    r"""Rejection ABC for the arm: ``n`` prior draws ``x`` with ``||f(x) + e - y|| < eps``.

    The rail height ``x1`` enters only ``y_2``, additively, so it is integrated out
    exactly (Rao-Blackwellised rejection): for angles ``a`` from the prior, the
    accepted ``x1`` form the interval ``c +- sqrt(eps^2 - dy_1^2)`` with prior mass
    ``w(a)``; ``a`` is accepted with probability ``w(a) / w_max`` and ``x1`` is drawn
    from the prior truncated to the interval. The result has exactly the law of plain
    rejection ABC with an ``eps``-disc, at roughly ``1 / w_max`` (about 30 for the
    default prior and ``eps = 0.01``) times fewer draws. ``e ~ N(0, noise^2 I)`` is the
    observation noise (0 for the noise-free arm).

    If ``max_draws`` angle draws yield fewer than ``n`` samples (an observation far in
    the tail), the tolerance is doubled and sampling restarts; the tolerance actually
    used is returned as ``eps_effective``, so a looser ground truth is never silent.

    Returns the samples ``(n, 4)`` (float64) and ``{eps, eps_effective,
    acceptance_rate, abc_acceptance_rate, draws}``: ``acceptance_rate`` is this
    sampler's accepted fraction, ``abc_acceptance_rate`` the (estimated) fraction of
    plain prior draws that plain ABC would accept.
    """
    if n < 1:
        raise ConfigError(f"number of reference samples must be >= 1, got {n}")
    if not eps > 0:
        raise ConfigError(f"problem.abc_tolerance must be > 0, got {eps}")
    y = y.double().reshape(-1)
    lengths, sigmas = lengths.double(), sigmas.double()
    s1 = float(sigmas[0])
    tol, total_draws = float(eps), 0
    while True:
        w_max = float(2 * torch.special.ndtr(torch.tensor(tol / s1, dtype=torch.float64)) - 1)
        accepted: list[Tensor] = []
        n_acc, draws, w_sum = 0, 0, 0.0
        while n_acc < n and draws < max_draws:
            # Size the next batch to the remaining need at the observed rate.
            need = 1.3 * (n - n_acc) * draws / n_acc if n_acc else batch_size / 10
            m = int(min(batch_size, max_draws - draws, max(need, 10_000)))
            a = torch.randn(m, 3, generator=generator, dtype=torch.float64) * sigmas[1:]
            phi = torch.cumsum(a, dim=-1)
            h = (lengths * phi.cos()).sum(-1)
            s = (lengths * phi.sin()).sum(-1)
            if noise > 0:
                e = noise * torch.randn(m, 2, generator=generator, dtype=torch.float64)
                h, s = h + e[:, 0], s + e[:, 1]
            draws += m
            half = (tol**2 - (h - y[0]) ** 2).clamp_min(0).sqrt()
            c = y[1] - s
            # Mirror to the lower tail, where ndtr keeps its precision.
            sign = torch.where(c > 0, -1.0, 1.0).to(c)
            lo, hi = (sign * c - half) / s1, (sign * c + half) / s1
            p_lo, p_hi = torch.special.ndtr(lo), torch.special.ndtr(hi)
            w = p_hi - p_lo
            w_sum += float(w.sum())
            u = torch.rand(m, generator=generator, dtype=torch.float64)
            keep = (u * w_max < w) & (half > 0)
            if keep.any():
                v = torch.rand(int(keep.sum()), generator=generator, dtype=torch.float64)
                q = p_lo[keep] + v * w[keep]
                x1 = s1 * torch.special.ndtri(q.clamp(1e-300, 1 - 1e-16))
                x1 = torch.minimum(torch.maximum(x1, lo[keep] * s1), hi[keep] * s1)
                x1 = sign[keep] * x1
                accepted.append(torch.cat([x1[:, None], a[keep]], dim=1))
                n_acc += len(x1)
        total_draws += draws
        if n_acc >= n:
            break
        tol *= 2.0
    info = {
        "eps": float(eps),
        "eps_effective": tol,
        "acceptance_rate": n_acc / draws,
        "abc_acceptance_rate": w_sum / draws,
        "draws": float(total_draws),
    }
    return torch.cat(accepted)[:n], info


class InverseKinematics(Problem):
    r"""Planar 3-segment arm on a vertical rail; ``y`` is the end-effector position.

    Prior :math:`x \sim N(0, \mathrm{diag}(\sigma)^2)`, default
    :math:`\sigma = (0.25, 0.5, 0.5, 0.5)`, segment lengths ``(0.5, 0.5, 1.0)``
    (Ardizzone et al. 2019, §4.1; Kruse et al. 2021). The forward map is
    deterministic; ``noise`` adds isotropic Gaussian noise of that standard deviation
    to the simulated ``y`` (default 0: the paper's noise-free arm, where the
    posterior lives on a 2-D manifold of the 4-D parameter space).

    The reference posterior is rejection ABC with tolerance ``abc_tolerance`` on
    :math:`\|f(x) - y^*\|` (:func:`abc_rejection`; with ``noise > 0`` the candidates'
    simulated ``y`` is noisy, so ABC targets the noisy-model posterior). The
    re-simulation error of ABC samples is about ``2/3 * abc_tolerance`` (the mean radius
    in a disc).

    Arguments:
        lengths: Segment lengths ``(l1, l2, l3)``.
        sigmas: Prior standard deviations of ``(x1, x2, x3, x4)``.
        noise: Observation noise standard deviation (>= 0).
        abc_tolerance: ABC tolerance ``eps``.
        abc_batch: Prior draws per ABC batch (memory: ~100 bytes each).
        abc_max_draws: Angle draws per observation before the tolerance is doubled
            (the tolerance actually used is recorded as ``eps_effective``).
        cache_dir: Folder of the ABC cache (default :func:`default_cache_dir`);
            ``false`` disables caching.

    Example:
        >>> ik = InverseKinematics(cache_dir=False)
        >>> x = ik.sample_prior(3)
        >>> ik.simulate(x).shape
        torch.Size([3, 2])
    """

    name = "kinematics"

    def __init__(
        self,
        lengths: Sequence[float] = (0.5, 0.5, 1.0),
        sigmas: Sequence[float] = (0.25, 0.5, 0.5, 0.5),
        noise: float = 0.0,
        abc_tolerance: float = 0.01,
        abc_batch: int = 1_000_000,
        abc_max_draws: int = 50_000_000,
        cache_dir: str | bool | None = None,
    ) -> None:
        lengths = _positive_vector("lengths", lengths, 3)
        sigmas = _positive_vector("sigmas", sigmas, 4)
        if not (isinstance(noise, (int, float)) and noise >= 0 and math.isfinite(noise)):
            raise ConfigError(f"problem.noise must be a number >= 0, got {noise!r}")
        if not (isinstance(abc_tolerance, (int, float)) and abc_tolerance > 0):
            raise ConfigError(f"problem.abc_tolerance must be a number > 0, got {abc_tolerance!r}")
        if int(abc_batch) < 1 or int(abc_max_draws) < 1:
            raise ConfigError("problem.abc_batch and problem.abc_max_draws must be >= 1")
        self.lengths = torch.tensor(lengths, dtype=torch.float64)
        self.sigmas = torch.tensor(sigmas, dtype=torch.float64)
        self.noise, self.abc_tolerance = float(noise), float(abc_tolerance)
        self.abc_batch, self.abc_max_draws = int(abc_batch), int(abc_max_draws)
        if cache_dir is False:
            self.cache_dir: Path | None = None
        elif cache_dir is None or cache_dir is True:
            self.cache_dir = default_cache_dir()
        else:
            self.cache_dir = Path(str(cache_dir)).expanduser()
        self.dim_x, self.dim_y = 4, 2
        self.param_names = ["x1 (rail)", "x2 (angle 1)", "x3 (angle 2)", "x4 (angle 3)"]
        self.prior = Independent(Normal(torch.zeros(4), self.sigmas.float()), 1)
        #: ABC statistics ``{eps, eps_effective, acceptance_rate, draws}`` of the last
        #: :meth:`reference_posterior` call (also stored in the cache).
        self.last_reference_info: dict[str, float] = {}

    # -- simulator -----------------------------------------------------------------
    def simulate_noise_free(self, x: Tensor) -> Tensor:
        return forward_kinematics(x.double(), self.lengths).to(x.dtype)

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        y = forward_kinematics(x.double(), self.lengths)
        if self.noise > 0:
            y = y + self.noise * torch.randn(y.shape, generator=generator, dtype=torch.float64)
        return y.to(x.dtype)

    def joint_positions(self, x: Tensor) -> Tensor:
        """Base and joint-end positions ``(n, 4, 2)`` of arms ``x`` (for plots)."""
        return joint_positions(x.double(), self.lengths)

    # -- ground truth --------------------------------------------------------------
    def _cache_key(self, y: Tensor, n: int, seed: int) -> str:
        spec = {
            "v": _CACHE_VERSION,
            "y": [float(v) for v in y.double().reshape(-1)],
            "n": n,
            "seed": seed,
            "lengths": self.lengths.tolist(),
            "sigmas": self.sigmas.tolist(),
            "noise": self.noise,
            "eps": self.abc_tolerance,
            "max_draws": self.abc_max_draws,
        }
        return hashlib.sha256(json.dumps(spec, sort_keys=True).encode()).hexdigest()[:24]

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` ABC samples for one observation ``y`` ``(2,)``; cached on disk.

        The cache key holds ``y``, ``n``, the problem parameters and one draw from
        ``generator`` (so different seeds give different, reproducible sample sets).
        """
        y = torch.as_tensor(y, dtype=torch.float64).reshape(-1)
        if y.shape != (2,):
            raise DataError(f"kinematics observation must have 2 entries, got {tuple(y.shape)}")
        seed = int(torch.randint(0, 2**31 - 1, (1,), generator=generator))
        path = None
        if self.cache_dir is not None:
            path = self.cache_dir / f"{self._cache_key(y, n, seed)}.npz"
            cached = _read_cache(path)
            if cached is not None:
                samples, info = cached
                self.last_reference_info = info
                return torch.from_numpy(samples).float()
        g = torch.Generator().manual_seed(seed)
        samples, info = abc_rejection(
            y,
            n,
            self.abc_tolerance,
            self.lengths,
            self.sigmas,
            self.noise,
            generator=g,
            batch_size=self.abc_batch,
            max_draws=self.abc_max_draws,
        )
        self.last_reference_info = info
        if path is not None:
            _write_cache(path, samples.numpy(), y.numpy(), info)
        return samples.float()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d.update(
            lengths=self.lengths.tolist(),
            sigmas=self.sigmas.tolist(),
            noise=self.noise,
            abc_tolerance=self.abc_tolerance,
        )
        return d


def _positive_vector(name: str, value: Any, size: int) -> list[float]:
    try:
        v = [float(a) for a in value]
    except (TypeError, ValueError) as err:
        raise ConfigError(f"problem.{name} must be a list of {size} positive numbers") from err
    if len(v) != size or not all(a > 0 and math.isfinite(a) for a in v):
        raise ConfigError(f"problem.{name} must be a list of {size} positive numbers, got {value}")
    return v


def _read_cache(path: Path) -> tuple[np.ndarray, dict[str, float]] | None:
    """Cached ``(samples, info)`` or ``None``; an unreadable file is ignored (recomputed)."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as f:
            samples = f["samples"]
            info = json.loads(str(f["info"]))
    except (OSError, ValueError, KeyError):
        return None
    return samples, info


def _write_cache(path: Path, samples: np.ndarray, y: np.ndarray, info: dict[str, float]) -> None:
    try:
        with atomic_path(path, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, samples=samples, y=y, info=np.array(json.dumps(info)))
    except OSError:
        # A read-only or full cache folder must not fail an evaluation.
        pass
