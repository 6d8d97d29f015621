r"""Target distributions for generative modelling with normalizing flows.

A *target* is a data distribution on :math:`\mathbb{R}^d` that can be sampled (and, where
known, evaluated). The built-in targets are the toy densities of the flow literature and
the heavy-tailed Pareto family:

* ``uniform``: :math:`U(\text{low}, \text{high})^d` (the support-mismatch study);
* ``gaussian-mixture``: equal-weight isotropic mixture (1-D: two modes, 2-D: ``modes``
  Gaussians on a circle of radius ``radius``);
* ``two-moons``: the scikit-learn two half circles, Gaussian noise ``noise``;
* ``rings``: concentric circles of radii ``radii`` with radial noise ``noise``;
* ``pareto``: :math:`P(X > x) = (x_m / x)^\alpha` for :math:`x \ge x_m` (tail index
  :math:`\alpha`; the mean is infinite for :math:`\alpha \le 1`, the variance for
  :math:`\alpha \le 2`);
* data arrays (``(n, d)`` or ``(n,)``) or ``.npz`` files (key ``x``, or the only array),
  validated by :func:`check_data`.

Example:
    >>> t = make_target({"name": "pareto", "alpha": 3.0})
    >>> t.sample(5).shape
    torch.Size([5, 1])
"""

from __future__ import annotations

import math
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError

__all__ = [
    "TARGETS",
    "ArrayTarget",
    "GaussianMixture",
    "Pareto",
    "Rings",
    "Target",
    "TwoMoons",
    "UniformBox",
    "check_data",
    "load_data",
    "make_target",
]


def _positive(field: str, value: Any) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{field} must be a number > 0, got {value!r}") from None
    if not (math.isfinite(v) and v > 0):
        raise ConfigError(f"{field} must be a finite number > 0, got {value!r}")
    return v


def _dim(field: str, value: Any, allowed: Sequence[int] | None = None) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ConfigError(f"{field} must be an integer >= 1, got {value!r}")
    if allowed is not None and int(value) not in allowed:
        raise ConfigError(f"{field} must be one of {list(allowed)}, got {value!r}")
    return int(value)


