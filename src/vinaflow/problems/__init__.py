"""Problems: priors, simulators and, where known, ground-truth posteriors."""

from __future__ import annotations

from vinaflow.problems.bank import BankProblem, SimulationBank, load_bank
from vinaflow.problems.base import Problem, check_finite
from vinaflow.problems.custom import SimulatorProblem, prior_from_config
from vinaflow.problems.gaussian_linear import GaussianLinear
from vinaflow.problems.registry import BUILTIN_PROBLEMS, make_problem, problem_parameters

__all__ = [
    "BUILTIN_PROBLEMS",
    "BankProblem",
    "GaussianLinear",
    "Problem",
    "SimulationBank",
    "SimulatorProblem",
    "check_finite",
    "load_bank",
    "make_problem",
    "prior_from_config",
    "problem_parameters",
]
