"""The f-divergence objective's measured defaults (``benchmarks/objective_study.py``): the
backward KL trains a model with a density by the score-function gradient, and falls back
to the bound wherever the score gradient cannot run, so that no default makes a valid
configuration invalid."""

from __future__ import annotations

import pytest

from vinaflow.models import ConditionalINN, JointINN
from vinaflow.objectives import build_objective, check_objective_model
from vinaflow.objectives.fdivergence import FDivergenceObjective


def _fdiv(model: object, **settings: object) -> FDivergenceObjective:
    composite = build_objective({"name": "fdiv", **settings}, model)  # type: ignore[arg-type]
    term = composite.terms[0]
    assert isinstance(term, FDivergenceObjective)
    return term


@pytest.fixture
def cinn() -> ConditionalINN:
    return ConditionalINN(dim_x=2, dim_y=2, blocks=2, hidden=16)


def test_backward_kl_on_a_density_model_defaults_to_the_score_gradient(cinn) -> None:
    obj = _fdiv(cinn, divergence="kl")
    assert obj.gradient == "score"
    # the critic is still trained on the KL bound itself
    assert obj.critic.divergence.name == "kl"


def test_explicit_settings_win_over_the_defaults(cinn) -> None:
    assert _fdiv(cinn, divergence="kl", gradient="bound").gradient == "bound"


@pytest.mark.parametrize("divergence", ["js", "gan", "reverse-kl", "hellinger", "pearson", "tv"])
def test_other_members_keep_the_bound(cinn, divergence: str) -> None:
    # measured on two_moons: the score gradient did not help js, reverse-kl or hellinger
    obj = _fdiv(cinn, divergence=divergence)
    assert obj.gradient == "bound"


def test_kl_falls_back_to_the_bound_where_score_cannot_run(cinn) -> None:
    assert _fdiv(cinn, divergence="kl", direction="forward").gradient == "bound"
    inn = JointINN(dim_x=2, dim_y=2, blocks=2, hidden=16)
    assert _fdiv(inn, divergence="kl").gradient == "bound"
    # and the config check accepts the default on a kind without a density
    check_objective_model({"name": "fdiv", "divergence": "kl"}, {"kind": "inn"})
