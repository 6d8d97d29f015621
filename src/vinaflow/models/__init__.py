"""Models: the paper's joint INN, the conditional INN, and the unconditional flow."""

from __future__ import annotations

from typing import Any

from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel, Encoding
from vinaflow.models.cinn import ConditionalINN
from vinaflow.models.flow import BASE_DISTRIBUTIONS, NormalizingFlow, make_base
from vinaflow.models.inn import JointINN
from vinaflow.models.normalization import Standardizer
from vinaflow.models.posterior import Posterior, as_observations

__all__ = [
    "BASE_DISTRIBUTIONS",
    "MODEL_KINDS",
    "AmortizedModel",
    "ConditionalINN",
    "Encoding",
    "JointINN",
    "NormalizingFlow",
    "Posterior",
    "Standardizer",
    "as_observations",
    "build_model",
    "make_base",
]

MODEL_KINDS: dict[str, type[AmortizedModel]] = {"inn": JointINN, "cinn": ConditionalINN}


def build_model(kind: str, dim_x: int, dim_y: int, **kwargs: Any) -> AmortizedModel:
    """Build an amortized model by ``kind`` (``inn`` or ``cinn``)."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind: unknown kind {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind](dim_x=dim_x, dim_y=dim_y, **kwargs)
