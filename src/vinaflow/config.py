"""YAML run configuration: defaults, ``--set`` overrides and validation with clear errors.

A config has five sections: ``problem``, ``model``, ``objective``, ``training``
and ``evaluation``. Every key is checked; an error names the field and what it
accepts. The allowed keys are not listed here but derived: ``model`` from the model
and block constructors (:func:`vinaflow.models.model_keys`), ``objective`` from the
objective constructors (:mod:`vinaflow.objectives.specs`), ``training`` from the fields
of :class:`~vinaflow.training.TrainingConfig`; divergence names come from
:data:`vinaflow.objectives.divergences.DIVERGENCES`.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vinaflow.errors import ConfigError
from vinaflow.models import BLOCK_CLASSES, BLOCK_KINDS, MODEL_KINDS, model_keys
from vinaflow.objectives.build import check_objective_model
from vinaflow.objectives.divergences import DIVERGENCES
from vinaflow.objectives.specs import objective_config, objective_keys
from vinaflow.settings import Setting, check_setting, check_settings, dataclass_settings
from vinaflow.training.sequential import check_sequential
from vinaflow.training.trainer import TrainingConfig

__all__ = [
    "DEFAULT_CONFIG",
    "EVALUATION_KEYS",
    "MODEL_KEYS",
    "OBJECTIVE_KEYS",
    "SECTIONS",
    "SPLINE_NLL_CINN_DEFAULTS",
    "TRAINING_TYPES",
    "apply_overrides",
    "check_sections",
    "deep_merge",
    "default_arch",
    "load_config",
    "read_config_file",
    "resolve_config",
]

SECTIONS = ("problem", "model", "objective", "training", "evaluation")

DEFAULT_CONFIG: dict[str, Any] = {
    "problem": {"name": "gaussian-linear", "num_simulations": 20000},
    "model": {
        "kind": "cinn",
        # the architecture of every kind and objective but one: see default_arch
        "arch": "coupling",
        "blocks": 6,
        "hidden": 128,
        "layers": 2,
        "latent_dim": None,
    },
    "objective": {"name": "nll"},
    "training": {"steps": 3000, "max_seconds": 150, "batch_size": 256, "seed": 0},
    "evaluation": {
        "num_observations": 10,
        "num_samples": 1000,
        "num_calibration": 200,
        "calibration_samples": 200,
        "seed": 1234,
        "c2st": True,
        "plots": True,
    },
}


def _flat_model_keys() -> dict[str, Setting]:
    """Every ``model`` key over all kinds and architectures (for listings)."""
    out: dict[str, Setting] = {}
    for kind in MODEL_KINDS:
        for arch in BLOCK_CLASSES:
            for key, setting in model_keys(kind, arch).items():
                if key in out and out[key].choices != setting.choices:
                    # e.g. ``activation``: the allowed values depend on the architecture
                    setting = dataclasses.replace(setting, choices=None)
                out[key] = setting
    return out


#: Keys of the ``model`` section, derived from the model and block constructors; which
#: apply depends on ``kind`` and ``arch`` (:func:`vinaflow.models.model_keys`).
MODEL_KEYS: dict[str, Setting] = _flat_model_keys()

#: Keys of the ``objective`` section, derived from the objective constructors.
OBJECTIVE_KEYS: dict[str, Setting] = objective_keys()

#: Keys of the ``training`` section: the fields of :class:`TrainingConfig`.
TRAINING_TYPES: dict[str, Setting] = dataclass_settings(TrainingConfig)

_EVALUATION_TYPES: dict[str, tuple[type, ...]] = {
    "num_observations": (int,),
    "num_samples": (int,),
    "num_calibration": (int,),
    "calibration_samples": (int,),
    "seed": (int,),
    "c2st": (bool,),
    "plots": (bool,),
    "w1_samples": (int,),
    "certificate": (bool,),
    "certificate_divergence": (str,),
    "certificate_samples": (int,),
    "importance_sampling": (int,),
}
#: Keys of the ``evaluation`` section.
EVALUATION_KEYS: dict[str, Setting] = {
    k: Setting(k, None, t, tuple(DIVERGENCES) if k == "certificate_divergence" else None)
    for k, t in _EVALUATION_TYPES.items()
}


def deep_merge(base: dict[str, Any], new: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``base`` with ``new`` merged in, nested mappings key by key."""
    out = copy.deepcopy(base)
    for k, v in new.items():
        if isinstance(v, Mapping) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def _parse_scalar(text: str) -> Any:
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError:
        return text


def apply_overrides(
    config: dict[str, Any], overrides: Sequence[str], sections: Sequence[str] = SECTIONS
) -> dict[str, Any]:
    """Apply ``section.key=value`` strings (values parsed as YAML scalars/lists)."""
    config = copy.deepcopy(config)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set expects section.key=value, got {item!r}")
        path, value = item.split("=", 1)
        keys = path.strip().split(".")
        if len(keys) < 2 or keys[0] not in sections:
            raise ConfigError(
                f"--set {path!r}: the key must start with a section ({', '.join(sections)})"
            )
        node = config
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ConfigError(f"--set {path!r}: {k!r} is not a section")
        node[keys[-1]] = _parse_scalar(value)
    return config


