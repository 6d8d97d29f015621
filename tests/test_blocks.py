"""Tests of the invertible blocks: round trips, log-dets vs brute force, i-ResNet numerics."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.func import functional_call

from block_checks import brute_logdet, perturb
from vinaflow.blocks import (
    ActNorm,
    AffineCoupling,
    FixedPermutation,
    InvertibleSequence,
    IResNetBlock,
    build_flow,
)
from vinaflow.blocks.iresnet import _residual
from vinaflow.errors import ConfigError, ConvergenceError, DataError
from vinaflow.nets import MLP

__all__: list[str] = []

BATCH = 64
N_BRUTE = 5  # samples whose full Jacobian is computed by autograd


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


FACTORIES = {
    "coupling": lambda d, cd: AffineCoupling(d, cd, hidden=16),
    "coupling_tanh": lambda d, cd: AffineCoupling(d, cd, hidden=16, clamp_activation="tanh"),
    "permutation": lambda d, cd: FixedPermutation(d, seed=3),
    "actnorm": lambda d, cd: ActNorm(d),
    "iresnet_fwd": lambda d, cd: IResNetBlock(d, cd, hidden=16, explicit="forward"),
    "iresnet_inv": lambda d, cd: IResNetBlock(d, cd, hidden=16, explicit="inverse"),
    "flow_coupling": lambda d, cd: build_flow(
        d, cd, arch="coupling", blocks=2, hidden=16, actnorm=True
    ),
    "flow_iresnet": lambda d, cd: build_flow(
        d, cd, arch="iresnet", blocks=2, hidden=16, actnorm=True, explicit="inverse"
    ),
}


@pytest.mark.parametrize("kind", list(FACTORIES))
@pytest.mark.parametrize("dim", [1, 2, 5])
@pytest.mark.parametrize("cond_dim", [0, 3])
def test_roundtrip_and_logdet(kind: str, dim: int, cond_dim: int) -> None:
    block = perturb(FACTORIES[kind](dim, cond_dim))
    if block.cond_dim == 0:
        cond_dim = 0  # unconditional blocks: test without c
    x = torch.randn(BATCH, dim)
    c = torch.randn(BATCH, cond_dim) if cond_dim else None

    with torch.no_grad():
        z, ld_fwd = block(x, c)
        x_back, ld_back = block(z, c, rev=True)
        # the other order: start from the latent side
        x_from_z, ld_rev = block(x, c, rev=True)
        z_back, _ = block(x_from_z, c)
    assert ld_fwd.shape == (BATCH,) and ld_back.shape == (BATCH,)
    torch.testing.assert_close(x_back, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(z_back, x, atol=1e-4, rtol=1e-4)
    torch.testing.assert_close(ld_fwd + ld_back, torch.zeros(BATCH), atol=1e-4, rtol=0)
    if kind != "permutation":
        assert ld_fwd.abs().max() > 1e-3, "perturbed block should not be volume preserving"

    n = N_BRUTE
    cb = None if c is None else c[:n]
    torch.testing.assert_close(
        ld_fwd[:n], brute_logdet(block, x[:n], cb, False), atol=2e-4, rtol=1e-4
    )
    torch.testing.assert_close(
        ld_rev[:n], brute_logdet(block, x[:n], cb, True), atol=2e-4, rtol=1e-4
    )


def test_coupling_identity_at_init_and_touches_every_coordinate() -> None:
    block = AffineCoupling(5, 2, hidden=16)
    x, c = torch.randn(8, 5), torch.randn(8, 2)
    y, ld = block(x, c)
    torch.testing.assert_close(y, x)
    torch.testing.assert_close(ld, torch.zeros(8))
    perturb(block)
    y, _ = block(x, c)
    assert ((y - x).abs() > 1e-4).all(), "both halves must be transformed"


def test_coupling_dim1_depends_on_condition_and_clamps() -> None:
    block = perturb(AffineCoupling(1, 2, hidden=16, clamp=0.5), scale=3.0)
    x = torch.ones(64, 1)
    y, ld = block(x, torch.randn(64, 2))
    assert y.std() > 1e-2  # the condition drives scale and shift
    assert ld.abs().max() < 0.5  # |s| < clamp


def test_permutation_is_fixed_and_inverted_by_argsort() -> None:
    p1, p2 = FixedPermutation(6, seed=1), FixedPermutation(6, seed=1)
    assert torch.equal(p1.perm, p2.perm)
    assert torch.equal(p1.inv_perm, torch.argsort(p1.perm))
    assert "perm" in p1.state_dict()
    x = torch.randn(4, 6)
    assert torch.equal(p1(x)[0], x[:, p1.perm])


def test_actnorm_data_init() -> None:
    an = ActNorm(3)
    x = torch.randn(256, 3) * torch.tensor([1.0, 5.0, 0.1]) + torch.tensor([3.0, -2.0, 10.0])
    y, ld = an(x)
    torch.testing.assert_close(y.mean(0), torch.zeros(3), atol=1e-4, rtol=0)
    torch.testing.assert_close(y.std(0, unbiased=False), torch.ones(3), atol=1e-4, rtol=0)
    assert bool(an.initialized)
    before = an.log_scale.detach().clone()
    an(torch.randn(256, 3))  # later batches do not re-initialise
    assert torch.equal(an.log_scale, before)

    loaded = ActNorm(3)
    loaded.load_state_dict(an.state_dict())
    assert bool(loaded.initialized)
    loaded(torch.randn(256, 3) * 7)
    assert torch.equal(loaded.log_scale, before)


def test_actnorm_rev_first_is_identity() -> None:
    an = ActNorm(2)
    z = torch.randn(32, 2) * 4 + 1
    x, ld = an(z, rev=True)
    torch.testing.assert_close(x, z)
    assert bool(an.initialized)
    torch.testing.assert_close(an(z)[0], z)  # no data init afterwards


@pytest.mark.parametrize("method", ["power", "exact"])
def test_iresnet_lipschitz_survives_adversarial_training(method: str) -> None:
    lip = 0.9
    block = IResNetBlock(4, 2, hidden=32, layers=2, lipschitz=lip, spectral_norm=method)
    opt = torch.optim.Adam(block.parameters(), lr=0.05)
    worst = 0.0
    for _ in range(150):
        x1 = torch.randn(64, 4)
        x2 = x1 + 1e-2 * torch.randn(64, 4)
        c = torch.randn(64, 2)
        params = block._params()
        ct = block.cond_linear(c)
        ratio = (
            _residual(x1, ct, params, "lipswish") - _residual(x2, ct, params, "lipswish")
        ).norm(dim=1) / (x1 - x2).norm(dim=1)
        # try to blow up both the raw weights and the Lipschitz ratio of g
        loss = -ratio.mean() - sum(lin.weight.norm() for lin in block.linears)
        opt.zero_grad()
        loss.backward()
        opt.step()
        if method == "exact":  # the bound must hold at every step
            with torch.no_grad():
                prod = 1.0
                for w in params[::2]:
                    prod *= float(torch.linalg.matrix_norm(w, ord=2))
            worst = max(worst, prod)
    assert (
        max(float(torch.linalg.matrix_norm(lin.weight.detach(), ord=2)) for lin in block.linears)
        > 10
    )
    assert worst < lip

    block.train()
    block(torch.randn(8, 4), torch.randn(8, 2))  # power iteration catches up with the last step
    assert block.lipschitz_upper_bound() < lip
    # largest singular value of the Jacobian of g on sample points
    block.eval()
    u, c = torch.randn(32, 4) * 3, torch.randn(32, 2)
    jac = torch.func.vmap(torch.func.jacrev(lambda ui, ci: block.residual(ui[None], ci[None])[0]))(
        u, c
    )
    assert torch.linalg.matrix_norm(jac, ord=2).max() < lip


def test_iresnet_convergence_error_and_explicit_direction() -> None:
    for explicit, implicit_rev in [("forward", True), ("inverse", False)]:
        block = perturb(
            IResNetBlock(3, explicit=explicit, fixed_point_max_iter=1, fixed_point_tol=1e-12)
        )
        x = torch.randn(16, 3)
        block(x, rev=not implicit_rev)  # the explicit direction never iterates
        with pytest.raises(ConvergenceError, match="fixed_point_max_iter=1"):
            block(x, rev=implicit_rev)


def test_iresnet_series_logdet_close_to_exact() -> None:
    block = IResNetBlock(
        4, hidden=16, layers=1, lipschitz=0.8, logdet="series", n_series_terms=25, n_hutchinson=64
    )
    # g close to 0.8 * identity (large log-det), plus noise so that J is not diagonal
    with torch.no_grad():
        embed = torch.zeros(16, 4)
        embed[:4] = torch.eye(4)
        block.linears[0].weight.copy_(embed + 0.1 * torch.randn(16, 4))
        block.linears[0].bias.fill_(2.0)  # LipSwish slope close to 1 there
        block.linears[1].weight.copy_(embed.T + 0.1 * torch.randn(4, 16))
    block.update_spectral_norms(100)
    block.eval()
    x = torch.randn(32, 4)
    with torch.no_grad():
        series = block(x)[1]
        block.logdet = "exact"
        exact = block(x)[1]
    assert exact.mean() > 1.0
    assert (series.mean() - exact.mean()).abs() < 0.05
    assert (series - exact).abs().max() < 0.2

    # the series is differentiable and its gradient estimates the exact one
    block.logdet = "series"
    w = block.linears[0].weight
    g_series = torch.autograd.grad(block(x)[1].mean(), w)[0]
    block.logdet = "exact"
    g_exact = torch.autograd.grad(block(x)[1].mean(), w)[0]
    cos = torch.nn.functional.cosine_similarity(g_series.flatten(), g_exact.flatten(), dim=0)
    assert cos > 0.9


@pytest.mark.parametrize("explicit", ["forward", "inverse"])
def test_iresnet_implicit_gradients_match_finite_differences(explicit: str) -> None:
    block = IResNetBlock(
        3, 2, hidden=8, explicit=explicit, fixed_point_tol=1e-13, fixed_point_max_iter=2000
    ).double()
    perturb(block, scale=1.0)
    rev = explicit == "forward"  # the implicit direction
    y = torch.randn(4, 3, dtype=torch.float64, requires_grad=True)
    c = torch.randn(4, 2, dtype=torch.float64, requires_grad=True)
    w0 = block.linears[0].weight.detach().clone().requires_grad_(True)
    wc = block.cond_linear.weight.detach().clone().requires_grad_(True)

    def f(y, c, w0, wc):
        out, ld = functional_call(
            block, {"linears.0.weight": w0, "cond_linear.weight": wc}, (y, c), {"rev": rev}
        )
        return out, ld

    assert torch.autograd.gradcheck(f, (y, c, w0, wc), eps=1e-6, atol=1e-5)


def test_iresnet_no_grad_and_state_dict() -> None:
    block = perturb(IResNetBlock(20, hidden=16))  # dim > 16: auto uses the series
    x = torch.randn(8, 20)
    with torch.no_grad():
        z, ld = block(x)
    assert ld.shape == (8,) and torch.isfinite(ld).all()
    clone = IResNetBlock(20, hidden=16).eval()
    clone.load_state_dict(block.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(clone(z, rev=True)[0], x, atol=1e-4, rtol=1e-4)


def test_build_flow_structure_and_determinism() -> None:
    flow = build_flow(3, 2, arch="coupling", blocks=3, actnorm=True, hidden=8)
    assert [type(b).__name__ for b in flow][:3] == ["ActNorm", "AffineCoupling", "FixedPermutation"]
    assert len(flow) == 9 and flow.cond_dim == 2
    again = build_flow(3, 2, arch="coupling", blocks=3, actnorm=True, hidden=8)
    for (k, a), b in zip(flow.state_dict().items(), again.state_dict().values(), strict=True):
        assert torch.equal(a, b), k
    iflow = build_flow(3, arch="iresnet", blocks=2, lipschitz=0.7, logdet="exact")
    assert [type(b).__name__ for b in iflow] == ["IResNetBlock", "IResNetBlock"]
    assert iflow[0].lipschitz == 0.7 and iflow[0].logdet == "exact"


def test_mlp() -> None:
    net = MLP(3, 2, hidden=8, layers=2, zero_init_last=True)
    assert net(torch.randn(5, 3)).abs().max() == 0
    assert sum(isinstance(m, nn.Linear) for m in net) == 3
    with pytest.raises(ConfigError, match="activation"):
        MLP(3, 2, activation="swoosh")
    with pytest.raises(ConfigError, match="hidden"):
        MLP(3, 2, hidden=0)


def test_clear_errors() -> None:
    flow = build_flow(3, 2, blocks=1, hidden=8)
    x, c = torch.randn(4, 3), torch.randn(4, 2)
    with pytest.raises(DataError, match=r"\(batch, 3\)"):
        flow(torch.randn(4, 4), c)
    with pytest.raises(DataError, match=r"\(batch, 3\)"):
        flow(torch.randn(3), c)
    with pytest.raises(DataError, match="condition"):
        flow(x)
    with pytest.raises(DataError, match="condition"):
        flow(x, torch.randn(5, 2))
    with pytest.raises(DataError, match="unconditional"):
        build_flow(3, blocks=1, hidden=8)(x, c)
    with pytest.raises(ConfigError, match="coupling"):
        build_flow(3, arch="glow")
    with pytest.raises(ConfigError, match="n_series_terms"):
        build_flow(3, arch="coupling", n_series_terms=3)
    with pytest.raises(ConfigError, match="same dim"):
        InvertibleSequence([ActNorm(2), ActNorm(3)])
    with pytest.raises(ConfigError, match="lipschitz"):
        IResNetBlock(2, lipschitz=1.0)
    with pytest.raises(ConfigError, match="explicit"):
        IResNetBlock(2, explicit="backward")
    with pytest.raises(ConfigError, match="clamp"):
        AffineCoupling(2, clamp=0)
