"""The time-to-accuracy benchmark's core (``benchmarks/variational_wins.py``) on tiny settings,
and the property it relies on: the backward losses draw i-ResNet samples without any
log-determinant, maximum likelihood with it.
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import variational_wins  # noqa: E402

from vinaflow.blocks import IResNetBlock  # noqa: E402
from vinaflow.blocks.base import logdet_needed, without_logdet  # noqa: E402
from vinaflow.models.cinn import ConditionalINN  # noqa: E402
from vinaflow.objectives.build import build_objective  # noqa: E402

TINY = {"blocks": 2, "hidden": 16}


def test_without_logdet_skips_only_the_logdet() -> None:
    block = IResNetBlock(3, 2, hidden=8, explicit="inverse")
    z, c = torch.randn(5, 3), torch.randn(5, 2)
    x, ld = block(z, c, rev=True)
    assert logdet_needed()
    with without_logdet():
        assert not logdet_needed()
        x0, ld0 = block(z, c, rev=True)
    assert logdet_needed()  # restored on exit
    assert torch.equal(x, x0)
    assert torch.count_nonzero(ld) == 5 and torch.count_nonzero(ld0) == 0


def test_backward_losses_never_compute_an_iresnet_logdet(monkeypatch: object) -> None:
    calls: list[bool] = []
    real = IResNetBlock._logdet

    def counting(self: IResNetBlock, *args: object) -> torch.Tensor:
        calls.append(logdet_needed())
        return real(self, *args)

    monkeypatch.setattr(IResNetBlock, "_logdet", counting)  # type: ignore[attr-defined]
    model = ConditionalINN(2, 2, arch="iresnet", explicit="inverse", **TINY)
    x, y = torch.randn(64, 2), torch.randn(64, 2)
    for spec in variational_wins.ROWS.values():
        if spec["explicit"] != "inverse":
            continue
        objective = build_objective(spec["objective"], model)
        objective.prepare(model, x, y)
        calls.clear()
        loss, _ = objective.generator_loss(model, x, y)
        loss.backward()
        if objective.has_critic:
            objective.critic_loss(model, x, y)[0].backward()
        assert calls and not any(calls), spec  # every log-det call was skipped
    calls.clear()
    build_objective("nll", model).generator_loss(model, x, y)[0].backward()
    assert calls and all(calls)  # maximum likelihood computes it


def test_curves_train_and_the_summary_calls_wins_and_losses() -> None:
    torch.set_num_threads(1)
    curves = {
        row: {
            seed: variational_wins.run_curve(
                row, seed, [0.4, 1.2], dim=2, n_obs=1, n_c2st=200, model_options=TINY
            )
            for seed in (0, 1)
        }
        for row in ("nll", "mmd")
    }
    for by_seed in curves.values():
        for curve in by_seed.values():
            assert [c["checkpoint"] for c in curve] == [0.4, 1.2]
            assert 0 < curve[0]["steps"] < curve[1]["steps"]
            assert curve[1]["cpu_seconds"] >= 1.2
            assert all(0.3 <= c["c2st"] <= 1.0 for c in curve)
    # maximum likelihood learns within a second: below an untrained model's C2ST
    untrained = variational_wins.run_curve("nll", 0, [0.0], dim=2, n_obs=1, n_c2st=200)
    assert untrained[0]["steps"] == 0
    assert curves["nll"][0][1]["c2st"] < untrained[0]["c2st"]

    def fake(values: list[float]) -> dict[int, list[dict[str, float]]]:
        return {s: [{"checkpoint": 1.0, "c2st": v, "steps": 1}] for s, v in enumerate(values)}

    summary = variational_wins.summarise(
        {
            "nll": fake([0.70, 0.71, 0.72]),
            "good": fake([0.55, 0.56, 0.57]),
            "bad": fake([0.90, 0.91, 0.92]),
            "tie": fake([0.69, 0.71, 0.73]),
        }
    )
    assert summary["good"][0]["wins"] and not summary["good"][0]["loses"]
    assert summary["bad"][0]["loses"] and not summary["bad"][0]["wins"]
    assert not summary["tie"][0]["wins"] and not summary["tie"][0]["loses"]
    diff = summary["good"][0]["c2st_minus_reference"]
    assert abs(diff["mean"] + 0.15) < 1e-9
    assert "wins" not in summary["nll"][0]
