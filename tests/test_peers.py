"""Tests of the peer benchmark helpers (``benchmarks/peers``): no network, no sbi/sbibm.

Tests of the simulators against sbibm's reference files read the sbibm wheel from the cache
(``benchmarks.peers.sbibm_reference.find_wheel``) and are skipped, with the download
command, without it.
"""

from __future__ import annotations

import bz2
import io
import math
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest
import torch

from vinaflow.errors import DataError
from vinaflow.problems import Problem

# ``benchmarks`` is a top-level package of the repository, not of the installed distribution.
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.peers.sbibm_reference import (  # noqa: E402
    find_wheel,
    list_observations,
    load_reference,
    load_task,
    read_csv_array,
)
from benchmarks.peers.tasks import (  # noqa: E402
    BernoulliGLMTask,
    GaussianLinearTask,
    GaussianLinearUniformTask,
    GaussianMixtureTask,
    LotkaVolterraTask,
    SIRTask,
    TwoMoonsTask,
    make_task,
    posterior_predictive_check,
    solve_batched,
)

from sbibm_wheel import csv_bytes, write_wheel  # noqa: E402

__all__: list[str] = []


def _fake_wheel(tmp_path: Path, task: str, n_obs: int = 2, seed: int = 0) -> tuple[Path, dict]:
    """A zip laid out like sbibm's wheel, with closed-form gaussian_linear references."""
    rng = np.random.default_rng(seed)
    gl = GaussianLinearTask()
    content = {}
    for k in range(1, n_obs + 1):
        theta = rng.normal(0.0, np.sqrt(0.1), (1, 10))
        y = theta + rng.normal(0.0, np.sqrt(0.1), (1, 10))
        mean, var = gl.posterior_moments(torch.as_tensor(y[0]))
        samples = mean.numpy() + np.sqrt(var) * rng.normal(size=(3000, 10))
        content[k] = (y[0], theta[0], samples)
    observations = [(y[None], theta[None], samples) for y, theta, samples in content.values()]
    wheel = write_wheel(tmp_path / "sbibm-0.0.0-py3-none-any.whl", task, observations)
    return wheel, content


def test_read_csv_array_plain_and_bz2() -> None:
    arr = np.array([[1.0, -2.5], [3.25, 4e-3]])
    data = csv_bytes(arr, "p")
    np.testing.assert_allclose(read_csv_array(data), arr)
    np.testing.assert_allclose(read_csv_array(bz2.compress(data)), arr)
    with pytest.raises(ValueError):
        read_csv_array(b"a,b\n")


def test_reader_on_fake_wheel_with_cache(tmp_path: Path) -> None:
    wheel, content = _fake_wheel(tmp_path, "gaussian_linear", n_obs=3)
    assert list_observations(wheel, "gaussian_linear") == [1, 2, 3]
    assert list_observations(wheel, "two_moons") == []
    cache = tmp_path / "cache"
    ref = load_reference(wheel, "gaussian_linear", 2, cache=cache)
    y, theta, samples = content[2]
    np.testing.assert_allclose(ref.observation, y, rtol=1e-6)
    np.testing.assert_allclose(ref.true_parameters, theta, rtol=1e-6)
    assert ref.samples.shape == (3000, 10)
    np.testing.assert_allclose(ref.samples, samples, rtol=1e-6, atol=1e-12)
    assert len(list(cache.rglob("*.npy"))) == 3
    again = load_reference(wheel, "gaussian_linear", 2, cache=cache)  # from the cache
    np.testing.assert_array_equal(again.samples, ref.samples)
    assert len(load_task(wheel, "gaussian_linear")) == 3
    with pytest.raises(FileNotFoundError):
        load_reference(wheel, "gaussian_linear", 7)


