"""The prior's support as per-parameter bounds, to which a posterior is restricted.

A flow trained on simulations puts some mass where the prior has none (for a box prior,
samples just outside the box). The true posterior has no mass there, so a
:class:`vinaflow.models.Posterior` with a support rejects such samples and gives them
density ``-inf``, as sbi's ``DirectPosterior`` does with its prior ("leakage"
correction, Greenberg, Nonnenmacher, Macke 2019). The support is kept as bounds
``lower <= x <= upper`` (``-inf``/``inf`` where a parameter is unbounded), which covers
the priors of simulation-based inference (uniform boxes, positive parameters) and is
saved with the posterior as plain JSON.

Example:
    >>> from torch.distributions import Independent, Uniform
    >>> box = BoxSupport.from_prior(Independent(Uniform(-torch.ones(2), torch.ones(2)), 1))
    >>> box.contains(torch.tensor([[0.5, 0.0], [1.5, 0.0]])).tolist()
    [True, False]
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, constraints

from vinaflow.atomic import atomic_write_json
from vinaflow.errors import ConfigError, ModelFileError

__all__ = ["SUPPORT_FILE", "BoxSupport", "read_support", "write_support"]

#: The file beside a saved posterior's model that holds its support.
SUPPORT_FILE = "support.json"


class BoxSupport:
    """Bounds ``lower <= x <= upper`` per parameter (``(dim_x,)`` each, ``±inf`` allowed)."""

    def __init__(self, lower: Any, upper: Any) -> None:
        try:
            lo = torch.as_tensor(lower, dtype=torch.float64).flatten()
            hi = torch.as_tensor(upper, dtype=torch.float64).flatten()
        except (TypeError, ValueError, RuntimeError) as err:
            raise ConfigError(f"support bounds must be numbers, got {lower!r}, {upper!r}") from err
        if lo.shape != hi.shape or lo.numel() == 0:
            raise ConfigError(
                f"support: lower and upper must be non-empty and of one length, got "
                f"{lo.numel()} and {hi.numel()} values"
            )
        if lo.isnan().any() or hi.isnan().any() or not (lo < hi).all():
            raise ConfigError("support: every lower bound must be below its upper bound")
        self.lower, self.upper = lo, hi

    def __repr__(self) -> str:
        return f"BoxSupport(lower={self.lower.tolist()}, upper={self.upper.tolist()})"

    @property
    def dim(self) -> int:
        return self.lower.numel()

    def contains(self, x: Tensor) -> Tensor:
        """``(n,)`` booleans, on ``x``'s device: which rows of ``x`` ``(n, dim)`` lie inside
        the bounds."""
        # compared in float64 on the CPU: some accelerators have no float64
        xd = x.detach().to("cpu", torch.float64)
        return ((xd >= self.lower) & (xd <= self.upper)).all(-1).to(x.device)

    @classmethod
    def from_prior(cls, prior: Distribution | None) -> BoxSupport | None:
        """The support of ``prior`` (event shape ``(dim_x,)``) as bounds; ``None`` without a
        prior, where the support is all of R^d (nothing to restrict) or where it is not a
        box (with a warning: samples are then not restricted)."""
        if prior is None:
            return None
        dim = int(prior.event_shape[0])
        try:
            constraint = prior.support
        except NotImplementedError:  # a user's Distribution need not define one
            constraint = None
        bounds = None if constraint is None else _bounds(constraint)
        if bounds is None:
            warnings.warn(
                f"the prior's support ({constraint}) is not a box of per-parameter bounds; "
                "posterior samples are not restricted to it",
                stacklevel=2,
            )
            return None
        lo, hi = (torch.as_tensor(b, dtype=torch.float64).expand(dim).clone() for b in bounds)
        if torch.isinf(lo).all() and torch.isinf(hi).all():
            return None
        return cls(lo, hi)

    def to_json(self) -> dict[str, Any]:
        # JSON has no infinity: unbounded ends are written as null
        def ends(t: Tensor) -> list[float | None]:
            return [None if math.isinf(v) else v for v in t.tolist()]

        return {"lower": ends(self.lower), "upper": ends(self.upper)}

    @classmethod
    def from_json(cls, data: Any) -> BoxSupport:
        if not isinstance(data, dict) or not {"lower", "upper"} <= set(data):
            raise ConfigError("support must be a mapping with 'lower' and 'upper' lists")
        lo = [-math.inf if v is None else v for v in data["lower"]]
        hi = [math.inf if v is None else v for v in data["upper"]]
        return cls(lo, hi)


def _bounds(c: constraints.Constraint) -> tuple[Any, Any] | None:
    """``(lower, upper)`` of a box constraint (scalars or per-parameter tensors), else None."""
    if isinstance(c, constraints.independent):
        return _bounds(c.base_constraint)
    if c is constraints.real or c is constraints.real_vector:
        return -math.inf, math.inf
    if isinstance(c, (constraints.interval, constraints.half_open_interval)):
        return c.lower_bound, c.upper_bound
    if isinstance(c, (constraints.greater_than, constraints.greater_than_eq)):
        return c.lower_bound, math.inf
    if isinstance(c, constraints.less_than):
        return -math.inf, c.upper_bound
    return None


def write_support(directory: Path, support: BoxSupport | None) -> None:
    """Save ``support`` beside a posterior in ``directory`` (atomically); ``None`` removes a
    support file left by an earlier save, so that the folder loads unrestricted."""
    path = Path(directory) / SUPPORT_FILE
    if support is None:
        path.unlink(missing_ok=True)
    else:
        atomic_write_json(path, support.to_json())


def read_support(directory: Path) -> BoxSupport | None:
    """The support saved in ``directory``, ``None`` if it has none."""
    path = Path(directory) / SUPPORT_FILE
    if not path.is_file():
        return None
    try:
        return BoxSupport.from_json(json.loads(path.read_text(encoding="utf-8")))
    except (json.JSONDecodeError, UnicodeDecodeError, ConfigError) as err:
        raise ModelFileError(f"{path}: {err}") from err
