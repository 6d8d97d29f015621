"""The variational f-divergence objective (f-GAN) with its critic and gradient estimators."""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor, nn

from vinaflow.blocks.base import without_logdet
from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel
from vinaflow.objectives.base import (
    CRITIC_TRANSFORMS,
    JointObjective,
    Logs,
    batch_mean,
    slog,
)
from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import DIVERGENCES, get_divergence
from vinaflow.objectives.variational import variational_bound

__all__ = ["GRADIENTS", "FDivergenceObjective"]

#: Generator-gradient estimators of :class:`FDivergenceObjective`.
GRADIENTS = ("bound", "score", "mixture", "pathwise")
#: Estimators that read the critic's ratio and train through the model's density.
_DENSITY_GRADIENTS = ("score", "mixture")
#: Members that train a model with a density by ``mixture`` unless told otherwise
#: (measured: see :class:`FDivergenceObjective`); ``reverse-kl`` and ``tv`` keep ``bound``.
MIXTURE_DEFAULT = ("kl", "js", "gan", "hellinger", "pearson")
#: Critic updates per model update with ``mixture`` (the trainer's default is 5): at equal
#: wall clock on two_moons (40 s, seeds 10-12) 2 steps beat 5 (kl 0.599 against 0.715 on
#: seed 10) and 1 step (js 0.670 against 0.853, hellinger 0.675 against 0.877 on seed 11).
MIXTURE_CRITIC_STEPS = 2


