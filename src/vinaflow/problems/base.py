"""The :class:`Problem` interface: a prior, a simulator and, where known, the true posterior."""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution

from vinaflow.errors import DataError

__all__ = ["Problem", "check_finite"]


def check_finite(name: str, t: Tensor) -> None:
    """Raise :class:`DataError` naming ``name`` if ``t`` has NaN or inf entries."""
    if not torch.isfinite(t).all():
        bad = int((~torch.isfinite(t)).sum())
        raise DataError(f"{name} contains {bad} non-finite value(s) (NaN or inf)")


class Problem(ABC):
    """A simulation-based inference problem ``x ~ prior``, ``y ~ simulator(x)``.

    Subclasses set ``name``, ``param_names``, ``dim_x``, ``dim_y`` and ``prior``
    and implement :meth:`simulate`. Problems with a known posterior override
    :meth:`reference_posterior`; problems with a deterministic forward map
    (used for the re-simulation error) override :meth:`simulate_noise_free`.
    """

    name: str = "problem"
    param_names: list[str]
    dim_x: int
    dim_y: int
    prior: Distribution

    @abstractmethod
    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """Noisy observations ``y`` of shape ``(n, dim_y)`` for parameters ``x`` ``(n, dim_x)``."""

    def simulate_noise_free(self, x: Tensor) -> Tensor | None:
        """Deterministic forward map ``f(x)`` or ``None`` if the problem has none."""
        return None

    @property
    def observation_noise_std(self) -> Tensor | None:
        """Per-entry standard deviations ``(dim_y,)`` when ``y = f(x) + noise`` with
        independent Gaussian noise (enables noise augmentation), else ``None``."""
        return None

    def simulate_with_clean(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """``(y, f(x))``: :meth:`simulate`'s draws and, for problems with additive noise
        (:attr:`observation_noise_std`), the noise-free observations of the same call."""
        return self.simulate(x, generator), None

    @property
    def has_reference_posterior(self) -> bool:
        return type(self).reference_posterior is not Problem.reference_posterior

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        """``n`` samples ``(n, dim_x)`` from the exact posterior ``p(x | y)`` for one ``y``."""
        raise NotImplementedError(f"problem {self.name!r} has no reference posterior")

    def reference_diagnostics(self, y: Tensor) -> dict[str, Any]:
        """How the reference posterior of ``y`` was computed, for the evaluation output
        (e.g. a grid posterior's ``frontier_mass``); empty where there is nothing to say."""
        return {}

    @property
    def has_likelihood(self) -> bool:
        return type(self).log_likelihood is not Problem.log_likelihood

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """Exact ``log p(y | x)`` ``(n,)`` for ``x`` ``(n, dim_x)`` and one ``y`` (up to a
        constant in ``x``); problems with an explicit noise model override this."""
        raise NotImplementedError(f"problem {self.name!r} has no tractable likelihood")

    def importance_log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        """The likelihood importance sampling weighs with (up to a constant in ``x``):
        :meth:`log_likelihood`, or a validated faster evaluation of it."""
        return self.log_likelihood(x, y)

    def log_prior(self, x: Tensor) -> Tensor:
        """Prior log-density ``(n,)``, ``-inf`` outside the prior's support (no error)."""
        x = torch.as_tensor(x, dtype=torch.get_default_dtype())
        support = self.prior.support
        inside = support.check(x)
        while inside.ndim > 1:  # constraints that do not reduce the event dimension
            inside = inside.all(-1)
        out = torch.full(inside.shape, -torch.inf, dtype=x.dtype)
        if inside.any():
            out[inside] = self.prior.log_prob(x[inside]).to(x.dtype)
        return out

    def sample_prior(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` prior draws; uses ``generator`` through a temporary global seed if given."""
        if generator is None:
            return self.prior.sample((n,)).to(torch.get_default_dtype())
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self.prior.sample((n,)).to(torch.get_default_dtype())

    def simulate_checked(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """:meth:`simulate` plus shape and finiteness checks with clear messages."""
        return self._checked(x, self.simulate(x, generator=generator), "simulator")

    def simulate_with_clean_checked(
        self, x: Tensor, generator: torch.Generator | None = None
    ) -> tuple[Tensor, Tensor | None]:
        """:meth:`simulate_with_clean` with the checks of :meth:`simulate_checked`."""
        y, clean = self.simulate_with_clean(x, generator=generator)
        y = self._checked(x, y, "simulator")
        if clean is not None:
            clean = self._checked(x, clean, "noise-free simulator")
        return y, clean

    def _checked(self, x: Tensor, y: Any, what: str) -> Tensor:
        if not isinstance(y, Tensor):
            y = torch.as_tensor(y, dtype=torch.get_default_dtype())
        if y.shape != (x.shape[0], self.dim_y):
            raise DataError(
                f"{what} of problem {self.name!r} returned shape {tuple(y.shape)}, "
                f"expected (n={x.shape[0]}, dim_y={self.dim_y})"
            )
        check_finite(f"{what} output of problem {self.name!r}", y)
        return y

    def describe(self) -> dict[str, Any]:
        """Parameters of this problem instance, for configs and reports."""
        return {
            "name": self.name,
            "dim_x": self.dim_x,
            "dim_y": self.dim_y,
            "param_names": list(self.param_names),
        }
