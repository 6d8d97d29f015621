"""Posteriors restricted to the prior's support: samples, normalised densities, files."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from torch.distributions import (
    Dirichlet,
    Distribution,
    Independent,
    LogNormal,
    MultivariateNormal,
    Uniform,
)

import vinaflow
from vinaflow.errors import ConfigError, DataError, ModelFileError
from vinaflow.models import BoxSupport, EnsemblePosterior, Posterior
from vinaflow.models.support import SUPPORT_FILE

BOX = Independent(Uniform(-torch.ones(2), torch.ones(2)), 1)


def _box_data(n: int = 3000, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Parameters uniform on the box, observed with noise as wide as a tenth of it: near the
    box's edges the posterior is cut off, which a flow does not learn exactly."""
    g = torch.Generator().manual_seed(seed)
    x = torch.rand(n, 2, generator=g) * 2 - 1
    return x, x + 0.3 * torch.randn(n, 2, generator=g)


@pytest.fixture(scope="module")
def restricted() -> Posterior:
    x, y = _box_data()
    return vinaflow.fit(x, y, prior=BOX, steps=300, progress=False, seed=0)


def test_support_of_common_priors() -> None:
    box = BoxSupport.from_prior(BOX)
    assert box is not None and box.lower.tolist() == [-1, -1] and box.upper.tolist() == [1, 1]
    pos = BoxSupport.from_prior(Independent(LogNormal(torch.zeros(3), torch.ones(3)), 1))
    assert pos is not None and pos.lower.tolist() == [0, 0, 0]
    assert torch.isinf(pos.upper).all()
    # all of R^d: nothing to restrict
    assert BoxSupport.from_prior(MultivariateNormal(torch.zeros(2), torch.eye(2))) is None
    with pytest.warns(UserWarning, match="not a box"):
        assert BoxSupport.from_prior(Dirichlet(torch.ones(3))) is None

    class NoSupport(Distribution):  # a user's prior that defines no support
        def __init__(self) -> None:
            super().__init__(event_shape=torch.Size([2]), validate_args=False)

    with pytest.warns(UserWarning, match=r"support \(None\) is not a box"):
        assert BoxSupport.from_prior(NoSupport()) is None


def test_support_json_round_trip_keeps_unbounded_ends() -> None:
    s = BoxSupport([0.0, -math.inf], [math.inf, 2.0])
    data = json.loads(json.dumps(s.to_json()))  # plain JSON: no Infinity tokens
    assert data == {"lower": [0.0, None], "upper": [None, 2.0]}
    back = BoxSupport.from_json(data)
    assert torch.equal(back.lower, s.lower) and torch.equal(back.upper, s.upper)
    assert back.contains(torch.tensor([[1.0, -5.0], [-1.0, 0.0], [1.0, 3.0]])).tolist() == [
        True,
        False,
        False,
    ]


