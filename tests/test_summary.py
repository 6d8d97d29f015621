"""Summary networks: the permutation-invariant set summary (Deep Sets) next to the MLP one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import vinaflow
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError, DataError
from vinaflow.models import ConditionalINN, ContinuousFlow, Posterior, SetSummary
from vinaflow.nets import MLP
from vinaflow.training.fitting import build_model_from_config

M, D = 10, 2  # elements per set, values per element


def _permute_sets(y: torch.Tensor, m: int, d: int, seed: int = 0) -> torch.Tensor:
    """Flattened sets ``(n, m * d)`` with each row's elements in a random order."""
    g = torch.Generator().manual_seed(seed)
    sets = y.reshape(y.shape[0], m, d)
    order = torch.stack([torch.randperm(m, generator=g) for _ in range(y.shape[0])])
    return sets[torch.arange(y.shape[0])[:, None], order].reshape(y.shape[0], m * d)


def test_set_summary_is_permutation_invariant_and_not_constant() -> None:
    torch.manual_seed(0)
    h = SetSummary(set_size=M, set_dim=D, out_dim=5, hidden=16)
    y = 3 * torch.randn(64, M * D)
    out = h(y)
    assert out.shape == (64, 5)
    # exact up to the order of the float sum in the mean (a fresh net's summary moves by
    # about 1e-3 per unit change of one element, so 1e-6 is far below any real change)
    assert torch.allclose(h(_permute_sets(y, M, D)), out, rtol=0, atol=1e-6)
    # ... but it does see the values: changing one element of a set moves its summary
    y2 = y.clone()
    y2[:, :D] += 1.0
    assert (h(y2) - out).abs().max() > 1e-4
    # and the elements are the (m, d) blocks, not arbitrary columns: swapping the two
    # values inside one element is not a permutation of the set
    swapped = y.reshape(64, M, D).flip(-1).reshape(64, M * D)
    assert (h(swapped) - out).abs().max() > 1e-4


def test_set_summary_rejects_wrong_widths() -> None:
    h = SetSummary(set_size=M, set_dim=D, out_dim=3, hidden=8)
    with pytest.raises(DataError, match=r"shape \(n, 20\).*10 elements of 2 values"):
        h(torch.randn(4, 19))


def test_cinn_with_a_set_summary_is_permutation_invariant_end_to_end() -> None:
    model = ConditionalINN(
        dim_x=2, dim_y=M * D, blocks=2, hidden=16, embedding="set", set_dim=D, embedding_dim=4
    )
    assert model.set_shape == (M, D) and isinstance(model.embedding, SetSummary)
    g = torch.Generator().manual_seed(1)
    # element positions with visibly different column statistics in a finite sample
    y = torch.randn(300, M * D, generator=g) * 2 + torch.arange(M * D) * 0.01
    model.fit_normalization(torch.randn(300, 2, generator=g), y)
    # one standardisation per element value, shared by all positions of the set
    assert torch.equal(model.y_norm.mean.reshape(M, D), model.y_norm.mean[:D].repeat(M, 1))
    assert torch.equal(model.y_norm.std.reshape(M, D), model.y_norm.std[:D].repeat(M, 1))
    post = Posterior(model)
    y_obs = y[:3]
    shuffled = _permute_sets(y_obs, M, D, seed=5)
    assert not torch.equal(shuffled, y_obs)
    x = torch.randn(3, 2, generator=g)
    assert torch.allclose(post.log_prob(x, y_obs), post.log_prob(x, shuffled), atol=1e-5)
    a = post.sample(y_obs, 50, seed=2)
    assert torch.allclose(a, post.sample(shuffled, 50, seed=2), atol=1e-5)


def test_cnf_with_a_set_summary_is_permutation_invariant() -> None:
    model = ContinuousFlow(
        dim_x=2,
        dim_y=M * D,
        hidden=8,
        embedding="set",
        set_dim=D,
        embedding_dim=3,
        embedding_hidden=8,
    )
    g = torch.Generator().manual_seed(3)
    y = torch.randn(100, M * D, generator=g)
    model.fit_normalization(torch.randn(100, 2, generator=g), y)
    post = Posterior(model)
    x = torch.randn(3, 2, generator=g)
    shuffled = _permute_sets(y[:3], M, D, seed=1)
    assert torch.allclose(post.log_prob(x, y[:3]), post.log_prob(x, shuffled), atol=1e-4)


def test_posterior_takes_sets_in_their_own_shape() -> None:
    post = Posterior(
        ConditionalINN(
            dim_x=2, dim_y=M * D, blocks=1, hidden=8, embedding="set", set_dim=D, embedding_dim=3
        )
    )
    sets = torch.randn(4, M, D)
    flat = sets.reshape(4, M * D)
    assert torch.equal(post.sample(sets, 5, seed=0), post.sample(flat, 5, seed=0))
    assert torch.equal(post.sample(sets[0], 5, seed=0), post.sample(flat[0], 5, seed=0))
    assert post.sample(sets[0], 5, seed=0).shape == (1, 5, 2)
    x = torch.zeros(4, 2)
    assert torch.allclose(post.log_prob(x, sets), post.log_prob(x, flat))
    with pytest.raises(DataError, match=r"m=10 elements of set_dim=2.*\(10, 2\).*got \(4, 9, 2\)"):
        post.sample(torch.randn(4, 9, D), 5)
    with pytest.raises(DataError, match=r"\(n_obs, 10, 2\)"):
        post.sample(torch.randn(M, 3), 5)


