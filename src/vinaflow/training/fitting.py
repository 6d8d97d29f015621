"""The one path from simulations to a trained posterior, shared by ``vinaflow.fit`` and
``vinaflow run``.

Both build the model and the objective from config sections, standardise with the
training data, optionally set up noise augmentation and train with :class:`Trainer`;
``vinaflow run`` adds the run folder (checkpoints, resume, evaluation, report) around
:meth:`TrainingJob.run`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError
from vinaflow.models import AmortizedModel, Posterior, build_model
from vinaflow.objectives.build import build_objective
from vinaflow.objectives.losses import Objective
from vinaflow.problems import BankProblem, Problem
from vinaflow.problems.shards import ShardedBank
from vinaflow.training.streaming import ShardStream
from vinaflow.training.trainer import Trainer, TrainingConfig, TrainResult

__all__ = [
    "Dataset",
    "TrainingJob",
    "build_objective",
    "build_model_from_config",
    "dataset_from_arrays",
    "member_dataset",
    "member_job",
    "model_settings",
    "noise_augmentation_inputs",
    "prepare_data",
    "prepare_training",
    "train_members",
    "train_posterior",
]

#: Model settings that only iResNet blocks take (dropped for coupling blocks).
_IRESNET_KEYS = (
    "explicit",
    "logdet",
    "n_series_terms",
    "n_hutchinson",
    "fixed_point_tol",
    "fixed_point_max_iter",
    "lipschitz",
)


@dataclass
class Dataset:
    """Training and validation rows in problem units.

    ``x_test``/``y_test`` hold held-out bank rows for problems that cannot simulate;
    ``y_clean`` the noise-free training observations (noise augmentation). For a
    sharded bank, ``bank``/``rows`` name the training rows, read in windows while
    training, and ``x``/``y``/``y_clean`` are a sample of them (for the normalisation).
    """

    x: Tensor
    y: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor | None = None
    y_test: Tensor | None = None
    y_clean: Tensor | None = None
    bank: ShardedBank | None = None
    rows: tuple[int, int] | None = None
    #: The validation rows' noise-free observations (to re-split for ensemble members).
    y_clean_val: Tensor | None = None


#: Rows of a sharded bank read to fit the normalisation (moments of 100,000 rows are
#: within 0.5% of the whole bank's for any variable with a finite fourth moment).
NORMALIZATION_ROWS = 100_000


def _split(x: Tensor, y: Tensor, n_val: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def _reshuffled(
    x: Tensor, y: Tensor, clean: Tensor | None, seed: int | None
) -> tuple[Tensor, Tensor, Tensor | None]:
    if seed is None:
        return x, y, clean
    perm = torch.randperm(x.shape[0], generator=torch.Generator().manual_seed(seed))
    return x[perm], y[perm], None if clean is None else clean[perm]


def prepare_data(
    problem: Problem, problem_cfg: Mapping[str, Any], seed: int, n_test: int = 0
) -> Dataset:
    """Training and validation simulations (or bank rows), reproducible from ``seed``."""
    clean: Tensor | None = None
    if isinstance(problem, BankProblem) and isinstance(problem.bank, ShardedBank):
        return _sharded_data(problem, problem_cfg, n_test)
    if isinstance(problem, BankProblem):
        x, y, clean = problem.bank.x, problem.bank.y, problem.bank.y_clean
        n = min(len(x), problem_cfg.get("num_simulations") or len(x))
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x), generator=g)
        x, y = x[perm], y[perm]
        clean = None if clean is None else clean[perm]
        need_test = n_test if problem.source is None else 0
        if n - need_test < 20:
            raise DataError(f"bank has {len(x)} rows: too few for training and {need_test} tests")
        x_test, y_test = (x[n - need_test : n], y[n - need_test : n]) if need_test else (None, None)
        x, y = x[: n - need_test], y[: n - need_test]
        clean = None if clean is None else clean[: n - need_test]
    else:
        n = int(problem_cfg["num_simulations"])
        g = torch.Generator().manual_seed(seed)
        x = problem.sample_prior(n, g)
        y, clean = problem.simulate_with_clean_checked(x, g)
        x_test = y_test = None
    n_val = int(problem_cfg.get("num_validation") or min(max(len(x) // 10, 1), 2000))
    if n_val >= len(x):
        raise ConfigError(f"problem.num_validation ({n_val}) must be below the data size {len(x)}")
    xt, yt, xv, yv = _split(x, y, n_val)
    cv, ct = (None, None) if clean is None else (clean[:n_val], clean[n_val:])
    return Dataset(xt, yt, xv, yv, x_test, y_test, ct, y_clean_val=cv)


def _sharded_data(problem: BankProblem, problem_cfg: Mapping[str, Any], n_test: int) -> Dataset:
    """Validation (and test) rows in memory, the rest streamed: rows are in random order
    already (``vinaflow simulate`` draws every row independently), so the first rows are
    a random validation set and no permutation of the bank is needed."""
    bank = problem.bank
    assert isinstance(bank, ShardedBank)
    n = min(len(bank), problem_cfg.get("num_simulations") or len(bank))
    need_test = n_test if problem.source is None else 0
    n_val = int(problem_cfg.get("num_validation") or min(max(n // 10, 1), 2000))
    if n - need_test - n_val < 20:
        raise ConfigError(
            f"bank {bank.folder} has {n} usable rows: too few for {n_val} validation rows, "
            f"{need_test} tests and training"
        )
    t = torch.from_numpy
    x_val, y_val = t(bank.read("x", 0, n_val)), t(bank.read("y", 0, n_val))
    x_test = y_test = None
    if need_test:
        x_test = t(bank.read("x", n_val, n_val + need_test))
        y_test = t(bank.read("y", n_val, n_val + need_test))
    start = n_val + need_test
    stop = min(n, start + NORMALIZATION_ROWS)
    x, y = t(bank.read("x", start, stop)), t(bank.read("y", start, stop))
    clean = t(bank.read("y_clean", start, stop)) if bank.has_clean else None
    return Dataset(x, y, x_val, y_val, x_test, y_test, clean, bank=bank, rows=(start, n))


def dataset_from_arrays(
    x: Tensor,
    y: Tensor,
    n_val: int,
    seed: int | None = None,
    y_clean: Tensor | None = None,
) -> Dataset:
    """Rows of ``(x, y)`` split into ``n_val`` validation rows and the rest for training.

    With ``seed``, rows are shuffled first (user arrays may be sorted, e.g. by parameter);
    without it the first ``n_val`` rows are the validation rows (fresh simulations are in
    random order already).
    """
    x, y, y_clean = _reshuffled(x, y, y_clean, seed)
    xt, yt, xv, yv = _split(x, y, n_val)
    if y_clean is None:
        return Dataset(xt, yt, xv, yv)
    return Dataset(xt, yt, xv, yv, y_clean=y_clean[n_val:], y_clean_val=y_clean[:n_val])


def member_dataset(data: Dataset, seed: int) -> Dataset:
    """The rows of ``data`` re-split into training and validation rows by ``seed``: the
    data of ensemble member ``k > 0`` (seed ``seed + k``), whose members train on the same
    simulations with different validation rows. Test rows are kept; a sharded bank keeps
    its split (its stream's order follows the member's training seed)."""
    if data.bank is not None:
        return data
    clean = None
    if data.y_clean is not None and data.y_clean_val is not None:
        clean = torch.cat([data.y_clean_val, data.y_clean])
    out = dataset_from_arrays(
        torch.cat([data.x_val, data.x]),
        torch.cat([data.y_val, data.y]),
        data.x_val.shape[0],
        seed=seed,
        y_clean=clean,
    )
    out.x_test, out.y_test = data.x_test, data.y_test
    return out


def noise_augmentation_inputs(
    problem: Problem | None, data: Dataset, model: AmortizedModel
) -> tuple[Tensor, Tensor]:
    """Standardised noise-free training observations and noise scales for the trainer."""
    std = None if problem is None else problem.observation_noise_std
    if std is None or data.y_clean is None:
        if problem is None:
            why = "data given as arrays (simulate with a problem whose noise is additive Gaussian)"
        elif isinstance(problem, BankProblem) and problem.source is not None:
            why = "a bank without 'y_clean' (re-create it with `vinaflow simulate`)"
        else:
            why = f"problem {problem.name!r}, whose noise is not additive Gaussian"
        raise ConfigError(f"training.noise_augmentation is not available for {why}")
    std = torch.as_tensor(std, dtype=torch.float32)
    return model.y_norm(data.y_clean.float()), std / model.y_norm.std


def model_settings(model_cfg: Mapping[str, Any], objective: Mapping[str, Any]) -> dict[str, Any]:
    """Constructor keywords of the ``model`` section (without ``kind``) for ``objective``.

    An iResNet's ``explicit: auto`` becomes the direction the objective trains through
    (``inverse`` for sampling objectives, ``forward`` for the likelihood), so that
    training never differentiates through a fixed-point solve; coupling blocks drop the
    iResNet-only settings.
    """
    kwargs = {k: v for k, v in model_cfg.items() if k != "kind"}
    if kwargs.get("arch") == "iresnet":
        if kwargs.get("explicit", "auto") == "auto":
            sampling = objective["name"] != "nll" and objective.get("direction") == "backward"
            kwargs["explicit"] = "inverse" if sampling else "forward"
    else:
        for k in _IRESNET_KEYS:
            kwargs.pop(k, None)
    return kwargs


def build_model_from_config(
    model_cfg: Mapping[str, Any],
    objective_cfg: Mapping[str, Any],
    dim_x: int,
    dim_y: int,
    seed: int,
) -> AmortizedModel:
    """The model of a resolved ``model`` section; ``seed`` unless the section sets one."""
    kwargs = model_settings(model_cfg, objective_cfg)
    kwargs.setdefault("seed", seed)
    return build_model(model_cfg["kind"], dim_x, dim_y, **kwargs)


def _check_model(model: Any, dim_x: int, dim_y: int) -> None:
    if not isinstance(model, AmortizedModel):
        raise ConfigError(
            "model must be a kind name ('cinn', 'inn', 'cnf') or a conditional model "
            f"(vinaflow.models.AmortizedModel), got {type(model).__name__}; unconditional "
            "flows train with `vinaflow flow`"
        )
    if (model.dim_x, model.dim_y) != (dim_x, dim_y):
        raise DataError(
            f"model has dim_x={model.dim_x}, dim_y={model.dim_y} but the data have "
            f"dim_x={dim_x}, dim_y={dim_y} columns"
        )


@dataclass
class TrainingJob:
    """A model, its objective and standardised data, ready for :meth:`run`."""

    model: AmortizedModel
    objective: Objective
    trainer: Trainer
    x: Tensor
    y: Tensor
    x_val: Tensor | None
    y_val: Tensor | None
    y_noise_std: Tensor | None = None
    stream: ShardStream | None = None

    def run(self, checkpoint: str | Path | None = None, resume: bool = False) -> TrainResult:
        """Train (from ``checkpoint`` when ``resume``); leaves the model in eval mode."""
        return self.trainer.fit(
            self.model,
            self.objective,
            self.x,
            self.y,
            self.x_val,
            self.y_val,
            checkpoint=checkpoint,
            resume=resume,
            y_noise_std=self.y_noise_std,
            stream=self.stream,
        )


def prepare_training(
    model: AmortizedModel,
    objective: Mapping[str, Any] | Objective,
    training: TrainingConfig,
    data: Dataset,
    problem: Problem | None = None,
) -> TrainingJob:
    """Standardise with the training rows, build the objective and set up noise augmentation.

    ``objective`` is a resolved config section or a built :class:`Objective`. ``problem``
    supplies the prior penalty's default parameters and the noise model of noise
    augmentation (``training.noise_augmentation``); ``None`` for plain arrays. Every
    config error is raised here, before anything is trained or written.
    """
    _check_model(model, data.x.shape[1], data.y.shape[1])
    model.fit_normalization(data.x, data.y)
    if not isinstance(objective, Objective):
        prior = None if problem is None else problem.prior
        objective = build_objective(objective, model, prior)
    x_s, y_s = model.x_norm(data.x), model.y_norm(data.y)
    xv_s = yv_s = None
    if data.x_val.shape[0] > 0:
        xv_s, yv_s = model.x_norm(data.x_val), model.y_norm(data.y_val)
    noise_std = None
    if training.noise_augmentation:
        y_s, noise_std = noise_augmentation_inputs(problem, data, model)
    stream = None
    if data.bank is not None and data.rows is not None:
        stream = ShardStream(
            data.bank,
            *data.rows,
            batch_size=training.batch_size,
            seed=training.seed,
            window_rows=training.shuffle_window,
            y_name="y_clean" if training.noise_augmentation else "y",
        )
        # CPU copies: the model moves to the training device, the windows stay here.
        stream.set_transforms(copy.deepcopy(model.x_norm), copy.deepcopy(model.y_norm))
    return TrainingJob(model, objective, Trainer(training), x_s, y_s, xv_s, yv_s, noise_std, stream)


def train_posterior(
    model: AmortizedModel,
    objective: Mapping[str, Any] | Objective,
    training: TrainingConfig,
    data: Dataset,
    problem: Problem | None = None,
) -> tuple[Posterior, TrainResult]:
    """:func:`prepare_training` then :meth:`TrainingJob.run`; the trained posterior."""
    job = prepare_training(model, objective, training, data, problem)
    result = job.run()
    return Posterior(model), result


def member_job(
    member: int,
    model_cfg: Mapping[str, Any] | None,
    objective: Mapping[str, Any] | Objective,
    objective_cfg: Mapping[str, Any],
    training: TrainingConfig,
    data: Dataset,
    problem: Problem | None = None,
    model: AmortizedModel | None = None,
) -> TrainingJob:
    """The training job of ensemble member ``member`` (or of a single posterior, member 0).

    Member ``k`` builds its model from ``model_cfg`` (unless a built ``model`` is given)
    and trains with seed ``training.seed + k``: initialisation, minibatch order and noise
    differ between members, which is what makes their errors independent.
    ``objective_cfg`` is the resolved section the model is built for (an iResNet's
    ``explicit: auto``), ``objective`` the section or built objective trained.
    """
    seed = training.seed + member
    if model is None:
        if model_cfg is None:
            raise ConfigError("member_job: give model_cfg or a built model")
        model = build_model_from_config(
            model_cfg, objective_cfg, data.x.shape[1], data.y.shape[1], seed
        )
    return prepare_training(
        model, objective, dataclasses.replace(training, seed=seed), data, problem
    )


def train_members(
    members: int,
    job: Callable[[int], TrainingJob],
    checkpoint: Callable[[int], Path | None] | None = None,
    resume: bool = False,
    first: TrainingJob | None = None,
) -> list[Posterior]:
    """Train ``members`` posteriors one after the other: the loop ``vinaflow.fit(ensemble=K)``
    and ``vinaflow run`` (``training.ensemble``) share.

    ``job(k)`` prepares member ``k`` (:func:`member_job`); ``first`` is member 0's job when
    the caller prepared it already (to raise config errors before writing anything).
    ``checkpoint(k)`` is member ``k``'s checkpoint file; with ``resume``, a member whose
    checkpoint exists continues from it (one that had finished trains no further step)
    and the others start from step 0, so a run killed in member ``k`` repeats none of the
    members before it. Each member trains in a forked random state, and torch's thread
    count is restored afterwards. Each posterior's ``train_result`` is set.
    """
    threads = torch.get_num_threads()
    trained: list[Posterior] = []
    try:
        for k in range(members):
            with torch.random.fork_rng():
                member = first if k == 0 and first is not None else job(k)
                path = None if checkpoint is None else checkpoint(k)
                result = member.run(
                    checkpoint=path, resume=resume and path is not None and Path(path).is_file()
                )
            posterior = Posterior(member.model)
            posterior.train_result = result
            trained.append(posterior)
    finally:
        torch.set_num_threads(threads)
    return trained
