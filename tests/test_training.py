"""Trainer: accuracy against a closed form, exact resume, divergence handling, stability."""

from __future__ import annotations

import pytest
import torch

from vinaflow.errors import ModelFileError, TrainingDivergedError
from vinaflow.models import ConditionalINN, JointINN, Posterior
from vinaflow.objectives.losses import (
    CompositeObjective,
    FDivergenceObjective,
    NLLObjective,
    Objective,
)
from vinaflow.problems import GaussianLinear
from vinaflow.training import Trainer, TrainingConfig


def _data(n: int = 4000, seed: int = 0):  # noqa: ANN202
    problem = GaussianLinear(dim_x=2, dim_y=1, noise=0.3, seed=2)
    g = torch.Generator().manual_seed(seed)
    x = problem.sample_prior(n, g)
    return problem, x, problem.simulate(x, g)


def test_nll_cinn_recovers_closed_form_posterior() -> None:
    problem, x, y = _data()
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=4, hidden=64)
    model.fit_normalization(x, y)
    cfg = TrainingConfig(steps=1200, batch_size=256, lr=2e-3, progress=False, val_every=400)
    Trainer(cfg).fit(
        model, CompositeObjective([(NLLObjective(), 1.0)]), model.x_norm(x), model.y_norm(y)
    )
    post = Posterior(model)
    for y_obs in (torch.tensor([0.6]), torch.tensor([-0.4])):
        s = post.sample(y_obs, 8000, generator=torch.Generator().manual_seed(1))[0].double()
        mean = problem.posterior_mean(y_obs)
        sd = problem.post_cov.diagonal().sqrt()
        assert ((s.mean(0) - mean).abs() / sd).max() < 0.15
        assert ((s.std(0) / sd) - 1).abs().max() < 0.12


def _fit(
    steps: int,
    checkpoint=None,
    resume: bool = False,
    crash_at: int | None = None,
    critic: bool = True,
    noise: bool = False,
):  # noqa: ANN001, ANN202
    problem, x, y = _data(1000)
    torch.manual_seed(0)
    model = JointINN(dim_x=2, dim_y=1, latent_dim=2, blocks=2, hidden=16, seed=0)
    model.fit_normalization(x, y)
    terms = [(NLLObjective(), 1.0)]
    if critic:
        terms.append((FDivergenceObjective(model, "js", critic_hidden=16), 0.5))
    objective = CompositeObjective(terms)
    cfg = TrainingConfig(
        steps=steps,
        batch_size=64,
        progress=False,
        checkpoint_every=25,
        val_every=20,
        critic_steps=2,
    )
    trainer = Trainer(cfg)
    if crash_at is not None:
        original = trainer._update
        count = {"n": 0}

        def crashing(*a):  # noqa: ANN002, ANN202
            count["n"] += 1
            if count["n"] > crash_at:
                raise KeyboardInterrupt
            return original(*a)

        trainer._update = crashing
    xs, ys = model.x_norm(x), model.y_norm(y)
    train_y, std = ys, None
    if noise:  # noise augmentation: fresh noise per batch must replay exactly on resume
        train_y = model.y_norm(problem.simulate_noise_free(x))
        std = problem.observation_noise_std / model.y_norm.std
    trainer.fit(
        model,
        objective,
        xs,
        train_y,
        xs[:200],
        ys[:200],
        checkpoint=checkpoint,
        resume=resume,
        y_noise_std=std,
    )
    return model, objective