#: ``model.arch`` of a ``cinn`` trained by maximum likelihood when the config names none:
#: rational-quadratic spline couplings reached a lower C2ST than affine ones on a task
#: held out from the reported benchmark (sbibm SLCP, 10,000 simulations, 5 seeds: paired
#: difference -0.038, 95% interval [-0.061, -0.015]; ``benchmarks/peers/defaults_dev.py``)
#: at about twice the training time. Other kinds and objectives were not measured with
#: splines and keep ``DEFAULT_CONFIG``'s architecture.
DEFAULT_NLL_CINN_ARCH = "spline"

#: Model settings and learning rate of a spline ``cinn`` trained by maximum likelihood
#: alone, where the config gives none: half ``DEFAULT_CONFIG``'s width and, when training
#: runs to its stopping rule (no ``training.max_seconds``), half the trainer's learning
#: rate. At 128 units and 1e-3 its validation loss was lowest after 3-7 epochs on 10,000
#: simulations of a 10-parameter Gaussian-linear task and rose steeply after (the flow
#: memorises the pairs); narrower and slower, it was more accurate on fresh instances of
#: that task (other simulations and observations than the reported ones, exact reference
#: posterior) and as accurate on SLCP (``benchmarks/peers/defaults_dev.py``, variant
#: ``spline_narrow``). Under a time budget the rate stays the trainer's: 5 s of training
#: at 5e-4 left the documentation's quick start at C2ST 0.88 where 1e-3 reached 0.65.
SPLINE_NLL_CINN_DEFAULTS: dict[str, dict[str, Any]] = {
    "model": {"hidden": 64},
    "training": {"lr": 5e-4},
}


def default_arch(model: Mapping[str, Any], objective: Mapping[str, Any]) -> str:
    """The ``model.arch`` of a config that names none, for its ``model`` section (kind
    and the settings given) and ``objective``.

    A ``cinn`` trained by maximum likelihood alone gets :data:`DEFAULT_NLL_CINN_ARCH`
    unless its model settings include one that architecture lacks (``clamp`` of the
    affine couplings): such a config was written for the affine default and keeps it.
    """
    fallback = DEFAULT_CONFIG["model"]["arch"]
    if model.get("kind") != "cinn" or not _nll_only(objective):
        return fallback
    own = model_keys("cinn", DEFAULT_NLL_CINN_ARCH)
    return DEFAULT_NLL_CINN_ARCH if all(k in own for k in model) else fallback


def _nll_only(objective: Mapping[str, Any]) -> bool:
    """Whether the ``objective`` section is maximum likelihood with no other term."""
    return objective.get("name") == "nll" and not objective.get("terms")


def _is_spline_nll_cinn(config: Mapping[str, Any]) -> bool:
    """Whether ``config`` trains a spline ``cinn`` by maximum likelihood alone."""
    model = config["model"]
    return (
        model.get("kind") == "cinn"
        and model.get("arch") == "spline"
        and _nll_only(config["objective"])
    )


def _check_model(values: Mapping[str, Any]) -> dict[str, Any]:
    """The ``model`` section checked against the keys of its ``kind`` and ``arch``."""
    kind = check_setting("model.kind", values.get("kind"), MODEL_KEYS["kind"])
    arch = check_setting("model.arch", values.get("arch", "coupling"), MODEL_KEYS["arch"])
    own = model_keys(kind, arch)
    for key in values:
        if key in MODEL_KEYS and key not in own:
            raise ConfigError(
                f"model.{key}: not a setting of model.kind={kind} with model.arch={arch}; "
                f"its keys: {', '.join(sorted(own))}"
            )
    return check_settings("model", values, own)


