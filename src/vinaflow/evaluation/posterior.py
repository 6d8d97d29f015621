"""Scores of an amortized posterior against ground truth; numbers only, no files, no plots.

:func:`score_posterior` evaluates on held-out observations ``y* = sim(x*)`` of a problem
(``x*`` from the prior) and returns the metrics together with what figures need
(samples, references, SBC ranks, coverage curves); :func:`evaluate_posterior` returns the
metrics alone. :func:`score_against_reference` compares with given reference samples or
a reference sampler, for posteriors of problems vinaflow does not know.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.evaluation.calibration import expected_coverage, sbc_ranks, sbc_uniformity_pvalues
from vinaflow.evaluation.metrics import c2st, mmd, posterior_summary, w1
from vinaflow.models.importance import ImportanceSampledPosterior
from vinaflow.models.posterior import Posterior
from vinaflow.problems.base import Problem

__all__ = [
    "PosteriorScores",
    "evaluate_posterior",
    "importance_metrics",
    "reference_metrics",
    "score_against_reference",
    "score_posterior",
]

#: Per-observation metrics of :func:`score_posterior`, in report order.
PER_OBSERVATION = (
    "c2st",
    "w1",
    "mmd",
    "mean_error",
    "mean_error_truth",
    "resim_error",
    "outside_prior",
    "ci_width",
)

#: A reference sampler: ``n`` exact posterior draws ``(n, dim_x)`` for one observation.
ReferenceSampler = Callable[[Tensor, int, torch.Generator], Tensor]


@dataclass
class PosteriorScores:
    """Metrics of a posterior plus the arrays behind them (for figures).

    ``samples`` ``(n_obs, n, dim_x)`` are the posterior's draws at ``y_obs`` with true
    parameters ``x_true``; ``references[i]`` the exact draws for observation ``i`` (or
    ``None``). ``ranks`` and ``coverage`` are the SBC ranks and coverage curves of the
    calibration draws (``None`` when calibration was not run).
    """

    metrics: dict[str, Any]
    x_true: Tensor
    y_obs: Tensor
    samples: Tensor
    references: list[Tensor | None]
    param_names: list[str] = field(default_factory=list)
    ranks: np.ndarray | None = None
    calibration_samples: int = 0
    num_calibration: int = 0
    coverage: dict[str, Any] | None = None


def _reference(problem: Problem, y: Tensor, n: int, seed: int) -> Tensor | None:
    if not problem.has_reference_posterior:
        return None
    g = torch.Generator().manual_seed(seed)
    return problem.reference_posterior(y, n, g)


def reference_metrics(
    ref: Tensor, s: Tensor, cfg: Mapping[str, Any], seed: int
) -> dict[str, float]:
    """Distances of samples ``s`` to ground-truth samples ``ref`` of one observation:
    C2ST (unless ``cfg["c2st"]`` is false), W1, MMD and the error of the mean."""
    r, q = ref.numpy(), s.numpy()
    out = {"c2st": c2st(r, q, seed=seed)} if cfg.get("c2st", True) else {}
    out["w1"] = w1(r, q, max_samples=cfg.get("w1_samples", 1000), seed=seed)
    out["mmd"] = mmd(r, q)
    out["mean_error"] = float((s.mean(0) - ref.mean(0)).norm())
    return out


def score_posterior(
    posterior: Posterior,
    problem: Problem,
    cfg: Mapping[str, Any],
    held_out: tuple[Tensor, Tensor] | None = None,
) -> PosteriorScores:
    """Metrics of a posterior on held-out observations ``y* = sim(x*)``, ``x*`` from the prior.

    ``cfg`` is an ``evaluation`` config section (``num_observations``, ``num_samples``,
    ``num_calibration``, ``seed``, ...). ``held_out`` ``(x, y)`` replaces the simulated
    observations (bank rows of problems that cannot simulate); calibration then is
    skipped, since it needs fresh simulations.
    """
    seed = int(cfg.get("seed", 1234))
    n_obs, n_samples = int(cfg["num_observations"]), int(cfg["num_samples"])
    g = torch.Generator().manual_seed(seed)
    if held_out is not None:
        x_true, y_obs = held_out[0][:n_obs], held_out[1][:n_obs]
        n_obs = len(x_true)
    else:
        x_true = problem.sample_prior(n_obs, g)
        y_obs = problem.simulate_checked(x_true, g)
    t0 = time.perf_counter()
    samples = posterior.sample(y_obs, n_samples, generator=g)
    sample_seconds = time.perf_counter() - t0
    per: dict[str, list[float]] = {k: [] for k in PER_OBSERVATION}
    references: list[Tensor | None] = []
    ref_diag: dict[str, list[Any]] = {}
    for i in range(n_obs):
        s = samples[i]
        summ = posterior_summary(s.numpy(), x_true[i].numpy())
        per["mean_error_truth"].append(float(np.sqrt(summ["mse"] * problem.dim_x)))
        per["ci_width"].append(float(np.mean(summ["ci_width"])))
        for name, sq in zip(problem.param_names, summ["sq_error"], strict=True):
            per.setdefault(f"sq_error_{name}", []).append(float(sq))
        ref = _reference(problem, y_obs[i], n_samples, seed + 1 + i)
        references.append(ref)
        if ref is not None:
            for k, v in reference_metrics(ref, s, cfg, seed + i).items():
                per[k].append(v)
            # e.g. the grid posterior's frontier_mass: whether the reference enclosed its mass
            for k, v in problem.reference_diagnostics(y_obs[i]).items():
                ref_diag.setdefault(k, []).append(v)
        # Samples outside the prior's support may be outside the simulator's domain
        # too (an ocean sediment slower than the water): re-simulate the others and
        # report what fraction fell outside, instead of failing the evaluation.
        if getattr(problem, "prior", None) is not None:
            inside = torch.isfinite(problem.log_prior(s))
        else:  # a problem known only by its simulator: nothing to check against
            inside = torch.ones(s.shape[0], dtype=torch.bool)
        per["outside_prior"].append(float((~inside).float().mean()))
        y_clean = problem.simulate_noise_free(s[inside]) if bool(inside.any()) else None
        if y_clean is not None:
            per["resim_error"].append(float((y_clean - y_obs[i]).norm(dim=-1).mean()))
    metrics: dict[str, Any] = {k: float(np.mean(v)) if v else None for k, v in per.items()}
    metrics["sampling_seconds_per_10k"] = sample_seconds / (n_obs * n_samples) * 1e4
    if "frontier_mass" in ref_diag:
        metrics["reference_frontier_mass_max"] = float(max(ref_diag["frontier_mass"]))
    if ref_diag:
        metrics["reference_diagnostics"] = ref_diag
    scores = PosteriorScores(metrics, x_true, y_obs, samples, references, list(problem.param_names))
    # Calibration on separate prior draws: SBC ranks and expected coverage.
    n_cal, n_cal_s = int(cfg.get("num_calibration", 0)), int(cfg.get("calibration_samples", 200))
    calibration: tuple[Tensor, Tensor] | None = None
    if n_cal > 0 and held_out is None:
        gc = torch.Generator().manual_seed(seed + 99991)
        x_cal = problem.sample_prior(n_cal, gc)
        y_cal = problem.simulate_checked(x_cal, gc)
        calibration = (x_cal, y_cal)
        cal = posterior.sample(y_cal, n_cal_s, generator=gc).numpy()
        ranks = sbc_ranks(cal, x_cal.numpy())
        cov = expected_coverage(cal, x_cal.numpy())
        metrics["coverage"] = cov["coverage_95"]
        metrics["coverage_joint"] = cov["coverage_95_joint"]
        metrics["coverage_error"] = cov["coverage_error"]
        metrics["coverage_curve"] = {
            k: cov[k] for k in ("levels", "coverage_marginal", "coverage_joint")
        }
        metrics["sbc_pvalues"] = sbc_uniformity_pvalues(ranks, n_cal_s).tolist()
        scores.ranks, scores.coverage = ranks, cov
        scores.calibration_samples, scores.num_calibration = n_cal_s, n_cal
    else:
        metrics["coverage"] = None
    if cfg.get("importance_sampling"):
        metrics["importance"] = importance_metrics(
            posterior, problem, y_obs, references, cfg, calibration
        )
    metrics["per_observation"] = {k: v for k, v in per.items() if v}
    metrics["num_observations"] = n_obs
    metrics["num_samples"] = n_samples
    return scores


def evaluate_posterior(
    posterior: Posterior,
    problem: Problem,
    cfg: Mapping[str, Any],
    held_out: tuple[Tensor, Tensor] | None = None,
) -> dict[str, Any]:
    """The metrics of :func:`score_posterior`."""
    return score_posterior(posterior, problem, cfg, held_out).metrics


def importance_metrics(
    posterior: Posterior,
    problem: Problem,
    y_obs: Tensor,
    references: Sequence[Tensor | None],
    cfg: Mapping[str, Any],
    calibration: tuple[Tensor, Tensor] | None,
) -> dict[str, Any]:
    """The flow as an importance-sampling proposal, scored like the flow itself.

    Reported beside the flow's own metrics (``metrics["importance"]``), never instead;
    ``{"skipped": reason}`` where the flow has no density or the problem no likelihood.
    """
    seed, n_samples = int(cfg.get("seed", 1234)), int(cfg["num_samples"])
    oversampling = int(cfg["importance_sampling"])

    if not posterior.has_log_prob:
        return {"skipped": f"model kind {posterior.model.kind!r} has no tractable density"}
    if not problem.has_likelihood:
        return {"skipped": f"problem {problem.name!r} has no tractable likelihood"}
    isp = ImportanceSampledPosterior(
        posterior, problem.importance_log_likelihood, problem.log_prior, oversampling
    )
    g = torch.Generator().manual_seed(seed + 4242)
    t0 = time.perf_counter()
    res = isp.sample_with_diagnostics(y_obs, n_samples, generator=g)
    seconds = time.perf_counter() - t0
    per: dict[str, list[float]] = {"c2st": [], "w1": [], "mmd": [], "mean_error": []}
    for i, ref in enumerate(references):
        if ref is not None:
            for k, v in reference_metrics(ref, res.samples[i], cfg, seed + i).items():
                per[k].append(v)
    out: dict[str, Any] = {k: float(np.mean(v)) if v else None for k, v in per.items()}
    out.update(
        oversampling=oversampling,
        efficiency=float(res.efficiency.mean()),
        efficiency_min=float(res.efficiency.min()),
        ess_min=float(res.ess.min()),
        sampling_seconds_per_10k=seconds / (len(y_obs) * n_samples) * 1e4,
        per_observation={**per, "efficiency": res.efficiency.tolist()},
    )
    if calibration is not None:
        x_cal, y_cal = calibration
        cal = isp.sample(y_cal, int(cfg.get("calibration_samples", 200)), generator=g).numpy()
        cov = expected_coverage(cal, x_cal.numpy())
        out["coverage"] = cov["coverage_95"]
        out["coverage_joint"] = cov["coverage_95_joint"]
    return out


def score_against_reference(
    posterior: Posterior,
    y_obs: Tensor,
    reference: Sequence[Tensor] | ReferenceSampler,
    cfg: Mapping[str, Any],
    x_true: Tensor | None = None,
) -> dict[str, Any]:
    """Distances to reference posteriors at observations ``y_obs`` ``(n_obs, dim_y)``.

    ``reference`` is one tensor ``(n_ref, dim_x)`` per observation, or a sampler
    ``reference(y, n, generator)`` drawing ``cfg["num_samples"]`` exact samples for one
    observation. With the true parameters ``x_true`` ``(n_obs, dim_x)`` (``y_obs`` simulated
    from them) the error of the posterior mean against the truth and the coverage of 95%
    credible intervals are added.
    """
    seed, n_samples = int(cfg.get("seed", 1234)), int(cfg["num_samples"])
    g = torch.Generator().manual_seed(seed)
    samples = posterior.sample(y_obs, n_samples, generator=g)
    per: dict[str, list[float]] = {"c2st": [], "w1": [], "mmd": [], "mean_error": []}
    for i in range(y_obs.shape[0]):
        if callable(reference):
            ref = reference(y_obs[i], n_samples, torch.Generator().manual_seed(seed + 1 + i))
            ref = torch.as_tensor(ref, dtype=torch.float32)
        else:
            ref = reference[i]
        for k, v in reference_metrics(ref, samples[i], cfg, seed + i).items():
            per[k].append(v)
    metrics: dict[str, Any] = {k: float(np.mean(v)) if v else None for k, v in per.items()}
    if x_true is not None:
        err = (samples.mean(1) - x_true).norm(dim=-1)
        per["mean_error_truth"] = err.tolist()
        metrics["mean_error_truth"] = float(err.mean())
        cov = expected_coverage(samples.numpy(), x_true.numpy())
        metrics["coverage"] = cov["coverage_95"]
        metrics["coverage_joint"] = cov["coverage_95_joint"]
    metrics["per_observation"] = {k: v for k, v in per.items() if v}
    metrics["num_observations"] = int(y_obs.shape[0])
    metrics["num_samples"] = n_samples
    return metrics
