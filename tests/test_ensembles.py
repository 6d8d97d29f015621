"""Posterior ensembles: the mixture density, its samples, files and ``fit(ensemble=K)``."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch

import vinaflow
from vinaflow.errors import ConfigError, DataError, ModelFileError
from vinaflow.models import ConditionalINN, EnsemblePosterior, JointINN, Posterior
from vinaflow.models.posterior import NoDensityError
from vinaflow.problems import GaussianLinear

#: Member k is the (untrained) flow moved to mean MEANS[k] and scale SCALES[k] through its
#: standardiser: three clearly different densities whose mixture is easy to check.
MEANS = ([-20.0, 0.0], [0.0, 2.0], [20.0, -1.0])
SCALES = ([1.0, 0.7], [0.8, 1.2], [1.1, 0.9])


def _member(k: int) -> Posterior:
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=8, seed=k)
    with torch.no_grad():
        # an untrained coupling flow starts near the identity; random weights make each
        # member a non-Gaussian density of its own
        g = torch.Generator().manual_seed(100 + k)
        for p in model.flow.parameters():
            p.add_(0.3 * torch.randn(p.shape, generator=g))
        model.x_norm.mean.copy_(torch.tensor(MEANS[k]))
        model.x_norm.std.copy_(torch.tensor(SCALES[k]))
    return Posterior(model.eval())


@pytest.fixture(scope="module")
def members() -> list[Posterior]:
    return [_member(k) for k in range(3)]


def test_log_prob_is_the_mixture_of_the_members(members: list[Posterior]) -> None:
    x = torch.randn(50, 2) * 4
    y = torch.randn(50, 1)
    lps = torch.stack([p.log_prob(x, y) for p in members], 1).double()
    uniform = EnsemblePosterior(members).log_prob(x, y).double()
    assert torch.allclose(uniform, torch.logsumexp(lps, 1) - math.log(3), atol=1e-5)
    w = torch.tensor([0.6, 0.3, 0.1], dtype=torch.float64)
    weighted = EnsemblePosterior(members, weights=[6, 3, 1]).log_prob(x, y).double()
    assert torch.allclose(weighted, torch.logsumexp(lps + w.log(), 1), atol=1e-5)
    # where one member dominates, the mixture is that member's density times its weight
    far = torch.tensor([[-20.0, 0.0]])
    one = members[0].log_prob(far, [0.0]).double()
    assert float(EnsemblePosterior(members).log_prob(far, [0.0])) == pytest.approx(
        float(one) - math.log(3), abs=1e-4
    )


def test_log_prob_integrates_to_one_on_a_grid(members: list[Posterior]) -> None:
    side = torch.linspace(-32.0, 32.0, 427)
    cell = float(side[1] - side[0]) ** 2
    grid = torch.cartesian_prod(side, side)
    for post in (members[1], EnsemblePosterior(members), EnsemblePosterior(members, [5, 0, 1])):
        mass = float(post.log_prob(grid, [0.4]).double().exp().sum()) * cell
        assert mass == pytest.approx(1.0, abs=0.02)


def test_samples_follow_the_mixture(members: list[Posterior]) -> None:
    n = 6000
    ens = EnsemblePosterior(members, weights=[0.5, 0.3, 0.2])
    s = ens.sample([[0.2], [-0.5]], n, seed=3)
    assert s.shape == (2, n, 2)
    # the members' means are 20 apart on the first coordinate (their samples spread by
    # less than 5): the nearest mean tells which member drew a sample
    centres = torch.tensor([m[0] for m in MEANS])
    which = (s[..., :1] - centres).abs().argmin(-1)
    for i, y in enumerate(([0.2], [-0.5])):
        freq = torch.bincount(which[i], minlength=3).double() / n
        # binomial sd <= 0.0065 for n = 6000
        assert torch.allclose(freq, torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64), atol=0.03)
        for k, member in enumerate(members):
            own = member.sample(y, 4000, seed=10 + k)[0]
            part = s[i][which[i] == k]
            assert torch.allclose(part.mean(0), own.mean(0), atol=0.12)
            assert torch.allclose(part.std(0), own.std(0), rtol=0.1)
    # the observations' member draws are independent, not one shared assignment
    assert (which[0] != which[1]).double().mean() > 0.4


def test_sampling_is_reproducible_and_validated(members: list[Posterior]) -> None:
    ens = EnsemblePosterior(members)
    a = ens.sample([0.1], 200, seed=7)
    assert torch.equal(a, ens.sample([0.1], 200, seed=7))
    assert not torch.equal(a, ens.sample([0.1], 200, seed=8))
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    assert torch.equal(ens.sample([0.1], 50, generator=g1), ens.sample([0.1], 50, generator=g2))
    with pytest.raises(DataError, match="integer >= 1"):
        ens.sample([0.1], 0)
    with pytest.raises(ConfigError, match="seed or generator"):
        ens.sample([0.1], 5, seed=1, generator=g1)
    with pytest.raises(DataError, match=r"shape \(1,\)"):
        ens.sample([0.1, 0.2], 5)


def test_constructor_checks_its_members(members: list[Posterior]) -> None:
    with pytest.raises(ConfigError, match="non-empty list"):
        EnsemblePosterior([])
    with pytest.raises(ConfigError, match="not a Posterior"):
        EnsemblePosterior([members[0], "model"])  # type: ignore[list-item]
    with pytest.raises(ConfigError, match="itself an ensemble"):
        EnsemblePosterior([EnsemblePosterior(members)])
    other = Posterior(ConditionalINN(dim_x=3, dim_y=1, blocks=1, hidden=8))
    with pytest.raises(DataError, match="same dim_x and dim_y"):
        EnsemblePosterior([members[0], other])
    for bad in ([1, 2], [1, -1, 1], [0, 0, 0], [1, float("nan"), 1]):
        with pytest.raises(ConfigError, match="weights"):
            EnsemblePosterior(members, weights=bad)
    ens = EnsemblePosterior(members)
    assert len(ens) == 3 and ens.dim_x == 2 and ens.dim_y == 1
    assert isinstance(ens, Posterior)  # evaluate() and certify() take it like any posterior
    assert "ensemble of 3 cinn" in ens.model.kind


def test_members_without_density_sample_but_have_no_log_prob() -> None:
    joint = [Posterior(JointINN(dim_x=2, dim_y=1, blocks=1, hidden=8, seed=s)) for s in (0, 1)]
    ens = EnsemblePosterior(joint)
    assert not ens.has_log_prob
    assert ens.sample([0.0], 10, seed=0).shape == (1, 10, 2)
    with pytest.raises(NoDensityError, match="inn"):
        ens.log_prob(torch.zeros(2, 2), [0.0])


def test_save_and_load_round_trip(members: list[Posterior], tmp_path: Path) -> None:
    ens = EnsemblePosterior(members, weights=[2, 1, 1])
    ens.save(tmp_path / "ens")
    assert (tmp_path / "ens" / "ensemble.json").is_file()
    back = vinaflow.load(tmp_path / "ens")
    assert isinstance(back, EnsemblePosterior) and len(back) == 3
    assert torch.allclose(back.weights, torch.tensor([0.5, 0.25, 0.25]))
    x = torch.randn(20, 2) * 3
    assert torch.allclose(back.log_prob(x, [0.3]), ens.log_prob(x, [0.3]), atol=1e-6)
    assert torch.equal(back.sample([0.3], 100, seed=1), ens.sample([0.3], 100, seed=1))
    # each member folder is an ordinary posterior folder
    assert torch.allclose(
        Posterior.load(tmp_path / "ens" / "member-2").log_prob(x, [0.3]),
        members[2].log_prob(x, [0.3]),
        atol=1e-6,
    )


def test_damaged_ensemble_folders_are_clear_errors(
    members: list[Posterior], tmp_path: Path
) -> None:
    folder = EnsemblePosterior(members).save(tmp_path / "ens")
    meta_path = folder / "ensemble.json"
    meta = json.loads(meta_path.read_text())
    meta_path.write_text(json.dumps({**meta, "num_members": 10**9}))
    with pytest.raises(ModelFileError, match="num_members"):
        vinaflow.load(folder)
    meta_path.write_text(json.dumps({**meta, "weights": [1, 1]}))
    with pytest.raises(ModelFileError, match="one value per member"):
        vinaflow.load(folder)
    meta_path.write_text(json.dumps({**meta, "format_version": 99}))
    with pytest.raises(ModelFileError, match="format_version"):
        vinaflow.load(folder)
    meta_path.write_text(json.dumps(meta))
    (folder / "member-1" / "model.safetensors").unlink()
    with pytest.raises(ModelFileError, match="member-1"):
        vinaflow.load(folder)


PROBLEM = GaussianLinear(dim_x=2, dim_y=2, noise=0.5, seed=3)


@pytest.fixture(scope="module")
def fitted() -> EnsemblePosterior:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = PROBLEM.sample_prior(1500, g)
    y = PROBLEM.simulate(x, g)
    ens = vinaflow.fit(
        x, y, ensemble=3, seed=4, steps=300, blocks=2, hidden=32, lr=3e-3, progress=False
    )
    assert isinstance(ens, EnsemblePosterior)
    return ens


def test_fit_trains_members_with_consecutive_seeds(fitted: EnsemblePosterior) -> None:
    assert [m.model.config()["seed"] for m in fitted.members] == [4, 5, 6]
    assert [r.steps for r in fitted.train_result] == [300, 300, 300]
    assert [m.train_result for m in fitted.members] == fitted.train_result
    # independently initialised and split, so the members differ
    x = torch.randn(5, 2)
    lps = torch.stack([m.log_prob(x, [0.2, 0.1]) for m in fitted.members])
    assert (lps[0] - lps[1]).abs().max() > 1e-3


def test_fit_ensemble_is_at_least_as_accurate_as_one_member(fitted: EnsemblePosterior) -> None:
    g = torch.Generator().manual_seed(11)
    x = PROBLEM.sample_prior(2000, g)
    y = PROBLEM.simulate(x, g)
    # held-out expected log-density of the true parameters (the NPE loss)
    member_nll = [-float(m.log_prob(x, y).mean()) for m in fitted.members]
    ensemble_nll = -float(fitted.log_prob(x, y).mean())
    assert ensemble_nll <= min(member_nll) + 0.01, (ensemble_nll, member_nll)
    # error of the posterior mean against the closed form, over observations
    y_obs = y[:20]
    exact = PROBLEM.posterior_mean(y_obs).float()

    def mean_error(post: Posterior) -> float:
        return float((post.sample(y_obs, 4000, seed=0).mean(1) - exact).norm(dim=1).mean())

    member_err = [mean_error(m) for m in fitted.members]
    ensemble_err = mean_error(fitted)
    # the mixture's mean is the members' average, so its error is at most their average
    # (triangle inequality), up to the Monte Carlo error of 4000 draws (about 0.01)
    assert ensemble_err <= float(np.mean(member_err)) + 0.01, (ensemble_err, member_err)


def test_fit_ensemble_evaluates_and_rejects_what_it_cannot_train(
    fitted: EnsemblePosterior,
) -> None:
    g = torch.Generator().manual_seed(2)
    x = PROBLEM.sample_prior(3, g)
    y = PROBLEM.simulate(x, g)
    metrics = vinaflow.evaluate(
        fitted, PROBLEM.reference_posterior, y, x=x, num_samples=300, c2st=False
    )
    assert np.isfinite(metrics["w1"]) and metrics["num_observations"] == 3
    xs, ys = torch.randn(40, 2), torch.randn(40, 2)
    with pytest.raises(ConfigError, match="ensemble must be an integer >= 1"):
        vinaflow.fit(xs, ys, ensemble=0, steps=1, progress=False)
    with pytest.raises(ConfigError, match="not a built model"):
        vinaflow.fit(
            xs, ys, model=ConditionalINN(2, 2, blocks=1, hidden=8), ensemble=2, progress=False
        )
