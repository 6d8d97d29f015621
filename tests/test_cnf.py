"""Tests of the continuous normalizing flow (``model.kind: cnf``) and flow matching."""

from __future__ import annotations

import math
import subprocess
import sys
from pathlib import Path

import pytest
import torch
import yaml

import vinaflow
from block_checks import perturb
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError, ConvergenceError, DataError
from vinaflow.models import ConditionalINN, ContinuousFlow, Posterior
from vinaflow.objectives.flow_matching import FlowMatchingObjective, flow_matching_loss
from vinaflow.problems import GaussianLinear

__all__: list[str] = []

#: Tight solver tolerances (1e-7 is below what float32 steps can meet).
TIGHT = {"atol": 1e-6, "rtol": 1e-6}


@pytest.fixture(autouse=True)
def _seed() -> None:
    torch.manual_seed(0)


def _cnf(dim_x: int = 3, dim_y: int = 2, **kwargs: object) -> ContinuousFlow:
    """A small CNF whose field is far from zero (a fresh MLP's is nearly constant)."""
    model = ContinuousFlow(dim_x, dim_y, hidden=16, layers=2, **kwargs)
    return perturb(model, 0.2)


@pytest.mark.parametrize("embedding_dim", [None, 4])
def test_ode_map_forward_then_inverse_is_the_identity(embedding_dim: int | None) -> None:
    model = _cnf(embedding_dim=embedding_dim, **TIGHT)
    x, y = torch.randn(64, 3), torch.randn(64, 2)
    with torch.no_grad():
        z = model.encode(x, y).z
        back = model.generate(y, z)
    assert (z - x).abs().max() > 0.1  # the map is not (nearly) the identity
    assert (back - x).abs().max() < 1e-4


def test_log_prob_matches_the_autograd_jacobian_log_determinant() -> None:
    # In float64 at 1e-9: zuko integrates the trace 100x less tightly than the state (its
    # trace_scale), so in float32 the two log-dets agree only to about 2e-3.
    model = _cnf(atol=1e-9, rtol=1e-9).double()
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(4, 2, dtype=torch.float64)
    enc = model.encode(x, y)
    for i in range(x.shape[0]):
        transform = model._transform(y[i : i + 1])
        jac = torch.autograd.functional.jacobian(lambda xi, tr=transform: tr(xi[None])[0], x[i])
        brute = torch.linalg.slogdet(jac)[1]
        assert abs(float(enc.log_det[i].detach()) - float(brute)) < 1e-4
    assert enc.log_det.abs().max() > 0.05  # a volume change that a wrong sign would show
    log_norm = -0.5 * 3 * math.log(2 * math.pi)
    expected = log_norm - 0.5 * enc.z.pow(2).sum(1) + enc.log_det
    assert torch.allclose(model.log_prob_standardized(x, y), expected, atol=1e-8)


def test_hutchinson_trace_is_an_unbiased_estimate_of_the_exact_one() -> None:
    exact = _cnf()
    hutch = ContinuousFlow(3, 2, hidden=16, layers=2, trace="hutchinson")
    hutch.load_state_dict(exact.state_dict())
    x, y = torch.randn(1, 3).expand(4000, 3), torch.randn(1, 2).expand(4000, 2)
    with torch.no_grad():
        reference = exact.log_prob_standardized(x[:1], y[:1])
        estimates = hutch.log_prob_standardized(x, y)
    assert estimates.std() > 1e-3  # a stochastic estimate indeed
    assert abs(float(estimates.mean() - reference)) < 4 * float(estimates.std()) / 4000**0.5 + 1e-3


def test_save_and_load_give_the_same_samples_and_densities(tmp_path) -> None:  # noqa: ANN001
    model = _cnf(embedding_dim=4)
    model.fit_normalization(torch.randn(100, 3) * 2 + 1, torch.randn(100, 2))
    post = Posterior(model)
    y = torch.randn(2, 2)
    first = post.sample(y, 50, seed=3)
    assert torch.equal(first, post.sample(y, 50, seed=3))
    assert not torch.equal(first, post.sample(y, 50, seed=4))
    post.save(tmp_path)
    loaded = vinaflow.load(tmp_path)
    assert isinstance(loaded.model, ContinuousFlow) and loaded.model.config() == model.config()
    assert torch.equal(loaded.sample(y, 50, seed=3), first)
    x = first[0, :10]
    assert torch.allclose(loaded.log_prob(x, y[0]), post.log_prob(x, y[0]))


def test_unconditional_cnf_samples_and_has_a_density() -> None:
    post = Posterior(_cnf(dim_x=2, dim_y=0))
    samples = post.sample(None, 20, seed=0)
    assert samples.shape == (1, 20, 2)
    assert torch.isfinite(post.log_prob(samples[0])).all()


