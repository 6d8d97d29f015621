"""Models: log-densities normalise, encode/generate invert, posterior API and model files."""

from __future__ import annotations

import json
import math

import pytest
import torch

from vinaflow.errors import DataError, ModelFileError
from vinaflow.models import ConditionalINN, JointINN, NormalizingFlow, Posterior
from vinaflow.models.serialization import load_model, save_model


def _perturb(module: torch.nn.Module, scale: float = 0.3) -> None:
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))


def _grid_2d(lim: float = 6.0, n: int = 241) -> tuple[torch.Tensor, float]:
    t = torch.linspace(-lim, lim, n)
    xx, yy = torch.meshgrid(t, t, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1), float((t[1] - t[0]) ** 2)


def test_cinn_log_prob_integrates_to_one() -> None:
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=3, hidden=16)
    _perturb(model.flow, 0.2)
    model.x_norm.mean.fill_(0.5)
    model.x_norm.std.fill_(1.3)
    post = Posterior(model)
    grid, cell = _grid_2d(9.0, 301)
    for y in (-1.0, 0.7):
        mass = post.log_prob(grid, [y]).exp().sum() * cell
        assert abs(float(mass) - 1.0) < 0.02


def test_cinn_log_prob_matches_samples() -> None:
    # The density the model reports must be the density of its own samples:
    # E_q[log q] estimated from samples equals -entropy within Monte-Carlo error,
    # and the histogram of a 1-D marginal matches the integrated log_prob.
    model = ConditionalINN(dim_x=1, dim_y=1, blocks=3, hidden=16)
    _perturb(model.flow, 0.3)
    post = Posterior(model)
    samples = post.sample([0.2], 40000, generator=torch.Generator().manual_seed(0))[0]
    grid = torch.linspace(-8, 8, 4001)[:, None]
    dens = post.log_prob(grid, [0.2]).exp()
    cdf = torch.cumsum(dens, 0) * (grid[1, 0] - grid[0, 0])
    for q in (0.1, 0.5, 0.9):
        x_q = grid[int(torch.searchsorted(cdf, torch.tensor([q]))), 0]
        assert abs(float((samples[:, 0] <= x_q).float().mean()) - q) < 0.015


def test_joint_inn_generate_inverts_encode() -> None:
    model = JointINN(dim_x=4, dim_y=2, latent_dim=2, blocks=3, hidden=16, pad_noise=0.0)
    _perturb(model.flow, 0.2)
    x = torch.randn(32, 4)
    enc = model.encode(x)
    assert enc.extra is None and enc.y_hat.shape == (32, 2) and enc.z.shape == (32, 2)
    x_back = model.generate(enc.y_hat, enc.z)
    assert torch.allclose(x_back, x, atol=1e-4)


def test_joint_inn_padding_and_output_extra() -> None:
    model = JointINN(dim_x=5, dim_y=1, latent_dim=2, blocks=2, hidden=16)
    assert model.total_dim == 5 and model.n_pad == 0 and model.n_extra == 2
    model2 = JointINN(dim_x=2, dim_y=3, latent_dim=4, blocks=2, hidden=16)
    assert model2.total_dim == 7 and model2.n_pad == 5
    out = model2.generate(torch.zeros(6, 3), torch.randn(6, 4))
    assert out.shape == (6, 2)
    assert torch.isfinite(model.nll(torch.randn(8, 5), torch.randn(8, 1))).all()


def test_flow_log_prob_normalises_and_samples() -> None:
    flow = NormalizingFlow(dim=2, blocks=3, hidden=16)
    _perturb(flow.flow, 0.2)
    grid, cell = _grid_2d(9.0, 301)
    mass = flow.log_prob(grid).exp().sum() * cell
    assert abs(float(mass) - 1.0) < 0.02
    assert flow.sample(7).shape == (7, 2)


@pytest.mark.parametrize("shape", [(2,), (3, 2)])
def test_posterior_sample_shapes(shape: tuple[int, ...]) -> None:
    post = Posterior(ConditionalINN(dim_x=3, dim_y=2, blocks=1, hidden=8))
    out = post.sample(torch.zeros(shape), 11)
    n_obs = 1 if len(shape) == 1 else shape[0]
    assert out.shape == (n_obs, 11, 3)


@pytest.mark.parametrize(
    "bad",
    [
        torch.zeros(3),
        torch.zeros(2, 3),
        torch.tensor([0.0, float("nan")]),
        torch.tensor([[float("inf"), 0.0]]),
        torch.zeros(0, 2),
        "text",
    ],
)
def test_posterior_rejects_bad_observations(bad: object) -> None:
    post = Posterior(ConditionalINN(dim_x=3, dim_y=2, blocks=1, hidden=8))
    with pytest.raises(DataError):
        post.sample(bad, 5)


def test_joint_inn_has_no_log_prob() -> None:
    post = Posterior(JointINN(dim_x=2, dim_y=1, blocks=1, hidden=8))
    assert not post.has_log_prob
    with pytest.raises(NotImplementedError):
        post.log_prob(torch.zeros(1, 2), [0.0])


@pytest.mark.parametrize("kind", ["cinn", "inn", "nf"])
def test_save_load_round_trip(tmp_path, kind: str) -> None:  # noqa: ANN001
    if kind == "cinn":
        model = ConditionalINN(dim_x=2, dim_y=3, blocks=2, hidden=8, embedding_dim=4)
    elif kind == "inn":
        model = JointINN(dim_x=2, dim_y=3, blocks=2, hidden=8, arch="iresnet")
    else:
        model = NormalizingFlow(dim=2, blocks=2, hidden=8, base="student-t", base_df=3.0)
    _perturb(model, 0.1)
    save_model(model, tmp_path)
    loaded, meta = load_model(tmp_path)
    assert meta["format_version"] == 1
    for (k, a), (_, b) in zip(model.state_dict().items(), loaded.state_dict().items(), strict=True):
        assert torch.equal(a, b), k


def test_load_model_errors(tmp_path) -> None:  # noqa: ANN001
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=8)
    with pytest.raises(ModelFileError, match="not found"):
        load_model(tmp_path)
    save_model(model, tmp_path)
    weights = tmp_path / "model.safetensors"
    data = weights.read_bytes()
    weights.write_bytes(data[: len(data) // 2])
    with pytest.raises(ModelFileError, match="truncated"):
        load_model(tmp_path)
    save_model(model, tmp_path)
    meta = json.loads((tmp_path / "model.json").read_text())
    meta["model"]["hidden"] = 16
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="does not match"):
        load_model(tmp_path)
    meta["format_version"] = 99
    (tmp_path / "model.json").write_text(json.dumps(meta))
    with pytest.raises(ModelFileError, match="format_version"):
        load_model(tmp_path)


def test_standardizer_constant_column() -> None:
    from vinaflow.models import Standardizer

    s = Standardizer(2).fit(torch.tensor([[1.0, 5.0], [2.0, 5.0], [3.0, 5.0]]))
    out = s(torch.tensor([[2.0, 5.0]]))
    assert torch.isfinite(out).all() and float(out[0, 1]) == 0.0
    assert math.isclose(float(s.std[1]), 1.0)
