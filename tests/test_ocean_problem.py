"""The ocean-acoustics problem: shapes, noise model, likelihood and the exact grid posterior."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch.distributions import Normal

from vinaflow.errors import ConfigError, DataError
from vinaflow.problems import make_problem
from vinaflow.problems.grid_posterior import GridPosterior
from vinaflow.problems.ocean_acoustics import OceanAcousticsProblem


@pytest.fixture(scope="module")
def problem() -> OceanAcousticsProblem:
    return OceanAcousticsProblem()


def test_prior_simulate_and_layout(problem):
    assert problem.name == "ocean-acoustics"
    assert problem.param_names == ["water_depth", "sediment_sound_speed"]
    assert (problem.dim_x, problem.dim_y) == (2, 70)
    g = torch.Generator().manual_seed(0)
    x = problem.sample_prior(64, g)
    assert x.shape == (64, 2)
    assert (x[:, 0] >= 200.5).all() and (x[:, 0] <= 236.5).all()
    assert (x[:, 1] >= 1532).all() and (x[:, 1] <= 1592).all()
    y = problem.simulate(x, g)
    assert y.shape == (64, 70) and y.dtype == x.dtype and torch.isfinite(y).all()
    y0 = problem.simulate_noise_free(x)
    assert y0.shape == (64, 70)
    # layout: all real parts (tone-major, receivers fastest), then all imaginary parts
    q = problem.observe(x[:3, 0].double().numpy(), x[:3, 1].double().numpy())
    np.testing.assert_allclose(y0[:3, :35].double().numpy(), q.real.reshape(3, 35), rtol=1e-6)
    np.testing.assert_allclose(y0[:3, 35:].double().numpy(), q.imag.reshape(3, 35), rtol=1e-6)
    np.testing.assert_allclose(problem.to_complex(problem.from_complex(q)), q)
    # the observation is the normalised pressure of the waveguide
    p = problem.pressure(x[:3, 0].double().numpy(), x[:3, 1].double().numpy())
    np.testing.assert_allclose(q, p / np.sqrt(problem.mean_power)[None, :, None])


def test_registry_and_describe_round_trip(problem):
    made = make_problem({"name": "ocean-acoustics", "snr_db": 5.0})
    assert isinstance(made, OceanAcousticsProblem) and made.snr_db == 5.0
    d = problem.describe()
    params = {k: v for k, v in d.items() if k not in ("dim_x", "dim_y", "param_names")}
    again = make_problem(params)
    x = problem.sample_prior(4, torch.Generator().manual_seed(1))
    torch.testing.assert_close(again.simulate_noise_free(x), problem.simulate_noise_free(x))


def test_noise_matches_the_stated_snr(problem):
    g = torch.Generator().manual_seed(2)
    x = problem.sample_prior(1, g).repeat(2000, 1)
    y = problem.simulate(x, g).double()
    noise = problem.to_complex(y - problem.simulate_noise_free(x[:1]).double())  # (n, F, R)
    s2 = problem.noise_variance
    np.testing.assert_allclose(s2, 10 ** (-problem.snr_db / 10), rtol=1e-12)  # normalised
    var = np.mean(np.abs(noise) ** 2, axis=(0, 2))
    np.testing.assert_allclose(var, s2, rtol=0.06)
    # circular: real and imaginary parts share the variance and are uncorrelated
    re, im = noise.real, noise.imag
    np.testing.assert_allclose(np.var(re, axis=(0, 2)), s2 / 2, rtol=0.08)
    np.testing.assert_allclose(np.var(im, axis=(0, 2)), s2 / 2, rtol=0.08)
    assert np.abs(np.mean(re * im, axis=(0, 2))).max() < 0.05 * s2.max()
    # SNR: the prior-mean array power of each tone is 1 in normalised units
    xs = problem.sample_prior(1500, g)
    power = np.mean(np.abs(problem.to_complex(problem.simulate_noise_free(xs))) ** 2, axis=(0, 2))
    snr = 10 * np.log10(power / s2)
    assert np.abs(snr - problem.snr_db).max() < 0.5


def test_log_likelihood_is_the_gaussian_of_the_simulator(problem):
    g = torch.Generator().manual_seed(3)
    x = problem.sample_prior(5, g).double()
    y = problem.simulate(x, g).double()
    ll = problem.log_likelihood(x, y)
    scale = torch.as_tensor(np.repeat(np.sqrt(problem.noise_variance / 2), 5)).repeat(2)
    ref = Normal(problem.simulate_noise_free(x).double(), scale).log_prob(y).sum(1)
    torch.testing.assert_close(ll, ref)


def test_lattice_interpolation_is_far_below_the_noise(problem):
    lat = problem.lattice
    rng = np.random.default_rng(4)
    d, c = rng.uniform(200.5, 236.5, 60), rng.uniform(1532, 1592, 60)
    exact = problem.observe(d, c).reshape(60, -1)
    err = np.abs(lat(d, c) - exact)
    assert err.max() < 2e-3  # unit-power field; noise std is 0.3 at 10 dB
    assert np.sqrt(np.mean(err**2)) < 3e-4


def test_grid_loglik_matches_the_exact_likelihood(problem):
    g = torch.Generator().manual_seed(5)
    x = problem.sample_prior(1, g)
    y = problem.simulate(x, g)[0]
    post = problem.grid_posterior(y)
    pts = post.sample(200, g)
    exact = problem.log_likelihood(pts, y).numpy()
    grid = post.log_density_at(pts.numpy())
    diff = exact - grid  # a constant: the log evidence, log prior density and |y|^2
    assert np.std(diff) < 0.05


def test_importance_likelihood_matches_the_modal_sum(problem):
    g = torch.Generator().manual_seed(6)
    x = problem.sample_prior(1, g)
    y = problem.simulate(x, g)[0]
    bulk = problem.grid_posterior(y).sample(300, g).double()
    anywhere = problem.sample_prior(300, g).double()
    pts = torch.cat([bulk, anywhere])
    diff = (problem.log_likelihood(pts, y) - problem.importance_log_likelihood(pts, y)).numpy()
    diff -= diff[:300].mean()  # the dropped normalising constant
    assert np.abs(diff[:300]).max() < 0.02
    assert np.abs(diff[300:]).max() < 0.1
    with pytest.raises(DataError, match="one observation"):
        problem.importance_log_likelihood(pts, torch.stack([y, y]))


def test_high_snr_posterior_concentrates_at_the_truth():
    problem = OceanAcousticsProblem(snr_db=30.0)
    x = torch.tensor([[218.3, 1561.7]], dtype=torch.float64)
    y = problem.simulate_noise_free(x)[0]  # "noise-free-ish": the noise-free observation
    post = problem.grid_posterior(y)
    mean, std = post.mean.numpy(), post.std.numpy()
    assert np.all(np.abs(mean - x[0].numpy()) < 3 * std + 1e-3)
    assert std[0] < 0.05 and std[1] < 1.0  # metres, m/s
    ci = post.credible_interval(0.95).numpy()
    assert np.all((ci[:, 0] <= x[0].numpy()) & (x[0].numpy() <= ci[:, 1]))
    assert post.effective_cells > 300  # refined far below the base cells (0.14 m)
    assert post.frontier_mass < 1e-6
    s = problem.reference_posterior(y, 1000, torch.Generator().manual_seed(0))
    assert s.shape == (1000, 2) and s.dtype == torch.get_default_dtype()
    assert np.abs(s.double().mean(0).numpy() - mean).max() < 0.2 * std.max() + 0.05


def test_credible_intervals_cover_the_truth_at_the_nominal_rate(problem):
    # SBC-style: with x ~ prior and y ~ p(y | x), the 95% interval holds x about 95% of
    # the time. Binomial(40, 0.95): P(hits <= 33) < 0.01.
    g = torch.Generator().manual_seed(6)
    x = problem.sample_prior(40, g).double()
    y = problem.simulate(x, g).double()
    hits = np.zeros(2, dtype=int)
    ranks = []
    for i in range(40):
        post = problem.grid_posterior(y[i])
        ci = post.credible_interval(0.95).numpy()
        hits += (ci[:, 0] <= x[i].numpy()) & (x[i].numpy() <= ci[:, 1])
        ranks.append([float(post.cdf(a, x[i, a].item())) for a in (0, 1)])
    assert hits.min() >= 34
    ranks = np.asarray(ranks)  # posterior CDF at the truth: uniform under calibration
    assert np.all(np.abs(ranks.mean(0) - 0.5) < 0.15)


def test_grid_posterior_of_a_known_gaussian():
    # Narrow, correlated Gaussian likelihood well inside the box: closed-form moments.
    mu = np.array([0.3, -0.2])
    sd = np.array([2e-3, 5e-2])
    rho = 0.8
    cov = np.array([[sd[0] ** 2, rho * sd[0] * sd[1]], [rho * sd[0] * sd[1], sd[1] ** 2]])
    prec = np.linalg.inv(cov)

    def loglik(p):
        d = p - mu
        return -0.5 * np.einsum("ni,ij,nj->n", d, prec, d)

    post = GridPosterior(loglik, (-1, -1), (1, 1), ("a", "b"))
    assert np.all(np.abs(post.mean.numpy() - mu) < 0.02 * sd)
    np.testing.assert_allclose(post.std.numpy(), sd, rtol=0.02)
    ci = post.credible_interval(0.95).numpy()
    assert np.all(np.abs(ci[:, 0] - (mu - 1.959964 * sd)) < 0.03 * sd)
    assert np.all(np.abs(ci[:, 1] - (mu + 1.959964 * sd)) < 0.03 * sd)
    s = post.sample(20000, torch.Generator().manual_seed(0)).numpy()
    np.testing.assert_allclose(np.corrcoef(s.T)[0, 1], rho, atol=0.02)
    np.testing.assert_allclose(s.std(0), sd, rtol=0.03)
    for name, (edges, dens) in post.marginals.items():
        assert name in ("a", "b")
        assert abs(np.sum(dens * np.diff(edges)) - 1) < 1e-9
    a, b, lp = post.log_density(50)
    assert lp.shape == (50, 50) and np.isfinite(lp).any()
    # normalised: exp(log density) integrates to 1 over the window that holds the mass
    da, db = a[1] - a[0], b[1] - b[0]
    assert abs(np.exp(lp).sum() * da * db - 1) < 0.05
    assert post.effective_cells > 500


def test_grid_posterior_finds_both_modes_with_their_masses():
    centres = np.array([[-0.5, 0.2], [0.6, -0.4]])
    sd = 3e-3

    def loglik(p):
        d1 = np.sum((p - centres[0]) ** 2, 1) / (2 * sd**2)
        d2 = np.sum((p - centres[1]) ** 2, 1) / (2 * sd**2)
        return np.logaddexp(-d1 + math.log(0.25), -d2 + math.log(0.75))

    post = GridPosterior(loglik, (-1, -1), (1, 1))
    s = post.sample(8000, torch.Generator().manual_seed(1)).numpy()
    frac = np.mean(s[:, 0] > 0)
    assert abs(frac - 0.75) < 0.02
    assert np.abs(s[s[:, 0] > 0].std(0) - sd).max() < 0.1 * sd


@pytest.mark.parametrize(
    "kwargs,match",
    [
        ({"speed_bounds": (1450.0, 1600.0)}, "must exceed the water"),
        ({"depth_bounds": (-5.0, 100.0)}, "depth_bounds"),
        ({"depth_bounds": (230.0, 210.0)}, "high > low"),
        ({"receiver_depths": (100.0, 210.0)}, "below the seabed"),
        ({"frequencies": (0.0, 100.0)}, "frequencies"),
        ({"source_range": -3000.0}, "source_range"),
        ({"source_depth": 250.0}, "source_depth"),
        ({"attenuation": -0.1}, "attenuation"),
        ({"snr_db": float("nan")}, "snr_db"),
    ],
)
def test_constructor_rejects_unphysical_settings(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        OceanAcousticsProblem(**kwargs)


def test_bad_parameters_and_observations(problem):
    with pytest.raises(DataError, match="shape"):
        problem.simulate(torch.zeros(3, 3))
    with pytest.raises(DataError, match="non-finite"):
        problem.simulate(torch.tensor([[float("nan"), 1560.0]]))
    with pytest.raises(DataError, match="water_depth"):
        problem.simulate(torch.tensor([[150.0, 1560.0]]))
    with pytest.raises(DataError, match="sediment_sound_speed"):
        problem.simulate(torch.tensor([[220.0, 1490.0]]))
    y = torch.zeros(70)
    with pytest.raises(DataError, match="70 entries"):
        problem.grid_posterior(torch.zeros(69))
    with pytest.raises(DataError, match="non-finite"):
        problem.reference_posterior(torch.full((70,), float("inf")), 10)
    with pytest.raises(DataError, match="one observation"):
        problem.grid_posterior(torch.zeros(2, 70))
    assert problem.log_likelihood(torch.tensor([[220.0, 1560.0]]), y).shape == (1,)
