"""The command line end to end, including user errors (one line, exit 2, nothing corrupted)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

TINY = [
    "--set",
    "problem.num_simulations=600",
    "--set",
    "training.steps=40",
    "--set",
    "training.max_seconds=60",
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
]


def vinaflow(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "vinaflow", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=600,
    )


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:  # noqa: ANN001
    out = tmp_path_factory.mktemp("cli") / "run"
    res = vinaflow("run", "--out", str(out), "--no-progress", *TINY)
    assert res.returncode == 0, res.stderr
    assert "c2st" in res.stdout
    return out


def test_run_writes_everything(run_dir: Path) -> None:
    for name in (
        "config.yaml",
        "model.safetensors",
        "model.json",
        "metrics.json",
        "report.md",
        "history.json",
        "checkpoint.pt",
        "plots/loss_curves.png",
        "plots/posterior_obs0.png",
        "plots/sbc_ranks.png",
    ):
        assert (run_dir / name).is_file(), name
    metrics = json.loads((run_dir / "metrics.json").read_text())
    for key in (
        "c2st",
        "w1",
        "mmd",
        "resim_error",
        "coverage",
        "train_seconds",
        "seed",
        "environment",
        "per_observation",
    ):
        assert key in metrics, key
    assert len(metrics["per_observation"]["c2st"]) == 2
    assert 0.4 <= metrics["c2st"] <= 1.0
    assert "torch" in metrics["environment"]
    assert not list(run_dir.glob(".*tmp"))


def test_sample_and_evaluate(run_dir: Path, tmp_path: Path) -> None:
    obs = tmp_path / "obs.npy"
    np.save(obs, np.zeros((3, 2)))
    out = tmp_path / "samples.npy"
    res = vinaflow(
        "sample", str(run_dir), "--observations", str(obs), "-n", "17", "--out", str(out)
    )
    assert res.returncode == 0, res.stderr
    assert np.load(out).shape == (3, 17, 4)
    res = vinaflow("evaluate", str(run_dir), "--json")
    assert res.returncode == 0, res.stderr
    assert {"c2st", "w1", "coverage"} <= set(json.loads(res.stdout))


def test_certify_command(run_dir: Path) -> None:
    res = vinaflow("certify", str(run_dir), "--steps", "200", "-n", "2000", "--json")
    assert res.returncode == 0, res.stderr
    cert = json.loads(res.stdout)
    assert cert["divergence"] == "kl" and cert["detection_limit"] > 0
    # A TV bound only for a resolved certificate.
    assert (cert["tv_bound"] is None) == (not cert["resolved"])
    assert cert["tv_bound"] is None or 0.0 <= cert["tv_bound"] <= 1.0


def test_problems_lists_builtins() -> None:
    res = vinaflow("problems")
    assert res.returncode == 0 and "gaussian-linear" in res.stdout and "noise" in res.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "--set", "objective.name=gan"], "objective.name"),
        (
            ["run", "--set", "objective.name=fdiv", "--set", "objective.divergence=kld"],
            "objective.divergence",
        ),
        (["run", "--set", "problem.name=nope"], "unknown problem"),
        (["run", "missing.yaml"], "config file not found"),
        (["sample", "no_such_dir", "--observations", "x.npy", "--out", "y.npy"], "not found"),
    ],
)
def test_user_errors_are_one_line(args: list[str], message: str, tmp_path: Path) -> None:
    res = vinaflow(*args, cwd=tmp_path)
    assert res.returncode == 2
    assert message in res.stderr
    assert "Traceback" not in res.stderr and len(res.stderr.strip().splitlines()) == 1


def test_bad_observations_do_not_touch_outputs(run_dir: Path, tmp_path: Path) -> None:
    before = (run_dir / "metrics.json").read_bytes()
    for arr, msg in ((np.zeros((2, 5)), "shape"), (np.array([np.nan, 0.0]), "NaN")):
        obs = tmp_path / "obs.npy"
        np.save(obs, arr)
        out = tmp_path / "out.npy"
        res = vinaflow("sample", str(run_dir), "--observations", str(obs), "--out", str(out))
        assert res.returncode == 2 and msg in res.stderr and "Traceback" not in res.stderr
        assert not out.exists()
    res = vinaflow("run", "--out", str(run_dir), *TINY)
    assert res.returncode == 2 and "--overwrite" in res.stderr
    assert (run_dir / "metrics.json").read_bytes() == before
