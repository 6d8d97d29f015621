"""Inverse kinematics problem: forward map, ABC ground truth and its cache, arm figure."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

from vinaflow.errors import ConfigError, DataError
from vinaflow.problems import make_problem
from vinaflow.problems.kinematics import InverseKinematics, abc_rejection, forward_kinematics
from vinaflow.studies.kinematics_plots import plot_arm_posterior


@pytest.fixture
def ik(tmp_path) -> InverseKinematics:
    return InverseKinematics(cache_dir=tmp_path / "cache")


def test_forward_map_known_configurations() -> None:
    lengths = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    x = torch.tensor(
        [
            [0.0, 0.0, 0.0, 0.0],  # stretched out horizontally
            [0.3, math.pi / 2, 0.0, 0.0],  # pointing up from height 0.3
            [0.0, 0.0, math.pi / 2, -math.pi / 2],  # elbow up then horizontal again
        ],
        dtype=torch.float64,
    )
    y = forward_kinematics(x, lengths)
    expected = torch.tensor([[2.0, 0.0], [0.0, 2.3], [1.5, 0.5]], dtype=torch.float64)
    torch.testing.assert_close(y, expected)


def test_registry_prior_and_simulator(ik: InverseKinematics) -> None:
    p = make_problem({"name": "kinematics", "cache_dir": False})
    assert isinstance(p, InverseKinematics) and (p.dim_x, p.dim_y) == (4, 2)
    x = p.sample_prior(20000, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.std(0), torch.tensor([0.25, 0.5, 0.5, 0.5]), atol=0.01, rtol=0)
    # Noise-free by default: the simulator is the forward map.
    torch.testing.assert_close(p.simulate(x[:5]), p.simulate_noise_free(x[:5]))
    noisy = InverseKinematics(noise=0.1, cache_dir=False)
    d = noisy.simulate(x, torch.Generator().manual_seed(1)) - noisy.simulate_noise_free(x)
    assert abs(float(d.std()) - 0.1) < 0.005


@pytest.mark.parametrize(
    "kwargs",
    [
        {"lengths": [0.5, 0.5]},
        {"sigmas": [0.25, 0.5, -0.5, 0.5]},
        {"noise": -0.1},
        {"abc_tolerance": 0.0},
    ],
)
def test_bad_parameters(kwargs: dict) -> None:
    with pytest.raises(ConfigError, match="problem\\."):
        InverseKinematics(cache_dir=False, **kwargs)


def test_rao_blackwellised_abc_matches_plain_rejection() -> None:
    """The x1-integrated sampler has the law of plain rejection from the prior."""
    lengths = torch.tensor([0.5, 0.5, 1.0], dtype=torch.float64)
    sigmas = torch.tensor([0.25, 0.5, 0.5, 0.5], dtype=torch.float64)
    y = torch.tensor([1.6, 0.2], dtype=torch.float64)
    g = torch.Generator().manual_seed(0)
    s, info = abc_rejection(y, 4000, 0.1, lengths, sigmas, generator=g)
    x = torch.randn(2_000_000, 4, generator=g, dtype=torch.float64) * sigmas
    plain = x[(forward_kinematics(x, lengths) - y).norm(dim=-1) < 0.1]
    assert len(plain) > 2000
    torch.testing.assert_close(s.mean(0), plain.mean(0), atol=0.04, rtol=0)
    torch.testing.assert_close(s.std(0), plain.std(0), atol=0.04, rtol=0)
    # Both acceptance rates are estimates of the same plain-ABC rate.
    assert info["abc_acceptance_rate"] == pytest.approx(len(plain) / len(x), rel=0.1)
    assert info["acceptance_rate"] > 2 * info["abc_acceptance_rate"]  # 1/w_max ~ 3 here


def test_reference_posterior_tolerance_and_cache(ik: InverseKinematics, tmp_path) -> None:
    y = torch.tensor([1.5, 0.0])
    s = ik.reference_posterior(y, 300, torch.Generator().manual_seed(3))
    assert s.shape == (300, 4)
    resim = (ik.simulate_noise_free(s.double()) - y.double()).norm(dim=-1)
    assert float(resim.max()) < ik.abc_tolerance
    info = ik.last_reference_info
    assert info["eps"] == info["eps_effective"] == 0.01 and 0 < info["acceptance_rate"] < 1
    files = list((tmp_path / "cache").glob("*.npz"))
    assert len(files) == 1
    with np.load(files[0]) as f:  # tolerance and acceptance stored with the samples
        assert "eps" in str(f["info"]) and f["samples"].shape == (300, 4)
    again = ik.reference_posterior(y, 300, torch.Generator().manual_seed(3))
    torch.testing.assert_close(s, again)
    other = ik.reference_posterior(y, 300, torch.Generator().manual_seed(4))
    assert not torch.equal(s, other) and len(list((tmp_path / "cache").glob("*.npz"))) == 2


def test_corrupted_cache_file_is_recomputed(ik: InverseKinematics, tmp_path) -> None:
    y = torch.tensor([1.2, 0.4])
    s = ik.reference_posterior(y, 100, torch.Generator().manual_seed(0))
    (f,) = (tmp_path / "cache").glob("*.npz")
    f.write_bytes(b"garbage")
    again = ik.reference_posterior(y, 100, torch.Generator().manual_seed(0))
    torch.testing.assert_close(s, again)


def test_tail_observation_widens_tolerance_and_says_so() -> None:
    ik = InverseKinematics(cache_dir=False, abc_max_draws=20_000, abc_batch=20_000)
    s = ik.reference_posterior(torch.tensor([0.5, 1.5]), 50, torch.Generator().manual_seed(0))
    info = ik.last_reference_info
    assert s.shape == (50, 4) and info["eps_effective"] > info["eps"]
    resim = (ik.simulate_noise_free(s.double()) - torch.tensor([0.5, 1.5])).norm(dim=-1)
    assert float(resim.max()) < info["eps_effective"]


def test_bad_observation_shape(ik: InverseKinematics) -> None:
    with pytest.raises(DataError, match="2 entries"):
        ik.reference_posterior(torch.zeros(3), 10)


def test_arm_figure(tmp_path, ik: InverseKinematics) -> None:
    y = torch.tensor([1.5, 0.0])
    ref = ik.reference_posterior(y, 200, torch.Generator().manual_seed(0))
    path = plot_arm_posterior(ref, y, tmp_path / "arms.png", reference=ref)
    assert path.stat().st_size > 5000 and path.read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(DataError, match="shape"):
        plot_arm_posterior(torch.zeros(5, 3), y, tmp_path / "bad.png")
