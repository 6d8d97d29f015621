"""Models: the paper's joint INN, the conditional INN, and the unconditional flow.

:data:`MODEL_KINDS` is the one registry of amortized model kinds; the settings a
``model`` config section accepts are derived from the constructors' signatures (the
model class, :func:`~vinaflow.blocks.build_flow` and the block class of the chosen
architecture) by :func:`model_keys`.
"""

from __future__ import annotations

import inspect
from typing import Any

from vinaflow.blocks import (
    ARCHITECTURES,
    AffineCoupling,
    IResNetBlock,
    SplineCoupling,
    build_flow,
)
from vinaflow.blocks.base import InvertibleBlock
from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel, Encoding
from vinaflow.models.cinn import ConditionalINN
from vinaflow.models.cnf import ContinuousFlow
from vinaflow.models.ensemble import EnsemblePosterior
from vinaflow.models.flow import BASE_DISTRIBUTIONS, NormalizingFlow, make_base
from vinaflow.models.inn import JointINN
from vinaflow.models.normalization import Standardizer
from vinaflow.models.posterior import Posterior, as_observations
from vinaflow.models.summary import EMBEDDINGS, SetSummary
from vinaflow.models.support import BoxSupport
from vinaflow.settings import Setting, signature_settings

__all__ = [
    "BASE_DISTRIBUTIONS",
    "BLOCK_CLASSES",
    "BLOCK_KINDS",
    "EMBEDDINGS",
    "MODEL_KINDS",
    "AmortizedModel",
    "BoxSupport",
    "ConditionalINN",
    "ContinuousFlow",
    "Encoding",
    "EnsemblePosterior",
    "JointINN",
    "NormalizingFlow",
    "Posterior",
    "SetSummary",
    "Standardizer",
    "as_observations",
    "build_model",
    "make_base",
    "model_keys",
]

#: Amortized model kinds ``p(x | y)`` by their ``kind`` (the ``model.kind`` config key).
MODEL_KINDS: dict[str, type[AmortizedModel]] = {
    cls.kind: cls for cls in (JointINN, ConditionalINN, ContinuousFlow)
}

#: Block class of each architecture of :func:`~vinaflow.blocks.build_flow`.
BLOCK_CLASSES: dict[str, type[InvertibleBlock]] = {
    "coupling": AffineCoupling,
    "iresnet": IResNetBlock,
    "spline": SplineCoupling,
}
assert tuple(BLOCK_CLASSES) == tuple(ARCHITECTURES), "one block class per architecture"

#: Kinds built from the invertible blocks of :func:`~vinaflow.blocks.build_flow` (their
#: constructors take ``arch``); the others define their bijection themselves.
BLOCK_KINDS: tuple[str, ...] = tuple(
    k for k, cls in MODEL_KINDS.items() if "arch" in inspect.signature(cls.__init__).parameters
)

#: ``explicit: auto`` lets the pipeline pick the explicit direction of an i-ResNet from
#: the objective (the trained direction), so it is a model setting but not a block one.
EXPLICIT_AUTO = "auto"


def model_keys(kind: str, arch: str) -> dict[str, Setting]:
    """The ``model`` config keys of ``kind`` with architecture ``arch``.

    Derived from the signatures of the model class, :func:`build_flow` and the block
    class of ``arch``; string choices come from the ``CHOICES`` tables of the block and
    model classes. A kind without invertible blocks (the continuous flow) has only its
    class's settings, whatever ``arch``.
    """
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind: unknown value {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    if kind not in BLOCK_KINDS:
        cls = MODEL_KINDS[kind]
        return {
            "kind": Setting("kind", kind, (str,), tuple(MODEL_KINDS)),
            **signature_settings(
                cls.__init__, skip=("dim_x", "dim_y"), choices=getattr(cls, "CHOICES", None)
            ),
        }
    if arch not in BLOCK_CLASSES:
        raise ConfigError(
            f"model.arch: unknown value {arch!r}; allowed: {', '.join(BLOCK_CLASSES)}"
        )
    block = BLOCK_CLASSES[arch]
    own = signature_settings(
        block.__init__, skip=("dim", "cond_dim"), choices=getattr(block, "CHOICES", None)
    )
    # build_flow names the options of every architecture; keep the shared ones and
    # those of this architecture's block.
    any_block = {k for cls in BLOCK_CLASSES.values() for k in signature_settings(cls.__init__)}
    flow = {
        k: s
        for k, s in signature_settings(build_flow, skip=("dim", "cond_dim")).items()
        if k not in any_block or k in own
    }
    settings = {
        "kind": Setting("kind", kind, (str,), tuple(MODEL_KINDS)),
        **flow,
        **own,
        **signature_settings(
            MODEL_KINDS[kind].__init__,
            skip=("dim_x", "dim_y"),
            choices=getattr(MODEL_KINDS[kind], "CHOICES", None),
        ),
    }
    settings["arch"] = settings["arch"].with_choices(BLOCK_CLASSES)
    if "explicit" in settings:
        settings["explicit"] = settings["explicit"].with_choices(
            (EXPLICIT_AUTO, *settings["explicit"].choices)
        )
    return settings


def build_model(kind: str, dim_x: int, dim_y: int, **kwargs: Any) -> AmortizedModel:
    """Build an amortized model by ``kind`` (a key of :data:`MODEL_KINDS`)."""
    if kind not in MODEL_KINDS:
        raise ConfigError(f"model.kind: unknown kind {kind!r}; allowed: {', '.join(MODEL_KINDS)}")
    return MODEL_KINDS[kind](dim_x=dim_x, dim_y=dim_y, **kwargs)
