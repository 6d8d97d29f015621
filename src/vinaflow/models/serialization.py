"""Safe model files: weights in safetensors plus a JSON config; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vinaflow.errors import ModelFileError
from vinaflow.training.io import atomic_path, atomic_write_json

__all__ = ["FORMAT_VERSION", "load_model", "save_model"]

FORMAT_VERSION = 1
WEIGHTS, META = "model.safetensors", "model.json"


def save_model(
    model: nn.Module, directory: str | Path, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model.safetensors`` and ``model.json`` (config, format version) atomically."""
    from vinaflow import __version__

    directory = Path(directory)
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    with atomic_path(directory / WEIGHTS, suffix=".safetensors") as tmp:
        save_file(state, str(tmp))
    meta = {
        "format_version": FORMAT_VERSION,
        "vinaflow_version": __version__,
        "model": model.config(),  # type: ignore[operator]
        "tensors": {k: list(v.shape) for k, v in state.items()},
        **(extra or {}),
    }
    atomic_write_json(directory / META, meta)


def load_model(directory: str | Path) -> tuple[nn.Module, dict[str, Any]]:
    """Rebuild a model from ``model.json`` and load ``model.safetensors`` with checks."""
    from vinaflow.models import NormalizingFlow, build_model

    directory = Path(directory)
    meta_path, weights_path = directory / META, directory / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise ModelFileError(f"model file not found: {p}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{meta_path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path}: unsupported format_version {meta.get('format_version')!r} "
            f"(this vinaflow reads version {FORMAT_VERSION})"
        )
    cfg = dict(meta.get("model", {}))
    kind = cfg.pop("kind", None)
    try:
        if kind == "nf":
            model: nn.Module = NormalizingFlow(**cfg)
        else:
            model = build_model(kind, **cfg)
    except TypeError as err:
        raise ModelFileError(f"{meta_path}: model config is inconsistent ({err})") from err
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{weights_path} is truncated or not a safetensors file ({err})"
        ) from err
    expected = model.state_dict()
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k].shape]
    if missing or unexpected or bad_shape:
        raise ModelFileError(
            f"{weights_path} does not match its config: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {bad_shape[:5]}"
        )
    model.load_state_dict(state)
    model.eval()
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ModelFileError(f"{weights_path} contains non-finite weights")
    return model, meta
