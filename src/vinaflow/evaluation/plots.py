"""Diagnostic figures: loss curves, posterior pair plots, SBC histograms, coverage.

Figures are drawn with matplotlib's object API on an Agg canvas, never through
``pyplot``, so importing this module changes no global backend state and works
headless and in threads. Each function writes a PNG to a temporary file next to
``path`` and moves it into place with :func:`os.replace`, so a crash never leaves a
half-written figure, and returns ``path``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from scipy import stats

from vinaflow.atomic import atomic_path
from vinaflow.errors import DataError
from vinaflow.evaluation.metrics import as_numpy, check_samples

__all__ = [
    "panel_grid",
    "plot_coverage",
    "plot_loss_curves",
    "plot_posterior_pairs",
    "plot_sbc_histogram",
    "plot_training_history",
    "save_figure",
]

_MAX_SCATTER = 2000


def save_figure(fig: Figure, path: str | os.PathLike[str], dpi: int = 120) -> Path:
    """Write ``fig`` as a PNG at ``path`` atomically (on an Agg canvas); returns ``path``.

    Temporary name, ``fsync``, :func:`os.replace`: a crash leaves the old plot or the
    new one, never half a PNG.
    """
    path = Path(path)
    FigureCanvasAgg(fig)
    with atomic_path(path, suffix=".png") as tmp, open(tmp, "wb") as fh:
        fig.savefig(fh, format="png", dpi=dpi, bbox_inches="tight")
    return path


def panel_grid(n: int, width: float, height: float, ncols: int = 4) -> tuple[Figure, list[Any]]:
    """A figure with ``n`` panels of ``width`` x ``height`` inches, at most ``ncols`` a row.

    Returns the figure and the ``n`` axes in reading order; the unused cells of the last
    row are hidden.
    """
    ncols = max(1, min(n, ncols))
    nrows = int(np.ceil(n / ncols))
    fig = Figure(figsize=(width * ncols, height * nrows))
    axes = list(np.asarray(fig.subplots(nrows, ncols, squeeze=False)).reshape(-1))
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def plot_loss_curves(
    history: Mapping[str, Sequence[float]],
    path: str | os.PathLike[str],
    steps: Sequence[float] | Mapping[str, Sequence[float]] | None = None,
    title: str | None = None,
) -> Path:
    """Plot one curve per entry of ``history`` (e.g. ``{"train": [...], "val": [...]}``).

    ``steps`` gives the x values: one sequence for all curves of matching length, or
    a mapping per curve (validation is often logged less often); by default the
    index. Non-finite values are skipped. The y-axis is logarithmic when every
    finite value is positive.
    """
    if not isinstance(history, Mapping) or not history:
        raise DataError("history must be a non-empty mapping from curve name to values")
    fig = Figure(figsize=(6, 4))
    ax = fig.add_subplot()
    all_pos = True
    for name, values in history.items():
        v = as_numpy(f"history[{name!r}]", values).reshape(-1)
        if isinstance(steps, Mapping) and name in steps:
            x = as_numpy(f"steps[{name!r}]", steps[name]).reshape(-1)
        elif steps is not None and not isinstance(steps, Mapping):
            x = as_numpy("steps", steps).reshape(-1)
        else:
            x = np.arange(len(v), dtype=float)
        if len(x) != len(v):
            raise DataError(f"steps for {name!r} have length {len(x)}, values have {len(v)}")
        ok = np.isfinite(v)
        if ok.any():
            all_pos &= bool((v[ok] > 0).all())
        ax.plot(x[ok], v[ok], label=str(name))
    if all_pos:
        ax.set_yscale("log")
    ax.set_xlabel("step")
    ax.set_ylabel("loss")
    if title:
        ax.set_title(title)
    ax.legend()
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def plot_training_history(
    history: Mapping[str, Sequence[float]], path: str | os.PathLike[str]
) -> Path:
    """Loss curves of a :class:`~vinaflow.training.TrainResult` history.

    Per-step logs are plotted against ``history["step"]``, ``val_loss`` against
    ``history["val_step"]``.
    """
    curves = {k: v for k, v in history.items() if k not in ("step", "val_step") and len(v) > 1}
    steps = {k: history["val_step"] if k == "val_loss" else history["step"] for k in curves}
    return plot_loss_curves(curves, path, steps=steps)


def plot_posterior_pairs(
    samples: Any,
    reference: Any = None,
    truth: Any = None,
    names: Sequence[str] | None = None,
    *,
    path: str | os.PathLike[str],
    labels: tuple[str, str] = ("model", "reference"),
    seed: int = 0,
) -> Path:
    """Corner plot of model ``samples`` ``(n, d)`` against ``reference`` samples.

    Diagonal: marginal histograms; below the diagonal: pairwise scatter (at most
    2000 points per set). ``truth`` ``(d,)`` is marked by lines and a star.
    """
    x = check_samples("samples", samples)
    d = x.shape[1]
    ref = None if reference is None else check_samples("reference", reference, dim=d)
    t = None
    if truth is not None:
        t = as_numpy("truth", truth).reshape(-1)
        if t.shape != (d,):
            raise DataError(f"truth must have shape ({d},), got {t.shape}")
    if names is None:
        names = [f"x{i}" for i in range(d)]
    elif len(names) != d:
        raise DataError(f"names must have {d} entries, got {len(names)}")

    rng = np.random.default_rng(seed)

    def thin(a: np.ndarray) -> np.ndarray:
        return a if len(a) <= _MAX_SCATTER else a[rng.choice(len(a), _MAX_SCATTER, False)]

    xs, rs = thin(x), None if ref is None else thin(ref)
    pooled = x if ref is None else np.concatenate([x, ref])
    lo, hi = np.quantile(pooled, [0.005, 0.995], axis=0)
    if t is not None:
        lo, hi = np.minimum(lo, t), np.maximum(hi, t)
    pad = 0.05 * np.where(hi > lo, hi - lo, 1.0)
    lo, hi = lo - pad, hi + pad

    size = min(2.2 * d, 14.0)
    fig = Figure(figsize=(max(size, 3.0), max(size, 3.0)))
    axes = fig.subplots(d, d, squeeze=False)
    c_model, c_ref, c_true = "tab:blue", "tab:orange", "black"
    for i in range(d):
        for j in range(d):
            ax = axes[i, j]
            if j > i:
                ax.set_visible(False)
                continue
            if i == j:
                bins = np.linspace(lo[i], hi[i], 40)
                if ref is not None:
                    ax.hist(ref[:, i], bins=bins, density=True, color=c_ref, alpha=0.5)
                ax.hist(x[:, i], bins=bins, density=True, histtype="step", color=c_model)
                if t is not None:
                    ax.axvline(t[i], color=c_true, lw=1)
                ax.set_yticks([])
            else:
                if rs is not None:
                    ax.scatter(rs[:, j], rs[:, i], s=2, color=c_ref, alpha=0.3, lw=0)
                ax.scatter(xs[:, j], xs[:, i], s=2, color=c_model, alpha=0.3, lw=0)
                if t is not None:
                    ax.plot(t[j], t[i], marker="*", color=c_true, ms=8)
                ax.set_ylim(lo[i], hi[i])
            ax.set_xlim(lo[j], hi[j])
            if i == d - 1:
                ax.set_xlabel(names[j])
            else:
                ax.set_xticklabels([])
            if j == 0 and i > 0:
                ax.set_ylabel(names[i])
            elif j > 0:
                ax.set_yticklabels([])
    handles = [axes[0, 0].plot([], [], color=c_model, label=labels[0])[0]]
    if ref is not None:
        handles.append(axes[0, 0].plot([], [], color=c_ref, label=labels[1])[0])
    if t is not None:
        handles.append(axes[0, 0].plot([], [], color=c_true, marker="*", label="truth")[0])
    fig.legend(handles=handles, loc="upper right")
    return save_figure(fig, path)


def plot_sbc_histogram(
    ranks: Any,
    n_samples: int,
    path: str | os.PathLike[str],
    names: Sequence[str] | None = None,
    n_bins: int | None = None,
) -> Path:
    """Histograms of SBC ranks per dimension with a 99% band for uniform ranks.

    The grey band is the central 99% interval of each bin count under
    Binomial(n_obs, p_bin), i.e. what a calibrated posterior produces
    (Talts et al., 2018, fig. 1). A U shape means over-confidence, a hump
    under-confidence, a slope bias.
    """
    r = as_numpy("ranks", ranks)
    if r.ndim == 1:
        r = r[:, None]
    if r.ndim != 2 or r.shape[0] < 1:
        raise DataError(f"ranks must have shape (n_obs, dim), got {r.shape}")
    if not np.isfinite(r).all() or (r < 0).any() or (r > n_samples).any():
        raise DataError(f"ranks must be integers in [0, n_samples={n_samples}]")
    n_obs, d = r.shape
    if names is None:
        names = [f"x{i}" for i in range(d)]
    elif len(names) != d:
        raise DataError(f"names must have {d} entries, got {len(names)}")
    n_values = n_samples + 1
    if n_bins is None:
        n_bins = int(np.clip(n_obs // 20, 2, 20))
    n_bins = max(1, min(int(n_bins), n_values))
    edges = np.unique(np.round(np.linspace(0, n_values, n_bins + 1)).astype(int))
    p_bin = np.diff(edges) / n_values
    lo = stats.binom.ppf(0.005, n_obs, p_bin)
    hi = stats.binom.ppf(0.995, n_obs, p_bin)

    fig, axes = panel_grid(d, 3.2, 2.6)
    for k, ax in enumerate(axes):
        counts, _ = np.histogram(r[:, k], bins=edges - 0.5)
        x = edges - 0.5
        ax.fill_between(
            x,
            np.append(lo, lo[-1]),
            np.append(hi, hi[-1]),
            step="post",
            color="0.85",
            label="99% uniform band",
        )
        ax.stairs(counts, x, color="tab:blue", lw=1.5)
        ax.axhline(n_obs / n_bins, color="0.5", lw=0.8, ls="--")
        ax.set_title(names[k])
        ax.set_xlabel("rank")
        ax.set_xlim(x[0], x[-1])
    axes[0].set_ylabel("count")
    return save_figure(fig, path)


def plot_coverage(
    levels: Any,
    coverage: Any,
    path: str | os.PathLike[str],
    n_obs: int | None = None,
) -> Path:
    """Expected-coverage plot: empirical coverage against credible level.

    ``coverage`` is one sequence aligned with ``levels`` or a mapping from label to
    sequence (e.g. marginal and joint). Curves below the diagonal mean an
    over-confident posterior, above it a conservative one. With ``n_obs`` a 99%
    binomial band around the diagonal shows the Monte Carlo tolerance.
    """
    lv = as_numpy("levels", levels).reshape(-1)
    curves = dict(coverage) if isinstance(coverage, Mapping) else {"coverage": coverage}
    fig = Figure(figsize=(4.5, 4.5))
    ax = fig.add_subplot()
    if n_obs is not None and n_obs > 0:
        grid = np.linspace(0.0, 1.0, 101)
        ax.fill_between(
            grid,
            stats.binom.ppf(0.005, n_obs, grid) / n_obs,
            stats.binom.ppf(0.995, n_obs, grid) / n_obs,
            color="0.88",
            label="99% band",
        )
    ax.plot([0, 1], [0, 1], color="0.4", ls="--", lw=1, label="ideal")
    for name, c in curves.items():
        cv = as_numpy(f"coverage[{name!r}]", c).reshape(-1)
        if cv.shape != lv.shape:
            raise DataError(f"coverage {name!r} has {cv.size} values, levels has {lv.size}")
        ax.plot(lv, cv, marker="o", ms=3, label=str(name))
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("credible level")
    ax.set_ylabel("empirical coverage")
    ax.legend(loc="upper left")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)
