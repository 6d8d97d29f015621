r"""f-divergences in variational (f-GAN) form.

For a convex :math:`f : [0, \infty) \to \mathbb{R}` with :math:`f(1) = 0`,

.. math:: D_f(P \,\|\, Q) = \mathbb{E}_Q\big[f(\tfrac{dP}{dQ})\big]
          \;\ge\; \sup_V \; \mathbb{E}_P[g_f(V)] - \mathbb{E}_Q[f^*(g_f(V))],

where :math:`f^*(t) = \sup_u\, t u - f(u)` is the convex conjugate, :math:`V` is a
critic with raw output in :math:`\mathbb{R}` and :math:`g_f` maps it into
:math:`\operatorname{dom} f^*`. The supremum is reached at :math:`g_f(V) = f'(dP/dQ)`.

**Which argument is which.** Throughout vinaflow, :math:`P` is the *data* law and
:math:`Q` the *model* law (Nowozin et al. 2016 use the same order). Hence the member
``"kl"`` is :math:`\mathrm{KL}(P \| Q) = \mathbb{E}_P[\log p/q]`, the mass-covering
("forward") KL, and ``"reverse-kl"`` is :math:`\mathrm{KL}(Q \| P)`, the mode-seeking one.

**Pinsker-type constants.** Each member carries :math:`c_f` with

.. math:: \mathrm{TV}(P, Q) \le c_f \sqrt{D_f(P \| Q) + s_f},
          \qquad \mathrm{TV}(P, Q) = \sup_A |P(A) - Q(A)| \in [0, 1],

where :math:`s_f` (``shift``) is zero except for ``"gan"`` (:math:`f(1) = -\log 4`).
The derivation is in each member's docstring; ``tests/test_divergences.py`` checks
validity and near-tightness on Bernoulli and Gaussian pairs.

**Numerical stability.** The f-GAN activations :math:`g_f` of Nowozin et al. can make
:math:`f^*(g_f(v))` overflow (KL: :math:`e^{v-1}`). Here every activation is bounded so
that the density ratio the critic can express, :math:`r = (f')^{-1}(g_f(v))`, stays in
:math:`[e^{-B}, e^{B}]` (one-sided where the other side cannot overflow), with
``max_log_ratio`` :math:`B` = :data:`DEFAULT_MAX_LOG_RATIO` = 8 (ratios up to ~3000;
:math:`f^*` at most ~3e3 for KL, ~9e6 for Pearson: finite in float32 by many orders).
The bound is an identity up to one unit below the cap and a ``tanh`` saturation above
it, so :math:`g_f` agrees exactly with the f-GAN table in the normal range. Restricting
the critic's range keeps the variational value a lower bound on :math:`D_f`.
The composite :math:`f^*(g_f(v))` is evaluated in closed form (``f_star_g``), never as
``f_star(g(v))``, so that raw outputs of :math:`\pm 10^4` give finite values and gradients.

References:
    Nowozin, Cseke, Tomioka. f-GAN: Training Generative Neural Samplers using
    Variational Divergence Minimization. NeurIPS 2016 (Tables 1 and 2).

    Verine, Negrevergne, Pydi, Chevaleyre. Precision-Recall Divergence Optimization
    for Generative Modeling with GANs and Normalizing Flows. NeurIPS 2023.

    Tsybakov. Introduction to Nonparametric Estimation, 2009, Section 2.4
    (Pinsker and Le Cam inequalities).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

import torch
import torch.nn.functional as F
from torch import Tensor

from vinaflow.errors import ConfigError

__all__ = [
    "DEFAULT_MAX_LOG_RATIO",
    "DIVERGENCES",
    "Divergence",
    "get_divergence",
    "pr_divergence",
]

DEFAULT_MAX_LOG_RATIO: float = 8.0
LOG2: float = math.log(2.0)

_Fn = Callable[[Tensor], Tensor]


@dataclass(frozen=True)
class Divergence:
    r"""One member of the f-divergence family, with everything the f-GAN bound needs.

    Attributes:
        name: Registry name (a config contract).
        f: Generator :math:`f(u)`, :math:`u = dP/dQ \ge 0`.
        f_prime: Derivative :math:`f'(u)` (a subgradient where :math:`f` has a kink).
        f_star: Convex conjugate :math:`f^*(t)` of :math:`f` on :math:`[0, \infty)`;
            ``+inf`` outside its domain.
        g: Output activation :math:`g_f : \mathbb{R} \to \operatorname{dom} f^*`.
        f_star_g: :math:`f^*(g_f(v))` in a closed form that is finite for all finite ``v``.
        pinsker_constant: :math:`c_f` with :math:`TV \le c_f \sqrt{D_f + s_f}`, or
            ``None`` where no such bound exists.
        shift: :math:`s_f`, added to :math:`D_f` before the Pinsker bound; equals
            :math:`-f(1)`, so :math:`D_f + s_f \ge 0`.
        log_ratio: Maps raw critic output to the implied :math:`\log dP/dQ`
            (:math:`(f')^{-1}(g_f(v))`); ``None`` where :math:`f'` is not invertible.
        note: One line on what the member measures.
    """

    name: str
    f: _Fn
    f_prime: _Fn
    f_star: _Fn
    g: _Fn
    f_star_g: _Fn
    pinsker_constant: float | None
    shift: float = 0.0
    log_ratio: _Fn | None = None
    note: str = ""

    def tv_bound(self, value: float | Tensor) -> float:
        r"""Upper bound :math:`\min(1, c_f \sqrt{\max(D_f + s_f, 0)})` on TV(P, Q).

        ``value`` is an estimate of :math:`D_f(P \| Q)`. A variational estimate is a
        *lower* bound on :math:`D_f`, so the result is an estimate, not a guarantee.
        """
        if self.pinsker_constant is None:
            raise ConfigError(
                f"divergence {self.name!r} has no Pinsker-type constant: a zero value "
                "does not imply P = Q; use 'kl', 'js', 'hellinger', ... for TV bounds"
            )
        raw = float(value.detach()) if isinstance(value, Tensor) else float(value)
        d = raw + self.shift
        if not math.isfinite(d):
            raise ConfigError(f"divergence value must be finite, got {raw}")
        return min(1.0, self.pinsker_constant * math.sqrt(max(d, 0.0)))


# Soft caps: identity up to ``width`` below the cap, then a tanh saturation that is C^1
# at the knee. Unlike ``b - softplus(b - v)`` this leaves g exactly as in the f-GAN
# table in the normal range, so T* = f'(r) and the ratio read-out stay exact there.
def _soft_upper(v: Tensor, high: float, width: float = 1.0) -> Tensor:
    knee = high - width
    return torch.where(v <= knee, v, knee + width * torch.tanh((v - knee) / width))


def _soft_lower(v: Tensor, low: float, width: float = 1.0) -> Tensor:
    return -_soft_upper(-v, -low, width)


def _soft_clip(v: Tensor, low: float, high: float, width: float = 1.0) -> Tensor:
    return _soft_upper(_soft_lower(v, low, width), high, width)


def _inf_outside(mask: Tensor, value: Tensor) -> Tensor:
    return torch.where(mask, value, torch.full_like(value, math.inf))


def _check_bound(max_log_ratio: float) -> float:
    b = float(max_log_ratio)
    if not (math.isfinite(b) and b >= 2.0):
        raise ConfigError(f"max_log_ratio must be a finite number >= 2, got {max_log_ratio!r}")
    return b


def _kl(max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Divergence:
    r"""KL(P||Q): :math:`f(u) = u\log u`, :math:`f^*(t) = e^{t-1}`, :math:`g(v) = v`.

    Stability: :math:`g(v) = \mathrm{softcap}(v, 1 + B)` so :math:`r = e^{t-1} \le e^B`
    and :math:`f^*(g(v)) \le e^B`; no cap below (:math:`f^* \to 0`).

    Pinsker: :math:`TV \le \sqrt{KL/2}`, so :math:`c_f = 1/\sqrt 2`; tight as
    :math:`P \to Q` (Tsybakov 2009, Lemma 2.5).
    """
    high = 1.0 + _check_bound(max_log_ratio)

    def g(v: Tensor) -> Tensor:
        return _soft_upper(v, high)

    return Divergence(
        name="kl",
        f=lambda u: torch.xlogy(u, u),
        f_prime=lambda u: 1.0 + torch.log(u),
        f_star=lambda t: torch.exp(t - 1.0),
        g=g,
        f_star_g=lambda v: torch.exp(g(v) - 1.0),
        pinsker_constant=1.0 / math.sqrt(2.0),
        log_ratio=lambda v: g(v) - 1.0,
        note="KL(P||Q) = E_P[log p/q]; forward, mass-covering when P is data",
    )


def _reverse_kl(max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Divergence:
    r"""KL(Q||P): :math:`f(u) = -\log u`, :math:`f^*(t) = -1 - \log(-t)` on :math:`t<0`,
    :math:`g(v) = -e^{-v}`.

    With :math:`g(v) = -e^{-v}` the implied ratio is :math:`r = e^{v}`, and
    :math:`f^*(g(v)) = v - 1` exactly. Stability: :math:`v` is soft-capped below at
    :math:`-B` (:math:`r \ge e^{-B}`), so :math:`|g| \le e^B`.

    Pinsker: KL(Q||P) satisfies the same inequality and TV is symmetric, so
    :math:`c_f = 1/\sqrt 2`, tight as :math:`P \to Q`.
    """
    low = -_check_bound(max_log_ratio)

    def s(v: Tensor) -> Tensor:
        return _soft_lower(v, low)

    def f_star(t: Tensor) -> Tensor:
        ok = t < 0
        return _inf_outside(ok, -1.0 - torch.log(torch.where(ok, -t, torch.ones_like(t))))

    return Divergence(
        name="reverse-kl",
        f=lambda u: -torch.log(u),
        f_prime=lambda u: -1.0 / u,
        f_star=f_star,
        g=lambda v: -torch.exp(-s(v)),
        f_star_g=lambda v: s(v) - 1.0,
        pinsker_constant=1.0 / math.sqrt(2.0),
        log_ratio=s,
        note="KL(Q||P) = E_Q[log q/p]; reverse, mode-seeking when P is data",
    )


def _pearson(max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Divergence:
    r"""Pearson :math:`\chi^2(P\|Q) = \int (p-q)^2/q`: :math:`f(u) = (u-1)^2`,
    :math:`g(v) = v`.

    Conjugate on :math:`u \ge 0`: :math:`f^*(t) = \max(t+2, 0)^2/4 - 1`, which equals
    the table's :math:`t + t^2/4` on :math:`t \ge -2` (the range of :math:`f'`) and is
    flat below, where the unrestricted conjugate would wrongly reward :math:`t < -2`.
    Stability: :math:`g` is soft-capped at :math:`2(e^B - 1)` (:math:`r \le e^B`).

    Pinsker: Cauchy-Schwarz, :math:`TV = \tfrac12 \mathbb{E}_Q|r - 1| \le
    \tfrac12 \sqrt{\mathbb{E}_Q (r-1)^2}`, so :math:`c_f = 1/2`; equality for
    Bernoulli(a) vs Bernoulli(1/2).
    """
    high = 2.0 * math.expm1(_check_bound(max_log_ratio))

    def g(v: Tensor) -> Tensor:
        return _soft_upper(v, high)

    def f_star(t: Tensor) -> Tensor:
        return F.relu(t + 2.0).square() / 4.0 - 1.0

    def log_ratio(v: Tensor) -> Tensor:
        # r = 1 + t/2 is 0 for t <= -2; clamp so the log and its gradient stay finite
        r = 1.0 + g(v) / 2.0
        return torch.log(r.clamp_min(torch.finfo(r.dtype).tiny))

    return Divergence(
        name="pearson",
        f=lambda u: (u - 1.0).square(),
        f_prime=lambda u: 2.0 * (u - 1.0),
        f_star=f_star,
        g=g,
        f_star_g=lambda v: f_star(g(v)),
        pinsker_constant=0.5,
        log_ratio=log_ratio,
        note="Pearson chi^2(P||Q) = E_Q[(p/q - 1)^2]",
    )


def _hellinger(max_log_ratio: float = DEFAULT_MAX_LOG_RATIO) -> Divergence:
    r"""Squared Hellinger :math:`H^2 = \int(\sqrt p - \sqrt q)^2 \in [0, 2]`:
    :math:`f(u) = (\sqrt u - 1)^2`, :math:`f^*(t) = t/(1-t)` on :math:`t < 1`,
    :math:`g(v) = 1 - e^{-v}`.

    The implied ratio is :math:`r = e^{2v}` and :math:`f^*(g(v)) = e^{v} - 1` exactly.
    Stability: :math:`v` is soft-clipped to :math:`[-B/2, B/2]`
    (:math:`r \in [e^{-B}, e^{B}]`).

    Pinsker (Le Cam): :math:`TV = \tfrac12\int|\sqrt p-\sqrt q|(\sqrt p+\sqrt q) \le
    \tfrac12 \sqrt{H^2}\sqrt{4 - H^2} \le \sqrt{H^2}`, so :math:`c_f = 1`; tight as
    :math:`P \to Q`.
    """
    half = _check_bound(max_log_ratio) / 2.0

    def s(v: Tensor) -> Tensor:
        return _soft_clip(v, -half, half)

    def f_star(t: Tensor) -> Tensor:
        ok = t < 1.0
        return _inf_outside(ok, t / torch.where(ok, 1.0 - t, torch.ones_like(t)))

    return Divergence(
        name="hellinger",
        f=lambda u: (torch.sqrt(u) - 1.0).square(),
        f_prime=lambda u: 1.0 - torch.rsqrt(u),
        f_star=f_star,
        g=lambda v: -torch.expm1(-s(v)),
        f_star_g=lambda v: torch.expm1(s(v)),
        pinsker_constant=1.0,
        log_ratio=lambda v: 2.0 * s(v),
        note="squared Hellinger int (sqrt p - sqrt q)^2, in [0, 2]",
    )


def _js() -> Divergence:
    r"""Jensen-Shannon as in the f-GAN table: :math:`f(u) = u\log u - (u+1)\log\frac{u+1}{2}`,
    :math:`f^*(t) = -\log(2 - e^t)` on :math:`t < \log 2`,
    :math:`g(v) = \log 2 - \log(1 + e^{-v})`.

    With this :math:`f`, :math:`D = \mathrm{KL}(P\|M) + \mathrm{KL}(Q\|M) = 2\,\mathrm{JSD}
    \in [0, 2\log 2]`, :math:`M = (P+Q)/2`. Implied ratio :math:`r = e^v`;
    :math:`f^*(g(v)) = \mathrm{softplus}(v) - \log 2`: linear growth, no cap needed.

    Pinsker applied to each term, with :math:`TV(P, M) = TV(P, Q)/2`:
    :math:`D \ge 2 \cdot 2 (TV/2)^2 = TV^2`, so :math:`c_f = 1`; tight as :math:`P \to Q`.
    """

    def f_star(t: Tensor) -> Tensor:
        ok = t < LOG2
        ts = torch.where(ok, t, torch.zeros_like(t))
        # -log(2 - e^t) = -log 2 - log(1 - e^{t - log 2})
        return _inf_outside(ok, -LOG2 - torch.log(-torch.expm1(ts - LOG2)))

    return Divergence(
        name="js",
        f=lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1.0, (u + 1.0) / 2.0),
        f_prime=lambda u: LOG2 + torch.log(u) - torch.log1p(u),
        f_star=f_star,
        g=lambda v: LOG2 - F.softplus(-v),
        f_star_g=lambda v: F.softplus(v) - LOG2,
        pinsker_constant=1.0,
        log_ratio=lambda v: v,
        note="KL(P||M) + KL(Q||M) = 2 JSD(P, Q), M = (P+Q)/2",
    )


def _gan() -> Divergence:
    r"""GAN: :math:`f(u) = u\log u - (u+1)\log(u+1)`, :math:`f^*(t) = -\log(1 - e^t)`
    on :math:`t < 0`, :math:`g(v) = -\log(1 + e^{-v})`.

    :math:`f(1) = -\log 4`, so :math:`D_{GAN} = 2\,\mathrm{JSD} - \log 4 \in [-\log 4, 0]`.
    ``shift`` :math:`= \log 4` turns it into the non-negative ``js`` value, to which the
    Pinsker bound applies: :math:`TV \le \sqrt{D_{GAN} + \log 4}`, :math:`c_f = 1`.
    Implied ratio :math:`r = e^v` (the critic is a logistic classifier's logit);
    :math:`f^*(g(v)) = \mathrm{softplus}(v)`.
    """

    def f_star(t: Tensor) -> Tensor:
        ok = t < 0
        ts = torch.where(ok, t, -torch.ones_like(t))
        return _inf_outside(ok, -torch.log(-torch.expm1(ts)))

    return Divergence(
        name="gan",
        f=lambda u: torch.xlogy(u, u) - torch.xlogy(u + 1.0, u + 1.0),
        f_prime=lambda u: torch.log(u) - torch.log1p(u),
        f_star=f_star,
        g=lambda v: -F.softplus(-v),
        f_star_g=F.softplus,
        pinsker_constant=1.0,
        shift=math.log(4.0),
        log_ratio=lambda v: v,
        note="original GAN objective, 2 JSD(P, Q) - log 4; shift log 4 makes it >= 0",
    )


def _tv() -> Divergence:
    r"""Total variation :math:`\tfrac12\int|p - q| = \sup_A|P(A)-Q(A)|`:
    :math:`f(u) = \tfrac12|u-1|`, :math:`g(v) = \tfrac12\tanh v`.

    Conjugate on :math:`u \ge 0`: :math:`f^*(t) = \max(t, -\tfrac12)` for
    :math:`t \le \tfrac12` (the table's :math:`t` on :math:`|t| \le \tfrac12`, the range
    of :math:`g`). Bounded, so no cap is needed.

    Pinsker: :math:`TV \le 1` gives :math:`TV \le \sqrt{TV}`, :math:`c_f = 1`, tight only
    at :math:`TV = 1` (a trivial bound, kept for a uniform interface).
    """

    def f_star(t: Tensor) -> Tensor:
        return _inf_outside(t <= 0.5, torch.clamp_min(t, -0.5))

    return Divergence(
        name="tv",
        f=lambda u: 0.5 * torch.abs(u - 1.0),
        f_prime=lambda u: 0.5 * torch.sign(u - 1.0),
        f_star=f_star,
        g=lambda v: 0.5 * torch.tanh(v),
        f_star_g=lambda v: 0.5 * torch.tanh(v),
        pinsker_constant=1.0,
        note="total variation sup_A |P(A) - Q(A)|, in [0, 1]",
    )


def pr_divergence(lam: float) -> Divergence:
    r"""Precision-Recall divergence :math:`D_\lambda` of Verine et al. (NeurIPS 2023).

    :math:`f_\lambda(u) = \max(\lambda u, 1) - \max(\lambda, 1)`, so
    :math:`D_\lambda(P\|Q) = \int \max(\lambda p, q) - \max(\lambda, 1)
    = \min(\lambda, 1) - \int \min(\lambda p, q)`; minimising it maximises the PRD
    precision :math:`\alpha_\lambda = \int \min(\lambda p, q)` (P = data, Q = model), so a
    larger :math:`\lambda` weighs precision (no model mass off the data) and a smaller one
    recall (every data region covered).

    Conjugate (sup over :math:`u \ge 0` of :math:`tu - f_\lambda(u)`; the function is
    piecewise linear with a kink at :math:`u = 1/\lambda`, slopes 0 and :math:`\lambda`):
    :math:`f^*_\lambda(t) = \max(t/\lambda, 0) - 1 + \max(\lambda, 1)` for
    :math:`t \le \lambda`, :math:`+\infty` above. Optimal critic
    :math:`f'_\lambda(r) = \lambda\,[\lambda r > 1] \in \{0, \lambda\}`, so
    :math:`g(v) = \lambda\,\sigma(v)` and :math:`f^*(g(v)) = \sigma(v) - 1 + \max(\lambda,1)`.

    **Non-smooth f**: the optimal critic is a step function, which gives the generator no
    gradient; following Verine et al., train through an *auxiliary* critic of a smooth
    member (e.g. ``"gan"`` or ``"kl"``, whose ``log_ratio`` estimates :math:`\log p/q`)
    and plug the estimated ratio into :math:`f_\lambda`.

    Pinsker: :math:`\lambda = 1` gives :math:`D_1 = TV` and :math:`c_f = 1`. For
    :math:`\lambda \ne 1`, :math:`D_\lambda = 0` whenever :math:`q \le \lambda p`
    (:math:`\lambda > 1`) or :math:`\lambda p \le q` (:math:`\lambda < 1`) although
    :math:`P \ne Q`, so no Pinsker-type constant exists (``None``).
    """
    try:
        lam = float(lam)
    except (TypeError, ValueError):
        raise ConfigError(f"PR divergence lambda must be a number, got {lam!r}") from None
    if not (math.isfinite(lam) and lam > 0):
        raise ConfigError(f"PR divergence lambda must be finite and > 0, got {lam}")
    top = max(lam, 1.0)

    def f_star(t: Tensor) -> Tensor:
        return _inf_outside(t <= lam, torch.clamp_min(t / lam, 0.0) - 1.0 + top)

    return Divergence(
        name=f"pr-{lam!r}",
        f=lambda u: torch.clamp_min(lam * u, 1.0) - top,
        f_prime=lambda u: lam * (lam * u > 1.0).to(u.dtype),
        f_star=f_star,
        g=lambda v: lam * torch.sigmoid(v),
        f_star_g=lambda v: torch.sigmoid(v) - 1.0 + top,
        pinsker_constant=1.0 if lam == 1.0 else None,
        note=f"precision-recall divergence, lambda = {lam:g}",
    )


#: The f-GAN members by registry name: the one list of divergence names. A member whose
#: factory takes ``max_log_ratio`` has a capped activation (see the module docstring).
#: Registering a factory here makes its name valid in configs, studies and certificates.
_FACTORIES: dict[str, Callable[..., Divergence]] = {
    "kl": _kl,
    "reverse-kl": _reverse_kl,
    "js": _js,
    "pearson": _pearson,
    "hellinger": _hellinger,
    "gan": _gan,
    "tv": _tv,
}

DIVERGENCES: Mapping[str, Divergence] = MappingProxyType(
    {name: make() for name, make in _FACTORIES.items()}
)
"""Registry of the f-GAN members with default settings (read-only)."""


def _canonical(name: str) -> str:
    return name.strip().lower().replace("_", "-")


def get_divergence(
    name: str | Divergence,
    *,
    max_log_ratio: float | None = None,
    lam: float | None = None,
) -> Divergence:
    """Look up a divergence by name (``Divergence`` instances pass through).

    Args:
        name: A name of :data:`DIVERGENCES` (``kl, reverse-kl, js, pearson, hellinger,
            gan, tv``), or ``pr`` (then ``lam`` is required) or ``pr-<lam>`` (e.g.
            ``pr-0.5``). Case and ``_`` vs ``-`` are ignored.
        max_log_ratio: Cap :math:`B` on the log density ratio the critic can express
            (``kl, reverse-kl, pearson, hellinger``); ignored by the members that are
            stable without one. Default :data:`DEFAULT_MAX_LOG_RATIO`.
        lam: The :math:`\\lambda` of the PR divergence.
    """
    if isinstance(name, Divergence):
        return name
    if not isinstance(name, str):
        raise ConfigError(f"divergence must be a name or Divergence, got {type(name).__name__}")
    key = _canonical(name)
    if key.startswith("pr-"):
        # "pr-<lam>" is what pr_divergence(lam).name gives, so names round-trip
        if lam is not None:
            raise ConfigError(f"give lambda either in the name or as lam, not both: {name!r}")
        return pr_divergence(key[3:])
    if key == "pr":
        if lam is None:
            raise ConfigError("divergence 'pr' needs lam (lambda > 0), or use the name 'pr-<lam>'")
        return pr_divergence(lam)
    if key not in DIVERGENCES:
        allowed = ", ".join([*DIVERGENCES, "pr"])
        raise ConfigError(f"unknown divergence {name!r}; allowed: {allowed}")
    if lam is not None:
        raise ConfigError(f"lam only applies to the 'pr' divergence, not {key!r}")
    make = _FACTORIES[key]
    if max_log_ratio is not None and "max_log_ratio" in inspect.signature(make).parameters:
        return make(max_log_ratio)
    return DIVERGENCES[key]
