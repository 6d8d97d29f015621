"""The ocean-acoustics study is registered and every grid point resolves to a valid config."""

from __future__ import annotations

from vinaflow.experiments.studies import get_study


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
