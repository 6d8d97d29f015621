"""The ``vinaflow flow`` config: sections, defaults, and their translation into the
conditional model's and objectives' settings (a flow is a conditional INN with
``dim_y = 0``)."""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vinaflow.config import apply_overrides, check_sections, deep_merge, read_config_file
from vinaflow.errors import ConfigError
from vinaflow.objectives.specs import objective_config
from vinaflow.problems.targets import make_target
from vinaflow.training import (
    TrainingConfig,
)

__all__ = [
    "DEFAULT_FLOW_CONFIG",
    "FLOW_OBJECTIVE_DEFAULTS",
    "FLOW_SECTIONS",
    "TRAINED_SECTIONS",
    "flow_objective_config",
    "load_flow_config",
    "resolve_flow_config",
    "stage_training",
]


FLOW_SECTIONS = ("target", "data", "model", "objective", "training", "pretraining", "evaluation")

DEFAULT_FLOW_CONFIG: dict[str, Any] = {
    "target": {"name": "gaussian-mixture", "dim": 2},
    "data": {"num_train": 10000, "num_validation": 1000, "num_test": 5000},
    "model": {
        "arch": "coupling",
        "blocks": 6,
        "hidden": 64,
        "layers": 2,
        "base": "gaussian",
        "normalization": "standard",
    },
    "objective": {"name": "nll"},
    "training": {"steps": 2000, "batch_size": 256, "seed": 0, "max_seconds": 300},
    "pretraining": {},
    "evaluation": {
        "num_samples": 5000,
        "w1_samples": 2000,
        "w1_scale": "identity",
        "pr_k": 3,
        "plots": True,
        "certificate": True,
        "certificate_divergence": "kl",
        "seed": 1234,
    },
}

#: The sections that decide what a flow run trains (``--resume`` refuses changes there).
TRAINED_SECTIONS = ("target", "data", "model", "objective", "training", "pretraining")

_DATA_KEYS = {"num_train", "num_validation", "num_test", "test_fraction", "validation_fraction"}
_EVAL_KEYS = set(DEFAULT_FLOW_CONFIG["evaluation"])
_MODEL_KEYS = {
    "arch", "blocks", "hidden", "layers", "base", "base_offset", "base_df", "base_width",
    "normalization", "seed", "actnorm", "clamp", "lipschitz", "explicit", "logdet",
    "n_series_terms", "n_hutchinson", "fixed_point_tol", "fixed_point_max_iter",
}  # fmt: skip


#: Objective settings of flow runs where they differ from the conditional defaults: the
#: settings the flow studies were measured with. No whitening: the support-mismatch
#: study trains in data units (``normalization: none``), where whitening would rescale
#: the Sinkhorn blur and the critic's inputs by the data's spread.
FLOW_OBJECTIVE_DEFAULTS: dict[str, dict[str, Any]] = {
    "fdiv": {"critic_hidden": 64, "critic_layers": 2, "gradient_penalty": 0.1, "whiten": False},
    "sinkhorn": {"whiten": False},
    "mmd": {"whiten": False},
}


def _flow_term(term: Mapping[str, Any], field: str) -> dict[str, Any]:
    term = dict(term)
    if term.get("name") == "pr":
        if "divergence" in term:
            raise ConfigError(f"{field}: name pr is the PR divergence and takes no divergence")
        term.update(name="fdiv", divergence="pr")
    return {**FLOW_OBJECTIVE_DEFAULTS.get(term.get("name"), {}), **term}


def flow_objective_config(cfg: Mapping[str, Any] | None) -> dict[str, Any]:
    """The validated conditional ``objective`` section of a flow config's ``objective``.

    ``name: pr`` becomes ``name: fdiv, divergence: pr``, and settings left out take
    :data:`FLOW_OBJECTIVE_DEFAULTS`, then the objective's own defaults.
    """
    cfg = dict(cfg or {"name": "nll"})
    cfg.setdefault("name", "nll")
    out = _flow_term(cfg, "objective")
    if isinstance(cfg.get("terms"), list):
        out["terms"] = [
            _flow_term(t, f"objective.terms[{i}]") if isinstance(t, Mapping) else t
            for i, t in enumerate(cfg["terms"])
        ]
    return objective_config(out)


def resolve_flow_config(config: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge ``config`` over :data:`DEFAULT_FLOW_CONFIG` and validate it."""
    config = check_sections(config, FLOW_SECTIONS, "flow config")
    merged = copy.deepcopy(DEFAULT_FLOW_CONFIG)
    # A new target or objective replaces the default one wholesale (no stray parameters).
    for s in ("target", "objective", "pretraining"):
        if config.get(s):
            merged[s] = {}
    for s in FLOW_SECTIONS:
        if config.get(s):
            merged[s] = deep_merge(merged[s], config[s])
    for section, keys in (("data", _DATA_KEYS), ("evaluation", _EVAL_KEYS), ("model", _MODEL_KEYS)):
        extra = sorted(set(merged[section]) - keys)
        if extra:
            raise ConfigError(f"{section}: unknown key(s) {extra}; allowed: {sorted(keys)}")
    if merged["evaluation"]["w1_scale"] not in ("identity", "slog"):
        raise ConfigError("evaluation.w1_scale must be 'identity' or 'slog'")
    for k in ("num_train", "num_validation", "num_test"):
        v = merged["data"].get(k)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int) or v < 1):
            raise ConfigError(f"data.{k} must be an integer >= 1, got {v!r}")
    fields = {f.name for f in dataclasses.fields(TrainingConfig)}
    extra = sorted(set(merged["training"]) - fields)
    if extra:
        raise ConfigError(f"training: unknown key(s) {extra}; allowed: {sorted(fields)}")
    TrainingConfig(**merged["training"])  # validates ranges
    for key in ("ensemble", "rounds"):
        if merged["training"].get(key, 1) != 1:
            raise ConfigError(f"training.{key} applies to `vinaflow run` posteriors, not flows")
    make_target(merged["target"])  # validates the target
    merged["objective"] = flow_objective_config(merged["objective"])
    pre = merged["pretraining"]
    if pre:
        extra = sorted(set(pre) - fields - {"objective"})
        if extra:
            raise ConfigError(
                f"pretraining: unknown key(s) {extra}; allowed: objective and the training keys"
            )
        pre["objective"] = flow_objective_config(pre.get("objective"))
        TrainingConfig(**stage_training(merged["training"], pre))
    return merged


def stage_training(training: Mapping[str, Any], stage: Mapping[str, Any]) -> dict[str, Any]:
    """The training settings of a pretraining stage: ``stage``'s over ``training``'s."""
    return {**training, **{k: v for k, v in stage.items() if k != "objective"}}


def load_flow_config(path: str | Path | None, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """Read a flow YAML config (or the defaults), apply ``--set`` overrides, validate."""
    raw = read_config_file(path, FLOW_SECTIONS) if path is not None else {}
    return resolve_flow_config(apply_overrides(raw, overrides, FLOW_SECTIONS))
