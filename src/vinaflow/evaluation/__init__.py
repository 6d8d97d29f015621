"""Evaluation: posterior distances, summaries, calibration diagnostics and figures.

Plot functions are imported lazily so that metrics do not pull in matplotlib.
"""

from __future__ import annotations

from typing import Any

from vinaflow.evaluation.calibration import expected_coverage, sbc_ranks, sbc_uniformity_pvalues
from vinaflow.evaluation.metrics import c2st, mmd, posterior_summary, resimulation_error, w1

__all__ = [
    "c2st",
    "w1",
    "mmd",
    "posterior_summary",
    "resimulation_error",
    "sbc_ranks",
    "sbc_uniformity_pvalues",
    "expected_coverage",
    "plot_loss_curves",
    "plot_training_history",
    "plot_posterior_pairs",
    "plot_sbc_histogram",
    "plot_coverage",
]

_PLOTS = {
    "plot_loss_curves",
    "plot_posterior_pairs",
    "plot_sbc_histogram",
    "plot_coverage",
    "plot_training_history",
}


def __getattr__(name: str) -> Any:
    if name in _PLOTS:
        # matplotlib is heavy: loaded on the first plot function asked for.
        from vinaflow.evaluation import plots

        return getattr(plots, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