@pytest.mark.parametrize(
    ("lower", "upper", "message"),
    [([0.0, 1.0], [1.0], "one length"), ([1.0], [0.0], "below its upper"), ("a", [1], "numbers")],
)
def test_bad_bounds_are_refused(lower: object, upper: object, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        BoxSupport(lower, upper)


def test_samples_stay_inside_the_prior_and_match_the_unrestricted_ones_inside(
    restricted: Posterior,
) -> None:
    edge = torch.tensor([[0.95, 0.95], [0.0, 0.0]])
    s = restricted.sample(edge, 4000, seed=1)
    assert s.shape == (2, 4000, 2) and s.abs().max() <= 1
    mass = restricted.support_mass(edge)
    # the flow leaks at the corner, hardly at the centre
    assert 0.5 < mass[0] < 0.97 and mass[1] > 0.97
    free = Posterior(restricted.model).sample(edge, 4000, seed=1)
    assert (free.abs() > 1).any()
    # rejection keeps the distribution inside: same mean as the unrestricted draws inside
    inside = free[0][free[0].abs().max(1).values <= 1]
    assert torch.allclose(s[0].mean(0), inside.mean(0), atol=0.03)
    assert torch.equal(s, restricted.sample(edge, 4000, seed=1))


def test_support_mass_spends_draws_where_the_posterior_leaks(
    restricted: Posterior, monkeypatch: pytest.MonkeyPatch
) -> None:
    from vinaflow.models import posterior as posterior_module

    # the corner leaks (more rounds), the centre does not (one round of 1,000 draws)
    obs = torch.tensor([[0.95, 0.95], [0.0, 0.0]])
    draws: list[tuple[int, int]] = []
    draw = Posterior._draw

    def counting(self: Posterior, o: torch.Tensor, n: int, g: object) -> torch.Tensor:
        draws.append((o.shape[0], n))
        return draw(self, o, n, g)

    monkeypatch.setattr(Posterior, "_draw", counting)
    mass = restricted.support_mass(obs)
    monkeypatch.undo()
    rounds = posterior_module.SUPPORT_MASS_ROUND
    assert draws[0] == (2, rounds) and all(d == (1, rounds) for d in draws[1:])
    assert len(draws) > 1
    # each stopped with the standard error of its log mass at the target (or all draws)
    exact = restricted.support_mass(obs, n=100_000, seed=5)
    se = posterior_module.SUPPORT_MASS_LOG_SE
    assert (mass.log() - exact.log()).abs().max() < 4 * se
    # many distinct observations are drawn in bounded chunks
    monkeypatch.setattr(posterior_module, "SUPPORT_MASS_CHUNK", 3 * rounds)
    many = torch.zeros(7, 2)
    draws.clear()
    monkeypatch.setattr(Posterior, "_draw", counting)
    assert restricted.support_mass(many).shape == (7,)
    assert max(d[0] for d in draws) == 3


def test_normalised_log_prob_integrates_to_one_over_the_support(restricted: Posterior) -> None:
    edge = torch.tensor([0.95, 0.95])
    # midpoint rule on the box
    k = 200
    c = (torch.arange(k) + 0.5) / k * 2 - 1
    grid = torch.cartesian_prod(c, c)
    cell = (2 / k) ** 2
    total = restricted.log_prob(grid, edge).exp().sum() * cell
    raw = restricted.log_prob(grid, edge, normalize=False).exp().sum() * cell
    mass = restricted.support_mass(edge)
    assert abs(float(total) - 1) < 0.03
    assert abs(float(raw) - float(mass)) < 0.03 and float(raw) < 0.97
    outside = restricted.log_prob(torch.tensor([[1.01, 0.0], [0.0, -3.0]]), edge)
    assert torch.isinf(outside).all() and (outside < 0).all()


def test_rejection_without_mass_inside_is_reported(restricted: Posterior) -> None:
    far = Posterior(restricted.model, support=BoxSupport([5.0, 5.0], [6.0, 6.0]))
    with pytest.raises(DataError, match="observation 0: 0 of .* inside the prior's support"):
        far.sample([0.0, 0.0], 50, seed=0)
    with pytest.raises(DataError, match="normalize=False"):
        far.log_prob([[5.5, 5.5]], [0.0, 0.0])
    assert torch.isfinite(far.log_prob([[5.5, 5.5]], [0.0, 0.0], normalize=False)).all()


def test_support_is_saved_and_removed_with_the_posterior(
    restricted: Posterior, tmp_path: Path
) -> None:
    restricted.save(tmp_path)
    loaded = vinaflow.load(tmp_path)
    assert loaded.support is not None and loaded.support.upper.tolist() == [1, 1]
    assert torch.equal(
        loaded.sample([0.9, 0.9], 50, seed=3), restricted.sample([0.9, 0.9], 50, seed=3)
    )
    # an unrestricted posterior saved over it must not load restricted
    Posterior(restricted.model).save(tmp_path)
    assert not (tmp_path / SUPPORT_FILE).exists() and vinaflow.load(tmp_path).support is None
    (tmp_path / SUPPORT_FILE).write_text('{"lower": [1, 2]}')
    with pytest.raises(ModelFileError, match="support.json"):
        vinaflow.load(tmp_path)


def test_fit_restricts_ensembles_and_simulator_runs(tmp_path: Path) -> None:
    x, y = _box_data(500)
    ens = vinaflow.fit(x, y, prior=BOX, steps=20, ensemble=2, progress=False)
    assert isinstance(ens, EnsemblePosterior) and ens.support is not None
    assert ens.sample([0.99, 0.99], 300, seed=0).abs().max() <= 1
    ens.save(tmp_path)
    assert vinaflow.load(tmp_path).support is not None

    def simulate(t: torch.Tensor) -> torch.Tensor:
        return t + 0.3 * torch.randn_like(t)

    sim = vinaflow.fit(simulator=simulate, prior=BOX, num_simulations=200, steps=5, progress=False)
    assert sim.support is not None
    # without a prior, nothing is restricted
    assert vinaflow.fit(x, y, steps=5, progress=False).support is None


def test_prior_of_the_wrong_dimension_is_refused() -> None:
    x, y = _box_data(100)
    wrong = Independent(Uniform(-torch.ones(3), torch.ones(3)), 1)
    with pytest.raises(ConfigError, match=r"event shape \(dim_x,\) = \(2,\), got \(3,\)"):
        vinaflow.fit(x, y, prior=wrong, steps=2, progress=False)
    with pytest.raises(ConfigError, match="prior must be a torch.distributions"):
        vinaflow.fit(x, y, prior="uniform", steps=2, progress=False)


def test_the_prior_changes_no_training_step() -> None:
    """``fit(x, y, prior=p)`` trains the very model ``fit(x, y)`` trains with the seed: the
    peers benchmark's paired difference of the two is the restriction's effect alone."""
    x, y = _box_data(300)
    a = vinaflow.fit(x, y, steps=15, seed=4, progress=False)
    b = vinaflow.fit(x, y, prior=BOX, steps=15, seed=4, progress=False)
    for p, q in zip(a.model.parameters(), b.model.parameters(), strict=True):
        assert torch.equal(p, q)


def test_doctests() -> None:
    import doctest

    import vinaflow.models.ensemble
    import vinaflow.models.posterior
    import vinaflow.models.support

    for module in (vinaflow.models.support, vinaflow.models.posterior, vinaflow.models.ensemble):
        result = doctest.testmod(module)
        assert result.attempted > 0 and result.failed == 0


def test_a_run_folder_keeps_the_support(tmp_path: Path) -> None:
    """``vinaflow run`` restricts as ``fit`` does, and its folder loads restricted."""
    from vinaflow.config import resolve_config
    from vinaflow.experiments import run

    box = {"uniform": {"low": [0.0, 0.0], "high": [1.0, 2.0]}}
    cfg = resolve_config({
        "problem": {"simulator": "torch:sin", "prior": box, "num_simulations": 300},
        "training": {"steps": 10, "progress": False},
        "evaluation": {"num_observations": 2, "num_samples": 50, "certificate": False},
    })  # fmt: skip
    res = run(cfg, out=tmp_path, progress=False)
    assert res.posterior.support is not None and (tmp_path / SUPPORT_FILE).is_file()
    loaded = vinaflow.load(tmp_path)
    assert loaded.support is not None and loaded.support.upper.tolist() == [1.0, 2.0]
    s = loaded.sample([0.5, 0.5], 500, seed=0)[0]
    assert (s >= 0).all() and (s[:, 0] <= 1).all() and (s[:, 1] <= 2).all()
