"""Training objectives for amortized models, built from the sample-level divergences.

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

import math
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
from torch import Tensor, nn

from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel
from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import DIVERGENCES, get_divergence
from vinaflow.objectives.mmd import mmd_imq
from vinaflow.objectives.priors import box_prior_penalty, gaussian_prior_penalty
from vinaflow.objectives.sinkhorn import sinkhorn_divergence
from vinaflow.objectives.variational import variational_bound

__all__ = [
    "CRITIC_TRANSFORMS",
    "DIRECTIONS",
    "GRADIENTS",
    "OBJECTIVES",
    "PRIOR_KINDS",
    "CompositeObjective",
    "JointWhitener",
    "FDivergenceObjective",
    "MMDObjective",
    "NLLObjective",
    "Objective",
    "PriorPenalty",
    "SinkhornObjective",
    "check_weights",
    "slog",
]

DIRECTIONS = ("backward", "forward")
#: Generator-gradient estimators of :class:`FDivergenceObjective`.
GRADIENTS = ("bound", "score", "pathwise")
#: Fixed bijections the critic's inputs may pass through.
CRITIC_TRANSFORMS = ("none", "slog")
#: Prior penalties of :class:`PriorPenalty`.
PRIOR_KINDS = ("gaussian", "uniform")
Logs = dict[str, float]


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


class NLLObjective(Objective):
    """Maximum likelihood: the model's own :meth:`~AmortizedModel.nll`."""

    name = "nll"

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        loss = model.nll(x_s, y_s).mean()
        return loss, {"nll": float(loss.detach())}


class _JointObjective(Objective):
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


