"""Folders written by release 0.1 keep working: load, sample, evaluate, certify, --resume.

``tests/data/release_0_1_run`` (``vinaflow run examples/fdiv_kl.yaml``, a 2-block joint
INN, 20 steps) and ``tests/data/release_0_1_flow`` (``vinaflow flow
examples/flow_two_moons_nll.yaml``, a 2-block flow, 20 steps) were written by commit
4aa4969 with tiny settings; their ``config.yaml`` lists only the objective settings that
release knew (``{name: fdiv, divergence: kl, direction: backward, ...}``).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import yaml

import vinaflow
from vinaflow.cli import main
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError
from vinaflow.experiments.pipeline import check_resumable

DATA = Path(__file__).parent / "data"


@pytest.fixture
def old_run(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "release_0_1_run", tmp_path / "run"))


@pytest.fixture
def old_flow(tmp_path: Path) -> Path:
    return Path(shutil.copytree(DATA / "release_0_1_flow", tmp_path / "flow"))


def test_old_objective_section_lacks_settings_the_resolver_now_lists(old_run: Path) -> None:
    saved = yaml.safe_load((old_run / "config.yaml").read_text())
    assert set(resolve_config(saved)["objective"]) > set(saved["objective"])


def test_resume_accepts_an_old_config_and_refuses_a_changed_one(tmp_path: Path) -> None:
    # The objective section as release 0.1 saved it: no defaults filled in.
    old = {
        "problem": {"name": "gaussian-linear", "num_simulations": 600},
        "model": {"kind": "inn", "hidden": 16, "blocks": 2, "latent_dim": 2},
        "objective": {"name": "fdiv", "divergence": "kl", "direction": "backward"},
        "training": {"steps": 100, "seed": 0},
    }
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(old))
    check_resumable(tmp_path, resolve_config({**old, "training": {"steps": 300, "seed": 0}}))
    changed = {**old, "objective": {**old["objective"], "divergence": "js"}}
    with pytest.raises(ConfigError, match="objective.divergence"):
        check_resumable(tmp_path, resolve_config(changed))


def test_old_run_folder_resumes_with_more_steps(old_run: Path) -> None:
    rc = main(
        ["run", str(old_run / "config.yaml"), "--out", str(old_run), "--resume", "--no-progress",
         "--set", "training.steps=30"]
    )  # fmt: skip
    assert rc == 0
    assert json.loads((old_run / "metrics.json").read_text())["train_steps"] == 30


def test_old_run_folder_loads_samples_evaluates_and_certifies(old_run: Path) -> None:
    posterior = vinaflow.load(old_run)
    assert (posterior.dim_x, posterior.dim_y) == (4, 2)
    a = posterior.sample(np.zeros(2), 7, seed=0)
    assert a.shape == (1, 7, 4) and bool(np.isfinite(a.numpy()).all())
    obs = old_run / "obs.npy"
    np.save(obs, np.zeros((3, 2)))
    assert main(["sample", str(old_run), "--observations", str(obs), "-n", "5",
                 "--out", str(old_run / "s.npy")]) == 0  # fmt: skip
    assert np.load(old_run / "s.npy").shape == (3, 5, 4)
    assert main(["evaluate", str(old_run), "--json"]) == 0
    assert main(["certify", str(old_run), "-n", "300", "--steps", "30", "--no-write"]) == 0


def test_old_flow_folder_loads_samples_evaluates_and_certifies(
    old_flow: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    flow = vinaflow.load(old_flow)
    assert (flow.dim_x, flow.dim_y) == (2, 0)
    s = flow.sample(None, 9, seed=0)
    assert s.shape == (1, 9, 2) and bool(np.isfinite(s.numpy()).all())
    # a flow has no observation: sample needs no --observations
    assert main(["sample", str(old_flow), "-n", "6", "--out", str(old_flow / "s.npy")]) == 0
    assert np.load(old_flow / "s.npy").shape == (1, 6, 2)
    capsys.readouterr()
    assert main(["evaluate", str(old_flow), "--json"]) == 0
    metrics = json.loads(capsys.readouterr().out)
    saved = json.loads((old_flow / "metrics.json").read_text())
    # the same flow, held-out rows and evaluation seed as when the folder was written
    for k in ("w1", "mmd", "precision", "recall", "test_nll"):
        assert metrics[k] == pytest.approx(saved[k], rel=1e-6, abs=1e-9), k
    assert main(["certify", str(old_flow), "--steps", "30", "--no-write"]) == 0


def test_sample_without_observations_is_refused_for_a_posterior(old_run: Path) -> None:
    assert main(["sample", str(old_run), "-n", "5", "--out", str(old_run / "s.npy")]) == 2
    assert not (old_run / "s.npy").exists()
