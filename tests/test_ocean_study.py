"""The ocean-acoustics study is registered and every grid point resolves to a valid config."""

from __future__ import annotations

from vinaflow.config import resolve_config
from vinaflow.experiments.pipeline import run
from vinaflow.studies.base import get_study


def test_ocean_study_grid_resolves() -> None:
    study = get_study("ocean-acoustics")
    sweep = study.sweep(quick=True)
    tasks = sweep.tasks()
    assert len(tasks) == 12  # 3 objectives x 2 networks x 2 model kinds, one seed
    kinds = {
        (
            t.config["model"]["kind"],
            t.config["model"]["hidden"],
            t.config["model"]["latent_dim"],
            t.config["objective"]["name"],
        )
        for t in tasks
    }
    assert ("inn", 403, 2, "fdiv") in kinds and ("cinn", 64, 18, "nll") in kinds
    assert all(t.config["problem"]["name"] == "ocean-acoustics" for t in tasks)
    assert len(sweep.demo_observations[0]) == 70


def test_ocean_run_with_noise_augmentation_and_importance_sampling() -> None:
    """A short ocean run end to end: noise-augmented training, then the flow and the
    importance-sampled flow scored against the exact grid posterior; a flow that is far
    from converged still proposes well enough for reweighting to get close."""
    cfg = resolve_config(
        {
            "problem": {"name": "ocean-acoustics", "num_simulations": 4000},
            "model": {"kind": "cinn", "blocks": 4, "hidden": 64, "embedding_dim": 32},
            "training": {
                "steps": 600,
                "batch_size": 256,
                "noise_augmentation": True,
                "progress": False,
            },
            "evaluation": {
                "num_observations": 2,
                "num_samples": 500,
                "num_calibration": 20,
                "calibration_samples": 100,
                "importance_sampling": 20,
                "plots": False,
                "certificate": False,
            },
        }
    )
    m = run(cfg, progress=False).metrics
    imp = m["importance"]
    assert 0.0 < imp["efficiency_min"] <= imp["efficiency"] <= 1.0
    assert imp["c2st"] < m["c2st"] and imp["c2st"] < 0.75, (imp["c2st"], m["c2st"])
    assert imp["coverage"] is not None and len(imp["per_observation"]["efficiency"]) == 2
