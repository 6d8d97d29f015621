"""Every shipped example config validates, and the custom-simulator example builds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

from vinaflow.config import load_config
from vinaflow.experiments.generative import load_flow_config, run_flow
from vinaflow.problems import make_problem

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


# flow_*.yaml configure unconditional flows (the `vinaflow flow` schema).
RUN_CONFIGS = sorted(p for p in EXAMPLES.glob("*.yaml") if not p.name.startswith("flow_"))
FLOW_CONFIGS = sorted(EXAMPLES.glob("flow_*.yaml"))


@pytest.mark.parametrize("path", RUN_CONFIGS, ids=lambda p: p.name)
def test_example_config_is_valid(path: Path) -> None:
    cfg = load_config(path)
    assert cfg["objective"]["name"] in ("nll", "fdiv", "sinkhorn", "mmd")


@pytest.mark.parametrize("path", FLOW_CONFIGS, ids=lambda p: p.name)
def test_flow_example_config_trains_a_few_steps(path: Path, tmp_path: Path) -> None:
    cfg = load_flow_config(
        path,
        ["training.steps=3", "training.progress=false", "evaluation.plots=false",
         "evaluation.num_samples=300", "evaluation.w1_samples=200",
         "evaluation.certificate=false"],
    )  # fmt: skip
    result = run_flow(cfg, tmp_path / "run", progress=False)
    assert result.metrics["train_steps"] == 3 and result.metrics["w1"] >= 0


def test_custom_simulator_example(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(EXAMPLES))
    cfg = load_config(EXAMPLES / "custom_simulator.yaml")
    problem = make_problem(cfg["problem"])
    x = problem.sample_prior(10, torch.Generator().manual_seed(0))
    y = problem.simulate_checked(x)
    assert y.shape == (10, 2)
    assert (problem.simulate_noise_free(x) - y).abs().max() < 0.5
    sys.modules.pop("my_simulator", None)
