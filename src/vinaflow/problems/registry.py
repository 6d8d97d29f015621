"""Built-in problems by name, and construction of any problem from a config section."""

from __future__ import annotations

import importlib
import inspect
from collections.abc import Mapping
from typing import Any

from vinaflow.errors import ConfigError, VinaflowError
from vinaflow.problems.bank import BankProblem, load_bank
from vinaflow.problems.base import Problem
from vinaflow.problems.custom import SimulatorProblem

__all__ = ["BUILTIN_PROBLEMS", "DATA_KEYS", "make_problem", "problem_class", "problem_parameters"]

# name -> "module:Class", imported on demand so that e.g. the acoustics code is only
# loaded by users who ask for it.
BUILTIN_PROBLEMS: dict[str, str] = {
    "gaussian-linear": "vinaflow.problems.gaussian_linear:GaussianLinear",
    "kinematics": "vinaflow.problems.kinematics:InverseKinematics",
    "ocean-acoustics": "vinaflow.problems.ocean_acoustics:OceanAcousticsProblem",
}

#: Keys of the ``problem`` section that describe the data, not the problem:
#: the simulation budget, the validation rows, and the one observation that sequential
#: rounds (``training.rounds``) focus on.
DATA_KEYS = ("num_simulations", "num_validation", "observation")


def problem_class(name: str) -> type[Problem]:
    if name not in BUILTIN_PROBLEMS:
        raise ConfigError(
            f"problem.name: unknown problem {name!r}; allowed: {', '.join(BUILTIN_PROBLEMS)} "
            "(or give problem.simulator + problem.prior, or problem.bank)"
        )
    module, cls = BUILTIN_PROBLEMS[name].split(":")
    return getattr(importlib.import_module(module), cls)


def problem_parameters(name: str) -> dict[str, Any]:
    """Constructor parameters of a built-in problem with their defaults."""
    sig = inspect.signature(problem_class(name).__init__)
    return {
        p.name: (None if p.default is inspect.Parameter.empty else p.default)
        for p in list(sig.parameters.values())[1:]
        if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def make_problem(spec: Mapping[str, Any]) -> Problem:
    """Build a problem from the ``problem`` config section.

    Three forms: ``{name: NAME, **params}`` for a built-in problem;
    ``{simulator: "module:function", prior: {...}}`` for a user's own; and
    ``{bank: FILE.npz}`` for a precomputed simulation bank.
    """
    if not isinstance(spec, Mapping):
        raise ConfigError("problem must be a mapping")
    params = {k: v for k, v in spec.items() if k not in DATA_KEYS}
    if "name" in params and not isinstance(params["name"], str):
        raise ConfigError(f"problem.name must be a string, got {params['name']!r}")
    forms = [k for k in ("name", "simulator", "bank") if k in params]
    if len(forms) != 1:
        raise ConfigError(
            "problem needs exactly one of: name (built-in), simulator (+ prior), bank; "
            f"got {forms or 'none'}"
        )
    if "bank" in params:
        extra = set(params) - {"bank"}
        if extra:
            raise ConfigError(f"problem: keys {sorted(extra)} are not allowed with problem.bank")
        bank = load_bank(params["bank"])
        source = None
        meta = bank.metadata
        if meta.get("name") in BUILTIN_PROBLEMS:
            source = make_problem(meta)
        return BankProblem(bank, source)
    if "simulator" in params:
        allowed = {"simulator", "prior", "param_names", "noise_free"}
        extra = set(params) - allowed
        if extra:
            raise ConfigError(f"problem: unknown keys {sorted(extra)}; allowed {sorted(allowed)}")
        if "prior" not in params:
            raise ConfigError("problem.prior is required with problem.simulator")
        return SimulatorProblem(
            params["simulator"],
            params["prior"],
            params.get("param_names"),
            params.get("noise_free"),
        )
    name = params.pop("name")
    cls = problem_class(name)
    allowed = problem_parameters(name)
    unknown = set(params) - set(allowed)
    if unknown:
        raise ConfigError(
            f"problem {name!r}: unknown parameter(s) {sorted(unknown)}; allowed: {sorted(allowed)}"
        )
    try:
        return cls(**params)
    except VinaflowError:
        raise
    # Values of the wrong type or size fail inside numpy/torch conversions; they are
    # still the config's fault, so report them as such.
    except (TypeError, ValueError, OverflowError, RuntimeError) as err:
        raise ConfigError(f"problem {name!r}: invalid parameter value ({err})") from err
