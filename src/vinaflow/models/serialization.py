"""Safe model files: weights in safetensors plus a JSON config; nothing is unpickled."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch import nn

from vinaflow._version import __version__
from vinaflow.atomic import atomic_path, atomic_write_json
from vinaflow.errors import ModelFileError

__all__ = ["FORMAT_VERSION", "load_model", "save_model"]

FORMAT_VERSION = 1
#: Model settings that count something stored (layers, widths, dimensions).
_SIZE_KEYS = (
    "dim",
    "dim_x",
    "dim_y",
    "blocks",
    "hidden",
    "layers",
    "latent_dim",
    "embedding_dim",
    "embedding_hidden",
    "set_dim",
)
WEIGHTS, META = "model.safetensors", "model.json"


def save_model(
    model: nn.Module, directory: str | Path, extra: dict[str, Any] | None = None
) -> None:
    """Write ``model.safetensors`` and ``model.json`` (config, format version) atomically."""
    directory = Path(directory)
    # CPU tensors: a model trained on any device loads anywhere
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
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
    directory = Path(directory)
    meta_path, weights_path = directory / META, directory / WEIGHTS
    for p in (meta_path, weights_path):
        if not p.is_file():
            raise ModelFileError(f"model file not found: {p}")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelFileError(f"{meta_path} is not valid JSON ({err})") from err
    if not isinstance(meta, dict):
        raise ModelFileError(f"{meta_path} must hold a JSON object")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ModelFileError(
            f"{meta_path}: unsupported format_version {meta.get('format_version')!r} "
            f"(this vinaflow reads version {FORMAT_VERSION})"
        )
    cfg = meta.get("model")
    if not isinstance(cfg, dict) or not all(isinstance(k, str) for k in cfg):
        raise ModelFileError(f"{meta_path}: 'model' must be a mapping of constructor settings")
    cfg = dict(cfg)
    kind = cfg.pop("kind", None)
    try:
        state = load_file(str(weights_path))
    except (SafetensorError, OSError, ValueError) as err:
        raise ModelFileError(
            f"{weights_path} is truncated or not a safetensors file ({err})"
        ) from err
    if kind == "nf":
        # Written before unconditional flows became ConditionalINNs with dim_y = 0.
        from vinaflow.models.flow import upgrade_nf_file

        kind, cfg, state = upgrade_nf_file(cfg, state)
    # Every structural size implies at least that many stored numbers; checking this
    # first keeps a forged ``blocks: 10**9`` from taking forever even on the meta device.
    stored = sum(v.numel() for v in state.values())
    for key in _SIZE_KEYS:
        value = cfg.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value > max(stored, 1):
            raise ModelFileError(
                f"{meta_path}: model.{key} = {value} is impossible for {stored} stored weights"
            )
    # Build on the meta device first: no memory is allocated, so a config that asks for
    # an absurd network (hidden: 10**9) is caught by the shape check below, not by the OS.
    try:
        skeleton = _build(kind, cfg, meta_path, device="meta")
    except ModelFileError:
        # Some constructors read tensor values (e.g. ``.item()``), which the meta
        # device cannot; build for real (sizes are bounded by the check above).
        skeleton = _build(kind, cfg, meta_path)
    expected = {k: v.shape for k, v in skeleton.state_dict().items()}
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    bad_shape = [k for k in expected if k in state and state[k].shape != expected[k]]
    if missing or unexpected or bad_shape:
        raise ModelFileError(
            f"{weights_path} does not match its config: missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}, wrong shapes {bad_shape[:5]}"
        )
    model = _build(kind, cfg, meta_path)
    bad_dtype = [k for k, v in model.state_dict().items() if v.dtype != state[k].dtype]
    if bad_dtype:
        raise ModelFileError(f"{weights_path}: tensors with unexpected dtypes {bad_dtype[:5]}")
    if not all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point()):
        raise ModelFileError(f"{weights_path} contains non-finite weights")
    model.load_state_dict(state)
    model.eval()
    return model, meta


def _build(kind: Any, cfg: dict[str, Any], meta_path: Path, device: str = "cpu") -> nn.Module:
    """The model a ``model.json`` describes; any failure is the file's fault."""
    from vinaflow.models import build_model

    try:
        with torch.device(device):
            return build_model(kind, **cfg)
    except ModelFileError:
        raise
    except Exception as err:  # noqa: BLE001 - constructors raise many kinds for junk configs
        raise ModelFileError(f"{meta_path}: model config is inconsistent ({err})") from err