class FDivergenceObjective(_JointObjective):
    r"""Variational f-divergence (f-GAN, Nowozin et al. 2016) between data and model joints.

    :math:`D_f(P\|Q) \ge \sup_V E_P[g_f(V)] - E_Q[f^*(g_f(V))]`; the critic ``V``
    maximises the bound. How the model is trained is ``gradient``:

    * ``bound`` (default for the named members): the model minimises the bound.
    * ``score`` (default for ``pr``): the score-function identity
      :math:`\nabla_\theta D_f = E_Q\big[h(r)\,\nabla_\theta \log q_\theta\big]` with
      :math:`h(r) = f(r) - r f'(r)` the functional derivative of :math:`\int q f(p/q)` in
      :math:`q` and :math:`r = p/q` the critic's ratio estimate, at detached model samples
      and with the batch mean of :math:`h` as a baseline (:math:`E_Q[\nabla\log q] = 0`).
      It needs the model's tractable density, so any cINN (conditional posteriors
      included, where :math:`\log q_\theta(x|y)` carries the whole dependence on
      :math:`\theta` of :math:`\log q(x, y)`), not the joint INN. For the PR divergence
      :math:`h = [\lambda r < 1]` up to a constant (lower the density where the model
      puts more than :math:`\lambda` times the data's mass, raise it elsewhere), softened
      to :math:`\sigma((-\log\lambda - \log\hat r)/\tau)` over ``temperature``
      :math:`\tau` in log-ratio units because :math:`\hat r` is an estimate.
    * ``pathwise``: differentiates the plug-in :math:`E_Q[f(\hat r(x))]` through the
      samples, with the explicit dependence of :math:`r = p/q_\theta` on :math:`\theta`,
      :math:`\log\hat r(x) - [\log q_\theta(\bar x) - \mathrm{sg}(\log q_\theta(\bar x))]`
      (exact in expectation with a perfect critic). Measured on the 8-Gaussian
      precision-recall study it *lowered* both precision and recall of the PR divergence
      for :math:`\lambda \ge 1`: where :math:`f_\lambda' > 0` it moves samples down the
      critic's ratio estimate, so critic errors push mass off the data. Kept for
      comparison.

    ``score`` and ``pathwise`` read :math:`\log\hat r` from the critic, capped softly at
    ``max_log_ratio``; they apply to the backward direction only.

    **Precision-Recall divergence** (``divergence="pr"``, Verine et al. 2023):
    :math:`D_\lambda(P\|Q) = \min(\lambda, 1) - \alpha_\lambda(P, Q)` with
    :math:`\alpha_\lambda = \int\min(\lambda p, q)` the PRD precision at slope
    :math:`\lambda` (Simon et al. 2019): a large ``lam`` asks for no model mass off the
    data (*precision*), a small one for every data region covered (*recall*). Its optimal
    critic is a step function, so the critic is trained with a smooth ``auxiliary``
    member (default ``gan``, a logistic classifier whose logit estimates
    :math:`\log p/q`) and its ratio estimate drives the ``score`` or ``pathwise`` gradient.

    Arguments:
        divergence: ``kl``, ``reverse-kl``, ``js``, ``pearson``, ``hellinger``, ``gan``,
            ``tv`` or ``pr``.
        direction: ``backward`` or ``forward`` (see the module docstring).
        critic_hidden, critic_layers: Size of the critic MLP.
        gradient_penalty: Weight of a zero-centred gradient penalty on the critic at
            data samples (Mescheder et al. 2018, R1), which keeps the critic smooth.
        spectral_norm: Spectrally normalise the critic's layers.
        y_weight: Weight of the supervised terms of the joint INN: ``||y_hat - y||^2`` and,
            in the forward direction, the inverse reconstruction (the latent loss alone
            does not pair ``y_hat`` with ``y``). Default 10; unused by ``backward``.
        whiten: Whiten the critic's inputs (see :class:`JointWhitener`).
        nonsaturating: With ``gradient="bound"`` in the backward direction, let the model
            maximise ``E_Q[g_f(V)]`` instead of ``E_Q[f^*(g_f(V))]`` (Nowozin et al. 2016,
            §3.2). Both have the same fixed point ``Q = P``, but the bound's gradient
            vanishes for model samples far from the data (``f^*(g_f(V)) -> 0`` for KL).
        lam: :math:`\lambda > 0` of the PR divergence (default 1; ``pr`` only).
        auxiliary: Member the critic is trained with for ``score`` / ``pathwise`` (it must
            give a ratio estimate: not ``tv``); default ``gan`` for ``pr``, else the
            divergence itself.
        gradient: ``bound``, ``score`` or ``pathwise`` (above).
        temperature: Softening of the PR score estimator's step (log-ratio units).
        max_log_ratio: Soft cap on :math:`|\log\hat r|` of ``score`` / ``pathwise``.
        critic_transform: ``none`` or ``slog`` (the critic sees
            ``sign(v) log(1 + |v|)``: :math:`D_f` is invariant under bijections, and
            heavy-tailed data stay well scaled).

    References:
        Nowozin, Cseke, Tomioka. f-GAN. NeurIPS 2016.

        Verine, Negrevergne, Pydi, Chevaleyre. Precision-Recall Divergence Optimization
        for Generative Modeling with GANs and Normalizing Flows. NeurIPS 2023.

        Simon, Mann, Ponce, Gelly. Revisiting precision recall definition for generative
        modeling. ICML 2019.
    """

    name = "fdiv"
    has_critic = True
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **_JointObjective.CHOICES,
        "divergence": (*DIVERGENCES, "pr"),
        "auxiliary": tuple(DIVERGENCES),
        "gradient": GRADIENTS,
        "critic_transform": CRITIC_TRANSFORMS,
    }

    def __init__(
        self,
        model: AmortizedModel,
        divergence: str = "kl",
        direction: str = "backward",
        critic_hidden: int = 128,
        critic_layers: int = 3,
        gradient_penalty: float = 1.0,
        spectral_norm: bool = False,
        y_weight: float | None = None,
        whiten: bool = True,
        nonsaturating: bool = False,
        lam: float | None = None,
        auxiliary: str | None = None,
        gradient: str | None = None,
        temperature: float = 0.25,
        max_log_ratio: float = 10.0,
        critic_transform: str = "none",
    ) -> None:
        super().__init__(model, direction, y_weight, whiten)
        self.nonsaturating = bool(nonsaturating)
        is_pr = divergence == "pr"
        if lam is not None and not is_pr:
            raise ConfigError(f"objective.lam applies to divergence pr only, not {divergence!r}")
        if is_pr:
            lam = 1.0 if lam is None else lam
            if isinstance(lam, bool) or not isinstance(lam, (int, float)) or not lam > 0:
                raise ConfigError(f"objective.lam (PR lambda) must be a number > 0, got {lam!r}")
            self.lam: float | None = float(lam)
            self.divergence = get_divergence("pr", lam=self.lam)
        else:
            self.lam = None
            self.divergence = get_divergence(divergence)
        gradient = self.resolved_gradient(divergence, gradient)
        if gradient not in GRADIENTS:
            raise ConfigError(
                f"objective.gradient: unknown {gradient!r}; allowed: {', '.join(GRADIENTS)}"
            )
        if gradient == "bound" and (is_pr or auxiliary is not None):
            raise ConfigError(
                "objective.gradient=bound trains through the critic's own divergence; "
                "divergence pr and an auxiliary critic need gradient score or pathwise"
            )
        if gradient != "bound" and direction != "backward":
            raise ConfigError(f"objective.gradient={gradient} needs direction backward")
        if gradient == "score" and not model.has_log_prob:
            raise ConfigError(
                f"objective.gradient=score needs the model's density; model kind "
                f"{model.kind!r} (or a cinn with latent padding) has none"
            )
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"objective.temperature must be a number > 0, got {temperature!r}")
        if not max_log_ratio > 0:
            raise ConfigError(f"objective.max_log_ratio must be > 0, got {max_log_ratio}")
        if not gradient_penalty >= 0:
            raise ConfigError(f"objective.gradient_penalty must be >= 0, got {gradient_penalty}")
        if critic_transform not in CRITIC_TRANSFORMS:
            raise ConfigError(
                f"objective.critic_transform: unknown {critic_transform!r}; allowed: "
                f"{', '.join(CRITIC_TRANSFORMS)}"
            )
        self.gradient, self.temperature = gradient, float(temperature)
        self.max_log_ratio = float(max_log_ratio)
        self.critic_transform = critic_transform
        self.transform = slog if critic_transform == "slog" else None
        critic_div = self.divergence
        if gradient != "bound":
            critic_div = get_divergence(auxiliary or ("gan" if is_pr else divergence))
            if critic_div.log_ratio is None:
                raise ConfigError(
                    f"objective.auxiliary: {critic_div.name!r} gives no density-ratio "
                    "estimate; use gan, js, kl, reverse-kl, pearson or hellinger"
                )
        self.critic = Critic(
            self.pair_dim,
            hidden=critic_hidden,
            layers=critic_layers,
            divergence=critic_div,
            spectral_norm=spectral_norm,
        )
        self.gradient_penalty = float(gradient_penalty)

    @staticmethod
    def resolved_gradient(divergence: str, gradient: str | None) -> str:
        """The generator gradient: ``gradient``, or the default for ``divergence``."""
        return gradient if gradient is not None else ("score" if divergence == "pr" else "bound")

    @classmethod
    def needs_log_prob(cls, **settings: object) -> bool:
        divergence, gradient = settings.get("divergence", "kl"), settings.get("gradient")
        return cls.resolved_gradient(divergence, gradient) == "score"  # type: ignore[arg-type]

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def critic_loss(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        with torch.no_grad():
            p, q, _ = self._pairs(model, x_s, y_s, supervised=False)
        p = p.detach().requires_grad_(self.gradient_penalty > 0)
        v_p, v_q = self.critic(p), self.critic(q)
        bound = variational_bound(v_p, v_q, self.critic.divergence)
        loss = -bound
        if self.gradient_penalty > 0:
            (grad,) = torch.autograd.grad(v_p.sum(), p, create_graph=True)
            loss = loss + 0.5 * self.gradient_penalty * grad.pow(2).sum(1).mean()
        return loss, {"critic_bound": float(bound.detach())}

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        if self.gradient == "score":
            return self._score_loss(model, y_s)
        if self.gradient == "pathwise":
            return self._pathwise_loss(model, y_s)
        p, q, residual = self._pairs(model, x_s, y_s)
        v_q = self.critic(q)
        if self.nonsaturating and self.direction == "backward":
            loss = -self.divergence.g(v_q).mean()
            logs = {"fdiv_generator": float(loss.detach())}
        else:
            loss = variational_bound(self.critic(p), v_q, self.divergence)
            logs = {"fdiv_bound": float(loss.detach())}
        return self._supervised(loss, residual, logs), logs

    def _log_ratio(self, x: Tensor, y_s: Tensor) -> Tensor:
        """Critic estimate of ``log p/q`` at model samples ``x`` given ``y_s``, capped softly."""
        b = self.max_log_ratio
        return b * torch.tanh(self.critic.log_ratio(self._features(torch.cat([x, y_s], 1))) / b)

    def _plug_in_name(self) -> str:
        return "pr_divergence" if self.lam is not None else "fdiv_plug_in"

    def _score_loss(self, model: AmortizedModel, y_s: Tensor) -> tuple[Tensor, Logs]:
        with torch.no_grad():
            x = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
            log_r = self._log_ratio(x, y_s)
            r = torch.exp(log_r)
            if self.lam is not None:
                h = torch.sigmoid((-math.log(self.lam) - log_r) / self.temperature)
            else:
                h = self.divergence.f(r) - r * self.divergence.f_prime(r)
            plug_in = self.divergence.f(r).mean()
        loss = ((h - h.mean()) * model.log_prob_standardized(x, y_s)).mean()
        return loss, {self._plug_in_name(): float(plug_in)}

    def _pathwise_loss(self, model: AmortizedModel, y_s: Tensor) -> tuple[Tensor, Logs]:
        x = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
        b = self.max_log_ratio
        log_r = self.critic.log_ratio(self._features(torch.cat([x, y_s], 1)))
        # explicit dependence of r = p / q_theta on theta at fixed x (zero in value)
        log_q = model.log_prob_standardized(x.detach(), y_s)
        log_r = b * torch.tanh((log_r - (log_q - log_q.detach())) / b)
        loss = self.divergence.f(torch.exp(log_r)).mean()
        return loss, {self._plug_in_name(): float(loss.detach())}


class _SampleDistanceObjective(_JointObjective):
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
    cls.name: cls for cls in (NLLObjective, FDivergenceObjective, SinkhornObjective, MMDObjective)
}
