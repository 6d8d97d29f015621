"""Arm figures for the inverse-kinematics problem (Ardizzone et al. 2019, Fig. 3).

Each posterior sample is drawn as a translucent arm (rail base, three segments), the
target end-effector position as a cross: a good posterior shows many different arms
that all end at the cross. Written with the object API on an Agg canvas and saved
atomically, like :mod:`vinaflow.evaluation.plots`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.errors import DataError
from vinaflow.evaluation.metrics import as_numpy
from vinaflow.evaluation.plots import panel_grid, save_figure
from vinaflow.problems.kinematics import joint_positions

__all__ = ["draw_arms", "plot_arm_posterior", "plot_arm_panels"]

_LENGTHS = (0.5, 0.5, 1.0)


def _joints(samples: np.ndarray, lengths: Sequence[float]) -> np.ndarray:
    return joint_positions(
        torch.as_tensor(samples, dtype=torch.float64), torch.as_tensor(lengths, dtype=torch.float64)
    ).numpy()


def draw_arms(
    ax: Any,
    samples: Any,
    target: Any | None = None,
    lengths: Sequence[float] = _LENGTHS,
    max_arms: int = 150,
    color: str = "tab:blue",
    alpha: float | None = None,
    title: str | None = None,
    seed: int = 0,
) -> None:
    """Draw up to ``max_arms`` arms ``(n, 4)`` on a matplotlib axis, and the target cross."""
    x = as_numpy("samples", samples)
    if x.ndim != 2 or x.shape[1] != 4:
        raise DataError(f"arm samples must have shape (n, 4), got {x.shape}")
    if len(x) > max_arms:
        x = x[np.random.default_rng(seed).choice(len(x), max_arms, replace=False)]
    pts = _joints(x, lengths)  # (n, 4, 2)
    # Fainter lines when there are many, so the density shows.
    a = alpha if alpha is not None else float(np.clip(8.0 / max(len(x), 1), 0.04, 0.5))
    ax.axvline(0.0, color="0.6", lw=3, zorder=0)  # the rail
    for p in pts:
        ax.plot(p[:, 0], p[:, 1], "-", color=color, alpha=a, lw=1.2)
    ax.scatter(pts[:, 0, 0], pts[:, 0, 1], s=8, color="0.3", alpha=min(1.0, 3 * a), zorder=3)
    if target is not None:
        t = as_numpy("target", target).reshape(-1)
        ax.plot(t[0], t[1], marker="x", color="black", ms=11, mew=2.5, zorder=4)
    ax.set_aspect("equal")
    ax.set_xlim(-0.5, 2.3)
    ax.set_ylim(-1.4, 1.4)
    ax.grid(alpha=0.2)
    if title:
        ax.set_title(title, fontsize=9)


def plot_arm_posterior(
    samples: Any,
    target: Any,
    path: str | os.PathLike[str],
    reference: Any | None = None,
    lengths: Sequence[float] = _LENGTHS,
    max_arms: int = 150,
) -> Path:
    """Arms of model ``samples`` for ``target`` (and of ``reference`` samples beside)."""
    panels = [("model", samples)] + (
        [("reference (ABC)", reference)] if reference is not None else []
    )
    return plot_arm_panels(panels, target, path, lengths=lengths, max_arms=max_arms)


def plot_arm_panels(
    panels: Sequence[tuple[str, Any]],
    target: Any,
    path: str | os.PathLike[str],
    lengths: Sequence[float] = _LENGTHS,
    max_arms: int = 150,
    ncols: int | None = None,
) -> Path:
    """One arm panel per ``(title, samples)``, all for the same ``target``."""
    if not panels:
        raise DataError("plot_arm_panels needs at least one panel")
    fig, axes = panel_grid(len(panels), 3.2, 3.2, ncols=ncols or 4)
    for ax, (title, s) in zip(axes, panels, strict=True):
        color = "tab:orange" if "reference" in title.lower() else "tab:blue"
        draw_arms(ax, s, target, lengths, max_arms=max_arms, color=color, title=title)
    return save_figure(fig, path)
