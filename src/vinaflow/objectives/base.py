"""The objective interface, the data-vs-model conventions, and the shared machinery of
objectives that compare a data side with a model side (pairs, whitening).

Every objective works in standardised units and exposes

* ``generator_loss(model, x_s, y_s) -> (loss, logs)`` — minimised over the model;
* ``critic_loss(model, x_s, y_s) -> (loss, logs)`` — minimised over the critic
  (only objectives with ``has_critic``).

Which distribution is *data* (``P``) and which is *model* (``Q``) decides what
"KL" means: with ``D_f(P || Q) = E_Q[f(dP/dQ)]``,

* ``direction="backward"`` (posterior loss): ``P`` = law of ``(X, Y)`` from the
  simulations, ``Q`` = law of ``(T^{-1}(Y, Z), Y)``; the critic sees ``(x, y)``.
  ``kl`` is then the mass-covering KL(data || model), like maximum likelihood.
* ``direction="forward"`` (latent loss): ``P`` = law of ``T(X)`` = ``(y_hat, z)``
  (for a cINN ``(y, z(x; y))``), ``Q`` = law of ``(Y, Z)`` with ``Z ~ N(0, I)``
  independent of ``Y``; the critic sees ``(y, z)``.

A model without observation (``dim_y = 0``, an unconditional flow trained by
``vinaflow flow``) gets ``y_s`` of shape ``(n, 0)``: the backward critic then sees ``x``
only, and ``P`` is the data law of ``x``, ``Q`` the model's.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from vinaflow.blocks.base import without_logdet
from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel

__all__ = [
    "CRITIC_TRANSFORMS",
    "DIRECTIONS",
    "JointObjective",
    "JointWhitener",
    "Logs",
    "Objective",
    "batch_mean",
    "global_batch",
    "slog",
]

DIRECTIONS = ("backward", "forward")
#: Fixed bijections the critic's inputs may pass through.
CRITIC_TRANSFORMS = ("none", "slog")
Logs = dict[str, float]

#: (process group, device of its collectives) while a data-parallel step computes a loss
_BATCH_GROUP: ContextVar[tuple[Any, torch.device] | None] = ContextVar(
    "vinaflow_batch_group", default=None
)


@contextmanager
def global_batch(group: Any, device: torch.device) -> Iterator[None]:
    """While active, :func:`batch_mean` averages over the rows of every rank of ``group``
    (collectives on ``device``): the trainer wraps each data-parallel loss in it."""
    token = _BATCH_GROUP.set((group, device))
    try:
        yield
    finally:
        _BATCH_GROUP.reset(token)


def batch_mean(t: Tensor) -> Tensor:
    """Mean of ``t`` (no gradient) over the global minibatch.

    A baseline such as the score estimator's ``h - mean(h)`` is a statistic of the whole
    minibatch, not a sum of per-row terms: in data-parallel training each rank holds a
    slice, and the local mean would make N processes take a different step than one.
    """
    t = t.detach()
    active = _BATCH_GROUP.get()
    if active is None:
        return t.mean()
    import torch.distributed as dist

    group, device = active
    total = torch.stack([t.sum(), t.new_tensor(float(t.numel()))]).double().to(device)
    dist.all_reduce(total, group=group)
    return (total[0] / total[1]).to(t)


def slog(x: Tensor) -> Tensor:
    r"""Signed logarithm :math:`\mathrm{sign}(x)\log(1 + |x|)`, a bijection of R."""
    return torch.sign(x) * torch.log1p(x.abs())


class JointWhitener(nn.Module):
    """Affine map ``v -> (v - mean) C^{-1/2}`` fitted to reference samples.

    Joint samples ``(x, y)`` of a simulator with small noise lie close to a thin
    manifold: for gaussian-linear with noise 0.1 the joint covariance has standard
    deviations 0.06 and 1.7 along different axes. A critic fed raw coordinates
    cannot find that thin direction (measured: a KL(P||Q) of 5.1 nats was estimated
    as 0.00 after 3,000 critic steps); after whitening it estimates 3.2 within 500.
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("mean", torch.zeros(dim))
        self.register_buffer("matrix", torch.eye(dim))

    @torch.no_grad()
    def fit(self, samples: Tensor, floor: float = 1e-6) -> None:
        data = samples.double()
        cov = torch.atleast_2d(torch.cov(data.T))
        evals, evecs = torch.linalg.eigh(cov)
        evals = evals.clamp_min(floor * float(evals.max().clamp_min(1e-12)))
        self.mean.copy_(data.mean(0).float())
        self.matrix.copy_((evecs @ torch.diag(evals.rsqrt()) @ evecs.T).float())

    def forward(self, v: Tensor) -> Tensor:
        return (v - self.mean) @ self.matrix


