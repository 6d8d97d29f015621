"""The VINA paper's inverse-kinematics studies and their figures.

Four studies of the 4-parameter robot arm (:mod:`vinaflow.problems.kinematics`), each
``vinaflow study NAME``:

* ``prior-regularization`` - NLL-trained INN with a prior penalty (paper Fig. 2), figure
  :func:`figure_arm_posteriors`: arm posteriors per prior setting;
* ``divergences`` - f-divergences x architecture x direction (paper Fig. 4), figure
  :func:`figure_time_vs_resim`: training time vs re-simulation error, one ellipse per
  divergence (centre = means, semi-axes = standard deviations over seeds), one panel
  per architecture x direction;
* ``latent-dim`` - latent dimension for forward KL vs Sinkhorn (paper Fig. 5), figure
  :func:`figure_latent_dim`: re-simulation error vs latent dimension;
* ``sinkhorn-blur`` - Sinkhorn blur, figure :func:`figure_sinkhorn_blur`.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.objectives.divergences import DIVERGENCES as DIVERGENCE_REGISTRY
from vinaflow.studies.base import Study, register_study
from vinaflow.studies.grid import Axis
from vinaflow.studies.report import StudyData, metric_stats

__all__ = [
    "DEMO_Y",
    "DIVERGENCES",
    "KINEMATICS_BASE",
    "KINEMATICS_QUICK",
    "figure_arm_posteriors",
    "figure_latent_dim",
    "figure_sinkhorn_blur",
    "figure_time_vs_resim",
]


# -- settings ----------------------------------------------------------------------------
#: The paper's INN on the arm: 4 affine coupling blocks, latent dimension 2.
KINEMATICS_BASE: dict[str, Any] = {
    "problem": {"name": "kinematics", "num_simulations": 20000},
    "model": {"kind": "inn", "arch": "coupling", "blocks": 4, "hidden": 128, "latent_dim": 2},
    "training": {"steps": 3000, "max_seconds": 300, "batch_size": 256},
    "evaluation": {
        "num_observations": 20,
        "num_samples": 1000,
        "num_calibration": 0,
        "plots": False,
        "seed": 1234,
    },
}

#: Shorter training and evaluation for ``--quick``.
KINEMATICS_QUICK = {
    "problem.num_simulations": 8000,
    "training.steps": 600,
    "training.max_seconds": 40,
    "training.val_every": 200,
    "evaluation.num_observations": 4,
    "evaluation.num_samples": 500,
}

#: The target of the arm figures: the end effector at (1.5, 0) as in Ardizzone et al.
DEMO_Y = ((1.5, 0.0),)

#: A box prior of +-3 prior standard deviations for the uniform prior penalty.
_BOX_LOW = [-0.75, -1.5, -1.5, -1.5]
_BOX_HIGH = [0.75, 1.5, 1.5, 1.5]


def _kin(objective: Mapping[str, Any], **sections: Any) -> dict[str, Any]:
    base = copy.deepcopy(KINEMATICS_BASE)
    base["objective"] = dict(objective)
    for k, v in sections.items():
        base[k] = {**base.get(k, {}), **v}
    return base


# -- figures -----------------------------------------------------------------------------
def _pretty(axis: str, label: str) -> str:
    names = {"objective.prior_weight": "λ'", "objective.divergence": "", "model.arch": ""}
    name = names.get(axis, axis.split(".")[-1] + "=")
    return f"{name}{'=' if name and not name.endswith('=') else ''}{label}"


def figure_arm_posteriors(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Arm posteriors at the demo observation, one panel per grid point (first seed)."""
    # matplotlib is heavy: loaded only when a report draws figures.
    from vinaflow.studies.kinematics_plots import plot_arm_panels

    obs = data.meta.get("demo_observations") or []
    if not obs:
        return []
    panels: list[tuple[str, Any]] = []
    for key, recs in data.groups().items():
        for r in sorted((r for r in recs if r.get("status") == "ok"), key=lambda r: r["seed"]):
            s = data.samples(r)
            if s is not None:
                title = ", ".join(_pretty(a, k) for a, k in zip(data.axes, key, strict=True))
                panels.append((f"{title} (seed {r['seed']})", s[0]))
                break
    if not panels:
        return []
    problem = data.problem()
    ref = problem.reference_posterior(
        torch.tensor(obs[0]), len(panels[0][1]), torch.Generator().manual_seed(0)
    )
    panels.append((f"reference (ABC, eps={getattr(problem, 'abc_tolerance', '?')})", ref))
    lengths = getattr(problem, "lengths", torch.tensor([0.5, 0.5, 1.0])).tolist()
    path = plot_arm_panels(panels, obs[0], plots / "arm_posteriors.png", lengths=lengths)
    caption = (
        f"Posterior arm configurations for the target y* = {tuple(obs[0])} (cross), one panel "
        "per setting, with the rejection-ABC ground truth last."
    )
    return [(path, caption)]


