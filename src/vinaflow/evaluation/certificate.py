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
3. On the test part, the bound is evaluated: :math:`\hat D_f`. For the fitted (fixed)
   critic this is an unbiased estimate of a quantity :math:`\le D_f` -- a **lower
   bound** on :math:`D_f` in expectation, never an upper bound. Its sampling error is
   given by a percentile bootstrap over test pairs (resampled jointly when the P and Q
   rows share an observation ``y``).
4. :math:`\mathrm{TV} \lesssim c_f \sqrt{\hat D_f + s_f}` (:meth:`Divergence.tv_bound`),
   also at the upper end of the bootstrap interval.

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
from vinaflow.evaluation.certificate_critic import (
    CertificateConfig,
    GaussianOffset,
    QuadraticOffset,
    critic_terms,
    fit_critic,
)
from vinaflow.objectives.divergences import Divergence, get_divergence
from vinaflow.problems import BankProblem

__all__ = [
    "LABEL",
    "CertificateConfig",
    "FEATURES",
    "GaussianOffset",
    "QuadraticOffset",
    "certificate_for_run",
    "certify_flow",
    "certify_posterior",
    "certify_samples",
    "format_certificate",
    "latent_features",
]

LABEL = (
    "estimate: the held-out variational value is a lower bound on D_f (in expectation), "
    "so the TV bound c_f*sqrt(D_f) derived from it is an estimate, not a guarantee"
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
        ``tv_bound``, ``tv_bound_ci_high``, ``pinsker_constant``, sizes, critic
        diagnostics and ``label`` (how to read it).
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
    a, b = critic_terms(critic, div, p_test, q_test, offset)
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
    tv = tv_hi = None
    if div.pinsker_constant is not None:
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
        "tv_bound": tv,
        "tv_bound_ci_high": tv_hi,
        "n_fit": int(p_fit.shape[0]),
        "n_test": int(p_test.shape[0]),
        "paired": bool(paired),
        **info,
        "label": LABEL,
    }


def _problem_can_simulate(problem: Any) -> bool:
    return not (isinstance(problem, BankProblem) and problem.source is None)


FEATURES = ("auto", "joint", "latent")