def test_find_wheel(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VINAFLOW_CACHE", str(tmp_path / "vc"))
    with pytest.raises(FileNotFoundError, match="pip download sbibm"):
        find_wheel()
    wheel, _ = _fake_wheel(tmp_path, "gaussian_linear", n_obs=1)
    assert find_wheel(wheel) == wheel
    assert find_wheel(tmp_path) == wheel
    with pytest.raises(FileNotFoundError):
        find_wheel(tmp_path / "missing.whl")


@pytest.mark.parametrize(
    "name,dim", [("two_moons", 2), ("gaussian_linear", 10), ("gaussian_mixture", 2)]
)
def test_task_shapes_and_reproducibility(name: str, dim: int) -> None:
    task = make_task(name)
    assert (task.dim_x, task.dim_y) == (dim, dim)
    x = task.sample_prior(50, torch.Generator().manual_seed(0))
    assert x.shape == (50, dim)
    y1 = task.simulate_checked(x, torch.Generator().manual_seed(1))
    y2 = task.simulate_checked(x, torch.Generator().manual_seed(1))
    assert y1.shape == (50, dim)
    torch.testing.assert_close(y1, y2)
    with pytest.raises(KeyError):
        make_task("no_such_task")


def test_two_moons_geometry() -> None:
    # theta = 0: y = p, a half circle of radius ~0.1 around (0.25, 0) with x >= 0.25 - 0.1 cos a
    task = TwoMoonsTask()
    y = task.simulate(torch.zeros(4000, 2), torch.Generator().manual_seed(0))
    r = torch.linalg.norm(y - torch.tensor([0.25, 0.0]), dim=1)
    assert abs(float(r.mean()) - 0.1) < 2e-3
    assert float((y[:, 0] >= 0.25 - 1e-6).float().mean()) == 1.0
    # the map is symmetric under theta -> rotation flip of z0 (|z0|): two moons
    t = torch.tensor([[0.3, 0.1]])
    flip = torch.tensor([[-0.1, -0.3]])  # z0 -> -z0, z1 unchanged
    g = torch.Generator().manual_seed(3)
    a = task.simulate(t, torch.Generator().manual_seed(3))
    b = task.simulate(flip, g)
    torch.testing.assert_close(a, b)


def test_gaussian_linear_closed_form_matches_fake_reference(tmp_path: Path) -> None:
    wheel, _ = _fake_wheel(tmp_path, "gaussian_linear", n_obs=2, seed=5)
    task = GaussianLinearTask()
    for ref in load_task(wheel, "gaussian_linear"):
        mean, var = task.posterior_moments(torch.as_tensor(ref.observation))
        np.testing.assert_allclose(ref.samples.mean(0), mean.numpy(), atol=0.03)
        np.testing.assert_allclose(ref.samples.var(0), var, rtol=0.15)
        s = task.reference_posterior(
            torch.as_tensor(ref.observation, dtype=torch.float32),
            4000,
            torch.Generator().manual_seed(0),
        )
        np.testing.assert_allclose(s.mean(0).numpy(), ref.samples.mean(0), atol=0.03)
    assert var == pytest.approx(0.05)


def test_gaussian_mixture_reference_inside_prior() -> None:
    task = GaussianMixtureTask()
    s = task.reference_posterior(torch.tensor([9.8, -1.0]), 2000, torch.Generator().manual_seed(0))
    assert s.shape == (2000, 2)
    assert float(s.abs().max()) <= 10.0


def test_posterior_predictive_check_flags_mismatch(tmp_path: Path) -> None:
    wheel, _ = _fake_wheel(tmp_path, "gaussian_linear", n_obs=1, seed=2)
    (ref,) = load_task(wheel, "gaussian_linear")
    task = GaussianLinearTask()
    good = posterior_predictive_check(task, ref.samples, ref.observation, n=1000)
    assert good["knn_pvalue"] > 0.01 and good["mahalanobis_pvalue"] > 0.01
    bad = posterior_predictive_check(task, ref.samples, ref.observation + 2.0, n=1000)
    assert bad["knn_pvalue"] < 0.01 and bad["mahalanobis_pvalue"] < 0.01


def test_simulations_are_seeded() -> None:
    from benchmarks.peers.run import simulations

    x1, y1 = simulations("two_moons", 64, seed=3)
    x2, y2 = simulations("two_moons", 64, seed=3)
    x3, _ = simulations("two_moons", 64, seed=4)
    assert x1.shape == y1.shape == (64, 2) and x1.dtype == np.float32
    np.testing.assert_array_equal(x1, x2)
    np.testing.assert_array_equal(y1, y2)
    assert not np.array_equal(x1, x3)


def test_run_vinaflow_smoke() -> None:
    from benchmarks.peers.run import run_vinaflow, simulations

    x, y = simulations("gaussian_mixture", 300, seed=0)
    obs = y[:2]
    res = run_vinaflow("nll-cinn", x, y, obs, 50, max_seconds=2.0, steps=20, seed=0)
    assert len(res["samples"]) == 2 and res["samples"][0].shape == (50, 2)
    assert res["train_seconds"] > 0 and res["sample_seconds_per_10k"] > 0


@pytest.mark.filterwarnings("ignore:Maximum number of epochs")
def test_run_sbi_smoke() -> None:
    pytest.importorskip("sbi")
    from benchmarks.peers.run import run_sbi, simulations

    x, y = simulations("two_moons", 200, seed=0)
    res = run_sbi("two_moons", x, y, y[:1], 20, max_epochs=2, seed=0)
    assert res["samples"][0].shape == (20, 2)


def test_speed_floor_matches_flow_matmuls() -> None:
    from benchmarks.peers.speed import BATCH, DIM, bare_floor, build, measure

    flow = build()
    floor = bare_floor(flow)
    shapes = sorted(tuple(m.weight.shape) for m in flow.modules() if isinstance(m, torch.nn.Linear))
    floor_shapes = sorted(
        tuple(m.weight.shape) for m in floor.modules() if isinstance(m, torch.nn.Linear)
    )
    assert shapes == floor_shapes and len(shapes) == 36
    assert floor(torch.randn(BATCH, DIM)).shape == (BATCH, DIM)
    assert measure(lambda: None, 0.01) > 0


def test_speed_models_measure_their_own_floors() -> None:
    from benchmarks.peers.speed import MODELS, _measure_model

    def shapes(m: torch.nn.Module) -> list[tuple[int, ...]]:
        return sorted(tuple(x.weight.shape) for x in m.modules() if isinstance(x, torch.nn.Linear))

    spline = MODELS["spline"](64)
    assert shapes(spline.floor) == shapes(spline.model) and len(shapes(spline.model)) == 36
    cnf = MODELS["cnf"](64)
    assert shapes(cnf.floor) == shapes(cnf.model.field)
    assert cnf.extra["function_evaluations"] >= 2  # an adaptive solve evaluates the field
    rows = _measure_model(cnf, 64, 0.01, 1)
    assert rows["train_steps_per_s"] > 0 and rows["floor_samples_per_s"] > 0
    ratio = rows["floor_samples_per_s"] / rows["samples_per_s_inference_mode"]
    assert rows["sample_overhead_ratio"] == ratio


# --- sbibm's gaussian_linear_uniform, bernoulli_glm, sir, lotka_volterra and slcp -------

NEW_TASKS = {  # name: (dim_x, dim_y)
    "gaussian_linear_uniform": (10, 10),
    "bernoulli_glm": (10, 10),
    "sir": (2, 10),
    "lotka_volterra": (4, 20),
    "slcp": (5, 8),  # a development task, held out from the benchmark
}


@pytest.fixture(scope="module")
def sbibm_wheel() -> Path:
    """The sbibm wheel from the cache; the test is skipped (with the command) without it."""
    try:
        return find_wheel()
    except FileNotFoundError as err:
        pytest.skip(f"needs sbibm's reference files: {err}")


@pytest.mark.parametrize("name", list(NEW_TASKS))
def test_new_task_shapes_and_reproducibility(name: str) -> None:
    task = make_task(name)
    assert (task.dim_x, task.dim_y) == NEW_TASKS[name]
    assert len(task.param_names) == task.dim_x
    x = task.sample_prior(64, torch.Generator().manual_seed(0))
    y1 = task.simulate_checked(x, torch.Generator().manual_seed(1))
    y2 = task.simulate_checked(x, torch.Generator().manual_seed(1))
    assert y1.shape == (64, task.dim_y)
    torch.testing.assert_close(y1, y2)
    assert not torch.equal(y1, task.simulate(x, torch.Generator().manual_seed(2)))


def test_solve_batched_against_a_closed_form_and_drops_blowups() -> None:
    # u' = p u^2, u(0) = 1: u(t) = 1 / (1 - p t), which blows up at t = 1/p.
    p = np.array([[0.1], [1.0], [-0.5], [np.nan], [0.3]])
    t = np.linspace(0.0, 2.0, 5)
    sol, ok = solve_batched(lambda _t, u, q: q[:, 0] * u**2, np.ones(1), p, t, chunk=4)
    assert ok.tolist() == [True, False, True, False, True]
    exact = 1.0 / (1.0 - p[ok] * t[None, :])
    np.testing.assert_allclose(sol[ok, 0], exact, rtol=1e-7)
    assert (sol[~ok] == 0).all()


def test_ode_tasks_raise_on_failed_rows_or_drop_and_count_them() -> None:
    for name in ("sir", "lotka_volterra"):
        task = make_task(name)
        x = task.sample_prior(6, torch.Generator().manual_seed(0))
        x[2] = float("nan")
        with pytest.raises(DataError, match=r"failed for 1 of 6 parameter rows \(first: row 2"):
            task.simulate(x)
        kept, y, dropped = task.simulate_valid(x, torch.Generator().manual_seed(0))
        assert dropped == 1 and kept.shape == (5, task.dim_x) and y.shape == (5, task.dim_y)
        assert torch.isfinite(y).all()
        torch.testing.assert_close(kept, x[[0, 1, 3, 4, 5]])


def test_ode_solutions_conserve_their_invariants() -> None:
    # SIR: s + i - (gamma / beta) log s is constant; Lotka-Volterra:
    # delta x - gamma log x + beta y - alpha log y is constant.
    g = torch.Generator().manual_seed(0)
    sir = SIRTask()
    x = sir.sample_prior(3000, g)
    log_s_i, ok = solve_batched(
        sir._rhs,
        np.array([math.log1p(-1e-6), math.log(1e-6)]),
        x.double().numpy(),
        sir.times,
    )
    assert ok.all()
    b, c = x.double().numpy().T
    s, i = np.exp(log_s_i[:, 0]), np.exp(log_s_i[:, 1])
    h = s + i - (c / b)[:, None] * np.log(s)
    assert np.abs(h - h[:, :1]).max() < 1e-7

    lv = LotkaVolterraTask()
    x = lv.sample_prior(3000, g)
    states, ok = lv.solve(x)
    assert bool(ok.all())
    a, b, c, d = x.double().numpy().T
    log_x, log_y = states[:, :10].numpy(), states[:, 10:].numpy()
    terms = (
        d[:, None] * np.exp(log_x),
        -c[:, None] * log_x,
        b[:, None] * np.exp(log_y),
        -a[:, None] * log_y,
    )
    h, scale = sum(terms), sum(np.abs(t) for t in terms)
    # solve_batched's stated accuracy: about 1e-6 in the log-populations
    assert (np.abs(h - h[:, :1]) / scale).max() < 1e-5
    np.testing.assert_allclose(np.exp(states[:, [0, 10]].numpy()), [[30.0, 1.0]] * 3000)


def test_bernoulli_glm_summaries_are_sbibms_conv1d() -> None:
    task = BernoulliGLMTask()
    x = task.sample_prior(50, torch.Generator().manual_seed(0))
    spikes = task.spikes(x, torch.Generator().manual_seed(1))
    y = task.simulate(x, torch.Generator().manual_seed(1))
    # sbibm: count, then conv1d(spikes, stimulus, padding=8)[-9:]
    sta = torch.nn.functional.conv1d(spikes[:, None], task.stimulus.reshape(1, 1, -1), padding=8)[
        :, 0, -9:
    ]
    torch.testing.assert_close(y, torch.cat((spikes.sum(1, keepdim=True), sta), 1))


def test_bernoulli_glm_stimulus_and_design_match_sbibm_files(sbibm_wheel: Path) -> None:
    task = BernoulliGLMTask()
    with zipfile.ZipFile(sbibm_wheel) as zf:
        for name, ours in (("stimulus_I.pt", task.stimulus), ("design_matrix.pt", task.design)):
            data = zf.read(f"sbibm/tasks/bernoulli_glm/files/{name}")
            theirs = torch.load(io.BytesIO(data), weights_only=True)
            torch.testing.assert_close(ours, theirs, atol=0, rtol=0)


def test_gaussian_linear_uniform_reference_is_truncated_normal(sbibm_wheel: Path) -> None:
    task = GaussianLinearUniformTask()
    for ref in load_task(sbibm_wheel, "gaussian_linear_uniform")[:3]:
        s = task.reference_posterior(
            torch.as_tensor(ref.observation, dtype=torch.float32),
            10_000,
            torch.Generator().manual_seed(0),
        )
        assert s.shape == (10_000, 10) and float(s.abs().max()) <= 1.0
        np.testing.assert_allclose(s.mean(0).numpy(), ref.samples.mean(0), atol=0.02)
        np.testing.assert_allclose(s.std(0).numpy(), ref.samples.std(0), rtol=0.05)


@pytest.mark.parametrize("name", list(NEW_TASKS))
def test_new_task_simulators_against_sbibm_references(name: str, sbibm_wheel: Path) -> None:
    task = make_task(name)
    refs = load_task(sbibm_wheel, name)
    assert len(refs) == 10
    # 1. Simulations at sbibm's reference posterior samples: the observation is typical
    # (p-values above 1e-3; sir's observation 10 has 2 infected on day 119 where the
    # predictive expects 0.05, the lowest at about 0.005).
    ppc = [posterior_predictive_check(task, r.samples, r.observation) for r in refs]
    for key in ("knn_pvalue", "mahalanobis_pvalue"):
        values = np.array([p[key] for p in ppc])
        assert values.min() > 1e-3, (key, values)
        assert np.median(values) > 0.2, (key, values)
    # 2. Simulations at the true parameters: each observation is one draw of
    # p(y | theta_true), so its p-value is uniform over the 10 observations. This also
    # catches wrong noise scales, which the predictive check is blind to.
    at_truth = _true_parameter_pvalues(task, refs)
    assert 0.2 < at_truth.mean() < 0.8, at_truth


def _true_parameter_pvalues(task: Problem, refs: list) -> np.ndarray:
    """Mahalanobis p-values of each observation among 2,000 simulations at its true theta."""
    return np.array(
        [
            posterior_predictive_check(
                task, np.repeat(r.true_parameters[None], 2000, 0), r.observation, seed=i
            )["mahalanobis_pvalue"]
            for i, r in enumerate(refs)
        ]
    )


class _LotkaVolterraDoubleNoise(LotkaVolterraTask):
    noise_scale = 0.2


def test_true_parameter_check_catches_wrong_noise_scales(sbibm_wheel: Path) -> None:
    # sbibm's gaussian_linear_uniform "simulator_scale" 0.1 is a variance, not a std.
    wrong_std = GaussianLinearUniformTask(noise_var=0.01)
    p = _true_parameter_pvalues(wrong_std, load_task(sbibm_wheel, "gaussian_linear_uniform"))
    assert p.mean() < 0.05, p  # measured: 0.0
    refs = load_task(sbibm_wheel, "lotka_volterra")
    p = _true_parameter_pvalues(_LotkaVolterraDoubleNoise(), refs)
    assert p.mean() > 0.95, p  # measured: 0.997


def test_sbibm_classifier_from_the_wheel(sbibm_wheel: Path) -> None:
    """sbibm's own ``c2st``, run unchanged from the wheel: chance on one distribution, near
    1 on two far apart, and within a few hundredths of vinaflow's classifier on a shift."""
    from benchmarks.peers.sbibm_c2st import sbibm_c2st

    from vinaflow.evaluation import c2st

    rng = np.random.default_rng(0)
    a, b = rng.normal(size=(1000, 2)), rng.normal(size=(1000, 2))
    assert abs(sbibm_c2st(sbibm_wheel, a, b, seed=0, max_samples=1000) - 0.5) < 0.05
    far = b + np.array([6.0, 0.0])
    assert sbibm_c2st(sbibm_wheel, a, far, seed=0, max_samples=1000) > 0.98
    shifted = b + np.array([1.0, 0.0])
    theirs = sbibm_c2st(sbibm_wheel, a, shifted, seed=0, max_samples=1000)
    ours = c2st(a, shifted, seed=0, max_samples=1000)
    assert 0.6 < theirs < 0.8 and abs(theirs - ours) < 0.04
    nan = shifted.copy()
    nan[0, 0] = np.nan
    assert sbibm_c2st(sbibm_wheel, a, nan, seed=0, max_samples=1000) == 1.0