def check_sections(
    config: Mapping[str, Any] | None, sections: Sequence[str], what: str = "config"
) -> dict[str, Any]:
    """``config`` as a dict, checked to hold only ``sections`` (and ``vinaflow_version``),
    each a mapping; ``what`` names the kind of config in errors."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(
            f"a {what} must be a mapping of sections {tuple(sections)}, got {config!r}"
        )
    config = dict(config or {})
    unknown = set(config) - set(sections) - {"vinaflow_version"}
    if unknown:
        raise ConfigError(
            f"unknown {what} section(s) {sorted(unknown)}; allowed: {', '.join(sections)}"
        )
    for s in sections:
        if s in config and config[s] is not None and not isinstance(config[s], Mapping):
            raise ConfigError(f"{s} must be a mapping of key: value")
    return config


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``config`` over the defaults and validate every section."""
    config = check_sections(config, SECTIONS)
    merged = copy.deepcopy(DEFAULT_CONFIG)
    if config.get("problem") and any(k in config["problem"] for k in ("name", "simulator", "bank")):
        # A different problem form replaces the default problem wholesale.
        merged["problem"] = {"num_simulations": DEFAULT_CONFIG["problem"]["num_simulations"]}
    if config.get("objective") and "name" in config["objective"]:
        merged["objective"] = {}
    kind = (config.get("model") or {}).get("kind")
    if isinstance(kind, str) and kind in MODEL_KINDS and kind not in BLOCK_KINDS:
        # A kind without invertible blocks (the CNF) starts from its own constructor's
        # defaults (the run's seed, not the constructor's), and trains with its own
        # objective unless one is named.
        own = model_keys(kind, DEFAULT_CONFIG["model"]["arch"])
        merged["model"] = {k: s.default for k, s in own.items() if k not in ("kind", "seed")}
        if "name" not in (config.get("objective") or {}):
            merged["objective"] = {"name": getattr(MODEL_KINDS[kind], "default_objective", "nll")}
    for s in SECTIONS:
        if config.get(s):
            merged[s] = deep_merge(merged[s], config[s])
    if "arch" not in (config.get("model") or {}) and merged["model"].get("kind") in BLOCK_KINDS:
        merged["model"]["arch"] = default_arch(merged["model"], merged["objective"])
    if _is_spline_nll_cinn(merged):
        timed = merged["training"].get("max_seconds") is not None
        for section, values in SPLINE_NLL_CINN_DEFAULTS.items():
            for key, value in values.items():
                if key not in (config.get(section) or {}) and not (timed and key == "lr"):
                    merged[section][key] = value
    problem = merged["problem"]
    n = problem.get("num_simulations")
    if "bank" not in problem and (not isinstance(n, int) or isinstance(n, bool) or n < 20):
        raise ConfigError(f"problem.num_simulations must be an integer >= 20, got {n!r}")
    merged["model"] = _check_model(merged["model"])
    # Upper bounds keep a typo (blocks: 100000000) from exhausting memory before any
    # error could be shown.
    limits = {
        "blocks": 1000,
        "hidden": 65536,
        "layers": 100,
        "latent_dim": 65536,
        "embedding_dim": 65536,
        "set_dim": 65536,
    }
    for key, high in limits.items():
        value = merged["model"].get(key)
        if value is not None and not 1 <= value <= high:
            raise ConfigError(f"model.{key} must be between 1 and {high}, got {value}")
    merged["objective"] = objective_config(merged["objective"])
    check_objective_model(merged["objective"], merged["model"])
    merged["training"] = check_settings("training", merged["training"], TRAINING_TYPES)
    # value ranges and choices are checked by the dataclass itself
    TrainingConfig(**merged["training"])
    _check_rounds(merged)
    merged["evaluation"] = check_settings("evaluation", merged["evaluation"], EVALUATION_KEYS)
    for key in ("num_observations", "num_samples"):
        if merged["evaluation"].get(key, 1) < 1:
            raise ConfigError(f"evaluation.{key} must be >= 1")
    if merged["evaluation"].get("importance_sampling", 0) < 0:
        raise ConfigError(
            "evaluation.importance_sampling must be 0 (off) or the number of proposals per "
            f"sample (>= 1), got {merged['evaluation']['importance_sampling']}"
        )
    return merged


def _check_rounds(cfg: Mapping[str, Any]) -> None:
    """Sequential rounds (``training.rounds > 1``) need ``problem.observation``, a
    simulator and a model with a log-density trained by maximum likelihood; an
    observation without rounds is refused too (it would be silently unused)."""
    rounds = cfg["training"].get("rounds", 1)
    problem = cfg["problem"]
    if rounds == 1:
        if problem.get("observation") is not None:
            raise ConfigError(
                "problem.observation is the one observation of sequential rounds; set "
                "training.rounds >= 2 with it, or drop it"
            )
        return
    if problem.get("observation") is None:
        raise ConfigError(
            f"training.rounds = {rounds} needs problem.observation: the one observation "
            "(a list of dim_y numbers) the rounds focus their simulations on"
        )
    if "bank" in problem:
        raise ConfigError(
            "training.rounds > 1 simulates new parameters in every round: give a problem "
            "with a simulator (problem.name or problem.simulator), not problem.bank"
        )
    check_sequential(cfg["model"]["kind"], cfg["objective"])


def read_config_file(path: str | Path, sections: Sequence[str] = SECTIONS) -> dict[str, Any]:
    """Read a YAML config file into a mapping, with clear errors (shared by all configs)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path}")
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except yaml.YAMLError as err:
        raise ConfigError(f"config {path} is not valid YAML: {err}") from err
    if not isinstance(raw, dict):
        raise ConfigError(f"config {path} must be a mapping with sections {tuple(sections)}")
    return raw


def load_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a YAML file (or the defaults when ``path`` is None), apply overrides, validate."""
    raw = read_config_file(path) if path is not None else {}
    return resolve_config(apply_overrides(raw, overrides))
