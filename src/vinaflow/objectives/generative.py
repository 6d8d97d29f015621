r"""Training objectives for normalizing flows ``x = Q(z)`` (the generative case).

Same interface as :mod:`vinaflow.objectives.losses` (``generator_loss(model, x_s, y_s)``,
``critic_loss``, ``critic_parameters``, ``has_critic``, ``trains_sampling``), so
:class:`~vinaflow.training.Trainer` trains flows unchanged; ``y_s`` is ignored (pass a
zero-width tensor ``torch.empty(n, 0)``). Everything is in the flow's normalised units.

**Which is data, which is model.** :math:`P` is the data law, :math:`Q` the law of
:math:`Q(Z)`, and the divergences are :math:`D_f(P \| Q)`. So ``fdiv`` with ``"kl"`` is
the mass-covering :math:`\mathrm{KL}(\text{data} \| \text{model})` (the same target as
maximum likelihood, reached through a critic and samples), ``"reverse-kl"`` the
mode-seeking one.

**Precision-Recall divergence** (Verine et al. 2023). :math:`D_\lambda(P\|Q) =
\int \max(\lambda p, q) - \max(\lambda, 1) = \min(\lambda, 1) - \alpha_\lambda(P, Q)`,
with :math:`\alpha_\lambda = \int \min(\lambda p, q)` the precision of the PRD curve
(Simon et al. 2019) at slope :math:`\lambda` and :math:`\beta_\lambda = \alpha_\lambda /
\lambda` its recall. Minimising it therefore maximises :math:`\alpha_\lambda`: a
**large** :math:`\lambda` asks for :math:`q \le \lambda p` everywhere (no mass off the data:
*precision*), a **small** one for :math:`q \ge \lambda p` (every data region covered:
*recall*). Its optimal f-GAN critic is a step function (no generator gradient), so, as
Verine et al. propose, a critic :math:`V` is trained with an *auxiliary* smooth member
(default ``"gan"``, a logistic classifier whose logit estimates :math:`\log p/q`) and
its ratio estimate :math:`\hat r` is plugged into the flow's gradient.

**Generator gradient (default ``gradient="score"``).** For any member,
:math:`\nabla_\theta D_f = E_Q\big[h(r(x))\,\nabla_\theta \log q_\theta(x)\big]` with
:math:`h(r) = f(r) - r f'(r)` the functional derivative of :math:`\int q f(p/q)` in
:math:`q` (a score-function identity that needs the flow's tractable density -- the
reason Verine et al. pair the PR divergence with normalizing flows). For
:math:`f_\lambda`, :math:`h = [\lambda r < 1]`: lower the density where the model puts
more than :math:`\lambda` times the data's mass (precision errors), raise it elsewhere.
The loss is

.. math:: L = \frac1m \sum_j \big(h_j - \bar h\big)\,\log q_\theta(x_j), \qquad
          h_j = \sigma\Big(\frac{-\log\lambda - \log\hat r(x_j)}{\tau}\Big),

with detached samples :math:`x_j \sim Q_\theta`, the batch mean :math:`\bar h` as a
baseline (variance reduction; :math:`E_Q[\nabla \log q] = 0`) and the step softened
over ``temperature`` :math:`\tau` in log-ratio units, because :math:`\hat r` is an
estimate. The logged value is the plug-in :math:`\frac1m\sum_j f_\lambda(\hat r(x_j))`.

``gradient="pathwise"`` instead differentiates the plug-in estimate through the samples,
:math:`\ell_j = \log\hat r(x_j) - [\log q_\theta(\bar x_j) - \mathrm{sg}(\log
q_\theta(\bar x_j))]` (exact in expectation with a perfect critic). Measured on the
8-Gaussian precision-recall study it *lowered* both precision and recall for
:math:`\lambda \ge 1`: where :math:`f_\lambda' > 0` it moves samples down the critic's
ratio estimate, so critic errors push mass off the data. It is kept for comparison.

References:
    Nowozin, Cseke, Tomioka. f-GAN. NeurIPS 2016.

    Verine, Negrevergne, Pydi, Chevaleyre. Precision-Recall Divergence Optimization for
    Generative Modeling with GANs and Normalizing Flows. NeurIPS 2023.

    Simon, Mann, Ponce, Gelly. Revisiting precision recall definition for generative
    modeling. ICML 2019.

    Feydy et al. Interpolating between Optimal Transport and MMD using Sinkhorn
    Divergences. AISTATS 2019.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from vinaflow.errors import ConfigError
from vinaflow.models.flow import NormalizingFlow
from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import get_divergence, pr_divergence
from vinaflow.objectives.losses import Objective
from vinaflow.objectives.mmd import ARDIZZONE_WIDTHS, mmd_imq
from vinaflow.objectives.sinkhorn import sinkhorn_divergence
from vinaflow.objectives.variational import variational_bound

__all__ = [
    "CRITIC_TRANSFORMS",
    "PR_GRADIENTS",
    "FLOW_OBJECTIVES",
    "FlowFDivergence",
    "FlowMMD",
    "FlowNLL",
    "FlowPRDivergence",
    "FlowSinkhorn",
    "build_flow_objective",
    "slog",
]

CRITIC_TRANSFORMS = ("none", "slog")
Logs = dict[str, float]


def slog(x: Tensor) -> Tensor:
    r"""Signed logarithm :math:`\mathrm{sign}(x)\log(1 + |x|)`, a bijection of R."""
    return torch.sign(x) * torch.log1p(x.abs())


def _transform(name: str) -> Any:
    if name not in CRITIC_TRANSFORMS:
        raise ConfigError(
            f"objective.critic_transform: unknown {name!r}; allowed: {', '.join(CRITIC_TRANSFORMS)}"
        )
    return slog if name == "slog" else (lambda x: x)


def _generate(model: NormalizingFlow, n: int) -> Tensor:
    return model.generate(None, model.sample_latent(n))


class FlowNLL(Objective):
    """Maximum likelihood: mean negative log-likelihood per dimension."""

    name = "nll"

    def generator_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        loss = model.nll(x_s).mean()
        return loss, {"nll": float(loss.detach())}


class _CriticMixin(Objective):
    has_critic = True
    trains_sampling = True

    def _setup_critic(
        self,
        dim: int,
        divergence: Any,
        critic_hidden: int,
        critic_layers: int,
        gradient_penalty: float,
        spectral_norm: bool,
        critic_transform: str,
    ) -> None:
        self.critic = Critic(
            dim,
            hidden=critic_hidden,
            layers=critic_layers,
            divergence=divergence,
            spectral_norm=spectral_norm,
        )
        if not gradient_penalty >= 0:
            raise ConfigError(f"objective.gradient_penalty must be >= 0, got {gradient_penalty}")
        self.gradient_penalty = float(gradient_penalty)
        self.critic_transform = critic_transform
        self._tf = _transform(critic_transform)

    def critic_parameters(self) -> list[nn.Parameter]:
        return list(self.critic.parameters())

    def critic_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        with torch.no_grad():
            q = self._tf(_generate(model, x_s.shape[0]))
        # A fixed bijection of the sample space leaves D_f unchanged, so the critic may
        # see slog(x): heavy-tailed data would otherwise give it inputs of size 1e4.
        p = self._tf(x_s).detach().requires_grad_(self.gradient_penalty > 0)
        v_p, v_q = self.critic(p), self.critic(q)
        bound = variational_bound(v_p, v_q, self.critic.divergence)
        loss = -bound
        if self.gradient_penalty > 0:
            # R1 penalty at data points (Mescheder et al. 2018) keeps the critic smooth
            (grad,) = torch.autograd.grad(v_p.sum(), p, create_graph=True)
            loss = loss + 0.5 * self.gradient_penalty * grad.pow(2).sum(1).mean()
        return loss, {"critic_bound": float(bound.detach())}


class FlowFDivergence(_CriticMixin):
    r"""Variational f-divergence :math:`D_f(\text{data} \| \text{model})` (f-GAN).

    The critic maximises :math:`E_P[g_f(V)] - E_Q[f^*(g_f(V))]`; the flow minimises
    :math:`-E_Q[f^*(g_f(V(Q(z))))]` (the data term does not depend on it).

    Arguments:
        dim: Data dimension.
        divergence: ``kl``, ``reverse-kl``, ``js``, ``pearson``, ``hellinger``, ``gan``, ``tv``.
        critic_transform: ``none`` or ``slog`` (the critic sees ``slog(x)``; D_f is
            invariant under bijections, and heavy-tailed data stay well scaled).
    """

    name = "fdiv"

    def __init__(
        self,
        dim: int,
        divergence: str = "kl",
        critic_hidden: int = 64,
        critic_layers: int = 2,
        gradient_penalty: float = 0.1,
        spectral_norm: bool = False,
        critic_transform: str = "none",
    ) -> None:
        super().__init__()
        div = get_divergence(divergence)
        self.divergence = div
        self._setup_critic(
            dim,
            div,
            critic_hidden,
            critic_layers,
            gradient_penalty,
            spectral_norm,
            critic_transform,
        )

    def generator_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        v_q = self.critic(self._tf(_generate(model, x_s.shape[0])))
        loss = -self.divergence.f_star_g(v_q).mean()
        with torch.no_grad():
            bound = self.divergence.g(self.critic(self._tf(x_s))).mean() + loss
        return loss, {"fdiv_bound": float(bound)}


#: Generator-gradient estimators of :class:`FlowPRDivergence`.
PR_GRADIENTS = ("score", "pathwise")


class FlowPRDivergence(_CriticMixin):
    r"""Precision-Recall divergence :math:`D_\lambda` through an auxiliary critic.

    See the module docstring for the estimator. ``lam`` > 1 favours precision,
    ``lam`` < 1 recall; ``auxiliary`` is the smooth member the critic is trained with
    (it must give a ratio estimate: ``gan``, ``js``, ``kl``, ``reverse-kl``, ...);
    ``gradient`` is ``score`` (default) or ``pathwise``; ``temperature`` softens the
    score estimator's step (log-ratio units).
    """

    name = "pr"

    def __init__(
        self,
        dim: int,
        lam: float = 1.0,
        auxiliary: str = "gan",
        critic_hidden: int = 64,
        critic_layers: int = 2,
        gradient_penalty: float = 0.1,
        spectral_norm: bool = False,
        critic_transform: str = "none",
        max_log_ratio: float = 10.0,
        gradient: str = "score",
        temperature: float = 0.25,
    ) -> None:
        super().__init__()
        if gradient not in PR_GRADIENTS:
            raise ConfigError(
                f"objective.gradient: unknown {gradient!r}; allowed: {', '.join(PR_GRADIENTS)}"
            )
        if not (isinstance(temperature, (int, float)) and temperature > 0):
            raise ConfigError(f"objective.temperature must be a number > 0, got {temperature!r}")
        self.gradient, self.temperature = gradient, float(temperature)
        try:
            lam_f = float(lam)
        except (TypeError, ValueError):
            raise ConfigError(
                f"objective.lam (PR lambda) must be a number > 0, got {lam!r}"
            ) from None
        if not lam_f > 0:
            raise ConfigError(f"objective.lam (PR lambda) must be > 0, got {lam!r}")
        self.pr = pr_divergence(lam_f)
        self.lam = lam_f
        aux = get_divergence(auxiliary)
        if aux.log_ratio is None:
            raise ConfigError(
                f"objective.auxiliary: {aux.name!r} gives no density-ratio estimate; "
                "use gan, js, kl, reverse-kl, pearson or hellinger"
            )
        if not max_log_ratio > 0:
            raise ConfigError(f"objective.max_log_ratio must be > 0, got {max_log_ratio}")
        self.max_log_ratio = float(max_log_ratio)
        self._setup_critic(
            dim,
            aux,
            critic_hidden,
            critic_layers,
            gradient_penalty,
            spectral_norm,
            critic_transform,
        )

    def generator_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        if self.gradient == "score":
            return self._score_loss(model, x_s.shape[0])
        x = _generate(model, x_s.shape[0])
        log_r = self.critic.log_ratio(self._tf(x))
        # explicit dependence of r = p / q_theta on theta at fixed x (zero in value)
        log_q = model.log_prob_standardized(x.detach())
        log_r = log_r - (log_q - log_q.detach())
        b = self.max_log_ratio
        log_r = b * torch.tanh(log_r / b)
        loss = self.pr.f(torch.exp(log_r)).mean()
        return loss, {"pr_divergence": float(loss.detach())}

    def _score_loss(self, model: Any, n: int) -> tuple[Tensor, Logs]:
        with torch.no_grad():
            x = _generate(model, n)
            b = self.max_log_ratio
            log_r = b * torch.tanh(self.critic.log_ratio(self._tf(x)) / b)
            h = torch.sigmoid((-math.log(self.lam) - log_r) / self.temperature)
            plug_in = self.pr.f(torch.exp(log_r)).mean()
        loss = ((h - h.mean()) * model.log_prob_standardized(x)).mean()
        return loss, {"pr_divergence": float(plug_in)}


class FlowSinkhorn(Objective):
    """Debiased Sinkhorn divergence between data and model samples (``blur`` = epsilon^(1/p))."""

    name = "sinkhorn"
    trains_sampling = True

    def __init__(self, blur: float = 0.05, scaling: float = 0.9) -> None:
        super().__init__()
        if not blur > 0:
            raise ConfigError(f"objective.blur must be > 0, got {blur}")
        self.blur, self.scaling = float(blur), float(scaling)

    def generator_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        d = sinkhorn_divergence(
            x_s, _generate(model, x_s.shape[0]), self.blur, scaling=self.scaling
        )
        return d, {"sinkhorn": float(d.detach())}


class FlowMMD(Objective):
    """MMD with inverse multiquadric kernels between data and model samples."""

    name = "mmd"
    trains_sampling = True

    def __init__(self, widths: Sequence[float] = ARDIZZONE_WIDTHS) -> None:
        super().__init__()
        self.widths = tuple(float(w) for w in widths)

    def generator_loss(self, model: Any, x_s: Tensor, y_s: Tensor) -> tuple[Tensor, Logs]:
        d = mmd_imq(x_s, _generate(model, x_s.shape[0]), widths=self.widths)
        return d, {"mmd": float(d.detach())}


FLOW_OBJECTIVES: dict[str, type[Objective]] = {
    "nll": FlowNLL,
    "fdiv": FlowFDivergence,
    "pr": FlowPRDivergence,
    "sinkhorn": FlowSinkhorn,
    "mmd": FlowMMD,
}


def build_flow_objective(cfg: Mapping[str, Any], dim: int) -> Objective:
    """Objective from an ``objective`` config section ``{name: ..., **params}``."""
    import inspect

    params = dict(cfg)
    name = params.pop("name", "nll")
    if name not in FLOW_OBJECTIVES:
        raise ConfigError(
            f"objective.name: unknown {name!r} for a flow; allowed: {', '.join(FLOW_OBJECTIVES)}"
        )
    cls = FLOW_OBJECTIVES[name]
    allowed = [p for p in inspect.signature(cls.__init__).parameters if p not in ("self", "dim")]
    extra = sorted(set(params) - set(allowed))
    if extra:
        raise ConfigError(f"objective {name!r} does not take {extra}; allowed: {allowed}")
    if "dim" in inspect.signature(cls.__init__).parameters:
        return cls(dim, **params)
    return cls(**params)