def latent_features(posterior: Any) -> Any:
    """``(x, y) -> z`` of a posterior's bijection, or ``None`` if it has none.

    Uses ``posterior.latent(x, y)`` if defined, else the encoder of a vinaflow
    :class:`~vinaflow.models.Posterior` (``z``, plus ``y_hat`` for the joint INN).
    """
    if callable(getattr(posterior, "latent", None)):
        return posterior.latent
    model = getattr(posterior, "model", None)
    if model is None or not hasattr(model, "encode"):
        return None

    @torch.no_grad()
    def encode(x: Tensor, y: Tensor) -> Tensor:
        was = model.training
        model.eval()
        try:
            outs = []
            for i in range(0, x.shape[0], 65536):
                enc = model.encode(model.x_norm(x[i : i + 65536]), model.y_norm(y[i : i + 65536]))
                parts = [enc.z] + ([enc.y_hat] if enc.y_hat is not None else [])
                outs.append(torch.cat(parts, 1))
        finally:
            model.train(was)
        return torch.cat(outs)

    return encode


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
    **overrides: Any,
) -> dict[str, Any]:
    r"""Certificate of an amortized posterior: :math:`P = (X, Y)` vs :math:`Q = (\hat X, Y)`.

    Held-out pairs are ``(x, y)`` if given (e.g. rows of a bank not used in training),
    else ``n`` fresh simulations from ``problem`` with ``seed`` (choose one not used for
    training). For each ``y_i`` one model draw :math:`\hat x_i \sim q(x | y_i)`
    (``posterior.sample(y, 1)``) forms the model joint, paired with the data row.

    ``features``: the critic sees ``(x, y)`` (``"joint"``) or ``(x, y, z(x, y))`` with
    ``z`` the model's latent code (``"latent"``; ``"auto"`` = latent when the model has
    an encoder). Any critic is a function of ``(x, y)`` either way, so the value is the
    same kind of lower bound on the same :math:`D_f(P_{XY} \| Q_{XY})`; the latent code
    only makes the critic's job easier. Under :math:`Q` it is :math:`N(0, I)` independent
    of :math:`Y`, so deviations of :math:`P` show at unit scale instead of at the scale of
    the posterior width (measured on gaussian-linear: an over-dispersed posterior's KL
    is underestimated by ~50% from ``(x, y)`` alone, ~5% with the latent code).
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
    used = "joint"
    encode = latent_features(posterior) if features != "joint" else None
    if encode is None and features == "latent":
        raise ConfigError("certificate features='latent': this posterior has no encoder")
    if encode is not None:
        zp, zq = encode(xt, yt), encode(x_hat, yt)
        if torch.isfinite(zp).all() and torch.isfinite(zq).all():
            p, q, used = torch.cat([p, zp], 1), torch.cat([q, zq], 1), "latent"
    out = certify_samples(p, q, divergence, config, True, **overrides)
    out["compared"] = "true joint (X, Y) vs model joint (T^-1(Y, Z), Y), held-out Y"
    out["critic_features"] = "(x, y, z(x, y))" if used == "latent" else "(x, y)"
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
) -> dict[str, Any]:
    """Certificate for ``vinaflow run`` (``evaluation.certificate*`` settings).

    Fresh simulations when the problem can simulate; otherwise the run's held-out bank
    rows (``dataset.x_test``). Never raises for missing held-out data: returns
    ``{"skipped": reason}`` so that a run is not lost at the last step.
    """
    ev = dict(evaluation or {})
    div = ev.get("certificate_divergence", "kl")
    n = int(ev.get("certificate_samples", 10000))
    seed = int(ev.get("seed", 1234)) + 7_777_777
    cfg = ev.get("certificate_config")
    try:
        if _problem_can_simulate(problem):
            return certify_posterior(posterior, problem, div, n=n, seed=seed, config=cfg)
        x_test = getattr(dataset, "x_test", None)
        y_test = getattr(dataset, "y_test", None)
        if x_test is None or x_test.shape[0] < MIN_HELDOUT:
            have = 0 if x_test is None else int(x_test.shape[0])
            raise DataError(
                f"no held-out data: the bank has no simulator and only {have} held-out rows "
                f"(need >= {MIN_HELDOUT}); run `vinaflow certify DIR --data HELDOUT.npz`"
            )
        return certify_posterior(posterior, None, div, x=x_test, y=y_test, seed=seed, config=cfg)
    except DataError as err:
        return {"skipped": str(err)}


def format_certificate(cert: Mapping[str, Any]) -> str:
    """Markdown section for a report."""
    if "skipped" in cert:
        return f"## Certificate\n\nnot computed: {cert['skipped']}\n"

    def f(v: Any) -> str:
        return "n/a" if v is None else f"{v:.4g}"

    name = cert["divergence"]
    lines = [
        "## Certificate (estimate)",
        "",
        f"Compared: {cert.get('compared', 'P vs Q')}.",
        "",
        "| quantity | value |",
        "|---|---|",
        f"| held-out estimate of D_{name}(P‖Q) | {f(cert['estimate'])} |",
        f"| {int(100 * cert['level'])}% bootstrap interval | "
        f"[{f(cert['ci_low'])}, {f(cert['ci_high'])}] |",
        f"| TV bound c_f·sqrt(D_f + s_f), c_f = {f(cert['pinsker_constant'])} | "
        f"{f(cert['tv_bound'])} (upper end of interval: {f(cert['tv_bound_ci_high'])}) |",
        f"| pairs: critic fit / test | {cert['n_fit']} / {cert['n_test']} |",
        "",
        f"*{cert['label']}.*",
        "",
    ]
    return "\n".join(lines)
