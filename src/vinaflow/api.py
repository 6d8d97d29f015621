"""The Python API: ``fit`` a posterior, ``load`` a saved one, ``evaluate`` and ``certify`` it.

Example:
    >>> import torch, vinaflow
    >>> from vinaflow.problems import GaussianLinear
    >>> problem = GaussianLinear(dim_x=2, dim_y=1)
    >>> x = problem.sample_prior(500)
    >>> posterior = vinaflow.fit(x, problem.simulate(x), steps=20, progress=False)
    >>> posterior.sample([0.3], 100, seed=0).shape
    torch.Size([1, 100, 2])

``fit`` trains through the same code as ``vinaflow run`` (model and objective from the
same config sections, validated by the same tables); ``vinaflow run`` adds the run
folder, checkpoints and the report around it.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.distributions import Distribution

from vinaflow import config as _config
from vinaflow.errors import ConfigError, DataError
from vinaflow.evaluation.certificate import certify_posterior
from vinaflow.evaluation.posterior import score_against_reference, score_posterior
from vinaflow.models import (
    MODEL_KINDS,
    AmortizedModel,
    BoxSupport,
    EnsemblePosterior,
    Posterior,
    as_observations,
)
from vinaflow.objectives import objective_config
from vinaflow.objectives.losses import Objective
from vinaflow.problems import Problem, SimulatorProblem
from vinaflow.training.fitting import (
    Dataset,
    TrainingJob,
    dataset_from_arrays,
    member_dataset,
    member_job,
    train_members,
)
from vinaflow.training.sequential import (
    check_observation,
    check_sequential,
    round_sizes,
    run_rounds,
    train_round,
)
from vinaflow.training.trainer import TrainingConfig

__all__ = ["certify", "evaluate", "fit", "load"]

#: Step cap of ``fit`` without ``steps`` and ``max_seconds``: early stopping on the
#: validation loss ends training, this only bounds it.
DEFAULT_MAX_STEPS = 20_000
#: Step cap of ``fit`` with ``max_seconds`` but no ``steps``: the time budget binds.
TIME_BOUND_MAX_STEPS = 10_000_000
#: Validations without improvement before ``fit`` stops, when no ``steps`` are given.
DEFAULT_PATIENCE = 10
#: ``fit`` arguments of their own (not routed through ``**options``).
_OWN_KEYS = {"kind": "model", "name": "objective", "steps": "steps", "max_seconds": "max_seconds"}
_OWN_KEYS |= {"seed": "seed", "progress": "progress", "ensemble": "ensemble", "rounds": "rounds"}
#: Sections of ``**options``, in the order of the error messages.
_SECTIONS = ("model", "training", "objective")


def _section_keys() -> dict[str, tuple[str, ...]]:
    """Keys ``fit(**options)`` accepts per config section: the YAML config's own tables."""
    training = tuple(f.name for f in dataclasses.fields(TrainingConfig))
    keys = {
        "model": tuple(_config.MODEL_KEYS),
        "training": training,
        "objective": tuple(_config.OBJECTIVE_KEYS),
    }
    return {s: tuple(sorted(k for k in v if k not in _OWN_KEYS)) for s, v in keys.items()}


