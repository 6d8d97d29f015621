"""Sinkhorn divergence, MMD and prior penalties."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vinaflow.errors import ConfigError, DataError
from vinaflow.objectives import (
    ARDIZZONE_WIDTHS,
    box_prior_penalty,
    gaussian_prior_penalty,
    mmd_gaussian,
    mmd_imq,
    sinkhorn_divergence,
)


@pytest.fixture(autouse=True)
def _one_thread():
    # small tensors: intra-op threads only add contention on a shared 2-core machine
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


def _cloud(n: int, d: int = 2, seed: int = 0) -> torch.Tensor:
    return torch.randn(n, d, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)


# -------------------------------------------------------------------------- Sinkhorn


def test_sinkhorn_identical_clouds_is_zero():
    x = _cloud(150)
    assert abs(float(sinkhorn_divergence(x, x.clone()))) < 1e-6


def test_sinkhorn_translation_is_half_squared_shift():
    # p = 2, cost |a-b|^2 / 2: for y = x + delta, OT_eps(x, y) = OT_eps(x, x) + |delta|^2/2
    # for every eps (the cross term averages out), so the debiased value is exactly that
    x = _cloud(150)
    delta = torch.tensor([0.5, -0.3], dtype=torch.float64)
    expected = 0.5 * float(delta @ delta)
    for blur in (0.01, 0.05):
        val = float(sinkhorn_divergence(x, x + delta, blur=blur))
        assert val == pytest.approx(expected, rel=0.02)


def test_sinkhorn_positive_and_differentiable():
    x = _cloud(100, seed=1).requires_grad_(True)
    y = _cloud(120, seed=2) * 0.7 + 1.0
    s = sinkhorn_divergence(x, y, blur=0.05)
    assert float(s.detach()) > 0.1
    s.backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    # p = 1 works too and is positive for distinct clouds
    assert float(sinkhorn_divergence(x.detach(), y, p=1)) > 0.1


def test_sinkhorn_input_checks():
    x = _cloud(10)
    with pytest.raises(DataError):
        sinkhorn_divergence(x[:, 0], x)
    with pytest.raises(DataError):
        sinkhorn_divergence(x, _cloud(10, d=3))
    bad = x.clone()
    bad[0, 0] = math.nan
    with pytest.raises(DataError):
        sinkhorn_divergence(bad, x)
    with pytest.raises(ConfigError):
        sinkhorn_divergence(x, x, blur=0.0)
    with pytest.raises(ConfigError):
        sinkhorn_divergence(x, x, p=3)
    with pytest.raises(ConfigError):
        sinkhorn_divergence(x, x, scaling=1.5)


# ------------------------------------------------------------------------------- MMD


def _brute_mmd(x, y, kernel, unbiased):
    x, y = x.numpy(), y.numpy()
    n, m = len(x), len(y)
    sxx = syy = sxy = 0.0
    for i in range(n):
        for j in range(n):
            if not (unbiased and i == j):
                sxx += kernel(x[i], x[j])
    for i in range(m):
        for j in range(m):
            if not (unbiased and i == j):
                syy += kernel(y[i], y[j])
    for i in range(n):
        for j in range(m):
            sxy += kernel(x[i], y[j])
    if unbiased:
        return sxx / (n * (n - 1)) + syy / (m * (m - 1)) - 2 * sxy / (n * m)
    return sxx / n**2 + syy / m**2 - 2 * sxy / (n * m)


def _imq(a, b, widths=ARDIZZONE_WIDTHS):
    d2 = float(np.sum((a - b) ** 2))
    return sum(h * h / (h * h + d2) for h in widths)


@pytest.mark.parametrize("unbiased", [True, False])
def test_mmd_matches_brute_force(unbiased):
    x, y = _cloud(6, 3, seed=3) * 0.3, _cloud(5, 3, seed=4) * 0.3 + 0.1
    got = float(mmd_imq(x, y, unbiased=unbiased))
    assert got == pytest.approx(_brute_mmd(x, y, _imq, unbiased), rel=1e-10, abs=1e-12)
    widths = (0.5, 2.0)
    got = float(mmd_imq(x, y, widths=widths, unbiased=unbiased))
    want = _brute_mmd(x, y, lambda a, b: _imq(a, b, widths), unbiased)
    assert got == pytest.approx(want, rel=1e-10, abs=1e-12)
    sigma = 0.7

    def gauss(a, b):
        return math.exp(-float(np.sum((a - b) ** 2)) / (2 * sigma**2))

    got = float(mmd_gaussian(x, y, bandwidth=sigma, unbiased=unbiased))
    assert got == pytest.approx(_brute_mmd(x, y, gauss, unbiased), rel=1e-10, abs=1e-12)


def test_mmd_gaussian_median_heuristic():
    x, y = _cloud(7, 2, seed=5), _cloud(4, 2, seed=6) + 0.5
    z = torch.cat([x, y]).numpy()
    d = [np.linalg.norm(z[i] - z[j]) for i in range(len(z)) for j in range(i + 1, len(z))]
    # torch.median returns the lower of the two middle values for even counts
    sigma = float(np.sort(d)[(len(d) - 1) // 2])
    assert float(mmd_gaussian(x, y)) == pytest.approx(float(mmd_gaussian(x, y, sigma)), rel=1e-10)


def test_mmd_same_vs_shifted():
    x, y = _cloud(300, seed=7), _cloud(300, seed=8)
    same = float(mmd_imq(x, y))
    shifted = float(mmd_imq(x, y + 1.0))
    assert abs(same) < 0.01
    assert shifted > 0.05 and shifted > 10 * abs(same)
    assert abs(float(mmd_gaussian(x, y))) < 0.01
    assert float(mmd_gaussian(x, y + 1.0)) > 0.05
    # the biased (V-statistic) version is never negative
    assert float(mmd_imq(x, y, unbiased=False)) >= 0.0


def test_mmd_gradients_and_checks():
    x = _cloud(20, seed=9).requires_grad_(True)
    mmd_imq(x, _cloud(20, seed=10) + 0.5).backward()
    assert torch.isfinite(x.grad).all() and x.grad.abs().sum() > 0
    with pytest.raises(DataError):
        mmd_imq(_cloud(1), _cloud(5))  # the U-statistic needs two points per sample
    assert math.isfinite(float(mmd_imq(_cloud(1), _cloud(5), unbiased=False)))
    with pytest.raises(ConfigError):
        mmd_imq(_cloud(5), _cloud(5), widths=())
    with pytest.raises(ConfigError):
        mmd_imq(_cloud(5), _cloud(5), widths=(0.1, -1.0))
    with pytest.raises(ConfigError):
        mmd_gaussian(_cloud(5), _cloud(5), bandwidth=0.0)
    with pytest.raises(DataError):
        mmd_gaussian(_cloud(5, 2), _cloud(5, 3))
    # all points equal: the median heuristic must not divide by zero
    z = torch.zeros(4, 2)
    assert float(mmd_gaussian(z, z)) == pytest.approx(0.0, abs=1e-12)


# ---------------------------------------------------------------------------- priors


def test_box_prior_penalty():
    inside = torch.rand(32, 3) * 1.8 - 0.9
    assert float(box_prior_penalty(inside, -1.0, 1.0)) == 0.0
    x = torch.tensor([[2.0, -3.0, 0.0], [0.0, 0.0, 0.0]])
    # squared distance to the box: (2-1)^2 + (-1+3)^2 = 5 and 0; batch mean 2.5
    assert float(box_prior_penalty(x, -1.0, 1.0)) == pytest.approx(2.5)
    low, high = torch.tensor([0.0, -5.0, -1.0]), torch.tensor([1.0, -4.0, 1.0])
    # per-dimension box: (2-1)^2 + (-3+4)^2 + 0 = 2; (0+4)^2 = 16; mean 9
    assert float(box_prior_penalty(x, low, high)) == pytest.approx(9.0)
    xg = x.clone().requires_grad_(True)
    box_prior_penalty(xg, -1.0, 1.0).backward()
    torch.testing.assert_close(xg.grad, torch.tensor([[1.0, -2.0, 0.0], [0.0, 0.0, 0.0]]))


def test_gaussian_prior_penalty():
    x = torch.tensor([[1.0, 2.0], [-1.0, 0.0], [3.0, 1.0]])
    loc, scale = torch.tensor([0.5, -1.0]), torch.tensor([2.0, 0.5])
    want = np.mean([0.5 * np.sum(((r - loc.numpy()) / scale.numpy()) ** 2) for r in x.numpy()])
    assert float(gaussian_prior_penalty(x, loc, scale)) == pytest.approx(float(want))
    assert float(gaussian_prior_penalty(x)) == pytest.approx(float(0.5 * (x**2).sum(1).mean()))


def test_prior_checks():
    x = torch.zeros(4, 2)
    with pytest.raises(DataError):
        gaussian_prior_penalty(torch.zeros(4))
    with pytest.raises(DataError):
        box_prior_penalty(torch.zeros(0, 2), -1.0, 1.0)
    with pytest.raises(ConfigError):
        gaussian_prior_penalty(x, torch.zeros(3))
    with pytest.raises(ConfigError):
        gaussian_prior_penalty(x, 0.0, 0.0)
    with pytest.raises(ConfigError):
        gaussian_prior_penalty(x, math.nan)
    with pytest.raises(ConfigError):
        box_prior_penalty(x, 1.0, 1.0)
    with pytest.raises(ConfigError):
        box_prior_penalty(x, torch.tensor([0.0, 2.0]), torch.tensor([1.0, 1.0]))
    with pytest.raises(ConfigError):
        box_prior_penalty(x, torch.zeros(2, 2), 1.0)