class FDivergenceObjective(JointObjective):
    r"""Variational f-divergence (f-GAN, Nowozin et al. 2016) between data and model joints.

    :math:`D_f(P\|Q) \ge \sup_V E_P[g_f(V)] - E_Q[f^*(g_f(V))]`; the critic ``V``
    maximises the bound. How the model is trained is ``gradient``:

    * ``bound`` (default for ``reverse-kl``, ``tv``, the forward direction and models
      without a density): the model minimises the bound.
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
    * ``mixture`` (default for the backward ``kl``, ``js``, ``gan``, ``hellinger`` and
      ``pearson`` on a model with a density): the same identity evaluated under the
      balance-heuristic mixture :math:`M = (P + Q)/2` of data and model samples
      (multiple importance sampling, Veach & Guibas 1995): :math:`\nabla_\theta D_f =
      E_M\big[w(r)\,\nabla_\theta \log q_\theta\big]` with :math:`w(r) = 2 h(r) /
      (1 + r)`, half of each batch from the data and half from the model (the baseline on
      the model half only). ``score``
      sees the ratio only where the model puts mass, so a data region the model misses
      (where :math:`r` is large) never enters its gradient; here the data half carries it,
      and :math:`w` stays bounded where :math:`r \to \infty` (for KL :math:`w \to -2`).
      For ``kl`` the data half's weight is :math:`-2r/(1+r)`, so with an exact critic the
      estimator's mean is the maximum-likelihood gradient, as :math:`\nabla_\theta
      \mathrm{KL}(P\|Q_\theta) = -E_P[\nabla_\theta \log q_\theta]` is; for the other
      members the critic's ratio shapes the weights (``js``: :math:`w = 2\log(2/(1+r))
      /(1+r)`, zero where the model matches the data). Needs a density, like ``score``.
    * ``pathwise``: differentiates the plug-in :math:`E_Q[f(\hat r(x))]` through the
      samples, with the explicit dependence of :math:`r = p/q_\theta` on :math:`\theta`,
      :math:`\log\hat r(x) - [\log q_\theta(\bar x) - \mathrm{sg}(\log q_\theta(\bar x))]`
      (exact in expectation with a perfect critic). Measured on the 8-Gaussian
      precision-recall study it *lowered* both precision and recall of the PR divergence
      for :math:`\lambda \ge 1`: where :math:`f_\lambda' > 0` it moves samples down the
      critic's ratio estimate, so critic errors push mass off the data. Kept for
      comparison.

    ``score``, ``mixture`` and ``pathwise`` read :math:`\log\hat r` from the critic,
    capped softly at ``max_log_ratio``; they apply to the backward direction only.

    **Defaults, measured** (``benchmarks/objective_study.py``; two_moons, 10,000
    simulations, conditional INN with affine couplings, seeds 10-12, 800 model steps, C2ST
    on 1,000 samples at 3 observations; NLL reaches 0.59 at the same steps on seed 10).
    ``kl``, ``js`` (and ``gan``), ``hellinger`` and ``pearson`` on a model with a density
    train by ``mixture``: ``kl`` 0.613 (0.596 / 0.601 / 0.643) against 0.688 with ``score``
    (0.698 / 0.684 / 0.682) and 0.709 with ``bound``; ``js`` 0.646 (0.696 / 0.622 / 0.621)
    against 0.845 with ``bound`` (seed 10); ``hellinger`` 0.664 (0.693 / 0.675 / 0.623)
    against 0.873; ``pearson`` 0.638 (0.628 / 0.644 / 0.642). ``reverse-kl`` keeps
    ``bound`` (0.884; ``mixture`` 0.937 on seed 10: its weight :math:`2(1 - \log r)/(1 + r)`
    is small where the data outweigh the model, so the data half does little for it), as
    does ``tv``, whose critic gives no ratio. Diagnosis behind ``mixture``: after 800 steps
    of ``score`` the model's median log-density at held-out simulations was -21 nats
    against +2.9 for maximum likelihood, while the critic's bound still read 0.53 nats: the
    critic saw the discrepancy, but a gradient evaluated only at model samples could not act
    where the model put no mass. With ``score``: capping the log-ratio at 5 instead of 10
    (0.684 over three seeds) or 3 (0.700, seed 10) did not help measurably; the score
    gradient did not help ``js`` (0.845), ``reverse-kl`` (0.884) or ``hellinger`` (0.873).
    Also measured and not adopted (seed 10 unless three seeds are given): more critic steps
    per model step (10: 0.739), fewer (2, with ``score``: 0.692 / 0.823 / 0.847), critic
    learning rate 3e-3 (0.689 over three seeds, as 1e-3; with ``bound``: 0.921), model
    learning rate 1e-3 (0.95), gradient penalty 0.1 / 0.5 / 2 / 10 (0.92 / 0.715 / 0.725 /
    0.891 against 0.70 at 1), 500 critic warm-up steps (0.710), the non-saturating
    generator loss (0.836 at 45 s), a critic written as :math:`V(x, y) - \log
    q_\theta(x|y)` so that it learns the data density rather than a moving ratio (Gao et
    al. 2020; 0.858 for kl, 0.833 for js), and, with ``score``, a critic that also sees
    the model's log-density of its input (0.689), one that sees the model's latent
    :math:`z = T(x; y)` instead of ``x`` (0.710), instance noise of 0.1 / 0.3 standardised
    units on ``x`` (0.808 / 0.908), the logistic (``gan``) critic as auxiliary (0.874 at
    1,600 steps), an exponential moving average of the model's weights (0.746 against 0.739
    at 1,600 steps) and ten times the simulations (0.743 at 1,600 steps): not a critic that
    overfits its data.

    ``js`` and ``gan`` give identical runs: their bounds differ by the constant
    :math:`\log 4`, so every gradient is the same.

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
        auxiliary: Member the critic is trained with for ``score`` / ``mixture`` /
            ``pathwise`` (it must give a ratio estimate: not ``tv``); default ``gan`` for
            ``pr``, else the divergence itself.
        gradient: ``bound``, ``score``, ``mixture`` or ``pathwise`` (above); default
            :meth:`resolved_gradient`.
        temperature: Softening of the PR score estimator's step (log-ratio units).
        max_log_ratio: Soft cap on :math:`|\log\hat r|` of ``score`` / ``mixture`` /
            ``pathwise``.
        critic_transform: ``none`` or ``slog`` (the critic sees
            ``sign(v) log(1 + |v|)``: :math:`D_f` is invariant under bijections, and
            heavy-tailed data stay well scaled).

    References:
        Nowozin, Cseke, Tomioka. f-GAN. NeurIPS 2016.

        Verine, Negrevergne, Pydi, Chevaleyre. Precision-Recall Divergence Optimization
        for Generative Modeling with GANs and Normalizing Flows. NeurIPS 2023.

        Simon, Mann, Ponce, Gelly. Revisiting precision recall definition for generative
        modeling. ICML 2019.

        Gao, Nijkamp, Kingma, Xu, Dai, Wu. Flow Contrastive Estimation of Energy-Based
        Models. CVPR 2020.

        Veach, Guibas. Optimally Combining Sampling Techniques for Monte Carlo Rendering.
        SIGGRAPH 1995.
    """

    name = "fdiv"
    has_critic = True
    CHOICES: ClassVar[dict[str, tuple[str, ...]]] = {
        **JointObjective.CHOICES,
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
        gradient = self.resolved_gradient(divergence, gradient, direction, model.has_log_prob)
        if gradient not in GRADIENTS:
            raise ConfigError(
                f"objective.gradient: unknown {gradient!r}; allowed: {', '.join(GRADIENTS)}"
            )
        if gradient == "bound" and (is_pr or auxiliary is not None):
            raise ConfigError(
                "objective.gradient=bound trains through the critic's own divergence; "
                "divergence pr and an auxiliary critic need gradient score, mixture or pathwise"
            )
        if gradient != "bound" and direction != "backward":
            raise ConfigError(f"objective.gradient={gradient} needs direction backward")
        if gradient in _DENSITY_GRADIENTS and not model.has_log_prob:
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
        if gradient == "mixture":
            self.critic_steps = MIXTURE_CRITIC_STEPS
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
    def resolved_gradient(
        divergence: str,
        gradient: str | None,
        direction: str | None = "backward",
        has_density: bool = False,
    ) -> str:
        """The generator gradient: ``gradient``, or the default for ``divergence``.

        ``score`` for ``pr``; ``mixture`` for the backward members of
        :data:`MIXTURE_DEFAULT` on a model with a tractable density (``has_density``;
        measured on two_moons, see the class docstring); ``bound`` otherwise. Config
        checks, which do not know the built model, resolve with ``has_density=False``: the
        defaults never make a combination invalid.
        """
        if gradient is not None:
            return gradient
        if divergence == "pr":
            return "score"
        if divergence in MIXTURE_DEFAULT and direction in (None, "backward") and has_density:
            return "mixture"
        return "bound"

    @classmethod
    def needs_log_prob(cls, **settings: object) -> bool:
        divergence, gradient = settings.get("divergence", "kl"), settings.get("gradient")
        resolved = cls.resolved_gradient(divergence, gradient)  # type: ignore[arg-type]
        return resolved in _DENSITY_GRADIENTS

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
        if self.gradient == "mixture":
            return self._mixture_loss(model, x_s, y_s)
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
        with torch.no_grad(), without_logdet():
            x = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
            h, r = self._weight(self._log_ratio(x, y_s))
            plug_in = self.divergence.f(r).mean()
        loss = ((h - batch_mean(h)) * model.log_prob_standardized(x, y_s)).mean()
        return loss, {self._plug_in_name(): float(plug_in)}

    def _weight(self, log_r: Tensor) -> tuple[Tensor, Tensor]:
        """:math:`h(r) = f(r) - r f'(r)` (the PR divergence's softened step) and ``r``."""
        r = torch.exp(log_r)
        if self.lam is not None:
            return torch.sigmoid((-math.log(self.lam) - log_r) / self.temperature), r
        return self.divergence.f(r) - r * self.divergence.f_prime(r), r

    def _mixture_loss(self, model: AmortizedModel, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        with torch.no_grad(), without_logdet():
            x_q = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
        with torch.no_grad():
            h_q, r_q = self._weight(self._log_ratio(x_q, y_s))
            h_p, r_p = self._weight(self._log_ratio(x_s, y_s))
            w_q, w_p = 2 * h_q / (1 + r_q), 2 * h_p / (1 + r_p)
            plug_in = self.divergence.f(r_q).mean()
        log_q = model.log_prob_standardized(torch.cat([x_s, x_q]), torch.cat([y_s, y_s]))
        n = x_s.shape[0]
        loss = 0.5 * (w_p * log_q[:n]).mean() + 0.5 * ((w_q - batch_mean(w_q)) * log_q[n:]).mean()
        return loss, {self._plug_in_name(): float(plug_in)}

    def _pathwise_loss(self, model: AmortizedModel, y_s: Tensor) -> tuple[Tensor, Logs]:
        with without_logdet():
            x = model.generate(y_s, model.sample_latent(y_s.shape[0]).to(y_s))
        b = self.max_log_ratio
        log_r = self.critic.log_ratio(self._features(torch.cat([x, y_s], 1)))
        # explicit dependence of r = p / q_theta on theta at fixed x (zero in value)
        log_q = model.log_prob_standardized(x.detach(), y_s)
        log_r = b * torch.tanh((log_r - (log_q - log_q.detach())) / b)
        loss = self.divergence.f(torch.exp(log_r)).mean()
        return loss, {self._plug_in_name(): float(loss.detach())}
