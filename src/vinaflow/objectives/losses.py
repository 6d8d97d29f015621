"""The objectives without a critic (NLL, Sinkhorn, MMD, prior penalty), their weighted
sum, and :data:`OBJECTIVES`, the registry of objectives by config name.

The conventions (which side is data, the directions) are those of
:mod:`vinaflow.objectives.base`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel
from vinaflow.objectives.base import (
    CRITIC_TRANSFORMS,
    DIRECTIONS,
    JointObjective,
    JointWhitener,
    Logs,
    Objective,
    slog,
)
from vinaflow.objectives.fdivergence import GRADIENTS, FDivergenceObjective
from vinaflow.objectives.flow_matching import FlowMatchingObjective
from vinaflow.objectives.mmd import mmd_imq
from vinaflow.objectives.priors import box_prior_penalty, gaussian_prior_penalty
from vinaflow.objectives.sinkhorn import sinkhorn_divergence

__all__ = [
    "CRITIC_TRANSFORMS",
    "DIRECTIONS",
    "GRADIENTS",
    "OBJECTIVES",
    "PRIOR_KINDS",
    "CompositeObjective",
    "JointWhitener",
    "FDivergenceObjective",
    "FlowMatchingObjective",
    "MMDObjective",
    "NLLObjective",
    "Objective",
    "PriorPenalty",
    "SinkhornObjective",
    "check_weights",
    "slog",
]

#: Prior penalties of :class:`PriorPenalty`.
PRIOR_KINDS = ("gaussian", "uniform")


class NLLObjective(Objective):
    """Maximum likelihood: the model's own :meth:`~AmortizedModel.nll`."""

    name = "nll"

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        loss = model.nll(x_s, y_s).mean()
        return loss, {"nll": float(loss.detach())}


class _SampleDistanceObjective(JointObjective):
    def distance(self, p: Tensor, q: Tensor) -> Tensor:
        raise NotImplementedError

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        p, q, residual = self._pairs(model, x_s, y_s)
        dist = self.distance(p, q)
        logs = {self.name: float(dist.detach())}
        return self._supervised(dist, residual, logs), logs


class SinkhornObjective(_SampleDistanceObjective):
    """Debiased Sinkhorn divergence (geomloss) between data and model joints.

    ``blur`` is geomloss's blur (``epsilon = blur^2`` for ``p = 2``), in whitened units
    when ``whiten`` is on.
    """

    name = "sinkhorn"

    def __init__(
        self,
        model: AmortizedModel,
        blur: float = 0.05,
        direction: str = "backward",
        y_weight: float | None = None,
        whiten: bool = True,
        scaling: float = 0.9,
    ) -> None:
        super().__init__(model, direction, y_weight, whiten)
        if not blur > 0:
            raise ConfigError(f"objective.blur must be > 0, got {blur}")
        self.blur, self.scaling = float(blur), float(scaling)

    def distance(self, p: Tensor, q: Tensor) -> Tensor:
        return sinkhorn_divergence(p, q, blur=self.blur, scaling=self.scaling)


class MMDObjective(_SampleDistanceObjective):
    """MMD with inverse multiquadric kernels (Ardizzone et al. 2019)."""

    name = "mmd"

    def __init__(
        self,
        model: AmortizedModel,
        direction: str = "backward",
        widths: Sequence[float] | None = None,
        y_weight: float | None = None,
        whiten: bool = True,
    ) -> None:
        super().__init__(model, direction, y_weight, whiten)
        self.widths = tuple(widths) if widths is not None else None

    def distance(self, p: Tensor, q: Tensor) -> Tensor:
        if self.widths is None:
            return mmd_imq(p, q)
        return mmd_imq(p, q, widths=self.widths)


