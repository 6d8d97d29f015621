"""Checking a certificate against the C2ST of the same run, and its report text."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np

from vinaflow.objectives.divergences import get_divergence

__all__ = [
    "C2ST_COMPARISON",
    "attach_c2st_check",
    "check_against_c2st",
    "format_c2st_check",
    "format_certificate",
]


#: What :func:`check_against_c2st` compares, and under which assumption.
C2ST_COMPARISON = (
    "per-observation C2ST accuracy acc_i of the posterior against a reference posterior at "
    "observations y_i drawn from the prior predictive; a held-out classifier's accuracy "
    "estimates a value <= (1 + TV_i)/2, so mean_i(2 acc_i - 1) estimates a lower bound on "
    "E_y TV(p(x|y), q(x|y)); this equals the joint TV(P_XY, Q_XY) that the certificate "
    "bounds because both joints share the y-marginal (the model joint uses the data's y). "
    "Assumes the reference posterior is exact"
)


def check_against_c2st(
    cert: Mapping[str, Any], c2st_per_observation: Any, z: float = 2.0
) -> dict[str, Any]:
    r"""Compare a certificate's TV with the lower bound a C2ST against a reference implies.

    A classifier's held-out accuracy :math:`a_i` at observation :math:`y_i` estimates a
    quantity :math:`\le (1 + \mathrm{TV}_i)/2` (the Bayes classifier's accuracy on balanced
    classes), with :math:`\mathrm{TV}_i = \mathrm{TV}(p(\cdot|y_i), q(\cdot|y_i))`. The
    certificate is on the joint; with the same y-marginal under P and Q,
    :math:`\mathrm{TV}(P_{XY}, Q_{XY}) = E_y \mathrm{TV}_y`. So, with :math:`y_i` from the
    prior predictive,

    .. math:: \overline{2 a - 1} \lesssim \mathrm{TV}(P_{XY}, Q_{XY}) \le c_f \sqrt{D_f + s_f}.

    ``c2st_tv_lower`` is :math:`\overline{2a - 1}` (unclipped, so noise below 0.5 does not
    bias it upwards), with ``c2st_tv_lower_se`` the standard error over observations.
    The certificate's side is the TV at the upper end of its bootstrap interval,
    :math:`c_f\sqrt{\max(\hat D_{hi} + s_f, 0)}`, whether or not it is resolved (an
    unresolved certificate's numbers still say how much divergence its critic found).
    ``consistent`` is false when ``c2st_tv_lower - z * se`` exceeds it: the classifier
    found more divergence than the critic, so the certificate's value is too small (the
    critic missed it), not the classifier's too large.

    Returns ``{}`` when there is nothing to compare (no per-observation C2ST, a certificate
    that was skipped, or a divergence without a Pinsker-type constant).
    """
    acc = np.asarray([] if c2st_per_observation is None else c2st_per_observation, dtype=np.float64)
    acc = acc[np.isfinite(acc)]
    if acc.size == 0 or "skipped" in cert or cert.get("pinsker_constant") is None:
        return {}
    div = get_divergence(cert["divergence"])
    hi = cert.get("ci_high")
    hi = cert["estimate"] if hi is None else hi
    cert_tv = div.tv_bound(max(hi, cert["estimate"]))
    lower = 2.0 * acc - 1.0
    mean = float(lower.mean())
    se = float(lower.std(ddof=1) / math.sqrt(acc.size)) if acc.size > 1 else 0.0
    consistent = bool(mean - z * se <= cert_tv)
    c = div.pinsker_constant
    implied = max(0.0, (max(mean - z * se, 0.0) / c) ** 2 - div.shift)
    return {
        "consistent": consistent,
        "c2st_mean": float(acc.mean()),
        "c2st_tv_lower": mean,
        "c2st_tv_lower_se": se,
        "z": z,
        "certificate_tv": cert_tv,
        "implied_divergence_lower": implied,
        "num_observations": int(acc.size),
        "compared": C2ST_COMPARISON,
    }


def attach_c2st_check(cert: dict[str, Any], c2st_per_observation: Any) -> dict[str, Any]:
    """Add ``c2st_check`` and ``consistent_with_c2st`` to ``cert`` (in place) when a
    per-observation C2ST is available; returns ``cert``."""
    check = check_against_c2st(cert, c2st_per_observation)
    if check:
        cert["c2st_check"] = check
        cert["consistent_with_c2st"] = check["consistent"]
    return cert


def _g(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def format_c2st_check(check: Mapping[str, Any]) -> list[str]:
    """Lines of a report on :func:`check_against_c2st`'s result."""
    if not check:
        return []
    both = (
        f"C2ST {check['c2st_mean']:.3f} on {check['num_observations']} observations implies "
        f"TV >= {check['c2st_tv_lower']:.3f} ± {check['c2st_tv_lower_se']:.3f}; the "
        f"certificate's TV (upper end of its interval) is {check['certificate_tv']:.3f}"
    )
    if check["consistent"]:
        return [f"Consistent with C2ST: {both}.", ""]
    return [
        f"**Contradicts C2ST** (`consistent_with_c2st: false`): {both}. The critic missed "
        f"divergence the classifier found (at least {check['implied_divergence_lower']:.3g} "
        "by Pinsker); this certificate understates the error.",
        "",
    ]


def format_certificate(cert: Mapping[str, Any]) -> str:
    """Markdown section for a report (also what ``vinaflow certify`` prints).

    An unresolved certificate shows no TV bound: it says so, why, and what the smallest
    detectable divergence was.
    """
    if "skipped" in cert:
        return f"## Certificate\n\nnot computed: {cert['skipped']}\n"
    f = _g
    name = cert["divergence"]
    resolved = cert.get("resolved", True)
    interval = f"[{f(cert['ci_low'])}, {f(cert['ci_high'])}]"
    lines = [
        "## Certificate (estimate)" if resolved else "## Certificate (not resolved)",
        "",
        f"Compared: {cert.get('compared', 'P vs Q')}.",
        "",
    ]
    if not resolved:
        lines += [
            f"**Not resolved:** {cert.get('unresolved_reason')}. The critic measured no "
            f"divergence above its noise, so there is **no TV bound**: a held-out variational "
            f"value is a lower bound on D_{name}, and a value within noise does not show the "
            "posterior is accurate.",
            "",
        ]
    lines += ["| quantity | value |", "|---|---|"]
    if resolved:
        lines += [
            f"| held-out estimate of D_{name}(P‖Q) | {f(cert['estimate'])} |",
            f"| {int(100 * cert['level'])}% bootstrap interval | {interval} |",
            f"| TV bound c_f·sqrt(D_f + s_f), c_f = {f(cert['pinsker_constant'])} | "
            f"{f(cert['tv_bound'])} (upper end of interval: {f(cert['tv_bound_ci_high'])}) |",
        ]
    else:
        lines += [
            f"| held-out value of the bound (within noise) | {f(cert['estimate'])}, "
            f"{int(100 * cert['level'])}% interval {interval} |",
            "| TV bound | none (not resolved) |",
        ]
    if cert.get("detection_limit") is not None:
        lines.append(
            f"| detection limit: smallest resolvable D_{name} + s_f from {cert['n_test']} "
            f"test pairs | {f(cert['detection_limit'])} (TV {f(cert.get('tv_detection_limit'))}) |"
        )
    lines += [f"| pairs: critic fit / test | {cert['n_fit']} / {cert['n_test']} |", ""]
    lines += format_c2st_check(cert.get("c2st_check") or {})
    lines += [f"*{cert['label']}.*", ""]
    return "\n".join(lines)