#: Gaussian-linear problem and observations of the accuracy test, fixed before tuning.
PROBLEM = GaussianLinear(dim_x=2, dim_y=2, noise=0.3, seed=1)
OBSERVATIONS = torch.tensor([[0.5, -0.3], [-1.0, 0.8], [1.5, 1.2]])


def _moment_errors(post: Posterior) -> tuple[float, float]:
    """Worst error of the posterior mean (in posterior standard deviations) and worst
    relative error of the posterior covariance over the fixed observations."""
    scale = PROBLEM.post_cov.diagonal().sqrt()
    samples = post.sample(OBSERVATIONS, 4000, seed=0).double()
    mean_err = cov_err = 0.0
    for y, s in zip(OBSERVATIONS, samples, strict=True):
        mean_err = max(
            mean_err, float(((s.mean(0) - PROBLEM.posterior_mean(y)) / scale).abs().max())
        )
        cov = torch.cov(s.T)
        rel = torch.linalg.norm(cov - PROBLEM.post_cov) / torch.linalg.norm(PROBLEM.post_cov)
        cov_err = max(cov_err, float(rel))
    return mean_err, cov_err


def test_flow_matching_fit_recovers_the_gaussian_linear_posterior() -> None:
    torch.set_num_threads(1)
    g = torch.Generator().manual_seed(0)
    x = PROBLEM.sample_prior(4000, g)
    y = PROBLEM.simulate(x, g)
    post = vinaflow.fit(x, y, model="cnf", steps=1500, hidden=64, progress=False)
    assert isinstance(post.model, ContinuousFlow)
    assert post.train_result.history["val_loss"][-1] < post.train_result.history["val_loss"][0]
    mean_err, cov_err = _moment_errors(post)
    # Measured with data and fit seeds 0-2: mean errors 0.24-0.26 posterior sd (the two
    # observations in the tail of the 4,000 simulations), covariance errors 0.08-0.16.
    # Sabotaged losses fail: the target's sign flipped gives mean errors 7.7-8.4 sd, the
    # path's time reversed (against the sampling direction) 0.84-0.99 sd.
    assert mean_err < 0.4, mean_err
    assert cov_err < 0.3, cov_err


def test_flow_matching_loss_is_zero_for_the_exact_field_of_a_point_mass() -> None:
    # For data at one point x0 the conditional field is the marginal field, so a model
    # whose velocity equals it has zero loss; anything else is positive.
    model = ContinuousFlow(2, 0, hidden=8, layers=1)
    x0 = torch.tensor([[1.0, -2.0]]).expand(256, 2)
    sigma = 1e-4

    def exact(t: torch.Tensor, x_t: torch.Tensor, y_s: object = None) -> torch.Tensor:
        t = t[:, None]
        z = (x_t - (1 - t) * x0) / (sigma + (1 - sigma) * t)
        return (1 - sigma) * z - x0

    model.velocity = exact  # type: ignore[method-assign]
    assert float(flow_matching_loss(model, x0, None, sigma)) < 1e-8
    model.velocity = lambda t, x_t, y_s=None: exact(t, x_t) + 0.1  # type: ignore[method-assign]
    assert float(flow_matching_loss(model, x0, None, sigma)) == pytest.approx(0.01, rel=1e-4)


def test_run_configs_choose_the_cnf_by_kind() -> None:
    cfg = resolve_config({"model": {"kind": "cnf", "hidden": 32}})
    assert cfg["model"]["kind"] == "cnf" and cfg["model"]["hidden"] == 32
    assert cfg["model"]["layers"] == 3 and "seed" not in cfg["model"]  # the CNF's defaults
    assert "arch" not in cfg["model"] and "blocks" not in cfg["model"]
    assert cfg["objective"]["name"] == "flow_matching"
    cfg = resolve_config({"model": {"kind": "cnf"}, "objective": {"sigma_min": 0.01}})
    assert cfg["objective"] == {"name": "flow_matching", "sigma_min": 0.01}
    with pytest.raises(ConfigError, match="model.arch: not a setting of model.kind=cnf"):
        resolve_config({"model": {"kind": "cnf", "arch": "spline"}})
    with pytest.raises(ConfigError, match="model.trace: unknown value 'lanczos'"):
        resolve_config({"model": {"kind": "cnf", "trace": "lanczos"}})


VALID = (
    "valid combinations: objective.name in (nll, fdiv, sinkhorn, mmd) with model.kind in "
    "(inn, cinn); objective.name in (flow_matching) with model.kind in (cnf)"
)


