"""Experiments: the run pipeline, reports and the paper's studies."""

from __future__ import annotations

from vinaflow.experiments.pipeline import RunResult, build_objective, evaluate_posterior, run

__all__ = ["RunResult", "build_objective", "evaluate_posterior", "run"]
