"""The Python API: vinaflow.fit, Posterior.sample/save, load, evaluate and certify."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.distributions import Independent, Normal

import vinaflow
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError, DataError, ModelFileError, VinaflowError
from vinaflow.experiments.pipeline import run
from vinaflow.models import ConditionalINN, JointINN, Posterior
from vinaflow.objectives.losses import CompositeObjective, NLLObjective
from vinaflow.problems import GaussianLinear
from vinaflow.training import Trainer, TrainingConfig
from vinaflow.training.trainer import progress_total

# A Gaussian-linear problem in units far from standard (prior mean 1000, sd 50, and
# observations offset by the same map): fit must standardise x and y itself.
_BASE = GaussianLinear(dim_x=2, dim_y=1, noise=0.3, seed=2)
PROBLEM = GaussianLinear(
    dim_x=2,
    dim_y=1,
    noise=0.3,
    matrix=(_BASE.A / 50).tolist(),
    prior_mean=[1000.0, 1000.0],
    prior_cov=2500.0,
)


def _simulations(n: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = PROBLEM.sample_prior(n, g)
    return x, PROBLEM.simulate(x, g)


@pytest.fixture(scope="module")
def trained() -> Posterior:
    """The notebook path: numpy arrays in, a time budget, nothing standardised by hand."""
    torch.set_num_threads(1)
    x, y = _simulations(4000)
    return vinaflow.fit(
        x.numpy().astype(np.float64),
        y.numpy(),
        max_seconds=12,
        blocks=4,
        hidden=64,
        lr=2e-3,
        progress=False,
    )


def test_fit_recovers_closed_form_posterior(trained: Posterior) -> None:
    assert trained.train_result is not None and trained.train_result.steps > 100
    _, y_test = _simulations(2, seed=99)
    for y_obs in y_test:
        s = trained.sample(y_obs, 8000, seed=1)[0].double()
        mean = PROBLEM.posterior_mean(y_obs)
        sd = PROBLEM.post_cov.diagonal().sqrt()
        assert ((s.mean(0) - mean).abs() / sd).max() < 0.2
        assert ((s.std(0) / sd) - 1).abs().max() < 0.15


def test_fit_leaves_global_random_state_and_threads_alone() -> None:
    x, y = _simulations(300)
    torch.manual_seed(123)
    state = torch.get_rng_state()
    torch.set_num_threads(1)
    vinaflow.fit(x, y, steps=5, blocks=1, hidden=8, progress=False, threads=2)
    assert torch.equal(torch.get_rng_state(), state)
    assert torch.get_num_threads() == 1


def test_sample_shape_and_seed(trained: Posterior) -> None:
    y = _simulations(3, seed=5)[1].numpy()
    s = trained.sample(y, 50, seed=4)
    assert s.shape == (3, 50, 2)
    assert torch.equal(s, trained.sample(y, 50, seed=4))
    assert not torch.equal(s, trained.sample(y, 50, seed=5))
    g = torch.Generator().manual_seed(4)
    assert torch.equal(s, trained.sample(y, 50, generator=g))
    with pytest.raises(ConfigError, match="seed or generator"):
        trained.sample(y, 5, seed=1, generator=torch.Generator())


def test_save_load_round_trip_gives_identical_samples(trained: Posterior, tmp_path: Path) -> None:
    out = tmp_path / "nested" / "posterior"
    trained.save(out)
    assert {p.name for p in out.iterdir()} == {"model.safetensors", "model.json"}
    loaded = vinaflow.load(out)
    y = _simulations(2, seed=6)[1]
    assert torch.equal(loaded.sample(y, 300, seed=11), trained.sample(y, 300, seed=11))
    x = torch.tensor([[1000.0, 1010.0], [990.0, 1000.0]])
    assert torch.isfinite(trained.log_prob(x, y)).all()
    assert torch.equal(loaded.log_prob(x, y), trained.log_prob(x, y))
    with pytest.raises(ModelFileError, match="not found"):
        vinaflow.load(tmp_path / "missing")


def test_run_folder_loads_like_a_saved_posterior(tmp_path: Path) -> None:
    cfg = resolve_config(
        {
            "problem": {"num_simulations": 300},
            "model": {"blocks": 1, "hidden": 8},
            "training": {"steps": 10, "progress": False},
            "evaluation": {
                "num_observations": 1,
                "num_samples": 50,
                "num_calibration": 0,
                "c2st": False,
                "plots": False,
                "certificate": False,
            },
        }
    )
    result = run(cfg, tmp_path / "run", progress=False)
    loaded = vinaflow.load(tmp_path / "run")
    y = torch.zeros(2, result.problem.dim_y)
    assert torch.equal(loaded.sample(y, 40, seed=2), result.posterior.sample(y, 40, seed=2))
    # ... and a posterior saved from Python into another folder reads back the same way.
    result.posterior.save(tmp_path / "copy")
    again = vinaflow.load(tmp_path / "copy")
    assert torch.equal(again.sample(y, 40, seed=2), loaded.sample(y, 40, seed=2))


def _linear_simulator(x: torch.Tensor) -> torch.Tensor:
    return x.sum(-1, keepdim=True) + 0.1 * torch.randn(x.shape[0], 1)


def test_fit_from_simulator_and_prior_is_reproducible() -> None:
    prior = Independent(Normal(torch.zeros(2), torch.ones(2)), 1)

    def fit(seed: int) -> Posterior:
        return vinaflow.fit(
            simulator=_linear_simulator,
            prior=prior,
            num_simulations=2000,
            steps=300,
            seed=seed,
            blocks=2,
            hidden=32,
            progress=False,
        )

    a, b, c = fit(0), fit(0), fit(1)
    y = torch.tensor([[1.5]])
    s = a.sample(y, 2000, seed=0)
    assert s.shape == (1, 2000, 2)
    assert torch.equal(s, b.sample(y, 2000, seed=0))
    assert not torch.equal(s, c.sample(y, 2000, seed=0))
    # x1 + x2 is observed with noise 0.1: the posterior puts it near y = 1.5.
    total = s[0].sum(-1)
    assert abs(float(total.mean()) - 1.5 * 2 / 2.01) < 0.15
    assert float(total.std()) < 0.3


def test_fit_with_a_problem_as_simulator_and_noise_augmentation() -> None:
    post = vinaflow.fit(
        simulator=PROBLEM,
        num_simulations=500,
        steps=20,
        blocks=1,
        hidden=8,
        noise_augmentation=True,
        progress=False,
    )
    assert post.train_result.steps == 20
    with pytest.raises(ConfigError, match="noise_augmentation is not available for data given"):
        x, y = _simulations(100)
        vinaflow.fit(x, y, steps=2, noise_augmentation=True, progress=False)


def test_fit_without_step_limit_stops_early_on_validation_loss() -> None:
    x, y = _simulations(400)
    # No patience given: fit's default stops after 10 validations without improvement.
    post = vinaflow.fit(x, y, max_seconds=40, blocks=1, hidden=8, val_every=2, progress=False)
    res = post.train_result
    assert res.stopped == "early_stopping" and res.train_seconds < 40
    best = int(np.argmin(res.history["val_loss"]))
    assert len(res.history["val_loss"]) - 1 - best == 10


def test_fit_on_small_data_validates_every_epoch() -> None:
    # 400 rows: 360 for training, two minibatches of 256 per epoch. Validating every 200
    # steps would see 100 epochs between validations; fit validates each epoch instead
    # and waits the same 2,000 steps (1,000 validations) without improvement.
    x, y = _simulations(400)
    # about 20 s alone; the time cap is only a guard (a loaded CI machine may take 3x)
    post = vinaflow.fit(x, y, max_seconds=600, blocks=1, hidden=8, progress=False)
    res = post.train_result
    assert res.history["val_step"][:3] == [2, 4, 6]
    assert res.stopped == "early_stopping"
    best = int(np.argmin(res.history["val_loss"]))
    assert len(res.history["val_loss"]) - 1 - best == 1000


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"x": np.zeros(50), "y": np.zeros((50, 1))}, DataError, r"x must have shape \(n, dim_x\)"),
        ({"x": np.zeros((50, 2)), "y": [[1.0]] * 49}, DataError, "x has 50 rows, y has 49"),
        (
            {"x": np.full((50, 2), np.nan), "y": np.zeros((50, 1))},
            DataError,
            "x contains 100 NaN/inf",
        ),
        ({"x": np.zeros((50, 2)), "y": np.array([["a"]] * 50)}, DataError, "y must be a real"),
        ({"x": np.zeros((50, 2))}, ConfigError, "needs training data"),
        ({"blcks": 3}, ConfigError, "unknown option 'blcks'.*blocks"),
        ({"y_weight": 1.0}, ConfigError, "model_y_weight= or objective_y_weight="),
        ({"name": "nll"}, ConfigError, r"fit\(objective=...\)"),
        ({"model": "flow"}, ConfigError, "model.kind: unknown value 'flow'"),
        ({"model": torch.nn.Linear(2, 2)}, ConfigError, "model must be a kind name"),
        (
            {"model": ConditionalINN(dim_x=3, dim_y=1, blocks=1, hidden=8)},
            DataError,
            "model has dim_x=3",
        ),
        ({"objective": "klx"}, ConfigError, "unknown objective .klx."),
        ({"objective": "nll", "blur": 0.1}, ConfigError, r"objective.blur: unknown key"),
        ({"lr": "fast"}, ConfigError, "training.lr must be a number"),
        ({"steps": 0}, ConfigError, "steps must be an integer >= 1"),
        ({"max_seconds": -1}, ConfigError, "max_seconds must be a finite number > 0"),
        ({"validation_fraction": 1.5}, ConfigError, r"validation_fraction must be in \[0, 1\)"),
        ({"simulator": _linear_simulator}, ConfigError, "prior must be a torch.distributions"),
        ({"prior": Normal(0.0, 1.0)}, ConfigError, "num_simulations needs simulator="),
    ],
)
def test_bad_inputs_name_the_argument(kwargs: dict, error: type, message: str) -> None:
    x, y = _simulations(50)
    args = {"x": x, "y": y, "steps": 2, "progress": False, **kwargs}
    if "simulator" in kwargs or "prior" in kwargs:
        del args["x"], args["y"]
        args.setdefault("num_simulations", 100)
    if kwargs.keys() == {"x"}:
        del args["y"]
    with pytest.raises(error, match=message) as info:
        vinaflow.fit(**args)
    assert isinstance(info.value, VinaflowError)


def test_fit_with_simulator_and_arrays_is_refused() -> None:
    x, y = _simulations(50)
    with pytest.raises(ConfigError, match=r"either arrays x and y \(and optionally prior=\)"):
        vinaflow.fit(x, y, simulator=PROBLEM, num_simulations=50)


def test_log_prob_without_density_is_a_vinaflow_error() -> None:
    post = Posterior(JointINN(dim_x=2, dim_y=1, latent_dim=2, blocks=1, hidden=8))
    assert post.sample([0.0], 3).shape == (1, 3, 2)
    with pytest.raises(VinaflowError, match="no tractable density"):
        post.log_prob([[0.0, 0.0]], [0.0])


def test_divergence_names_train_the_variational_objective() -> None:
    x, y = _simulations(300)
    post = vinaflow.fit(
        x, y, model="inn", objective="js", steps=3, blocks=1, hidden=8, critic_hidden=8,
        progress=False,
    )  # fmt: skip
    history = post.train_result.history
    assert any(k.startswith("critic") for k in history), sorted(history)  # a critic trained


def test_evaluate_against_problem_sampler_and_samples(trained: Posterior) -> None:
    y_obs = _simulations(2, seed=8)[1]
    g = [torch.Generator().manual_seed(i) for i in range(2)]
    ref = [PROBLEM.reference_posterior(y_obs[i], 500, g[i]) for i in range(2)]
    settings = {"num_samples": 500}
    by_samples = vinaflow.evaluate(trained, ref, y_obs, **settings)
    by_sampler = vinaflow.evaluate(trained, PROBLEM.reference_posterior, y_obs, **settings)
    by_problem = vinaflow.evaluate(
        trained, PROBLEM, num_observations=2, num_samples=500, num_calibration=40
    )
    for metrics in (by_samples, by_sampler, by_problem):
        assert 0.4 < metrics["c2st"] < 0.7, metrics["c2st"]
        assert len(metrics["per_observation"]["c2st"]) == 2
    assert 0.7 < by_problem["coverage"] <= 1.0
    # A posterior in the wrong units (untrained, not standardised) is told apart.
    untrained = Posterior(ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8))
    assert vinaflow.evaluate(untrained, ref, y_obs, **settings)["c2st"] > 0.95
    with pytest.raises(DataError, match="reference samples must have shape"):
        vinaflow.evaluate(trained, ref[0], y_obs)
    with pytest.raises(ConfigError, match="evaluation.num_sample"):
        vinaflow.evaluate(trained, PROBLEM, num_sample=5)


def test_certify_on_held_out_pairs(trained: Posterior) -> None:
    x, y = _simulations(1000, seed=7)
    cert = vinaflow.certify(trained, x, y, divergence="kl", steps=200, bootstrap=50)
    assert cert["divergence"] == "kl" and np.isfinite(cert["estimate"])
    assert cert["estimate"] < 0.3
    with pytest.raises(DataError, match="x_heldout has 1000 rows, y_heldout 999"):
        vinaflow.certify(trained, x, y[:-1])


def test_progress_total_follows_the_time_budget() -> None:
    assert progress_total(20000, 0, 0.0, None) == 20000
    assert progress_total(20000, 0, 0.0, 150.0) is None  # no rate measured yet
    # 7920 steps in 60 s: 132 steps/s, 90 s left -> 7920 + 11880 = 19800 < 20000.
    assert progress_total(20000, 7920, 60.0, 150.0) == 19800
    # Faster: the step limit binds.
    assert progress_total(20000, 10000, 30.0, 150.0) == 20000
    # Resumed at step 5000 after 40 s: the rate counts this session's steps only.
    assert progress_total(100000, 6000, 50.0, 100.0, start_step=5000, start_elapsed=40.0) == 11000
    assert progress_total(100000, 300, 200.0, 150.0) == 300  # over time: never below the step


def test_progress_bar_ends_where_the_time_budget_stops_training(capsys) -> None:  # noqa: ANN001
    x, y = _simulations(500)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    model.fit_normalization(x, y)
    cfg = TrainingConfig(steps=10_000_000, max_seconds=1.5, progress=True, val_every=10**6)
    result = Trainer(cfg).fit(
        model, CompositeObjective([(NLLObjective(), 1.0)]), model.x_norm(x), model.y_norm(y)
    )
    assert result.stopped == "max_seconds"
    counts = [(int(a), int(b)) for a, b in re.findall(r"(\d+)/(\d+) \[", capsys.readouterr().err)]
    assert counts, "no progress bar output"
    assert all(total < 10_000_000 for _, total in counts)
    assert counts[-1] == (result.steps, result.steps)
