"""The paper's ocean-acoustic inversion as ``vinaflow study ocean-acoustics``.

Grid: objective (NLL, variational KL, variational JS) x network configuration
(hidden 64 / latent 18 / 3 blocks, and hidden 403 / latent 2 / 4 blocks, as in the
paper) x model (the paper's joint INN and the conditional INN). Every run is scored
against the exact grid posterior (:mod:`vinaflow.problems.grid_posterior`): C2ST, W1,
per-parameter squared error of the posterior mean, coverage of credible intervals and
training time; conditional INNs without latent padding are also scored as
importance-sampling proposals (``is_c2st``, ``is_coverage``, ``is_efficiency``). Training
uses noise augmentation (fresh observation noise per minibatch). Figures: posterior
marginals of water depth and sediment sound speed
with the exact marginal overlaid and the true value marked, and 2-D posteriors with the
grid posterior's contours, at one demo observation.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.problems import make_problem
from vinaflow.studies.base import Study, register_study
from vinaflow.studies.grid import Axis

__all__ = ["OCEAN_BASE", "OCEAN_DEMO_TRUTH", "ocean_demo_observation", "plot_ocean_posteriors"]

#: Problem settings shared by the study, the quick main job and the demo observation.
OCEAN_PROBLEM: dict[str, Any] = {"name": "ocean-acoustics", "snr_db": 10.0}

OCEAN_BASE: dict[str, Any] = {
    "problem": {**OCEAN_PROBLEM, "num_simulations": 100000},
    "model": {"kind": "cinn", "arch": "coupling"},
    "objective": {"name": "nll"},
    "training": {
        "steps": 20000,
        "max_seconds": 300,
        "batch_size": 512,
        "noise_augmentation": True,
    },
    "evaluation": {
        "num_observations": 20,
        "num_samples": 1000,
        "num_calibration": 200,
        "calibration_samples": 200,
        "importance_sampling": 10,
        "plots": False,
        "certificate": False,
    },
}

#: The true parameters of the demo observation: mid-prior depth and speed.
OCEAN_DEMO_TRUTH = (216.5, 1562.0)


def ocean_demo_observation(seed: int = 7) -> list[float]:
    """A fixed noisy observation of :data:`OCEAN_DEMO_TRUTH` (70 numbers)."""
    problem = make_problem(OCEAN_PROBLEM)
    x = torch.tensor([OCEAN_DEMO_TRUTH])
    return problem.simulate(x, torch.Generator().manual_seed(seed))[0].tolist()


def _configs() -> Axis:
    return Axis(
        "network",
        [
            ("h64-z18-b3", {"model.hidden": 64, "model.latent_dim": 18, "model.blocks": 3}),
            ("h403-z2-b4", {"model.hidden": 403, "model.latent_dim": 2, "model.blocks": 4}),
        ],
    )


def _objectives() -> Axis:
    return Axis(
        "objective",
        [
            ("nll", {"objective": {"name": "nll"}}),
            ("kl", {"objective": {"name": "fdiv", "divergence": "kl", "direction": "backward"}}),
            ("js", {"objective": {"name": "fdiv", "divergence": "js", "direction": "backward"}}),
        ],
    )


def plot_ocean_posteriors(data: Any, plots_dir: Path) -> list[tuple[Path, str]]:
    """Marginal histograms and 2-D posteriors of every grid point at the demo observation."""
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure

    from vinaflow.evaluation.plots import save_figure

    observations = data.meta.get("demo_observations") or []
    if not observations:
        return []
    problem_cfg = {
        k: v
        for k, v in data.meta.get("base", {}).get("problem", OCEAN_PROBLEM).items()
        if k not in ("num_simulations", "num_validation")
    }
    problem = make_problem(problem_cfg)
    grid = problem.grid_posterior(torch.tensor(observations[0]))
    marginals = grid.marginals
    a, b, logp = grid.log_density(150)
    panels = []
    for key, records in data.groups().items():
        rec = next(
            (r for r in records if r.get("status") == "ok" and data.samples(r) is not None), None
        )
        if rec is not None:
            panels.append((" / ".join(key), data.samples(rec)[0]))
    if not panels:
        return []
    names = problem.param_names
    units = ("m", "m/s")
    out = []
    fig = Figure(figsize=(7.5, 2.2 * len(panels)))
    axes = fig.subplots(len(panels), 3, squeeze=False)
    for row, (label, s) in enumerate(panels):
        for j in range(2):
            ax = axes[row, j]
            edges, dens = marginals[names[j]]
            ax.hist(s[:, j], bins=40, density=True, alpha=0.5, color="tab:blue", label="model")
            ax.plot(0.5 * (edges[1:] + edges[:-1]), dens, color="black", lw=1.2, label="exact")
            ax.axvline(OCEAN_DEMO_TRUTH[j], color="tab:red", ls="--", lw=1, label="true")
            ax.set_xlabel(f"{names[j]} [{units[j]}]", fontsize=7)
            ax.tick_params(labelsize=6)
            if j == 0:
                ax.set_ylabel(label, fontsize=7)
        ax = axes[row, 2]
        ax.scatter(s[:, 0], s[:, 1], s=2, alpha=0.3, color="tab:blue")
        levels = np.log(np.exp(logp).max()) - np.array([4.5, 2.0, 0.5])
        ax.contour(
            a,
            b,
            logp.T if logp.shape == (a.size, b.size) else logp,
            levels=levels,
            colors="black",
            linewidths=0.8,
        )
        ax.plot(*OCEAN_DEMO_TRUTH, marker="x", color="tab:red")
        ax.tick_params(labelsize=6)
    axes[0, 0].legend(fontsize=6)
    fig.tight_layout()
    path = save_figure(fig, Path(plots_dir) / "ocean_posteriors.png", dpi=100)
    out.append(
        (
            path,
            "Posterior marginals (histograms) against the exact grid posterior "
            "(black), true value dashed; right: samples with the grid posterior's "
            "contours (1, 2 and 3 sigma-equivalent levels).",
        )
    )
    return out


register_study(
    Study(
        name="ocean-acoustics",
        description="Geoacoustic inversion (water depth, seabed speed) from 5 receivers x 7 "
        "tones: NLL, KL, JS x two paper networks x INN / cINN, against the exact grid "
        "posterior.",
        base=copy.deepcopy(OCEAN_BASE),
        axes=[_objectives(), _configs(), Axis.of("model.kind", ["inn", "cinn"])],
        seeds="0..4",
        quick={
            "seeds": "0..0",
            "overrides": {
                "problem.num_simulations": 20000,
                "training.max_seconds": 40,
                "evaluation.num_observations": 5,
                "evaluation.num_calibration": 50,
                "evaluation.calibration_samples": 100,
            },
        },
        figures=[plot_ocean_posteriors],
        demo_observations=[ocean_demo_observation()],
        demo_samples=1000,
        metrics=(
            "c2st",
            "w1",
            "sq_error_water_depth",
            "sq_error_sediment_sound_speed",
            "coverage",
            "is_c2st",
            "is_coverage",
            "is_efficiency",
            "train_seconds",
        ),
    )
)
