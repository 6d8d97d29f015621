"""The objective study's helpers (``benchmarks/objective_study.py``) and a property of the
f-GAN family it reports: the ``js`` and ``gan`` members train identically.

The study itself needs sbibm's reference files and minutes of training; here its row table
and its override routing are checked, and one cell trains for a few steps on a stand-in
reference (no sbibm wheel needed).
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import torch

import vinaflow

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import objective_study  # noqa: E402
from benchmarks.peers.sbibm_reference import ReferenceObservation  # noqa: E402

from vinaflow.objectives import DIVERGENCES, variational_bound  # noqa: E402


def test_js_and_gan_bounds_differ_by_a_constant() -> None:
    # 2 JSD - log 4 (gan) and 2 JSD (js): the same critic and generator gradients for any
    # critic outputs, so seeded runs of the two members coincide (not a bug).
    g = torch.Generator().manual_seed(0)
    v_p = (5 * torch.randn(64, generator=g)).requires_grad_()
    v_q = (5 * torch.randn(64, generator=g)).requires_grad_()
    js = variational_bound(v_p, v_q, "js")
    gan = variational_bound(v_p, v_q, "gan")
    assert torch.allclose(js - gan, torch.tensor(float(np.log(4.0))), atol=1e-5)
    g_js = torch.autograd.grad(js, (v_p, v_q))
    g_gan = torch.autograd.grad(gan, (v_p, v_q))
    for a, b in zip(g_js, g_gan, strict=True):
        assert torch.allclose(a, b, atol=1e-6)


def test_study_rows_cover_every_backward_member_and_the_sample_objectives() -> None:
    rows = objective_study.OBJECTIVES
    for d in DIVERGENCES:
        assert rows[f"fdiv-{d}"] == {"name": "fdiv", "divergence": d, "direction": "backward"}
    for name in ("nll", "forward-kl", "sinkhorn", "mmd", "nll+fdiv-kl"):
        assert name in rows


def test_overrides_reach_the_fdiv_term_and_training() -> None:
    spec, rest = objective_study._objective(
        "nll+fdiv-kl", {"objective.critic_hidden": 32, "critic_steps": 2}
    )
    assert spec["terms"][0]["critic_hidden"] == 32 and "critic_hidden" not in spec
    assert rest == {"critic_steps": 2}
    # the table itself is not modified
    assert "critic_hidden" not in objective_study.OBJECTIVES["nll+fdiv-kl"]["terms"][0]
    assert objective_study._parse_set(["lr=1e-3", "objective.gradient=score"]) == {
        "lr": 1e-3,
        "objective.gradient": "score",
    }


def test_one_cell_trains_and_is_scored() -> None:
    torch.set_num_threads(1)
    x, _ = objective_study.simulations("two_moons", 500, 0)
    ref = ReferenceObservation(
        task="two_moons",
        num_observation=1,
        observation=np.zeros(2, dtype=np.float32),
        true_parameters=np.zeros(2),
        samples=x[:200].astype(np.float64),
    )
    row = objective_study.run_cell("two_moons", "fdiv-kl", 0, [ref], 0, 200, {}, steps=5)
    assert "error" not in row, row.get("error")
    assert 0.0 <= row["c2st"] <= 1.0
    assert row["train_steps"] == 5
    assert np.isfinite(row["heldout_log_prob_mean"])
    assert row["heldout_log_prob_median"] >= row["heldout_log_prob_mean"] - 1e3


def test_heldout_log_prob_is_the_mean_density_of_fresh_simulations() -> None:
    # Trained by maximum likelihood, the held-out density rises well above the untrained
    # model's; the joint INN has no density and reports none.
    torch.set_num_threads(1)
    x, y = objective_study.simulations("two_moons", 2000, 0)
    kw = {"blocks": 2, "hidden": 32, "arch": "coupling", "progress": False, "seed": 0}
    untrained = objective_study.heldout_log_prob(vinaflow.fit(x, y, steps=1, **kw), "two_moons", 0)
    trained = objective_study.heldout_log_prob(vinaflow.fit(x, y, steps=400, **kw), "two_moons", 0)
    assert trained["heldout_log_prob_mean"] > untrained["heldout_log_prob_mean"] + 1.0
    inn = vinaflow.fit(x, y, model="inn", steps=1, progress=False)
    assert objective_study.heldout_log_prob(inn, "two_moons", 0) == {
        "heldout_log_prob_mean": None,
        "heldout_log_prob_median": None,
    }