@pytest.mark.parametrize("noise", [False, True])
def test_resume_is_bit_identical(tmp_path, noise: bool) -> None:  # noqa: ANN001
    ref_model, ref_obj = _fit(80, noise=noise)
    ckpt = tmp_path / "ckpt.pt"
    with pytest.raises(KeyboardInterrupt):
        _fit(80, checkpoint=ckpt, crash_at=60, noise=noise)  # last checkpoint at step 50
    model, obj = _fit(80, checkpoint=ckpt, resume=True, noise=noise)
    for a, b in zip(ref_model.state_dict().values(), model.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    for a, b in zip(ref_obj.state_dict().values(), obj.state_dict().values(), strict=True):
        assert torch.equal(a, b)


def test_noise_augmentation_prevents_overfitting_a_small_bank() -> None:
    """150 simulations: with fixed noise the cINN memorises them; fresh noise per batch
    keeps the held-out likelihood close to the training one."""
    problem, x, y = _data(150, seed=3)
    _, x_val, y_val = _data(4000, seed=4)
    clean = problem.simulate_noise_free(x)
    losses = {}
    for augment in (False, True):
        model = ConditionalINN(dim_x=2, dim_y=1, blocks=4, hidden=64, seed=0)
        model.fit_normalization(x, y)
        cfg = TrainingConfig(steps=500, batch_size=150, lr=3e-3, progress=False)
        train_y = model.y_norm(clean if augment else y)
        std = problem.observation_noise_std / model.y_norm.std if augment else None
        Trainer(cfg).fit(model, NLLObjective(), model.x_norm(x), train_y, y_noise_std=std)
        with torch.no_grad():
            losses[augment] = float(model.nll(model.x_norm(x_val), model.y_norm(y_val)).mean())
    assert losses[True] < losses[False] - 0.1, losses


def test_noise_augmentation_rejects_bad_scales() -> None:
    _, x, y = _data(100)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    from vinaflow.errors import ConfigError

    with pytest.raises(ConfigError, match="y_noise_std"):
        Trainer(TrainingConfig(steps=2, progress=False)).fit(
            model, NLLObjective(), x, y, y_noise_std=torch.tensor([0.1, 0.2])
        )


def test_resume_errors(tmp_path) -> None:  # noqa: ANN001
    with pytest.raises(ModelFileError, match="no checkpoint"):
        _fit(5, checkpoint=tmp_path / "none.pt", resume=True)
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    with pytest.raises(ModelFileError, match="corrupted"):
        _fit(5, checkpoint=tmp_path / "bad.pt", resume=True)


class _Flaky(Objective):
    """NLL that returns NaN at chosen calls (or always)."""

    def __init__(self, bad_calls: set[int] | None) -> None:
        super().__init__()
        self.bad_calls, self.calls = bad_calls, 0

    def generator_loss(self, model, x_s, y_s):  # noqa: ANN001, ANN201
        self.calls += 1
        loss = model.nll(x_s, y_s).mean()
        if self.bad_calls is None or self.calls in self.bad_calls:
            loss = loss * float("nan")
        return loss, {}


def test_nonfinite_loss_rolls_back_and_recovers(capsys) -> None:  # noqa: ANN001
    _, x, y = _data(500)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(steps=60, batch_size=50, progress=False, val_every=20)
    result = Trainer(cfg).fit(model, _Flaky({30}), x, y, x[:50], y[:50])
    assert result.steps == 60 and result.retries == 1
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert "rolled back" in capsys.readouterr().err


def test_persistent_divergence_is_reported() -> None:
    _, x, y = _data(500)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(steps=20, batch_size=50, progress=False, max_retries=2)
    with pytest.raises(TrainingDivergedError, match="retried 2 time"):
        Trainer(cfg).fit(model, _Flaky(None), x, y)


@pytest.mark.parametrize(
    "divergence", ["kl", "reverse-kl", "js", "pearson", "hellinger", "gan", "tv"]
)
@pytest.mark.parametrize("direction", ["backward", "forward"])
def test_variational_training_stays_finite(divergence: str, direction: str) -> None:
    _, x, y = _data(600)
    model = JointINN(dim_x=2, dim_y=1, latent_dim=2, blocks=2, hidden=16)
    model.fit_normalization(x, y)
    objective = CompositeObjective(
        [(FDivergenceObjective(model, divergence, direction, critic_hidden=32), 1.0)]
    )
    cfg = TrainingConfig(steps=150, batch_size=128, lr=3e-3, progress=False, max_retries=0)
    result = Trainer(cfg).fit(model, objective, model.x_norm(x), model.y_norm(y))
    assert result.retries == 0
    losses = torch.tensor(result.history["loss"])
    assert torch.isfinite(losses).all()
    assert all(torch.isfinite(p).all() for p in model.parameters())


def test_max_seconds_stops_early() -> None:
    _, x, y = _data(500)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(steps=10**6, max_seconds=0.5, batch_size=50, progress=False)
    result = Trainer(cfg).fit(model, NLLObjective(), x, y)
    assert result.stopped == "max_seconds" and 0 < result.steps < 10**6
    assert result.train_seconds < 5


def test_early_stopping_restores_best() -> None:
    _, x, y = _data(500)
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    cfg = TrainingConfig(
        steps=5000,
        batch_size=50,
        lr=5e-2,
        progress=False,
        val_every=10,
        patience=3,
        lr_schedule="constant",
    )
    result = Trainer(cfg).fit(model, NLLObjective(), x, y, x[:100], y[:100])
    assert result.stopped == "early_stopping"
    assert result.steps < 5000


def test_compiled_training_matches_eager_and_is_undone() -> None:
    # torch.compile must not change what is learned (same seed, same batches: the same
    # parameters up to float reassociation), must keep parameter names, and must leave
    # the model uncompiled for sampling.
    _, x, y = _data(600)
    results = {}
    for compile_ in (False, True):
        model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=16)
        torch.manual_seed(0)
        for p in model.parameters():
            p.data.normal_(0, 0.05)
        model.fit_normalization(x, y)
        cfg = TrainingConfig(steps=30, batch_size=64, progress=False, compile=compile_)
        Trainer(cfg).fit(
            model, CompositeObjective([(NLLObjective(), 1.0)]), model.x_norm(x), model.y_norm(y)
        )
        results[compile_] = model.state_dict()
        assert all(getattr(m, "_compiled_call_impl", None) is None for m in model.modules())
    assert results[True].keys() == results[False].keys()
    for k, v in results[False].items():
        torch.testing.assert_close(results[True][k], v, atol=1e-4, rtol=1e-3)


