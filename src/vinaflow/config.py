"""YAML run configuration: defaults, ``--set`` overrides and validation with clear errors.

A config has five sections: ``problem``, ``model``, ``objective``, ``training``
and ``evaluation``. Every key is checked; an error names the field and what it
accepts.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import yaml

from vinaflow.errors import ConfigError
from vinaflow.training.trainer import TrainingConfig

__all__ = [
    "DEFAULT_CONFIG",
    "SECTIONS",
    "apply_overrides",
    "deep_merge",
    "load_config",
    "read_config_file",
    "resolve_config",
]

SECTIONS = ("problem", "model", "objective", "training", "evaluation")

DEFAULT_CONFIG: dict[str, Any] = {
    "problem": {"name": "gaussian-linear", "num_simulations": 20000},
    "model": {
        "kind": "cinn",
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

MODEL_KEYS = {
    "kind": ("inn", "cinn"),
    "arch": ("coupling", "iresnet"),
    "blocks": int,
    "hidden": int,
    "layers": int,
    "latent_dim": (int, type(None)),
    "pad_noise": float,
    "y_weight": float,
    "reconstruction_weight": float,
    "extra_weight": float,
    "embedding_dim": (int, type(None)),
    "embedding_hidden": int,
    "actnorm": bool,
    "clamp": float,
    "lipschitz": float,
    "explicit": ("auto", "forward", "inverse"),
    "logdet": ("auto", "exact", "series"),
    "n_series_terms": int,
    "n_hutchinson": int,
    "fixed_point_tol": float,
    "fixed_point_max_iter": int,
    "seed": int,
}

OBJECTIVE_NAMES = ("nll", "fdiv", "sinkhorn", "mmd")
DIVERGENCE_NAMES = ("kl", "reverse-kl", "js", "pearson", "hellinger", "gan", "tv")
OBJECTIVE_KEYS = {
    "name": OBJECTIVE_NAMES,
    "divergence": DIVERGENCE_NAMES,
    "direction": ("backward", "forward"),
    "weight": float,
    "critic_hidden": int,
    "critic_layers": int,
    "gradient_penalty": float,
    "spectral_norm": bool,
    "nonsaturating": bool,
    "whiten": bool,
    "y_weight": float,
    "blur": float,
    "scaling": float,
    "widths": list,
    "prior": ("none", "gaussian", "uniform"),
    "prior_weight": float,
    "prior_loc": list,
    "prior_scale": list,
    "prior_low": list,
    "prior_high": list,
    "terms": list,
}

TRAINING_TYPES: dict[str, Any] = {
    "steps": int,
    "max_seconds": (float, type(None)),
    "batch_size": int,
    "lr": (float, type(None)),
    "critic_lr": (float, type(None)),
    "critic_steps": (int, type(None)),
    "lr_schedule": ("constant", "cosine", "step"),
    "lr_min_factor": float,
    "weight_decay": float,
    "grad_clip": (float, type(None)),
    "val_every": int,
    "patience": (int, type(None)),
    "checkpoint_every": int,
    "seed": int,
    "progress": bool,
    "max_retries": int,
    "retry_lr_factor": float,
    "threads": (int, type(None)),
    "compile": bool,
    "noise_augmentation": bool,
    "critic_warmup": int,
}

EVALUATION_KEYS = {
    "num_observations": int,
    "num_samples": int,
    "num_calibration": int,
    "calibration_samples": int,
    "seed": int,
    "c2st": bool,
    "plots": bool,
    "w1_samples": int,
    "certificate": bool,
    "certificate_divergence": DIVERGENCE_NAMES,
    "certificate_samples": int,
    "importance_sampling": int,
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


def _check_value(section: str, key: str, value: Any, spec: Any) -> Any:
    field = f"{section}.{key}"
    if isinstance(spec, tuple) and all(isinstance(s, str) for s in spec):
        if value not in spec:
            raise ConfigError(f"{field}: unknown value {value!r}; allowed: {', '.join(spec)}")
        return value
    types = spec if isinstance(spec, tuple) else (spec,)
    if value is None and type(None) in types:
        return None
    if float in types and isinstance(value, int) and not isinstance(value, bool):
        try:
            return float(value)
        except OverflowError as err:
            raise ConfigError(f"{field} is too large for a number: {value}") from err
    if bool not in types and isinstance(value, bool):
        raise ConfigError(f"{field} must be {_type_names(types)}, got {value!r}")
    if not isinstance(value, types):
        raise ConfigError(f"{field} must be {_type_names(types)}, got {value!r}")
    if isinstance(value, (int, float)) and not isinstance(value, bool) and value != value:
        raise ConfigError(f"{field} must be a number, got NaN")
    return value


def _type_names(types: tuple[type, ...]) -> str:
    names = {
        int: "an integer",
        float: "a number",
        bool: "true/false",
        list: "a list",
        type(None): "null",
        str: "a string",
    }
    return " or ".join(names.get(t, t.__name__) for t in types)


def _check_section(
    section: str, values: Mapping[str, Any], spec: Mapping[str, Any], allow_unknown: bool = False
) -> dict[str, Any]:
    out = {}
    for key, value in values.items():
        if key not in spec:
            if allow_unknown:
                out[key] = value
                continue
            raise ConfigError(
                f"{section}.{key}: unknown key; allowed keys: {', '.join(sorted(spec))}"
            )
        out[key] = _check_value(section, key, value, spec[key])
    return out


def _check_objective(obj: Mapping[str, Any], field: str = "objective") -> dict[str, Any]:
    if "name" not in obj:
        raise ConfigError(f"{field}.name is required; allowed: {', '.join(OBJECTIVE_NAMES)}")
    out = _check_section(field, obj, OBJECTIVE_KEYS)
    if out["name"] == "fdiv":
        out.setdefault("divergence", "kl")
    if out["name"] != "nll":
        out.setdefault("direction", "backward")
    for i, term in enumerate(out.get("terms", [])):
        if not isinstance(term, Mapping):
            raise ConfigError(f"{field}.terms[{i}] must be a mapping with name and weight")
        if "terms" in term:
            raise ConfigError(f"{field}.terms[{i}]: nested terms are not allowed")
        out["terms"][i] = _check_objective(term, f"{field}.terms[{i}]")
    return out


def resolve_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``config`` over the defaults and validate every section."""
    if config is not None and not isinstance(config, Mapping):
        raise ConfigError(f"a config must be a mapping of sections {SECTIONS}, got {config!r}")
    config = dict(config or {})
    unknown = set(config) - set(SECTIONS) - {"vinaflow_version"}
    if unknown:
        raise ConfigError(
            f"unknown config section(s) {sorted(unknown)}; allowed: {', '.join(SECTIONS)}"
        )
    for s in SECTIONS:
        if s in config and config[s] is not None and not isinstance(config[s], Mapping):
            raise ConfigError(f"{s} must be a mapping of key: value")
    merged = copy.deepcopy(DEFAULT_CONFIG)
    if config.get("problem") and any(k in config["problem"] for k in ("name", "simulator", "bank")):
        # A different problem form replaces the default problem wholesale.
        merged["problem"] = {"num_simulations": DEFAULT_CONFIG["problem"]["num_simulations"]}
    if config.get("objective") and "name" in config["objective"]:
        merged["objective"] = {}
    for s in SECTIONS:
        if config.get(s):
            merged[s] = deep_merge(merged[s], config[s])
    problem = merged["problem"]
    n = problem.get("num_simulations")
    if "bank" not in problem and (not isinstance(n, int) or isinstance(n, bool) or n < 20):
        raise ConfigError(f"problem.num_simulations must be an integer >= 20, got {n!r}")
    merged["model"] = _check_section("model", merged["model"], MODEL_KEYS)
    # Upper bounds keep a typo (blocks: 100000000) from exhausting memory before any
    # error could be shown.
    limits = {
        "blocks": 1000,
        "hidden": 65536,
        "layers": 100,
        "latent_dim": 65536,
        "embedding_dim": 65536,
    }
    for key, high in limits.items():
        value = merged["model"].get(key)
        if value is not None and not 1 <= value <= high:
            raise ConfigError(f"model.{key} must be between 1 and {high}, got {value}")
    merged["objective"] = _check_objective(merged["objective"])
    fields = {f.name: f for f in dataclasses.fields(TrainingConfig)}
    for key, value in merged["training"].items():
        if key not in fields:
            raise ConfigError(
                f"training.{key}: unknown key; allowed keys: {', '.join(sorted(fields))}"
            )
        merged["training"][key] = _check_value("training", key, value, TRAINING_TYPES[key])
    try:
        TrainingConfig(**merged["training"])
    except TypeError as err:
        raise ConfigError(f"training: {err}") from err
    merged["evaluation"] = _check_section("evaluation", merged["evaluation"], EVALUATION_KEYS)
    for key in ("num_observations", "num_samples"):
        if merged["evaluation"].get(key, 1) < 1:
            raise ConfigError(f"evaluation.{key} must be >= 1")
    if merged["evaluation"].get("importance_sampling", 0) < 0:
        raise ConfigError(
            "evaluation.importance_sampling must be 0 (off) or the number of proposals per "
            f"sample (>= 1), got {merged['evaluation']['importance_sampling']}"
        )
    return merged


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