class Objective(nn.Module):
    """Base class; subclasses override :meth:`generator_loss` and maybe :meth:`critic_loss`."""

    name = "objective"
    has_critic = False
    #: Allowed values of the string arguments of the constructor (read by the config
    #: checks of :mod:`vinaflow.objectives.specs`).
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {}
    #: Whether the sampling direction ``T^{-1}`` is the one trained (decides which
    #: direction of an iResNet block should be explicit).
    trains_sampling = False
    #: Critic updates per model update when ``training.critic_steps`` is not given
    #: (objectives with a critic; ``None``: the trainer's default).
    critic_steps: int | None = None

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        raise NotImplementedError

    def critic_loss(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        raise NotImplementedError(f"objective {self.name!r} has no critic")

    def critic_parameters(self) -> list[nn.Parameter]:
        return []

    @classmethod
    def needs_log_prob(cls, **settings: object) -> bool:
        """Whether the constructor ``settings`` train through the model's log-density."""
        return False

    def prepare(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> None:
        """Fit data-dependent state (e.g. input whitening) before training starts."""


def _reference_joint(model: AmortizedModel, x_s: Tensor, y_s: Tensor, direction: str) -> Tensor:
    """Samples of the *fixed* side of a direction: data ``(x, y)`` or prior ``(y, z)``."""
    if direction == "backward":
        return torch.cat([x_s, y_s], 1)
    z = model.sample_latent(y_s.shape[0], generator=torch.Generator().manual_seed(0)).to(y_s)
    return torch.cat([y_s, z], 1)


def _check_direction(direction: str) -> str:
    if direction not in DIRECTIONS:
        raise ConfigError(
            f"objective.direction: unknown {direction!r}; allowed: {', '.join(DIRECTIONS)}"
        )
    return direction


def _joint_pairs(
    model: AmortizedModel, x_s: Tensor, y_s: Tensor, direction: str, supervised: bool = True
) -> tuple[Tensor, Tensor, Tensor | None]:
    """(P samples, Q samples, supervised residual) for a direction.

    The residual (joint INN, forward direction only) stacks ``y_hat - y``, the output
    padding and the inverse reconstruction ``T^{-1}(y, z(x)) - x``: the latent loss
    alone never evaluates the inverse at the true ``y``, and without the
    reconstruction term posterior samples of a coupling INN can diverge (re-simulation
    errors of 70-310 were measured on inverse kinematics).
    """
    if direction == "backward":
        with without_logdet():  # the backward losses read samples only
            x_hat = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
        return torch.cat([x_s, y_s], 1), torch.cat([x_hat, y_s], 1), None
    enc = model.encode(x_s, y_s)
    z_prior = model.sample_latent(y_s.shape[0]).to(y_s)
    residual = None
    if enc.y_hat is not None and supervised:
        parts = [enc.y_hat - y_s, model.generate(y_s, enc.z) - x_s]
        if enc.extra is not None:
            parts.append(enc.extra)
        residual = torch.cat(parts, 1)
    y_side = enc.y_hat if enc.y_hat is not None else y_s
    return torch.cat([y_side, enc.z], 1), torch.cat([y_s, z_prior], 1), residual


class JointObjective(Objective):
    """Shared machinery of objectives that compare a data side and a model side.

    Both sides pass through the same :class:`JointWhitener`, fitted on the fixed
    side (data ``(x, y)`` for ``backward``, ``(y, N(0, I))`` for ``forward``).
    """

    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {"direction": DIRECTIONS}

    def __init__(
        self, model: AmortizedModel, direction: str, y_weight: float | None, whiten: bool
    ) -> None:
        super().__init__()
        self.direction = _check_direction(direction)
        self.trains_sampling = direction == "backward"
        # Only forward losses use the supervised term (measured on inverse kinematics,
        # adding ||y_hat - y||^2 to the backward KL raised the re-simulation error
        # from 0.14 to 0.31).
        self.y_weight = float(
            y_weight if y_weight is not None else (10.0 if direction == "forward" else 0.0)
        )
        self.pair_dim = model.dim_y + (model.dim_x if direction == "backward" else model.latent_dim)
        self.whitener = JointWhitener(self.pair_dim) if whiten else None
        #: Fixed bijection applied to both sides before whitening (critic objectives).
        self.transform: Callable[[Tensor], Tensor] | None = None

    def prepare(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> None:
        if self.whitener is not None:
            ref = _reference_joint(model, x_s, y_s, self.direction)
            self.whitener.fit(ref if self.transform is None else self.transform(ref))

    def _pairs(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor, supervised: bool | None = None
    ) -> tuple[Tensor, Tensor, Tensor | None]:
        if supervised is None:
            supervised = self.y_weight > 0
        p, q, residual = _joint_pairs(model, x_s, y_s, self.direction, supervised)
        return self._features(p), self._features(q), residual

    def _features(self, v: Tensor) -> Tensor:
        """What the critic (or distance) sees of a joint sample: transformed, whitened."""
        if self.transform is not None:
            v = self.transform(v)
        return v if self.whitener is None else self.whitener(v)

    def _supervised(self, loss: Tensor, residual: Tensor | None, logs: Logs) -> Tensor:
        if residual is not None and self.y_weight > 0:
            fit = residual.pow(2).sum(1).mean()
            logs["y_fit"] = float(fit.detach())
            return loss + self.y_weight * fit
        return loss
