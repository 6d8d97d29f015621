r"""Posterior-accuracy certificates: a held-out f-divergence estimate and the TV bound it implies.

The theory of the VINA paper: if :math:`D_f(P_{XY} \| Q_{XY})` is small, where :math:`P_{XY}`
is the true joint of parameters and observations and :math:`Q_{XY}` the model joint
:math:`(T^{-1}(Y, Z), Y)` with :math:`Y` from the data, then by the Pinsker-type inequality
:math:`\mathrm{TV}(P, Q) \le c_f \sqrt{D_f(P\|Q)}` and every posterior of :math:`X` given
:math:`Y \in A` is close in total variation (for normalizing flows: data vs model).

What is computed (:func:`certify_samples`):

1. Held-out pairs (never seen in training) are split into a *critic-training* part
   (with a validation slice for early stopping) and a *test* part.
2. A **fresh** critic :math:`V` (:mod:`vinaflow.evaluation.certificate_critic`) is fitted
   by maximising the f-GAN bound
   :math:`E_P[g_f(V)] - E_Q[f^*(g_f(V))]` on the training part (Nowozin et al. 2016).
3. On the test part, the bound is evaluated: :math:`\hat D_f`, with the critic's output
   clamped to the range it took on the critic-training part (``clip_output``). For the
   fitted (fixed, clamped) critic this is an unbiased estimate of a quantity
   :math:`\le D_f` -- a **lower bound** on :math:`D_f` in expectation, never an upper
   bound. Its sampling error is
   given by a percentile bootstrap over test pairs (resampled jointly when the P and Q
   rows share an observation ``y``).
4. :math:`\mathrm{TV} \lesssim c_f \sqrt{\hat D_f + s_f}` (:meth:`Divergence.tv_bound`),
   also at the upper end of the bootstrap interval -- only when the estimate is
   **resolved** (:func:`detection_limit`): the critic beat the null critic on validation,
   the bootstrap interval excludes zero, the estimate exceeds the level-quantile of its
   own permutation null, and it exceeds the smallest divergence that the test set could
   resolve at all. Otherwise ``resolved`` is false, ``tv_bound`` is ``None``, and the
   certificate states its detection limit instead: a variational value is a lower bound,
   so a value within noise says nothing about how close the posterior is.
5. Where the same run measured a classifier two-sample test (C2ST) against a reference
   posterior, :func:`check_against_c2st` compares the TV lower bound the classifier
   implies with the certificate's TV and flags a contradiction.

**Read it as an estimate, not a guarantee**: the critic may miss part of the divergence
(so :math:`\hat D_f` and the TV value can be too small), and Monte-Carlo error is only
partly captured by the interval. ``benchmarks/certificates.py`` checks it against the
exact KL on ``gaussian-linear``.

References:
    Nowozin, Cseke, Tomioka. f-GAN. NeurIPS 2016.

    Nguyen, Wainwright, Jordan. Estimating divergence functionals and the likelihood
    ratio by convex risk minimization. IEEE Trans. Inf. Theory 2010.

    Tsybakov. Introduction to Nonparametric Estimation, 2009, Section 2.4.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import asdict
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import ConfigError, DataError
from vinaflow.evaluation.certificate_checks import (
    C2ST_COMPARISON,
    attach_c2st_check,
    check_against_c2st,
    format_c2st_check,
    format_certificate,
)
from vinaflow.evaluation.certificate_critic import (
    CertificateConfig,
    GaussianOffset,
    QuadraticOffset,
    critic_terms,
    fit_critic,
)
from vinaflow.evaluation.certificate_features import (
    FEATURES,
    density_features,
    latent_features,
    likelihood_ratio_features,
)
from vinaflow.objectives.divergences import Divergence, get_divergence
from vinaflow.problems import BankProblem

__all__ = [
    "C2ST_COMPARISON",
    "LABEL",
    "LABEL_UNRESOLVED",
    "CertificateConfig",
    "FEATURES",
    "attach_c2st_check",
    "GaussianOffset",
    "QuadraticOffset",
    "certificate_for_run",
    "check_against_c2st",
    "certify_flow",
    "certify_posterior",
    "certify_samples",
    "density_features",
    "detection_limit",
    "format_c2st_check",
    "format_certificate",
    "latent_features",
    "likelihood_ratio_features",
]

LABEL = (
    "estimate: the held-out variational value is a lower bound on D_f (in expectation), "
    "so the TV bound c_f*sqrt(D_f) derived from it is an estimate, not a guarantee"
)

#: How to read an unresolved certificate (``resolved: false``).
LABEL_UNRESOLVED = (
    "not resolved: the held-out value is within its noise and, being a lower bound on D_f, "
    "bounds nothing; divergences below the detection limit are invisible to any critic "
    "with this many test pairs, and larger ones can still be missed by the fitted critic"
)

#: Fewer held-out pairs than this give a certificate too noisy to be useful.
MIN_HELDOUT = 200


def _config(
    config: CertificateConfig | Mapping[str, Any] | None, **overrides: Any
) -> CertificateConfig:
    if config is None:
        config = {}
    if isinstance(config, CertificateConfig):
        config = asdict(config)
    merged = {**dict(config), **{k: v for k, v in overrides.items() if v is not None}}
    fields = set(CertificateConfig.__dataclass_fields__)
    unknown = sorted(set(merged) - fields)
    if unknown:
        raise ConfigError(f"certificate: unknown setting(s) {unknown}; allowed: {sorted(fields)}")
    return CertificateConfig(**merged)


def _as_tensor(name: str, a: Any) -> Tensor:
    t = torch.as_tensor(np.asarray(a, dtype=np.float32) if not isinstance(a, Tensor) else a)
    t = t.detach().to(torch.float32)
    if t.ndim == 1:
        t = t[:, None]
    if t.ndim != 2:
        raise DataError(f"{name} must have shape (n, d), got {tuple(t.shape)}")
    if not torch.isfinite(t).all():
        raise DataError(f"{name} contains NaN or inf")
    return t


def _second_derivative_at_one(div: Divergence) -> float | None:
    """:math:`f''(1)` by central differences, or ``None`` where ``f`` has a kink at 1."""
    vals = []
    for h in (1e-2, 1e-3):
        u = torch.tensor([1.0 - h, 1.0, 1.0 + h], dtype=torch.float64)
        fu = div.f(u)
        vals.append(float((fu[0] - 2 * fu[1] + fu[2]) / h**2))
    if not all(math.isfinite(v) for v in vals) or abs(vals[0] - vals[1]) > 0.01 * abs(vals[1]):
        return None  # grows as 1/h: a kink (total variation)
    return vals[1]


def detection_limit(divergence: str | Divergence, n_test: int, level: float = 0.95) -> float:
    r"""The smallest :math:`D_f + s_f` that ``n_test`` held-out pairs can resolve.

    Method: the standard error of the held-out estimate for the **oracle** critic (the
    exact :math:`f'(dP/dQ)`; a fitted critic only does worse). For a small divergence,
    :math:`dP/dQ = 1 + h` with :math:`\chi^2 = E_Q[h^2]`, every smooth member has
    :math:`D_f \approx \tfrac12 f''(1)\,\chi^2`, and the per-pair term of the bound is
    :math:`g_f(V(p_i)) - f^*(g_f(V(q_i))) \approx f''(1)\,(h(p_i) - h(q_i))`, with variance
    :math:`2 f''(1)^2 \chi^2 = 4 f''(1) D_f` (the two terms are uncorrelated when ``p_i``
    and ``q_i`` share ``y_i``: :math:`E_Q[h \mid y] = 0`). Requiring the estimate to be
    ``z`` standard errors above zero, :math:`D_f \ge z \sqrt{4 f''(1) D_f / n}`, gives

    .. math:: D_{\min} = 4 f''(1)\, z^2 / n, \qquad z = \Phi^{-1}\big(1 - (1 - \text{level})/2\big)

    (KL, 5,000 test pairs, 95%: 0.0031 nats). For total variation (a kink at 1) the
    oracle terms are :math:`\pm 1/2` and :math:`D_{\min} = z / \sqrt{2 n}`. No critic can
    resolve less from these pairs at this level; a divergence below it is indistinguishable
    from zero, whatever the posterior.
    """
    from statistics import NormalDist

    div = get_divergence(divergence)
    z = NormalDist().inv_cdf(1.0 - (1.0 - level) / 2)
    f2 = _second_derivative_at_one(div)
    if f2 is None:
        return float(z / math.sqrt(2.0 * n_test))
    return float(4.0 * f2 * z * z / n_test)


def _permutation_null(
    a_pq: tuple[np.ndarray, np.ndarray],
    a_qp: tuple[np.ndarray, np.ndarray],
    paired: bool,
    n_perm: int,
    level: float,
    seed: int,
) -> float:
    """``level``-quantile of the held-out estimate when P and Q labels are exchanged at
    random (within pairs when ``paired``): its spread with this critic if P = Q."""
    (gp, fq), (gq, fp) = a_pq, a_qp
    rng = np.random.default_rng(seed)
    out = np.empty(n_perm)
    if paired:
        for i in range(n_perm):
            swap = rng.random(len(gp)) < 0.5
            out[i] = np.where(swap, gq, gp).mean() - np.where(swap, fp, fq).mean()
    else:
        g_all, f_all = np.concatenate([gp, gq]), np.concatenate([fp, fq])
        for i in range(n_perm):
            perm = rng.permutation(len(g_all))
            out[i] = g_all[perm[: len(gp)]].mean() - f_all[perm[len(gp) :]].mean()
    return float(np.quantile(out, level))


def certify_samples(
    p: Any,
    q: Any,
    divergence: str | Divergence = "kl",
    config: CertificateConfig | Mapping[str, Any] | None = None,
    paired: bool = True,
    **overrides: Any,
) -> dict[str, Any]:
    r"""Held-out variational estimate of :math:`D_f(P \| Q)` with a bootstrap interval.

    Args:
        p: Samples of :math:`P` (data / true joint), ``(n, d)``.
        q: Samples of :math:`Q` (model), ``(m, d)``.
        divergence: A member with a Pinsker-type constant for the TV bound (``kl``,
            ``js``, ``hellinger``, ``gan``, ``tv``, ...; others give ``tv_bound=None``).
        config: :class:`CertificateConfig` or a mapping of its fields.
        paired: Row ``i`` of ``p`` and ``q`` share something (the observation ``y``);
            rows are then split and bootstrapped together (needs ``n == m``).
        overrides: Individual :class:`CertificateConfig` fields.

    Returns:
        JSON-ready dict: ``estimate``, ``ci_low``, ``ci_high``, ``std_error``,
        ``resolved`` (and ``unresolved_reason``), ``detection_limit`` (see
        :func:`detection_limit`), ``null_quantile`` (permutation null of this critic),
        ``tv_bound`` and ``tv_bound_ci_high`` (``None`` unless resolved),
        ``tv_detection_limit`` (the TV that a divergence at the detection limit allows),
        ``pinsker_constant``, sizes, critic diagnostics and ``label`` (how to read it).
    """
    cfg = _config(config, **overrides)
    div = get_divergence(divergence)
    pt, qt = _as_tensor("p", p), _as_tensor("q", q)
    if pt.shape[1] != qt.shape[1]:
        raise DataError(f"p and q must have the same dim, got {pt.shape[1]} and {qt.shape[1]}")
    if paired and pt.shape[0] != qt.shape[0]:
        raise DataError(f"paired samples need equal sizes, got {pt.shape[0]} and {qt.shape[0]}")
    for name, t in (("p", pt), ("q", qt)):
        if t.shape[0] < MIN_HELDOUT:
            raise DataError(
                f"certificate needs at least {MIN_HELDOUT} held-out samples of {name}, "
                f"got {t.shape[0]}"
            )
    # Standardise with P's statistics: an affine bijection leaves D_f unchanged.
    mean, std = pt.mean(0), pt.std(0).clamp_min(1e-8)
    pt, qt = (pt - mean) / std, (qt - mean) / std
    g = torch.Generator().manual_seed(cfg.seed + 1)
    perm_p = torch.randperm(pt.shape[0], generator=g)
    perm_q = perm_p if paired else torch.randperm(qt.shape[0], generator=g)
    n_test_p = int(cfg.test_fraction * pt.shape[0])
    n_test_q = int(cfg.test_fraction * qt.shape[0])
    p_test, p_fit = pt[perm_p[:n_test_p]], pt[perm_p[n_test_p:]]
    q_test, q_fit = qt[perm_q[:n_test_q]], qt[perm_q[n_test_q:]]
    critic, offset, info = fit_critic(p_fit, q_fit, div, cfg)
    rng = info["critic_output_range"]
    clip = (rng[0], rng[1]) if rng else None
    a, b = critic_terms(critic, div, p_test, q_test, offset, clip)
    a64, b64 = a.double().numpy(), b.double().numpy()
    estimate = float(a64.mean() - b64.mean())
    se = float(math.sqrt(a64.var(ddof=1) / len(a64) + b64.var(ddof=1) / len(b64)))
    if paired:
        se = float(np.std(a64 - b64, ddof=1) / math.sqrt(len(a64)))
    ci_low = ci_high = None
    if cfg.bootstrap > 0:
        rng = np.random.default_rng(cfg.seed + 2)
        boots = np.empty(cfg.bootstrap)
        for i in range(cfg.bootstrap):
            ia = rng.integers(0, len(a64), len(a64))
            ib = ia if paired else rng.integers(0, len(b64), len(b64))
            boots[i] = a64[ia].mean() - b64[ib].mean()
        alpha = 1.0 - cfg.level
        ci_low, ci_high = (float(v) for v in np.quantile(boots, [alpha / 2, 1 - alpha / 2]))
    # Resolution. The null critic (g_f(v) = f'(1)) gives exactly -s_f on every pair, so
    # "the critic never beat it" means nothing was measured; otherwise the estimate must
    # clear its bootstrap interval, its permutation null and the oracle detection limit.
    excess = estimate + div.shift
    limit = detection_limit(div, int(p_test.shape[0]), cfg.level)
    null_q = None
    if cfg.bootstrap > 0:
        swapped = critic_terms(critic, div, q_test, p_test, offset, clip)
        null_q = _permutation_null(
            (a64, b64),
            (swapped[0].double().numpy(), swapped[1].double().numpy()),
            paired,
            cfg.bootstrap,
            cfg.level,
            cfg.seed + 3,
        )
    reasons = []
    if info["critic_best_step"] == 0 and not (
        info["gaussian_offset_used"] or info["quadratic_offset_used"]
    ):
        reasons.append("the critic never beat the null critic on validation (best step 0)")
    if ci_low is not None and ci_low + div.shift <= 0:
        reasons.append(f"the {int(100 * cfg.level)}% bootstrap interval does not lie above zero")
    if null_q is not None and estimate <= null_q:
        reasons.append("the estimate is within its permutation null")
    if excess <= limit:
        reasons.append(
            f"the estimate is below the detection limit {limit:.3g} of {int(p_test.shape[0])} "
            "test pairs"
        )
    resolved = not reasons
    tv = tv_hi = tv_limit = None
    if div.pinsker_constant is not None:
        tv_limit = div.tv_bound(limit - div.shift)
        if resolved:
            tv = div.tv_bound(estimate)
            tv_hi = div.tv_bound(ci_high) if ci_high is not None else None
    return {
        "divergence": div.name,
        "estimate": estimate,
        "ci_low": ci_low,
        "ci_high": ci_high,
        "level": cfg.level,
        "std_error": se,
        "pinsker_constant": div.pinsker_constant,
        "shift": div.shift,
        "resolved": resolved,
        "unresolved_reason": "; ".join(reasons) if reasons else None,
        "detection_limit": limit,
        "detection_limit_method": (
            "oracle-critic standard error: 4 f''(1) z^2 / n_test (z / sqrt(2 n_test) for tv)"
        ),
        "null_quantile": null_q,
        "tv_bound": tv,
        "tv_bound_ci_high": tv_hi,
        "tv_detection_limit": tv_limit,
        "n_fit": int(p_fit.shape[0]),
        "n_test": int(p_test.shape[0]),
        "paired": bool(paired),
        **info,
        "label": LABEL if resolved else LABEL_UNRESOLVED,
    }


def _problem_can_simulate(problem: Any) -> bool:
    return not (isinstance(problem, BankProblem) and problem.source is None)


def certify_posterior(
    posterior: Any,
    problem: Any = None,
    divergence: str | Divergence = "kl",
    n: int = 10000,
    x: Any = None,
    y: Any = None,
    seed: int = 20240607,
    config: CertificateConfig | Mapping[str, Any] | None = None,
    features: str = "auto",
    likelihood_draws: int = 8,
    **overrides: Any,
) -> dict[str, Any]:
    r"""Certificate of an amortized posterior: :math:`P = (X, Y)` vs :math:`Q = (\hat X, Y)`.

    Held-out pairs are ``(x, y)`` if given (e.g. rows of a bank not used in training),
    else ``n`` fresh simulations from ``problem`` with ``seed`` (choose one not used for
    training). For each ``y_i`` one model draw :math:`\hat x_i \sim q(x | y_i)`
    (``posterior.sample(y, 1)``) forms the model joint, paired with the data row.

    ``features``: the critic sees ``(x, y)`` (``"joint"``), ``(x, y, z(x, y))`` with
    ``z`` the model's latent code (``"latent"``), or that plus the model's own log density
    :math:`\log q(x|y)` (``"density"``, :func:`density_features`); ``"auto"`` adds the
    latent code when the model has an encoder and the density when it has one. Any
    critic is a function of ``(x, y)`` either way, so the value is the
    same kind of lower bound on the same :math:`D_f(P_{XY} \| Q_{XY})`; the latent code
    only makes the critic's job easier. Under :math:`Q` it is :math:`N(0, I)` independent
    of :math:`Y`, so deviations of :math:`P` show at unit scale instead of at the scale of
    the posterior width (measured on gaussian-linear: an over-dispersed posterior's KL
    is underestimated by ~50% from ``(x, y)`` alone, ~5% with the latent code).
    ``"likelihood"`` (``"auto"``'s choice when the problem has a likelihood and the
    posterior a density): the critic sees the model's log density ratio estimate
    :math:`\log \hat r(x, y)` from :func:`likelihood_ratio_features` with
    ``likelihood_draws`` model draws per observation.
    """
    if features not in FEATURES:
        raise ConfigError(f"certificate features must be one of {list(FEATURES)}, got {features!r}")
    if x is None or y is None:
        if problem is None:
            raise DataError("certify_posterior needs held-out (x, y) or a problem to simulate")
        if not _problem_can_simulate(problem):
            raise DataError(
                "this run's problem is a bank without a simulator and no held-out (x, y) "
                "were given: a certificate needs data never seen in training"
            )
        gen = torch.Generator().manual_seed(int(seed))
        x = problem.sample_prior(int(n), gen)
        y = problem.simulate_checked(x, gen)
    xt, yt = _as_tensor("x", x), _as_tensor("y", y)
    if xt.shape[0] != yt.shape[0]:
        raise DataError(f"x and y have different numbers of rows: {xt.shape[0]} vs {yt.shape[0]}")
    gen = torch.Generator().manual_seed(int(seed) + 1)
    x_hat = posterior.sample(yt, 1, generator=gen)[:, 0]
    p, q = torch.cat([xt, yt], 1), torch.cat([x_hat, yt], 1)
    ratio = None
    if features in ("auto", "likelihood"):
        ratio = likelihood_ratio_features(
            posterior, problem, yt, int(likelihood_draws), int(seed) + 2
        )
        if ratio is None and features == "likelihood":
            raise ConfigError(
                "certificate features='likelihood': needs a problem with a likelihood and a "
                "posterior with a density"
            )
    if ratio is not None:
        out = certify_samples(ratio(xt), ratio(x_hat), divergence, config, True, **overrides)
        out["compared"] = "true joint (X, Y) vs model joint (T^-1(Y, Z), Y), held-out Y"
        out["critic_features"] = "log p(y|x) p(x) / (q(x|y) Z_hat(y))"
        out["likelihood_draws"] = int(likelihood_draws)
        return out
    encode = latent_features(posterior) if features in ("auto", "latent", "density") else None
    if encode is None and features == "latent":
        raise ConfigError("certificate features='latent': this posterior has no encoder")
    names = ["x", "y"]
    if encode is not None:
        zp, zq = encode(xt, yt), encode(x_hat, yt)
        if torch.isfinite(zp).all() and torch.isfinite(zq).all():
            p, q = torch.cat([p, zp], 1), torch.cat([q, zq], 1)
            names.append("z(x, y)")
    density = density_features(posterior, xt, yt) if features in ("auto", "density") else None
    if density is None and features == "density":
        raise ConfigError("certificate features='density': this posterior has no density")
    if density is not None:
        p, q = torch.cat([p, density(xt)], 1), torch.cat([q, density(x_hat)], 1)
        names.append("log q(x|y)")
    out = certify_samples(p, q, divergence, config, True, **overrides)
    out["compared"] = "true joint (X, Y) vs model joint (T^-1(Y, Z), Y), held-out Y"
    out["critic_features"] = f"({', '.join(names)})"
    return out


def certify_flow(
    flow: Any,
    data: Any,
    divergence: str | Divergence = "kl",
    seed: int = 20240607,
    config: CertificateConfig | Mapping[str, Any] | None = None,
    **overrides: Any,
) -> dict[str, Any]:
    """Certificate of a normalizing flow: held-out ``data`` vs as many model samples."""
    dt = _as_tensor("data", data)
    gen = torch.Generator().manual_seed(int(seed))
    samples = flow.sample(dt.shape[0], generator=gen)
    out = certify_samples(dt, samples, divergence, config, False, **overrides)
    out["compared"] = "held-out data vs model samples Q(Z)"
    return out


def certificate_for_run(
    posterior: Any,
    problem: Any,
    dataset: Any = None,
    evaluation: Mapping[str, Any] | None = None,
    c2st_per_observation: Any = None,
) -> dict[str, Any]:
    """Certificate for ``vinaflow run`` (``evaluation.certificate*`` settings).

    Fresh simulations when the problem can simulate; otherwise the run's held-out bank
    rows (``dataset.x_test``). Never raises for missing held-out data: returns
    ``{"skipped": reason}`` so that a run is not lost at the last step. With the run's
    per-observation C2ST against the reference posterior, the certificate is checked
    against it (:func:`check_against_c2st`).
    """
    ev = dict(evaluation or {})
    div = ev.get("certificate_divergence", "kl")
    n = int(ev.get("certificate_samples", 10000))
    seed = int(ev.get("seed", 1234)) + 7_777_777
    cfg = ev.get("certificate_config")
    try:
        if _problem_can_simulate(problem):
            cert = certify_posterior(posterior, problem, div, n=n, seed=seed, config=cfg)
        else:
            x_test = getattr(dataset, "x_test", None)
            y_test = getattr(dataset, "y_test", None)
            if x_test is None or x_test.shape[0] < MIN_HELDOUT:
                have = 0 if x_test is None else int(x_test.shape[0])
                raise DataError(
                    f"no held-out data: the bank has no simulator and only {have} held-out "
                    f"rows (need >= {MIN_HELDOUT}); run `vinaflow certify DIR --data HELDOUT.npz`"
                )
            cert = certify_posterior(
                posterior, None, div, x=x_test, y=y_test, seed=seed, config=cfg
            )
    except DataError as err:
        return {"skipped": str(err)}
    return attach_c2st_check(cert, c2st_per_observation)