def _route_options(options: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Split ``fit``'s keyword options into config sections.

    A key of exactly one section goes there; a key of several (``y_weight`` is a model
    and an objective setting) needs its section as prefix: ``model_y_weight=``.
    """
    tables = _section_keys()
    out: dict[str, dict[str, Any]] = {s: {} for s in _SECTIONS}
    for key, value in options.items():
        if key in _OWN_KEYS:
            raise ConfigError(f"fit: give {key!r} as fit({_OWN_KEYS[key]}=...), not as an option")
        section, name = None, key
        prefix, _, rest = key.partition("_")
        if prefix in tables and rest in tables[prefix]:
            section, name = prefix, rest
        else:
            owners = [s for s in _SECTIONS if key in tables[s]]
            if len(owners) > 1:
                raise ConfigError(
                    f"fit: option {key!r} is a setting of several sections ({', '.join(owners)}); "
                    f"write it as {' or '.join(f'{s}_{key}=' for s in owners)}"
                )
            if owners:
                section = owners[0]
        if section is None:
            allowed = "; ".join(f"{s}: {', '.join(tables[s])}" for s in _SECTIONS)
            raise ConfigError(f"fit: unknown option {key!r}; allowed options are {allowed}")
        out[section][name] = value
    return out


def _as_rows(value: Any, name: str, what: str, where: str = "fit") -> Tensor:
    """A finite float32 matrix ``(n, d)`` from a numpy array, tensor or nested list."""
    try:
        arr = value.detach().cpu() if isinstance(value, Tensor) else np.asarray(value)
        if isinstance(arr, np.ndarray):
            if arr.dtype == object or np.iscomplexobj(arr):
                raise TypeError(arr.dtype)
            arr = torch.as_tensor(arr.astype(np.float64))
        elif arr.is_complex():
            raise TypeError(arr.dtype)
    except (TypeError, ValueError, OverflowError) as err:
        raise DataError(
            f"{where}: {name} must be a real numeric array of shape (n, {what}), "
            f"got {type(value).__name__}"
        ) from err
    if arr.ndim != 2:
        hint = f"; for a single column use {name}.reshape(-1, 1)" if arr.ndim == 1 else ""
        raise DataError(
            f"{where}: {name} must have shape (n, {what}), got {tuple(arr.shape)}{hint}"
        )
    if arr.shape[0] == 0 or arr.shape[1] == 0:
        raise DataError(f"{where}: {name} is empty, shape {tuple(arr.shape)}")
    t = arr.to(torch.float32)
    bad = ~torch.isfinite(t)
    if bad.any():
        rows = bad.any(1).nonzero()[:5, 0].tolist()
        raise DataError(
            f"{where}: {name} contains {int(bad.sum())} NaN/inf value(s) (or values beyond the "
            f"float32 range), first in rows {rows}"
        )
    return t


def _flatten_sets(y: Any, model: Any, model_options: dict[str, Any]) -> Any:
    """Observations ``y`` shaped ``(n, m, d)`` (a set of ``m`` i.i.d. draws per simulation)
    as rows ``(n, m * d)``, with the set summary's ``set_dim`` filled in; other shapes are
    returned unchanged for the usual checks."""
    try:
        arr = y.detach().cpu() if isinstance(y, Tensor) else np.asarray(y)
    except (TypeError, ValueError):
        return y
    if arr.ndim != 3:
        return y
    n, m, d = (int(v) for v in arr.shape)
    if isinstance(model, AmortizedModel):
        if model.set_shape != (m, d):
            expected = (
                "observations of (dim_y,) values"
                if model.set_shape is None
                else f"sets shaped (n, {model.set_shape[0]}, {model.set_shape[1]})"
            )
            raise DataError(
                f"fit: y has shape {(n, m, d)} (sets of {m} draws of {d} values), but the "
                f"model takes {expected}"
            )
    else:
        if model_options.get("embedding") != "set":
            raise DataError(
                f"fit: y has shape {(n, m, d)}, a set of {m} observations of {d} values per "
                "simulation; sets need a permutation-invariant summary, embedding='set' "
                f"(or flatten y to (n, {m * d}) for a vector model)"
            )
        set_dim = model_options.setdefault("set_dim", d)
        if set_dim != d:
            raise DataError(
                f"fit: set_dim={set_dim!r} but y has shape {(n, m, d)}: set elements of "
                f"{d} values (set_dim={d})"
            )
    return arr.reshape(n, m * d)


def _check_int(name: str, value: Any, minimum: int, allow_none: bool = True) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ConfigError(f"fit: {name} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _simulation_problem(simulator: Any, prior: Any) -> Problem:
    if isinstance(simulator, Problem):
        if prior is not None:
            raise ConfigError("fit: simulator is a Problem, which has its own prior; omit prior")
        return simulator
    if not callable(simulator):
        raise ConfigError(
            "fit: simulator must be a callable simulate(x: Tensor (n, dim_x)) -> (n, dim_y) "
            f"or a vinaflow Problem, got {type(simulator).__name__}"
        )
    return SimulatorProblem(simulator, _check_prior(prior))


def _check_prior(prior: Any, dim_x: int | None = None) -> Distribution:
    """``prior`` if it is a distribution with event shape ``(dim_x,)``, else a ConfigError."""
    if not isinstance(prior, Distribution):
        raise ConfigError(
            "fit: prior must be a torch.distributions.Distribution with event shape (dim_x,) "
            f"(e.g. torch.distributions.Independent(Normal(loc, scale), 1)), got {prior!r}"
        )
    if len(prior.event_shape) != 1 or dim_x not in (None, prior.event_shape[0]):
        raise ConfigError(
            f"fit: prior must have event shape (dim_x,) = ({dim_x or 'dim_x'},), got "
            f"{tuple(prior.event_shape)}; wrap a batch of scalar distributions in "
            "torch.distributions.Independent(..., 1)"
        )
    return prior


def _early_stopping(training: dict[str, Any], n_train: int) -> None:
    """Early-stopping defaults of ``fit`` on ``n_train`` training rows (settings the user
    gave are kept): validate every :class:`TrainingConfig` ``val_every`` steps, or once per
    epoch when an epoch is shorter, and stop after :data:`DEFAULT_PATIENCE` times
    ``val_every`` steps (2,000) without improvement.

    Every 200 steps was too coarse for small data: on 10,000 simulations of a 10-D task a
    spline cINN's validation loss rose from the first validation on, so the weights kept
    were step 200's whatever the best step was. The patience stays a number of steps:
    20 epochs (sbi's ``stop_after_epochs``) stopped a 2-D task after 720 steps, well
    before its validation loss had settled.
    """
    epoch = max(1, math.ceil(n_train / training["batch_size"]))
    if "val_every" not in training and epoch < TrainingConfig.val_every:
        training["val_every"] = epoch
        horizon = DEFAULT_PATIENCE * TrainingConfig.val_every
        training.setdefault("patience", math.ceil(horizon / epoch))
    training.setdefault("patience", DEFAULT_PATIENCE)


def _validation_rows(n: int, fraction: Any) -> int:
    if isinstance(fraction, bool) or not isinstance(fraction, (int, float)):
        raise ConfigError(f"fit: validation_fraction must be a number in [0, 1), got {fraction!r}")
    if not 0 <= fraction < 1:
        raise ConfigError(f"fit: validation_fraction must be in [0, 1), got {fraction!r}")
    n_val = max(1, round(n * fraction)) if fraction > 0 else 0
    if n - n_val < 2:
        raise DataError(
            f"fit: {n} rows leave {n - n_val} for training after the validation split "
            f"(validation_fraction={fraction}); give more rows"
        )
    return n_val


def fit(
    x: Any = None,
    y: Any = None,
    *,
    model: str | AmortizedModel = "cinn",
    objective: Any = None,
    max_seconds: float | None = None,
    steps: int | None = None,
    seed: int = 0,
    simulator: Callable[[Tensor], Tensor] | Problem | None = None,
    prior: Distribution | None = None,
    num_simulations: int | None = None,
    validation_fraction: float = 0.1,
    progress: bool = True,
    ensemble: int = 1,
    rounds: int = 1,
    observation: Any = None,
    **options: Any,
) -> Posterior:
    """Train an amortized posterior ``q(x | y)`` and return it.

    Data: arrays ``x`` ``(n, dim_x)`` (parameters) and ``y`` ``(n, dim_y)`` (observations),
    numpy or torch; or ``simulator`` (``simulate(x) -> y`` on batches, torch tensors) with a
    ``prior`` (a ``torch.distributions.Distribution`` with event shape ``(dim_x,)``) and
    ``num_simulations``, simulated reproducibly from ``seed``. ``simulator`` may also be a
    :class:`vinaflow.problems.Problem` (its own prior), which enables
    ``noise_augmentation=True`` for problems with additive Gaussian noise. With arrays,
    ``prior`` is optional and only bounds the result.

    With a prior (given, or the simulator's), the posterior keeps to the prior's support
    (:attr:`Posterior.support`, a box of per-parameter bounds): samples outside it are
    rejected and ``log_prob`` is ``-inf`` there and renormalised inside, as sbi's
    posteriors do; a prior whose support is not a box (a simplex) is warned about and
    not enforced.

    Standardisation, the validation split (``validation_fraction`` of the rows, shuffled
    with ``seed``) and early stopping are done here. Training stops after ``steps`` updates
    or ``max_seconds``, whichever comes first; without ``steps`` it also stops when the
    validation loss has not improved for 2,000 steps, validated every 200 steps or once
    per epoch when an epoch over the training rows is shorter (``patience`` validations
    every ``val_every`` steps; not for objectives with a critic, whose loss does not
    measure fit), keeping the best weights, and then
    is capped at 20,000 steps (without ``max_seconds``, with a constant learning rate) or
    follows the time budget (cosine learning-rate decay over ``max_seconds``).

    ``model``: ``"cinn"`` (conditional INN, has ``log_prob``), ``"inn"`` (the paper's joint
    INN), ``"cnf"`` (continuous normalizing flow, trained by flow matching, has
    ``log_prob``) or a built :class:`vinaflow.models.AmortizedModel`. A ``"cinn"`` trained
    by maximum likelihood alone is built from rational-quadratic spline couplings unless
    ``arch`` is given (or a setting of affine couplings, such as ``clamp``): they measured
    more accurate on a held-out benchmark task (:func:`vinaflow.config.default_arch`);
    ``arch="coupling"`` trains about twice as fast. Such a spline cINN has 64 hidden units
    and, without ``max_seconds``, learning rate 5e-4, unless ``hidden`` or ``lr`` is given
    (:data:`vinaflow.config.SPLINE_NLL_CINN_DEFAULTS`). ``objective``: by
    default the model kind's own (``"flow_matching"`` for a CNF, ``"nll"`` otherwise);
    ``"nll"`` (maximum likelihood), ``"flow_matching"`` (CNF only), a divergence name
    (``"kl"``, ``"js"``, ``"reverse-kl"``, ...: the variational f-divergence between the
    data joint and the model joint, backward direction), ``"sinkhorn"``, ``"mmd"``, an
    objective spec with ``to_config()``, a mapping in the form of the YAML ``objective``
    section, or a built objective.

    ``options`` are the settings of the YAML config's ``model`` (``blocks``, ``hidden``,
    ``embedding_dim``, ...), ``training`` (``batch_size``, ``lr``, ``noise_augmentation``,
    ``patience``, ...) and ``objective`` (``critic_hidden``, ``blur``, ...) sections, checked
    like the config; a key of two sections takes its section as prefix
    (``model_y_weight=``, ``objective_y_weight=``).

    Sets of i.i.d. observations: ``y`` shaped ``(n, m, d)`` (``m`` draws of ``d`` values
    per simulation) with ``embedding="set"`` trains on a permutation-invariant Deep Sets
    summary of each set (``embedding_dim`` its size); the posterior then takes sets
    ``(m, d)`` or ``(n_obs, m, d)``. A simulator returning sets flattened to ``m * d``
    columns takes ``embedding="set", set_dim=d``.

    ``ensemble=K`` trains ``K`` members on the same simulations, member ``k`` with seed
    ``seed + k`` (initialisation, validation split, batches; ``max_seconds`` and ``steps``
    apply to each) and returns their mixture, a
    :class:`vinaflow.models.EnsemblePosterior`.

    ``rounds=R`` with ``observation=y_o`` (one observation, ``(dim_y,)``) trains by
    truncated sequential neural posterior estimation (TSNPE, Deistler, Gonçalves, Macke
    2022; :mod:`vinaflow.training.sequential`): ``num_simulations`` is split over the
    rounds; round 1 simulates from the prior, and each later round from the prior
    truncated to the region where the previous posterior's log-density at ``y_o``
    exceeds its ``truncation_quantile`` (an option, ``1e-4``) quantile; every round
    trains a fresh model (seed ``seed + r``) on all simulations so far by maximum
    likelihood. It needs ``simulator=`` and a model with a log-density (``"cinn"``,
    ``"cnf"``); the result is accurate near ``y_o``, not amortized.
    ``posterior.rounds`` lists each round's simulations, threshold and acceptance.

    Returns a :class:`vinaflow.models.Posterior` with ``sample``, ``log_prob`` and ``save``;
    ``posterior.train_result`` holds the training history (for an ensemble, the list of
    the members' histories).
    """
    steps = _check_int("steps", steps, 1)
    seed = _check_int("seed", seed, 0, allow_none=False)
    if max_seconds is not None and (
        isinstance(max_seconds, bool)
        or not isinstance(max_seconds, (int, float))
        or not max_seconds > 0
        or math.isinf(max_seconds)
    ):
        raise ConfigError(f"fit: max_seconds must be a finite number > 0, got {max_seconds!r}")
    if not isinstance(progress, bool):
        raise ConfigError(f"fit: progress must be True or False, got {progress!r}")
    members = _check_int("ensemble", ensemble, 1, allow_none=False)
    assert members is not None
    if members > 1 and not isinstance(model, str):
        raise ConfigError(
            "fit: ensemble > 1 trains each member from scratch, so model must be a kind name "
            "('cinn', 'inn', 'cnf'), not a built model"
        )
    if members > 1 and isinstance(objective, Objective):
        raise ConfigError(
            "fit: ensemble > 1 needs objective as a name or spec (each member builds its own), "
            "not a built Objective"
        )
    n_rounds = _check_int("rounds", rounds, 1, allow_none=False)
    assert n_rounds is not None
    if n_rounds > 1:
        if members > 1:
            raise ConfigError("fit: ensemble > 1 and rounds > 1 together are not supported")
        if not isinstance(model, str) or isinstance(objective, Objective):
            raise ConfigError(
                "fit: rounds > 1 trains a fresh model each round, so model and objective "
                "must be names or specs, not built objects"
            )
        if simulator is None:
            raise ConfigError(
                "fit: rounds > 1 simulates new parameters in every round: give simulator=, "
                "prior= and num_simulations=, not arrays x and y"
            )
    elif observation is not None:
        raise ConfigError(
            "fit: observation= is the one observation of sequential rounds; give rounds >= 2 "
            "with it (a single round trains an amortized posterior for every observation)"
        )
    sections = _route_options(options)

    # Data.
    problem: Problem | None = None
    support = None
    if simulator is not None or num_simulations is not None:
        if x is not None or y is not None:
            raise ConfigError(
                "fit: give either arrays x and y (and optionally prior=), or simulator=, "
                "prior= and num_simulations="
            )
        if simulator is None:
            raise ConfigError("fit: num_simulations needs simulator=")
        n = n_rows = _check_int("num_simulations", num_simulations, 20, allow_none=False)
        problem = _simulation_problem(simulator, prior)
        support = BoxSupport.from_prior(problem.prior)
        n_val = _validation_rows(n, validation_fraction)
        if n_rounds > 1:
            y_obs = check_observation(observation, problem.dim_y, "fit: observation")
            sizes = round_sizes(n, n_rounds)
            n_rows = sizes[0]  # the validation interval follows the first round's size
            # the smallest training set (round 1's) must leave rows after its split
            _validation_rows(sizes[0], validation_fraction)
            x_all = y_all = clean = None
        else:
            g = torch.Generator().manual_seed(seed)
            x_all = problem.sample_prior(n, g).float()
            y_all, clean = problem.simulate_with_clean_checked(x_all, g)
            y_all = y_all.float()

        def member_data(k: int) -> Dataset:
            # fresh simulations are in random order: the first member splits them as a
            # single fit does, the others reshuffle with their own seed
            first = dataset_from_arrays(x_all, y_all, n_val, y_clean=clean)
            return first if k == 0 else member_dataset(first, seed + k)

    else:
        if x is None or y is None:
            raise ConfigError(
                "fit needs training data: arrays x (n, dim_x) and y (n, dim_y), or "
                "simulator=, prior= and num_simulations="
            )
        y = _flatten_sets(y, model, sections["model"])
        xt, yt = _as_rows(x, "x", "dim_x"), _as_rows(y, "y", "dim_y")
        if xt.shape[0] != yt.shape[0]:
            raise DataError(
                f"fit: x and y must have one row per simulation; x has {xt.shape[0]} rows, "
                f"y has {yt.shape[0]}"
            )
        n_rows = xt.shape[0]
        n_val = _validation_rows(n_rows, validation_fraction)
        support = BoxSupport.from_prior(None if prior is None else _check_prior(prior, xt.shape[1]))

        def member_data(k: int) -> Dataset:
            return dataset_from_arrays(xt, yt, n_val, seed=seed + k)

    data = None if n_rounds > 1 else member_data(0)

    # Config sections, validated like a YAML config.
    if objective is None:
        kind_cls = MODEL_KINDS.get(model) if isinstance(model, str) else type(model)
        objective = getattr(kind_cls, "default_objective", "nll")
    built_objective = objective if isinstance(objective, Objective) else None
    if built_objective is not None and sections["objective"]:
        raise ConfigError(
            f"fit: objective options {sorted(sections['objective'])} need objective to be a "
            "name or spec, not a built Objective"
        )
    if built_objective is None:
        try:
            objective_cfg = objective_config(objective, **sections["objective"])
        except ConfigError as err:
            raise ConfigError(f"fit: {err}") from err
    else:
        # Stands in for the built objective where the model section needs it: an
        # iResNet's ``explicit: auto`` follows the direction the objective trains.
        sampling = built_objective.trains_sampling
        objective_cfg = {"name": "mmd", "direction": "backward"} if sampling else {"name": "nll"}
    built_model = None if isinstance(model, str) else model
    if built_model is not None and sections["model"]:
        raise ConfigError(
            f"fit: model options {sorted(sections['model'])} need model to be a kind name "
            "('cinn', 'inn', 'cnf'), not a built model"
        )
    training = dict(sections["training"])
    if steps is None:
        training.setdefault("lr_schedule", "cosine" if max_seconds is not None else "constant")
    training.update(
        steps=steps or (TIME_BOUND_MAX_STEPS if max_seconds is not None else DEFAULT_MAX_STEPS),
        max_seconds=None if max_seconds is None else float(max_seconds),
        seed=seed,
        progress=progress,
    )
    raw = {
        "model": {"kind": model} if built_model is None else {},
        "objective": objective_cfg,
        "training": training,
    }
    if built_model is None:
        raw["model"].update(sections["model"])
    try:
        cfg = _config.resolve_config(raw)
    except ConfigError as err:
        raise ConfigError(f"fit: {err}") from err
    if built_objective is not None:
        has_critic = built_objective.has_critic
    else:
        terms = [cfg["objective"], *cfg["objective"].get("terms", [])]
        has_critic = any(t["name"] == "fdiv" for t in terms)
    if steps is None and n_val > 0 and not has_critic:
        _early_stopping(cfg["training"], n_rows - n_val)
    tcfg = TrainingConfig(**cfg["training"])
    if n_rounds > 1:
        assert problem is not None
        check_sequential(cfg["model"]["kind"], cfg["objective"], "fit: rounds")
        posterior = _fit_rounds(problem, y_obs, sizes, cfg, tcfg, validation_fraction)
        posterior.support = support
        return posterior

    # Model construction and training seed torch's global random state; the caller's
    # state and thread count are restored afterwards (train_members).
    def job(k: int) -> TrainingJob:
        return member_job(
            k,
            cfg["model"] if built_model is None else None,
            built_objective or cfg["objective"],
            cfg["objective"],
            tcfg,
            data if k == 0 else member_data(k),
            problem,
            built_model,
        )

    trained = train_members(members, job)
    posterior = trained[0] if members == 1 else EnsemblePosterior(trained)
    posterior.support = support
    return posterior


def _fit_rounds(
    problem: Problem,
    observation: Tensor,
    sizes: list[int],
    cfg: Mapping[str, Any],
    tcfg: TrainingConfig,
    validation_fraction: float,
) -> Posterior:
    """``fit(rounds=R)``: TSNPE rounds, each training a fresh posterior like ``fit`` does."""

    def train(r: int, x: Tensor, y: Tensor, clean: Tensor | None) -> Posterior:
        n_val = _validation_rows(x.shape[0], validation_fraction)
        model, objective = cfg["model"], cfg["objective"]
        return train_round(
            r, x, y, clean, n_val, model, objective, tcfg, problem, where="fit: rounds"
        )

    return run_rounds(
        problem, observation, sizes, train, tcfg.seed, quantile=tcfg.truncation_quantile
    )[0]


def load(directory: str | Path) -> Posterior:
    """The posterior in ``directory``: saved by ``Posterior.save`` or
    ``EnsemblePosterior.save``, or a ``vinaflow run`` folder (:meth:`Posterior.load`)."""
    return Posterior.load(directory)


def _evaluation_settings(settings: Mapping[str, Any]) -> dict[str, Any]:
    try:
        return _config.resolve_config({"evaluation": dict(settings)})["evaluation"]
    except ConfigError as err:
        raise ConfigError(f"evaluate: {err}") from err


def evaluate(
    posterior: Posterior,
    reference: Problem | Callable[..., Any] | Any,
    y: Any = None,
    *,
    x: Any = None,
    **settings: Any,
) -> dict[str, Any]:
    """Metrics of ``posterior`` against ground truth; computes numbers, writes nothing.

    ``reference`` is

    - a :class:`vinaflow.problems.Problem`: held-out observations simulated from its prior
      (or the given ``x``/``y`` pairs), scored against its reference posterior where it has
      one (C2ST, W1, MMD, error of the mean), plus calibration (SBC, coverage of credible
      intervals), errors against the true parameters and the re-simulation error, exactly as
      ``vinaflow run`` reports them;
    - a sampler ``reference(y_i, n, generator) -> (n, dim_x)`` of exact posterior draws for
      one observation (e.g. ``problem.reference_posterior``), with observations ``y``;
    - reference samples: an array ``(n_obs, n_ref, dim_x)`` for observations ``y``
      ``(n_obs, dim_y)``, or ``(n_ref, dim_x)`` for one observation.

    With the true parameters ``x`` of ``y``, the error of the posterior mean and the
    coverage are added. ``settings`` are those of the YAML ``evaluation`` section
    (``num_observations``, ``num_samples``, ``num_calibration``, ``seed``, ``c2st``, ...).
    """
    if not isinstance(posterior, Posterior):
        raise ConfigError(f"evaluate: posterior must be a vinaflow Posterior, got {posterior!r}")
    cfg = _evaluation_settings(settings)
    x_true = None if x is None else as_observations(x, posterior.dim_x, name="x")
    if isinstance(reference, Problem):
        if (reference.dim_x, reference.dim_y) != (posterior.dim_x, posterior.dim_y):
            raise DataError(
                f"evaluate: problem {reference.name!r} has dim_x={reference.dim_x}, "
                f"dim_y={reference.dim_y}; the posterior dim_x={posterior.dim_x}, "
                f"dim_y={posterior.dim_y}"
            )
        held_out = None
        if y is not None or x is not None:
            if y is None or x_true is None:
                raise ConfigError("evaluate: held-out observations need both x and y")
            obs = as_observations(y, posterior.dim_y, name="y")
            if obs.shape[0] != x_true.shape[0]:
                raise DataError(f"evaluate: x has {x_true.shape[0]} rows, y {obs.shape[0]}")
            held_out = (x_true, obs)
        return score_posterior(posterior, reference, cfg, held_out).metrics
    if y is None:
        raise ConfigError(
            "evaluate: with reference samples or a reference sampler, give the observations "
            "y (dim_y,) or (n_obs, dim_y)"
        )
    obs = as_observations(y, posterior.dim_y, name="y")
    if x_true is not None and x_true.shape[0] != obs.shape[0]:
        raise DataError(f"evaluate: x has {x_true.shape[0]} rows, y {obs.shape[0]}")
    if callable(reference):
        return score_against_reference(posterior, obs, reference, cfg, x_true)
    try:
        ref = torch.as_tensor(np.asarray(reference, dtype=np.float64), dtype=torch.float32)
    except (TypeError, ValueError) as err:
        raise DataError(
            "evaluate: reference must be a Problem, a sampler or an array of reference samples"
        ) from err
    if ref.ndim == 2:
        ref = ref[None]
    if ref.ndim != 3 or ref.shape[0] != obs.shape[0] or ref.shape[2] != posterior.dim_x:
        raise DataError(
            f"evaluate: reference samples must have shape (n_obs={obs.shape[0]}, n_ref, "
            f"dim_x={posterior.dim_x}) (or (n_ref, dim_x) for one observation), "
            f"got {tuple(ref.shape)}"
        )
    if not torch.isfinite(ref).all():
        raise DataError("evaluate: reference samples contain NaN or inf")
    return score_against_reference(posterior, obs, list(ref), cfg, x_true)


def certify(
    posterior: Posterior,
    x_heldout: Any,
    y_heldout: Any,
    divergence: str = "kl",
    **options: Any,
) -> dict[str, Any]:
    """Held-out certificate of ``posterior``: a variational estimate of the f-divergence
    between the true joint ``(x, y)`` and the model joint ``(x ~ q(x | y), y)``, with a
    bootstrap interval and the implied total-variation bound.

    ``x_heldout`` ``(n, dim_x)`` and ``y_heldout`` ``(n, dim_y)`` must be simulations never
    used in training. ``options`` go to
    :func:`vinaflow.evaluation.certificate.certify_posterior` (``seed``, ``config``,
    ``features``, critic settings such as ``steps`` or ``hidden``).
    """
    if not isinstance(posterior, Posterior):
        raise ConfigError(f"certify: posterior must be a vinaflow Posterior, got {posterior!r}")
    xt = _as_rows(x_heldout, "x_heldout", f"dim_x={posterior.dim_x}", "certify")
    yt = _as_rows(y_heldout, "y_heldout", f"dim_y={posterior.dim_y}", "certify")
    if xt.shape[1] != posterior.dim_x or yt.shape[1] != posterior.dim_y:
        raise DataError(
            f"certify: x_heldout must have {posterior.dim_x} columns and y_heldout "
            f"{posterior.dim_y}, got {xt.shape[1]} and {yt.shape[1]}"
        )
    if xt.shape[0] != yt.shape[0]:
        raise DataError(
            f"certify: x_heldout has {xt.shape[0]} rows, y_heldout {yt.shape[0]}; one row "
            "per simulation"
        )
    return certify_posterior(posterior, None, divergence, x=xt, y=yt, **options)