class PriorPenalty(Objective):
    """Penalty on generated ``x`` (in problem units) for leaving a prior (prior regularization).

    ``kind="gaussian"``: ``0.5 ||(x - loc) / scale||^2``; ``kind="uniform"``: squared
    hinge outside the box ``[low, high]``.
    """

    name = "prior"
    trains_sampling = True
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"kind": PRIOR_KINDS}
    #: The parameters each kind needs.
    PARAMETERS: ClassVar[dict[str, tuple[str, str]]] = {
        "gaussian": ("loc", "scale"),
        "uniform": ("low", "high"),
    }

    def __init__(
        self,
        kind: str,
        loc: Sequence[float] | None = None,
        scale: Sequence[float] | None = None,
        low: Sequence[float] | None = None,
        high: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        if kind not in PRIOR_KINDS:
            raise ConfigError(
                f"objective.prior: unknown {kind!r}; allowed: {', '.join(PRIOR_KINDS)}"
            )
        self.kind = kind
        params = {"loc": loc, "scale": scale, "low": low, "high": high}
        for k in self.PARAMETERS[kind]:
            if params[k] is None:
                raise ConfigError(f"objective.prior_{k} is required for a {kind} prior penalty")
            self.register_buffer(k, torch.as_tensor(params[k], dtype=torch.float32))

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        x = model.x_norm.inverse(model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s)))
        if self.kind == "gaussian":
            pen = gaussian_prior_penalty(x, self.loc, self.scale)
        else:
            pen = box_prior_penalty(x, self.low, self.high)
        return pen, {"prior": float(pen.detach())}


class CompositeObjective(Objective):
    """Weighted sum of objectives; critics of all members are trained together."""

    name = "composite"

    def __init__(self, terms: Sequence[tuple[Objective, float]]) -> None:
        super().__init__()
        self.weights = check_weights([w for _, w in terms])
        self.terms = nn.ModuleList([t for t, _ in terms])
        self.has_critic = any(t.has_critic for t in self.terms)
        # the most any critic term asks for: every critic is updated at each critic step
        preferred = [t.critic_steps for t in self.terms if t.has_critic and t.critic_steps]
        self.critic_steps = max(preferred) if preferred else None
        self.trains_sampling = any(
            t.trains_sampling for t, w in terms if w > 0 and not isinstance(t, PriorPenalty)
        )

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        total: Tensor | float = 0.0
        logs: Logs = {}
        for term, w in zip(self.terms, self.weights, strict=True):
            if w == 0:
                continue
            loss, lg = term.generator_loss(model, x_s, y_s)
            total = total + w * loss
            logs.update(lg)
        assert isinstance(total, Tensor)
        logs["loss"] = float(total.detach())
        return total, logs

    def critic_loss(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        total: Tensor | float = 0.0
        logs: Logs = {}
        for term in self.terms:
            if term.has_critic:
                loss, lg = term.critic_loss(model, x_s, y_s)
                total = total + loss
                logs.update(lg)
        assert isinstance(total, Tensor)
        return total, logs

    def critic_parameters(self) -> list[nn.Parameter]:
        return [p for t in self.terms for p in t.critic_parameters()]

    def prepare(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> None:
        for term in self.terms:
            term.prepare(model, x_s, y_s)


def check_weights(weights: Sequence[float], field: str = "objective") -> list[float]:
    """Term weights as floats: finite, >= 0, at least one > 0 (else nothing is trained)."""
    out = []
    for i, w in enumerate(weights):
        if isinstance(w, bool) or not isinstance(w, (int, float)) or not math.isfinite(w) or w < 0:
            raise ConfigError(f"{field}: term {i} has weight {w!r}; weights must be numbers >= 0")
        out.append(float(w))
    if not any(w > 0 for w in out):
        raise ConfigError(
            f"{field}: needs at least one term with weight > 0, got weights {out or 'none'}"
        )
    return out


#: Objectives by config name (``objective.name``); each class's constructor arguments
#: after ``model`` are the config keys it takes.
OBJECTIVES: dict[str, type[Objective]] = {
    cls.name: cls
    for cls in (
        NLLObjective,
        FDivergenceObjective,
        SinkhornObjective,
        MMDObjective,
        FlowMatchingObjective,
    )
}
