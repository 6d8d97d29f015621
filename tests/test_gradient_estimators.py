"""The f-divergence objective's density-based generator gradients, with an exact critic.

``P`` is a second conditional INN (its samples are the data, its density known), so the
exact log-ratio ``log p/q`` replaces the critic and what is left to check is the
estimator itself: with it, ``score`` and ``mixture`` are unbiased estimates of
``grad_theta D_f(P || Q_theta)``, and for KL that gradient is the maximum-likelihood one,
``-E_P[grad log q_theta]``.
"""

from __future__ import annotations

import pytest
import torch
from torch import Tensor

from vinaflow.models import ConditionalINN
from vinaflow.objectives.fdivergence import FDivergenceObjective

N = 40_000


def _models() -> tuple[ConditionalINN, ConditionalINN]:
    # Coupling blocks start as the identity; random weights make two different densities.
    torch.manual_seed(0)
    data = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=8)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=8)
    with torch.no_grad():
        for net, scale in ((data, 0.1), (model, 0.05)):
            for p in net.parameters():
                p.add_(scale * torch.randn_like(p))
    return data, model


class ExactCritic(FDivergenceObjective):
    """The objective with the exact ratio of two known densities in place of its critic."""

    def __init__(self, data: ConditionalINN, model: ConditionalINN, **settings: object) -> None:
        super().__init__(model, **settings)  # type: ignore[arg-type]
        self.data, self.model_ = data, model

    def _log_ratio(self, x: Tensor, y_s: Tensor) -> Tensor:
        with torch.no_grad():
            return self.data.log_prob_standardized(x, y_s) - self.model_.log_prob_standardized(
                x, y_s
            )


def _gradient(loss: Tensor, model: ConditionalINN) -> Tensor:
    grads = torch.autograd.grad(loss, list(model.parameters()), allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])


def _batch(data: ConditionalINN, seed: int) -> tuple[Tensor, Tensor]:
    g = torch.Generator().manual_seed(seed)
    y = torch.randn(N, 1, generator=g)
    with torch.no_grad():
        x = data.generate(y, data.sample_latent(N, generator=g))
    return x, y


def _cosine(a: Tensor, b: Tensor) -> float:
    return float(torch.nn.functional.cosine_similarity(a, b, dim=0))


def test_kl_mixture_gradient_is_the_maximum_likelihood_gradient() -> None:
    data, model = _models()
    x, y = _batch(data, 0)
    obj = ExactCritic(data, model, divergence="kl", gradient="mixture")
    torch.manual_seed(1)
    loss, _ = obj.generator_loss(model, x, y)
    mixture = _gradient(loss, model)
    nll = _gradient(-model.log_prob_standardized(x, y).mean(), model)
    assert _cosine(mixture, nll) > 0.999
    assert abs(float(mixture.norm() / nll.norm()) - 1.0) < 0.02


@pytest.mark.parametrize("divergence", ["kl", "js", "hellinger"])
def test_mixture_and_score_estimate_the_same_gradient(divergence: str) -> None:
    data, model = _models()
    x, y = _batch(data, 0)
    estimates = {}
    for gradient in ("score", "mixture"):
        obj = ExactCritic(data, model, divergence=divergence, gradient=gradient)
        torch.manual_seed(1)
        loss, _ = obj.generator_loss(model, x, y)
        estimates[gradient] = _gradient(loss, model)
    # A model trained along the wrong direction (the sign of one estimator flipped) or by
    # a different weight would give a cosine near -1 or far from 1.
    assert _cosine(estimates["score"], estimates["mixture"]) > 0.99