def figure_time_vs_resim(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Training time vs re-simulation error ellipses per divergence, per arch x direction."""
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    from vinaflow.evaluation.plots import save_figure

    div, arch, dirn = "objective.divergence", "model.arch", "objective.direction"
    if not {div, arch, dirn} <= set(data.axes):
        return []
    archs, dirs, divs = data.labels(arch), data.labels(dirn), data.labels(div)
    fig = Figure(figsize=(4.6 * len(dirs), 3.8 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), len(dirs), squeeze=False)
    colors = {d: f"C{i}" for i, d in enumerate(divs)}
    groups = data.groups([arch, dirn, div])
    for i, a in enumerate(archs):
        for j, dr in enumerate(dirs):
            ax = axes[i, j]
            for d in divs:
                ok = [r for r in groups.get((a, dr, d), []) if r.get("status") == "ok"]
                pts = np.array(
                    [
                        (r["metrics"].get("train_seconds"), r["metrics"].get("resim_error"))
                        for r in ok
                        if r["metrics"].get("resim_error") is not None
                    ],
                    dtype=float,
                ).reshape(-1, 2)
                pts = pts[np.isfinite(pts).all(1)]
                if len(pts) == 0:
                    continue
                mean, std = pts.mean(0), pts.std(0, ddof=1) if len(pts) > 1 else np.zeros(2)
                ax.scatter(pts[:, 0], pts[:, 1], s=8, color=colors[d], alpha=0.5)
                ax.add_patch(
                    Ellipse(
                        tuple(mean),
                        2 * max(std[0], 1e-9),
                        2 * max(std[1], 1e-9),
                        facecolor=colors[d],
                        edgecolor=colors[d],
                        alpha=0.3,
                        lw=1.5,
                    )
                )
                ax.plot(*mean, marker="o", color=colors[d], label=d)
            ax.set_title(f"{a}, {dr} loss", fontsize=10)
            ax.set_xlabel("training time [s]")
            ax.set_ylabel("re-simulation error")
            ax.grid(alpha=0.3)
            ax.autoscale_view()
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    path = save_figure(fig, plots / "time_vs_resim.png")
    caption = (
        "Training time vs re-simulation error: one ellipse per divergence (centre = mean "
        "over seeds, semi-axes = standard deviations), dots = single seeds; panels are "
        "architecture x direction (backward = posterior loss, forward = latent loss)."
    )
    return [(path, caption)]


def _line_figure(
    data: StudyData, x_axis: str, plots: Path, name: str, xlabel: str, logx: bool = False
) -> Path | None:
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure

    from vinaflow.evaluation.plots import save_figure

    if x_axis not in data.axes:
        return None
    others = [a for a in data.axes if a != x_axis]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    series: dict[tuple[str, ...], list[tuple[float, float, float]]] = {}
    for key, recs in data.groups(others + [x_axis]).items():
        ok = [r for r in recs if r.get("status") == "ok"]
        mean, std, n = metric_stats([r["metrics"].get("resim_error") for r in ok])
        if n:
            series.setdefault(key[:-1], []).append((float(key[-1]), mean, std))
    if not series:
        return None
    for k, pts in series.items():
        p = np.array(sorted(pts))
        label = ", ".join(k) if k else "resim error"
        ax.errorbar(p[:, 0], p[:, 1], yerr=p[:, 2], marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("re-simulation error (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    return save_figure(fig, plots / name)


def figure_latent_dim(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Re-simulation error vs latent dimension, one line per objective."""
    path = _line_figure(data, "model.latent_dim", plots, "latent_dim.png", "latent dimension")
    if path is None:
        return []
    return [(path, "Re-simulation error vs latent dimension (mean ± std over seeds).")]


def figure_sinkhorn_blur(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Re-simulation error vs blur (log scale), plus the arm posteriors per blur."""
    out = []
    path = _line_figure(data, "objective.blur", plots, "sinkhorn_blur.png", "blur ε", logx=True)
    if path is not None:
        out.append((path, "Re-simulation error vs Sinkhorn blur (mean ± std over seeds)."))
    return out + figure_arm_posteriors(data, plots)


# -- studies -----------------------------------------------------------------------------
register_study(
    Study(
        name="prior-regularization",
        description="NLL-trained INN with a prior penalty of weight lambda' in {0, 1, 100}, "
        "Gaussian vs uniform (box) prior (paper Fig. 2).",
        base=_kin({"name": "nll"}),
        axes=[
            Axis(
                "prior",
                [
                    ("gaussian", {"objective.prior": "gaussian"}),
                    (
                        "uniform",
                        {
                            "objective.prior": "uniform",
                            "objective.prior_low": _BOX_LOW,
                            "objective.prior_high": _BOX_HIGH,
                        },
                    ),
                ],
            ),
            Axis.of("objective.prior_weight", [0.0, 1.0, 100.0]),
        ],
        # lambda' = 0 is the same run for both priors.
        exclude=lambda p: p["prior"] == "uniform" and float(p["objective.prior_weight"]) == 0,
        quick={"overrides": KINEMATICS_QUICK, "seeds": "40..41"},
        figures=[figure_arm_posteriors],
        demo_observations=DEMO_Y,
    )
)

#: Every registered f-divergence (the axis of the divergences study).
DIVERGENCES = tuple(DIVERGENCE_REGISTRY)

register_study(
    Study(
        name="divergences",
        description="Variational f-divergences x architecture (coupling, iResNet) x "
        "direction (backward = posterior loss, forward = latent loss): training time "
        "vs re-simulation error (paper Fig. 4).",
        base=_kin(
            {"name": "fdiv", "divergence": "kl", "direction": "backward"},
            training={"steps": 1560},
        ),
        axes=[
            Axis.of("objective.divergence", DIVERGENCES),
            Axis.of("model.arch", ["coupling", "iresnet"]),
            Axis.of("objective.direction", ["backward", "forward"]),
        ],
        quick={
            # 24 runs: shorter still, to stay under 10 minutes on 2 cores.
            "overrides": {
                **KINEMATICS_QUICK,
                "training.steps": 250,
                "model.hidden": 64,
                "evaluation.num_observations": 3,
            },
            "axes": {"objective.divergence": ["kl", "reverse-kl", "js"]},
            "seeds": "40..41",
        },
        figures=[figure_time_vs_resim],
    )
)

register_study(
    Study(
        name="latent-dim",
        description="Latent dimension 2, 4, 5, 12, 18 for the variational forward KL vs the "
        "Sinkhorn divergence (paper Fig. 5).",
        base=_kin({"name": "fdiv", "divergence": "kl", "direction": "forward"}),
        axes=[
            Axis(
                "objective",
                [
                    (
                        "kl",
                        {"objective": {"name": "fdiv", "divergence": "kl", "direction": "forward"}},
                    ),
                    (
                        "sinkhorn",
                        {"objective": {"name": "sinkhorn", "blur": 0.05, "direction": "forward"}},
                    ),
                ],
            ),
            Axis.of("model.latent_dim", [2, 4, 5, 12, 18]),
        ],
        quick={
            "overrides": {**KINEMATICS_QUICK, "training.steps": 400},
            "axes": {"model.latent_dim": ["2", "5", "12"]},
            "seeds": "40..41",
        },
        figures=[figure_latent_dim],
    )
)

register_study(
    Study(
        name="sinkhorn-blur",
        description="Entropic regularisation (blur) of the Sinkhorn divergence: 0.01, 10, 50, 250.",
        base=_kin({"name": "sinkhorn", "blur": 0.01, "direction": "backward"}),
        axes=[Axis.of("objective.blur", [0.01, 10.0, 50.0, 250.0])],
        quick={"overrides": {**KINEMATICS_QUICK, "training.steps": 400}, "seeds": "40..41"},
        figures=[figure_sinkhorn_blur],
        demo_observations=DEMO_Y,
    )
)
