"""Experiments: the run pipelines (`vinaflow run`, `vinaflow flow`) and their run-folder reports."""

from __future__ import annotations

from vinaflow.experiments.pipeline import RunResult, build_objective, evaluate_posterior, run

__all__ = ["RunResult", "build_objective", "evaluate_posterior", "run"]
