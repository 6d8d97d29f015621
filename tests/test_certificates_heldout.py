"""Exact log-posteriors behind the held-out certificate benchmark
(``benchmarks/exact_posteriors.py``, ``benchmarks/certificates_heldout.py``): they integrate
to one, match a brute-force grid, and give the exact posterior an exact KL of zero."""

from __future__ import annotations

import math
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks import certificates_heldout as ho  # noqa: E402
from benchmarks.exact_posteriors import (  # noqa: E402
    gaussian_mixture_log_posterior,
    two_moons_log_likelihood,
    two_moons_log_normaliser,
    two_moons_log_posterior,
)
from benchmarks.peers.tasks import TwoMoonsTask  # noqa: E402


def _grid(lo: float, hi: float, h: float) -> torch.Tensor:
    g = torch.arange(lo + h / 2, hi, h, dtype=torch.float64)
    return torch.cartesian_prod(g, g)


def test_gaussian_mixture_posterior_integrates_to_one_over_the_box() -> None:
    # observations near the box edge too, where truncation changes the normaliser
    ys = torch.tensor([[0.3, -5.0], [9.8, 9.5], [-10.6, 2.0], [11.5, -11.0]], dtype=torch.float64)
    h = 0.01
    grid = _grid(-10.0, 10.0, h)
    for y in ys:
        lp = gaussian_mixture_log_posterior(grid, y[None].expand(grid.shape[0], 2))
        assert abs(float(lp.exp().sum()) * h * h - 1.0) < 1e-4, y
    # outside the box: no mass
    out = gaussian_mixture_log_posterior(torch.tensor([[10.5, 0.0]]), torch.zeros(1, 2))
    assert math.isinf(float(out)) and float(out) < 0


def test_two_moons_normaliser_matches_a_grid_and_converges() -> None:
    task = TwoMoonsTask()
    g = torch.Generator().manual_seed(3)
    theta = task.sample_prior(40, g)
    y = task.simulate(theta, g).double()
    # keep observations where the box cuts the moons (Z < 2) and one where it does not
    logz = two_moons_log_normaliser(y)
    cut = (logz < math.log(2.0) - 1e-3).nonzero().flatten()[:2].tolist()
    assert cut, "no truncated observation drawn"
    h = 0.001
    grid = _grid(-1.0, 1.0, h)
    for i in cut + [int((logz == math.log(2.0)).nonzero()[0])]:
        yi = y[i : i + 1].expand(grid.shape[0], 2)
        z_grid = float(two_moons_log_likelihood(grid, yi).exp().sum()) * h * h
        assert abs(z_grid / math.exp(float(logz[i])) - 1.0) < 5e-3, (i, z_grid)
    # the posterior (normaliser per row) on a coarse subgrid around the first moon
    i = cut[0]
    lp = two_moons_log_posterior(theta[i : i + 1].double(), y[i : i + 1])
    assert math.isfinite(float(lp))
    fine = two_moons_log_normaliser(y, angles=16384)
    assert float((fine - logz).abs().max()) < 1e-6


def test_exact_posterior_samplers_have_zero_exact_kl_and_perturbed_ones_positive() -> None:
    g = torch.Generator().manual_seed(0)
    for case in (ho.make_task("gaussian_mixture"), ho.make_task("two_moons")):
        theta = case.sample_prior(4000, g)
        y = case.simulate(theta, g)
        exact = case.exact_model()
        kl, se = ho.exact_kl(case, exact, theta, y)
        assert abs(kl) < 1e-9 and se < 1e-9
        # the samplers draw the exact posterior: its log-density at its own draws has the
        # same mean as at the true parameters (both are -H(X | Y) in expectation)
        draws = exact.sample(y[:2000], 1, generator=g)[:, 0]
        lp_true = case.log_posterior(theta[:2000], y[:2000]).mean()
        lp_draw = case.log_posterior(draws.double(), y[:2000]).mean()
        assert abs(float(lp_true - lp_draw)) < 0.15
        pert = case.perturbed_models()[0][1]
        kl_p, se_p = ho.exact_kl(case, pert, theta, y)
        assert kl_p > 3 * se_p > 0