def test_set_settings_that_do_not_fit_the_observation_are_clear_errors() -> None:
    with pytest.raises(ConfigError, match=r"model.set_dim=3 does not divide dim_y=20.*\(m, 3\)"):
        ConditionalINN(dim_x=2, dim_y=20, embedding="set", set_dim=3)
    with pytest.raises(ConfigError, match="model.set_dim applies only to model.embedding: set"):
        ConditionalINN(dim_x=2, dim_y=20, set_dim=2)
    with pytest.raises(
        ConfigError, match="model.embedding: unknown value 'sets'; allowed: mlp, set"
    ):
        ConditionalINN(dim_x=2, dim_y=20, embedding="sets")
    with pytest.raises(ConfigError, match="model.set_dim must be an integer >= 1"):
        ContinuousFlow(dim_x=2, dim_y=20, embedding="set", set_dim=0)
    with pytest.raises(ConfigError, match="needs an observation"):
        ConditionalINN(dim_x=2, dim_y=0, embedding="set")


def test_config_selects_the_summary_for_the_cli() -> None:
    cfg = resolve_config({"model": {"embedding": "set", "set_dim": 2, "embedding_dim": 6}})
    model = build_model_from_config(cfg["model"], cfg["objective"], 2, 20, seed=0)
    assert isinstance(model.embedding, SetSummary) and model.set_shape == (10, 2)
    cnf = resolve_config({"model": {"kind": "cnf", "embedding": "set"}})
    assert isinstance(
        build_model_from_config(cnf["model"], cnf["objective"], 2, 5, seed=0).embedding,
        SetSummary,
    )
    # the vector summary stays the default, chosen by embedding_dim alone
    plain = resolve_config({"model": {"embedding_dim": 6}})
    mlp = build_model_from_config(plain["model"], plain["objective"], 2, 20, seed=0)
    assert isinstance(mlp.embedding, MLP) and mlp.set_shape is None
    with pytest.raises(ConfigError, match=r"model.embedding.*allowed: mlp, set"):
        resolve_config({"model": {"embedding": "deepsets"}})
    with pytest.raises(ConfigError, match="model.embedding: not a setting of model.kind=inn"):
        resolve_config({"model": {"kind": "inn", "embedding": "set"}})
    with pytest.raises(ConfigError, match="model.set_dim"):
        resolve_config({"model": {"embedding": "set", "set_dim": "two"}})


def test_set_models_save_and_load(tmp_path: Path) -> None:
    model = ConditionalINN(
        dim_x=2,
        dim_y=M * D,
        blocks=1,
        hidden=8,
        embedding="set",
        set_dim=D,
        embedding_dim=3,
        embedding_hidden=8,
    )
    post = Posterior(model)
    post.save(tmp_path / "set")
    back = vinaflow.load(tmp_path / "set")
    assert back.model.set_shape == (M, D)
    sets = torch.randn(3, M, D)
    assert torch.equal(back.sample(sets, 20, seed=1), post.sample(sets, 20, seed=1))
    # files of the vector models are unchanged: no summary keys unless a set summary
    assert "embedding" not in ConditionalINN(dim_x=2, dim_y=3, blocks=1, hidden=8).config()
    assert "set_dim" not in ContinuousFlow(dim_x=2, dim_y=3, embedding_dim=2).config()


def test_fit_rejects_sets_without_a_set_summary() -> None:
    x, y = torch.randn(50, 1), torch.randn(50, M, 1)
    with pytest.raises(DataError, match=r"y has shape \(50, 10, 1\).*embedding='set'"):
        vinaflow.fit(x, y, steps=1, progress=False)
    with pytest.raises(DataError, match=r"set_dim=2 but y has shape \(50, 10, 1\)"):
        vinaflow.fit(x, y, embedding="set", set_dim=2, steps=1, progress=False)
    built = ConditionalINN(dim_x=1, dim_y=M * 2, embedding="set", set_dim=2, blocks=1, hidden=8)
    with pytest.raises(DataError, match=r"model takes sets shaped \(n, 10, 2\)"):
        vinaflow.fit(x, y, model=built, steps=1, progress=False)


def test_cinn_with_a_set_summary_learns_the_posterior_of_iid_draws() -> None:
    """``x ~ N(0, 1)``, ``m = 10`` draws ``y_j ~ N(x, 1)``: the posterior is
    ``N(m ybar / (m + 1), 1 / (m + 1))``, a function of the sample mean alone."""
    m = 10
    g = torch.Generator().manual_seed(0)
    x = torch.randn(2000, 1, generator=g)
    y = x[:, None, :] + torch.randn(2000, m, 1, generator=g)
    post = vinaflow.fit(
        x,
        y,
        embedding="set",
        embedding_dim=4,
        embedding_hidden=32,
        blocks=2,
        hidden=32,
        steps=450,
        lr=3e-3,
        progress=False,
    )
    assert post.model.set_shape == (m, 1)
    x_obs = torch.randn(20, 1, generator=g)
    y_obs = x_obs[:, None, :] + torch.randn(20, m, 1, generator=g)
    s = post.sample(y_obs, 2000, seed=0)
    exact = y_obs.mean(1) * m / (m + 1)
    sd = (1 / (m + 1)) ** 0.5
    assert (s.mean(1) - exact).abs().max() < 0.35 * sd, (s.mean(1) - exact).abs().max()
    assert float(s.std(1).mean()) == pytest.approx(sd, rel=0.12)
    # the sample mean is all that matters: two sets with the same mean, same posterior
    # (evenly spread values of about the data's spread around the first set's mean)
    other = y_obs[:1].mean(1, keepdim=True) + torch.linspace(-1.5, 1.5, m)[None, :, None]
    diff = post.sample(other, 4000, seed=1).mean(1) - post.sample(y_obs[:1], 4000, seed=1).mean(1)
    assert float(diff.abs().max()) < 0.35 * sd