@pytest.mark.parametrize(
    ("model", "objective", "field"),
    [
        ({"kind": "cnf"}, {"name": "nll"}, "objective: NLL() trains a model through its bijection"),
        ({"kind": "cnf"}, {"name": "fdiv", "divergence": "kl"}, "through its bijection"),
        ({"kind": "cnf"}, {"name": "mmd"}, "model.kind=cnf does not offer"),
        ({"kind": "cinn"}, {"name": "flow_matching"}, "through its velocity"),
        ({"kind": "inn"}, {"name": "nll", "terms": [{"name": "flow_matching"}]}, "terms[0]"),
        (
            {"kind": "cnf"},
            {"name": "flow_matching", "prior": "gaussian", "prior_weight": 0.1},
            "objective.prior: a prior trains a model through its bijection",
        ),
    ],
)
def test_objectives_the_model_cannot_train_with_are_refused(model, objective, field) -> None:  # noqa: ANN001
    with pytest.raises(ConfigError) as err:
        resolve_config({"model": model, "objective": objective})
    assert field in str(err.value) and VALID in str(err.value)


def test_bad_input_gets_clear_errors() -> None:
    x, y = torch.randn(200, 2), torch.randn(200, 3)
    with pytest.raises(ConfigError, match="fit: objective: NLL\\(\\) trains a model through"):
        vinaflow.fit(x, y, model="cnf", objective="nll", steps=1, progress=False)
    with pytest.raises(ConfigError, match="through its velocity, which model.kind=cinn"):
        vinaflow.fit(x, y, objective="flow_matching", steps=1, progress=False)
    with pytest.raises(ConfigError, match="trains a continuous flow \\(model.kind=cnf\\)"):
        FlowMatchingObjective(ConditionalINN(2, 3, blocks=1, hidden=8))
    with pytest.raises(ConfigError, match="objective.sigma_min must be a number in \\[0, 1\\)"):
        FlowMatchingObjective(ContinuousFlow(2, 3), sigma_min=1.5)
    post = Posterior(_cnf(dim_x=2, dim_y=3))
    with pytest.raises(DataError, match=r"observations must have shape \(3,\) or \(n_obs, 3\)"):
        post.sample(torch.zeros(2), 5)
    with pytest.raises(DataError, match=r"x must have shape \(2,\) or \(n_obs, 2\)"):
        post.log_prob(torch.zeros(4, 3), torch.zeros(3))
    with pytest.raises(ConfigError, match="model.atol must be a number in \\(0, 1\\)"):
        ContinuousFlow(2, 3, atol=0.0)


def test_a_failing_ode_solve_raises_instead_of_hanging_or_returning_nan() -> None:
    model = _cnf(dim_x=2, dim_y=1)
    with torch.no_grad():
        model.field.net[0].weight[0, 0] = float("nan")
    with pytest.raises(ConvergenceError, match="non-finite velocity"):
        Posterior(model).sample([0.0], 5, seed=0)
    stiff = _cnf(dim_x=2, dim_y=1, atol=1e-9, rtol=1e-9, max_evaluations=100)
    with pytest.raises(ConvergenceError, match="more than model.max_evaluations=100"):
        Posterior(stiff).sample([0.0], 5, seed=0)


def test_vinaflow_run_trains_evaluates_and_reports_a_cnf(tmp_path) -> None:  # noqa: ANN001
    sets = {
        "model.kind": "cnf",
        "model.hidden": 16,
        "problem.num_simulations": 600,
        "training.steps": 40,
        "evaluation.num_observations": 2,
        "evaluation.num_samples": 100,
        "evaluation.num_calibration": 10,
        "evaluation.calibration_samples": 20,
        "evaluation.plots": "false",
    }
    args = [a for k, v in sets.items() for a in ("--set", f"{k}={v}")]
    out = tmp_path / "run"
    proc = subprocess.run(
        [sys.executable, "-m", "vinaflow", "run", *args, "--out", str(out)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stderr
    assert "- model: `cnf`, hidden 16 x 3 layers" in (out / "report.md").read_text()
    assert "- objective: flow_matching\n" in (out / "report.md").read_text()
    assert isinstance(vinaflow.load(out).model, ContinuousFlow)
    bad = subprocess.run(
        [sys.executable, "-m", "vinaflow", "run", *args, "--set", "objective.name=nll"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "valid combinations" in bad.stderr
    assert sorted(p.name for p in tmp_path.iterdir()) == ["run"]  # nothing written


def _docs_block(marker: str) -> str:
    """The fenced code block after ``<!-- marker`` in the models guide."""
    page = (Path(__file__).resolve().parents[1] / "docs" / "guide" / "models.md").read_text()
    after = page.split(f"<!-- {marker}", 1)[1]
    return after.split("```", 2)[1].split("\n", 1)[1]


def test_the_models_guide_example_runs_and_its_config_validates(capsys) -> None:  # noqa: ANN001
    exec(compile(_docs_block("cnf-example"), "models.md", "exec"), {})  # noqa: S102
    assert capsys.readouterr().out.strip() == "(1, 1000, 2) (5,)"
    cfg = resolve_config(yaml.safe_load(_docs_block("cnf-config")))
    assert cfg["model"]["kind"] == "cnf" and cfg["objective"]["name"] == "flow_matching"
