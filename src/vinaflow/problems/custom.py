"""A user's own problem: a prior plus a simulator callable."""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import torch
from torch import Tensor
from torch.distributions import Distribution, Independent, Normal, Uniform

from vinaflow.errors import ConfigError, DataError
from vinaflow.problems.base import Problem

__all__ = ["SimulatorProblem", "import_callable", "prior_from_config"]

Simulator = Callable[[Tensor], Tensor]


def import_callable(spec: str, field: str = "problem.simulator") -> Callable[..., Any]:
    """Import ``"package.module:function"``.

    Importing runs the module's top-level code, so vinaflow only does it for a
    name the user's own config (or Python call) gives explicitly.
    """
    if not isinstance(spec, str) or spec.count(":") != 1:
        raise ConfigError(f"{field} must have the form 'module:function', got {spec!r}")
    module_name, attr = spec.split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"{field}: cannot import module {module_name!r} ({err})") from err
    fn = getattr(module, attr, None)
    if not callable(fn):
        raise ConfigError(f"{field}: module {module_name!r} has no callable {attr!r}")
    return fn


def _vector(field: str, value: Any) -> Tensor:
    try:
        t = torch.as_tensor(value, dtype=torch.float32)
    except (TypeError, ValueError, OverflowError) as err:
        raise ConfigError(f"{field} must be a list of numbers, got {value!r}") from err
    if t.ndim != 1 or t.numel() == 0 or not torch.isfinite(t).all():
        raise ConfigError(f"{field} must be a non-empty list of finite numbers, got {value!r}")
    return t


def prior_from_config(spec: Mapping[str, Any]) -> Distribution:
    """``{normal: {loc, scale}}`` or ``{uniform: {low, high}}`` -> an independent prior."""
    if not isinstance(spec, Mapping) or len(spec) != 1:
        raise ConfigError(
            "problem.prior must be {normal: {loc: [...], scale: [...]}} or "
            "{uniform: {low: [...], high: [...]}}"
        )
    ((kind, params),) = spec.items()
    if not isinstance(params, Mapping):
        raise ConfigError(f"problem.prior.{kind} must be a mapping")
    if kind == "normal":
        loc = _vector("problem.prior.normal.loc", params.get("loc"))
        scale = _vector("problem.prior.normal.scale", params.get("scale"))
        if loc.shape != scale.shape or (scale <= 0).any():
            raise ConfigError("problem.prior.normal: loc and scale need equal length, scale > 0")
        return Independent(Normal(loc, scale), 1)
    if kind == "uniform":
        low = _vector("problem.prior.uniform.low", params.get("low"))
        high = _vector("problem.prior.uniform.high", params.get("high"))
        if low.shape != high.shape or (high <= low).any():
            raise ConfigError("problem.prior.uniform: low and high need equal length, high > low")
        return Independent(Uniform(low, high), 1)
    raise ConfigError(f"problem.prior: unknown kind {kind!r}; allowed: normal, uniform")


class SimulatorProblem(Problem):
    """A problem from any prior and a simulator ``simulate(x: Tensor[n, dx]) -> Tensor[n, dy]``.

    Arguments:
        simulator: A callable, or ``"module:function"``.
        prior: A ``torch.distributions.Distribution`` over ``R^dx`` (event shape ``(dx,)``)
            or a config mapping accepted by :func:`prior_from_config`.
        param_names: Optional names of the parameters.
        noise_free: Optional deterministic forward map for the re-simulation error.

    Example:
        >>> prior = {"normal": {"loc": [0.0, 0.0], "scale": [1.0, 1.0]}}
        >>> problem = SimulatorProblem(lambda x: x.sum(-1, keepdim=True), prior)
        >>> problem.dim_x, problem.dim_y
        (2, 1)
    """

    name = "custom"

    def __init__(
        self,
        simulator: Simulator | str,
        prior: Distribution | Mapping[str, Any],
        param_names: Sequence[str] | None = None,
        noise_free: Simulator | str | None = None,
    ) -> None:
        self.simulator_spec = simulator if isinstance(simulator, str) else None
        self._simulator = import_callable(simulator) if isinstance(simulator, str) else simulator
        if isinstance(noise_free, str):
            noise_free = import_callable(noise_free, "problem.noise_free")
        self._noise_free = noise_free
        if not callable(self._simulator):
            raise ConfigError("problem.simulator must be callable or 'module:function'")
        self.prior = prior if isinstance(prior, Distribution) else prior_from_config(prior)
        event = tuple(self.prior.event_shape)
        if len(event) != 1:
            raise ConfigError(f"problem.prior must have a 1-D event shape (dx,), got {event}")
        self.dim_x = event[0]
        self.param_names = list(param_names or [f"x{i + 1}" for i in range(self.dim_x)])
        if len(self.param_names) != self.dim_x:
            raise ConfigError(f"problem.param_names needs {self.dim_x} names")
        probe = self._call(self.prior.sample((2,)).float())
        if probe.ndim != 2 or probe.shape[0] != 2:
            raise DataError(
                f"simulator must return shape (n, dim_y) for input (n, {self.dim_x}); "
                f"for n=2 it returned {tuple(probe.shape)}"
            )
        self.dim_y = probe.shape[1]

    def _call(self, x: Tensor) -> Tensor:
        y = self._simulator(x)
        return torch.as_tensor(y, dtype=torch.get_default_dtype())

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        # User simulators draw from torch's global RNG; seed it from ``generator`` so
        # that runs stay reproducible without changing the user's signature.
        if generator is None:
            return self._call(x)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            return self._call(x)

    def simulate_noise_free(self, x: Tensor) -> Tensor | None:
        return None if self._noise_free is None else torch.as_tensor(self._noise_free(x)).float()

    def describe(self) -> dict[str, Any]:
        d = super().describe()
        d["simulator"] = self.simulator_spec or getattr(self._simulator, "__qualname__", "?")
        return d