def test_bf16_autocast_trains_close_to_float32() -> None:
    # bf16 autocast changes the arithmetic (so the parameters differ from float32's)
    # but not what is learned: the validation NLL, computed in float32, ends close.
    from vinaflow.errors import ConfigError

    _, x, y = _data(2000)
    val, weights = {}, {}
    for precision in ("fp32", "bf16"):
        model = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=32, seed=0)
        model.fit_normalization(x, y)
        cfg = TrainingConfig(
            steps=300, batch_size=128, progress=False, precision=precision, val_every=300
        )
        xs, ys = model.x_norm(x), model.y_norm(y)
        result = Trainer(cfg).fit(
            model, CompositeObjective([(NLLObjective(), 1.0)]), xs, ys, xs[:500], ys[:500]
        )
        val[precision] = result.history["val_loss"][-1]
        weights[precision] = next(model.parameters()).detach().clone()
        assert all(p.dtype == torch.float32 for p in model.parameters())
    untrained = ConditionalINN(dim_x=2, dim_y=1, blocks=2, hidden=32, seed=0)
    untrained.fit_normalization(x, y)
    start = float(untrained.nll(untrained.x_norm(x[:500]), untrained.y_norm(y[:500])).mean())
    assert val["fp32"] < start - 0.15, (start, val)
    assert abs(val["bf16"] - val["fp32"]) < 0.05, val
    assert not torch.equal(weights["fp32"], weights["bf16"])  # autocast was on
    with pytest.raises(ConfigError, match="training.precision: unknown 'fp16'"):
        TrainingConfig(precision="fp16")


def test_plateau_schedule_halves_the_rate_after_validations_without_improvement(
    tmp_path,  # noqa: ANN001
) -> None:
    """``lr_schedule="plateau"``: every ``lr_decay_patience`` validations without a new best
    the rate is multiplied by ``lr_decay_factor``; the reductions live in checkpoints."""
    _, x, y = _data(300)
    # a rate this high never improves on the first validation, so the reductions are due
    cfg = TrainingConfig(steps=60, batch_size=50, lr=0.3, progress=False, val_every=5,
                         lr_schedule="plateau", lr_decay_patience=2, lr_decay_factor=0.5,
                         checkpoint_every=60)  # fmt: skip
    model = ConditionalINN(dim_x=2, dim_y=1, blocks=1, hidden=8)
    trainer = Trainer(cfg)
    trainer.fit(model, NLLObjective(), x, y, x[:60], y[:60], checkpoint=tmp_path / "c.pt")
    val = trainer.history["val_loss"]
    # replay the rule on the recorded validation losses
    best, wait, scale = float("inf"), 0, 1.0
    for v in val:
        wait = 0 if v < best else wait + 1
        best = min(best, v)
        if wait >= 2:
            scale, wait = scale * 0.5, 0
    assert scale < 1 and trainer.plateau_scale == scale
    assert trainer.opt.param_groups[0]["lr"] == pytest.approx(0.3 * scale)
    state = torch.load(tmp_path / "c.pt", weights_only=False)
    assert state["plateau"][0] == scale
    with pytest.raises(Exception, match="lr_decay_factor"):
        TrainingConfig(lr_decay_factor=1.5)
