"""Posterior ensembles from ``vinaflow run`` (``training.ensemble``): the run folder loads
as the mixture, members differ, ``sample``/``evaluate``/``certify`` read it, and a run
killed inside a member resumes to the same weights as an uninterrupted one."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import vinaflow
from vinaflow.cli import main
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError
from vinaflow.models import EnsemblePosterior
from vinaflow.problems import make_problem

STEPS = 300
#: A tiny gaussian-linear run; member 1's checkpoints every 20 steps leave a resumable
#: state long before it ends, which the kill test relies on.
TINY = [
    "--set",
    "problem.num_simulations=600",
    "--set",
    f"training.steps={STEPS}",
    "--set",
    "training.checkpoint_every=20",
    "--set",
    "training.ensemble=2",
    "--set",
    "model.blocks=2",
    "--set",
    "model.hidden=16",
    "--set",
    "evaluation.num_observations=2",
    "--set",
    "evaluation.num_samples=200",
    "--set",
    "evaluation.num_calibration=20",
    "--set",
    "evaluation.calibration_samples=50",
    "--set",
    "evaluation.certificate=false",
    "--set",
    "evaluation.c2st=false",
    "--set",
    "evaluation.plots=false",
    "--no-progress",
]


def _params(directory: Path, k: int) -> dict[str, torch.Tensor]:
    return vinaflow.load(directory / f"member-{k}").model.state_dict()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("ensemble") / "run"
    assert main(["run", "--out", str(out), *TINY]) == 0
    return out


def test_run_folder_is_an_ensemble_of_different_members(run_dir: Path) -> None:
    post = vinaflow.load(run_dir)
    assert isinstance(post, EnsemblePosterior) and len(post) == 2
    a, b = _params(run_dir, 0), _params(run_dir, 1)
    # different seeds (seed + k): every weight tensor of the two members differs
    weights = [k for k in a if a[k].is_floating_point() and a[k].numel() > 1]
    assert weights and all(not torch.equal(a[k], b[k]) for k in weights)
    metrics = json.loads((run_dir / "metrics.json").read_text())
    assert [m["train_steps"] for m in metrics["members"]] == [STEPS, STEPS]
    assert metrics["train_steps"] == 2 * STEPS
    for k in range(2):
        assert (run_dir / f"member-{k}" / "history.json").is_file()
    # the metrics are the mixture's: the run's evaluation equals that of the loaded ensemble
    cfg = resolve_config(yaml.safe_load((run_dir / "config.yaml").read_text()))
    again = vinaflow.evaluate(post, make_problem(cfg["problem"]), **cfg["evaluation"])
    assert again["w1"] == pytest.approx(metrics["w1"])
    assert again["mmd"] == pytest.approx(metrics["mmd"])
    member = vinaflow.evaluate(post.members[0], make_problem(cfg["problem"]), **cfg["evaluation"])
    assert member["w1"] != pytest.approx(metrics["w1"])


def test_sample_evaluate_and_certify_read_the_ensemble(
    run_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    obs = tmp_path / "obs.npy"
    np.save(obs, np.zeros((3, 2)))
    out = tmp_path / "samples.npy"
    assert (
        main(["sample", str(run_dir), "--observations", str(obs), "-n", "17", "--out", str(out)])
        == 0
    )
    assert np.load(out).shape == (3, 17, 4)
    capsys.readouterr()
    assert main(["evaluate", str(run_dir), "--json"]) == 0
    assert {"w1", "mmd", "coverage"} <= set(json.loads(capsys.readouterr().out))
    assert (
        main(["certify", str(run_dir), "--steps", "100", "-n", "1000", "--json", "--no-write"]) == 0
    )
    cert = json.loads(capsys.readouterr().out)
    assert cert["divergence"] == "kl"


def test_resume_after_a_kill_inside_a_member(run_dir: Path, tmp_path: Path) -> None:
    out = tmp_path / "killed"
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "vinaflow", "run", "--out", str(out), *TINY],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=env,
    )
    ckpt = out / "member-1" / "checkpoint.pt"
    deadline = time.monotonic() + 120
    while not ckpt.is_file() and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert ckpt.is_file(), proc.stderr.read().decode() if proc.stderr else ""
    assert not (out / "metrics.json").exists() and not (out / "ensemble.json").exists()
    killed_at = torch.load(ckpt, weights_only=True)["step"]
    assert killed_at < STEPS  # killed inside member 1, not after it
    assert (out / "member-0" / "checkpoint.pt").is_file()
    assert main(["run", "--out", str(out), "--resume", *TINY]) == 0
    post = vinaflow.load(out)
    assert isinstance(post, EnsemblePosterior) and len(post) == 2
    # the resumed members are the uninterrupted run's, weight for weight
    for k in range(2):
        a, b = _params(run_dir, k), _params(out, k)
        assert all(torch.equal(a[name], b[name]) for name in a), (k, killed_at)
    metrics = json.loads((out / "metrics.json").read_text())
    assert [m["train_steps"] for m in metrics["members"]] == [STEPS, STEPS]


def test_ensemble_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match="training.ensemble"):
        resolve_config({"training": {"ensemble": 0}})
    with pytest.raises(ConfigError, match="training.ensemble"):
        resolve_config({"training": {"ensemble": 2.5}})
    with pytest.raises(ConfigError, match="training.ensemble"):
        resolve_config({"training": {"ensemble": 2, "rounds": 2}})