def _randn(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
    return torch.randn(*shape, generator=g, dtype=torch.float64)


def _rand(shape: tuple[int, ...], g: torch.Generator | None) -> Tensor:
    return torch.rand(*shape, generator=g, dtype=torch.float64)


class Target:
    """A data distribution: ``sample(n, generator)`` and, if tractable, ``log_prob(x)``."""

    name: str = "target"
    dim: int = 1

    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` samples ``(n, dim)`` (float32)."""
        n = int(n)
        if n < 1:
            raise ConfigError(f"number of samples must be >= 1, got {n}")
        return self._sample(n, generator).float()

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        raise NotImplementedError

    @property
    def has_log_prob(self) -> bool:
        return type(self).log_prob is not Target.log_prob

    def log_prob(self, x: Tensor) -> Tensor:
        raise NotImplementedError(f"target {self.name!r} has no tractable density")

    @property
    def finite_sample_size(self) -> int | None:
        """Number of available samples for data sets, ``None`` for simulable targets."""
        return None

    def describe(self) -> dict[str, Any]:
        return {"name": self.name, "dim": self.dim}


class UniformBox(Target):
    """:math:`U(\\text{low}, \\text{high})^{dim}`."""

    name = "uniform"

    def __init__(self, dim: int = 1, low: float = 0.0, high: float = 1.0) -> None:
        self.dim = _dim("target.dim", dim)
        self.low, self.high = float(low), float(high)
        if not (math.isfinite(self.low) and math.isfinite(self.high) and self.high > self.low):
            raise ConfigError(f"target.low < target.high must hold, got {low}, {high}")

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        return self.low + (self.high - self.low) * _rand((n, self.dim), g)

    def log_prob(self, x: Tensor) -> Tensor:
        inside = ((x >= self.low) & (x <= self.high)).all(-1)
        val = -self.dim * math.log(self.high - self.low)
        return torch.where(
            inside, torch.full_like(x[:, 0], val), torch.full_like(x[:, 0], -math.inf)
        )

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "low": self.low, "high": self.high}


class GaussianMixture(Target):
    """Equal-weight mixture of isotropic Gaussians.

    ``means`` (``(k, dim)``) overrides the default layout: 1-D modes at ``-radius`` and
    ``+radius``; 2-D ``modes`` centres evenly on a circle of radius ``radius``.
    """

    name = "gaussian-mixture"

    def __init__(
        self,
        dim: int = 2,
        modes: int = 8,
        radius: float = 2.0,
        std: float = 0.2,
        means: Sequence[Sequence[float]] | None = None,
    ) -> None:
        self.std = _positive("target.std", std)
        if means is not None:
            m = torch.as_tensor(means, dtype=torch.float64)
            if m.ndim == 1:
                m = m[:, None]
            if m.ndim != 2 or m.shape[0] < 1 or not torch.isfinite(m).all():
                raise ConfigError("target.means must be a finite (modes, dim) list of lists")
            self.means = m
        else:
            dim = _dim("target.dim", dim, (1, 2))
            r = _positive("target.radius", radius)
            if dim == 1:
                self.means = torch.tensor([[-r], [r]], dtype=torch.float64)
            else:
                k = _dim("target.modes", modes)
                ang = 2 * math.pi * torch.arange(k, dtype=torch.float64) / k
                self.means = r * torch.stack([torch.cos(ang), torch.sin(ang)], 1)
        self.dim = int(self.means.shape[1])

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        idx = torch.randint(0, self.means.shape[0], (n,), generator=g)
        return self.means[idx] + self.std * _randn((n, self.dim), g)

    def log_prob(self, x: Tensor) -> Tensor:
        d2 = (x.double()[:, None, :] - self.means[None]).pow(2).sum(-1)
        comp = -0.5 * d2 / self.std**2 - self.dim * math.log(self.std * math.sqrt(2 * math.pi))
        return (torch.logsumexp(comp, 1) - math.log(self.means.shape[0])).to(x.dtype)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "std": self.std, "means": self.means.tolist()}


class TwoMoons(Target):
    """Two interleaving half circles (as ``sklearn.datasets.make_moons``), noise ``noise``."""

    name = "two-moons"

    def __init__(self, noise: float = 0.05) -> None:
        self.noise = _positive("target.noise", noise)
        self.dim = 2

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        t = math.pi * _rand((n,), g)
        upper = torch.rand(n, generator=g) < 0.5
        x = torch.where(upper, torch.cos(t), 1.0 - torch.cos(t))
        y = torch.where(upper, torch.sin(t), 0.5 - torch.sin(t))
        return torch.stack([x, y], 1) + self.noise * _randn((n, 2), g)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "noise": self.noise}


class Rings(Target):
    """Concentric circles with radii ``radii`` (equal weights) and radial noise ``noise``."""

    name = "rings"

    def __init__(self, radii: Sequence[float] = (1.0, 2.0), noise: float = 0.08) -> None:
        if isinstance(radii, (int, float)) or len(radii) < 1:
            raise ConfigError(
                f"target.radii must be a non-empty list of numbers > 0, got {radii!r}"
            )
        self.radii = torch.tensor(
            [_positive("target.radii", r) for r in radii], dtype=torch.float64
        )
        self.noise = _positive("target.noise", noise)
        self.dim = 2

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        r = self.radii[torch.randint(0, len(self.radii), (n,), generator=g)]
        r = r + self.noise * _randn((n,), g)
        ang = 2 * math.pi * _rand((n,), g)
        return torch.stack([r * torch.cos(ang), r * torch.sin(ang)], 1)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "radii": self.radii.tolist(), "noise": self.noise}


class Pareto(Target):
    r"""Pareto (type I) with tail index ``alpha`` and scale ``x_m``: :math:`X = x_m U^{-1/\alpha}`.

    Density :math:`\alpha x_m^\alpha / x^{\alpha + 1}` on :math:`[x_m, \infty)`; ``dim``
    independent coordinates. :math:`\log(X / x_m) \sim \mathrm{Exp}(\alpha)`.
    """

    name = "pareto"

    def __init__(self, alpha: float = 3.0, scale: float = 1.0, dim: int = 1) -> None:
        try:
            a = float(alpha)
        except (TypeError, ValueError):
            raise ConfigError(
                f"target.alpha (Pareto tail index) must be > 0, got {alpha!r}"
            ) from None
        if not (math.isfinite(a) and a > 0):
            raise ConfigError(
                f"target.alpha (Pareto tail index) must be finite and > 0, got {alpha!r}"
            )
        self.alpha = a
        self.scale = _positive("target.scale", scale)
        self.dim = _dim("target.dim", dim)

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        # 1 - U avoids U = 0 (an infinite sample)
        u = 1.0 - _rand((n, self.dim), g)
        return self.scale * u.pow(-1.0 / self.alpha)

    def log_prob(self, x: Tensor) -> Tensor:
        xd = x.double()
        lp = (
            math.log(self.alpha)
            + self.alpha * math.log(self.scale)
            - (self.alpha + 1) * torch.log(xd.clamp_min(self.scale))
        )
        lp = torch.where(xd >= self.scale, lp, torch.full_like(lp, -math.inf))
        return lp.sum(-1).to(x.dtype)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "alpha": self.alpha, "scale": self.scale}


def check_data(x: Any, name: str = "data", min_rows: int = 2) -> Tensor:
    """Validate a data set: numeric ``(n, d)`` (or ``(n,)``), finite, no constant column.

    Raises :class:`DataError` naming ``name``, the offending columns and what is expected.
    """
    if isinstance(x, Tensor):
        x = x.detach().cpu().numpy()
    try:
        arr = np.asarray(x, dtype=np.float64)
    except (TypeError, ValueError):
        raise DataError(f"{name} must be a numeric array of shape (n, d)") from None
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise DataError(f"{name} must have shape (n, d) or (n,), got {arr.shape}")
    if arr.shape[0] < min_rows:
        raise DataError(f"{name} needs at least {min_rows} rows, got {arr.shape[0]}")
    bad = ~np.isfinite(arr)
    if bad.any():
        rows = np.flatnonzero(bad.any(1))
        raise DataError(
            f"{name} contains {int(bad.sum())} NaN/inf value(s) (first rows {rows[:5].tolist()}); "
            "remove or impute them"
        )
    const = np.flatnonzero(arr.std(0) <= 1e-12 * np.maximum(np.abs(arr).max(0), 1.0))
    if const.size:
        raise DataError(
            f"{name} has zero-variance column(s) {const.tolist()}: a flow cannot model a "
            "constant coordinate (its density is degenerate); drop those columns"
        )
    return torch.as_tensor(arr, dtype=torch.float32)


def load_data(path: str | Path, key: str | None = None) -> Tensor:
    """Load ``(n, d)`` data from ``.npz`` (array ``key``, ``x``, or the only array) or ``.npy``."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"target.data: file not found: {path}")
    try:
        loaded = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, ValueError, OSError, EOFError) as err:
        raise DataError(f"target.data: {path} is not a readable .npz/.npy file ({err})") from err
    if isinstance(loaded, np.ndarray):
        return check_data(loaded, name=str(path))
    with loaded as data:
        names = list(data.files)
        if key is None:
            key = "x" if "x" in names else (names[0] if len(names) == 1 else None)
        if key is None or key not in names:
            raise DataError(
                f"target.data: {path} holds arrays {names}; name one with target.key (default 'x')"
            )
        return check_data(data[key], name=f"{path}[{key}]")


class ArrayTarget(Target):
    """A fixed data set; ``sample`` draws rows without replacement (with, beyond ``n``)."""

    name = "data"

    def __init__(self, data: Any, source: str | None = None) -> None:
        self.data = check_data(data, name=source or "data")
        self.dim = int(self.data.shape[1])
        self.source = source

    @property
    def finite_sample_size(self) -> int | None:
        return int(self.data.shape[0])

    def _sample(self, n: int, g: torch.Generator | None) -> Tensor:
        m = self.data.shape[0]
        if n <= m:
            idx = torch.randperm(m, generator=g)[:n]
        else:
            idx = torch.randint(0, m, (n,), generator=g)
        return self.data[idx].double()

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "source": self.source, "rows": int(self.data.shape[0])}


_BUILTIN: dict[str, type[Target]] = {
    "uniform": UniformBox,
    "gaussian-mixture": GaussianMixture,
    "two-moons": TwoMoons,
    "rings": Rings,
    "pareto": Pareto,
}
TARGETS = (*_BUILTIN, "data")


def make_target(spec: str | Mapping[str, Any] | Target | Any) -> Target:
    """Build a target from a name, a ``{name: ..., **params}`` mapping, ``{data: FILE}``,
    or an array of samples."""
    if isinstance(spec, Target):
        return spec
    if isinstance(spec, str):
        spec = {"name": spec}
    if not isinstance(spec, Mapping):
        return ArrayTarget(spec)
    params = dict(spec)
    if "data" in params:
        data = params.pop("data")
        key = params.pop("key", None)
        params.pop("name", None)
        if params:
            raise ConfigError(
                f"target: with target.data only 'key' is allowed, got {sorted(params)}"
            )
        if isinstance(data, (str, Path)):
            return ArrayTarget(load_data(data, key), source=str(data))
        return ArrayTarget(data)
    name = params.pop("name", None)
    if name not in _BUILTIN:
        raise ConfigError(
            f"target.name: unknown target {name!r}; allowed: {', '.join(_BUILTIN)} "
            "(or target.data: FILE.npz)"
        )
    try:
        return _BUILTIN[name](**params)
    except TypeError as err:
        import inspect

        allowed = [p for p in inspect.signature(_BUILTIN[name].__init__).parameters if p != "self"]
        raise ConfigError(f"target {name!r}: {err}; allowed parameters: {allowed}") from None
