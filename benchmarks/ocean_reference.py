"""Ocean-acoustic importance sampling against a reference from the exact modal sum.

The ocean benchmark (``benchmarks/ocean.py``) scores the flow and the flow with importance
sampling (IS; Dax et al. 2023) against a grid posterior whose likelihood interpolates a
tabulated field (:class:`vinaflow.problems.grid_posterior.FieldLattice`), and the IS weights
use the same tabulation, so a tabulation error cannot show there. This benchmark:

1. **Reference from the modal sum.** For held-out observations, the grid posterior is
   rebuilt with the normal-mode field evaluated at every cell centre
   (``grid_posterior(y, likelihood="exact")``; Jensen et al., Computational Ocean
   Acoustics, ch. 5), on a ladder of refinements (``resolution`` 1, 0.5, 0.25 nats between
   neighbouring cells, ``min_effective_cells`` 250, 500, 1000) until the posterior mean
   moves by less than ``TOL_MEAN`` posterior standard deviations and the standard deviation
   by less than ``TOL_STD`` (relative) between rungs. Every grid's ``frontier_mass`` (edge
   density relative to the peak) is recorded and bounded by ``FRONTIER_BOUND``.
2. **Three numbers, separately:** the flow's C2ST, the IS posterior's C2ST (weights from the
   tabulated likelihood, as in the library; and with the exact likelihood) against that
   reference, and the tabulation error: the log-likelihood difference between lattice and
   modal sum over the cells that carry the mass and over the whole prior box, and the
   moments and C2ST of the tabulated grid posterior against the exact one.
3. **Coverage study.** On ``--coverage-draws`` prior draws (>= 500 in the full run), the
   coverage of 95% equal-tailed marginal credible intervals, each with its Clopper-Pearson
   interval (:func:`vinaflow.evaluation.intervals.binomial_interval`), for: the grid
   posterior's exact intervals (a check of the noise model and of the reference itself),
   the same grid with 200 samples (the finite-sample quantile estimator that the pipeline
   uses), the flow, IS with 200 resampled draws from 2000 proposals (the pipeline's
   setting), IS with weighted quantiles of those 2000 proposals (no resampling), and IS
   with 1000 draws from 10000 proposals.

The flow is trained as ``benchmarks/ocean.py`` trains its ``nll-cinn-noise-aug``
configuration (the same configuration dict and pipeline), with a shorter budget.

Run: ``python -m benchmarks.ocean_reference [--quick]``; prints a table and writes
``benchmarks/results/ocean_reference.json`` (``ocean_reference_quick.json`` with
``--quick``: 20,000 simulations, 30 s of training, 1 reference observation, 100 coverage
draws, about 2 minutes of CPU). The full run: 100,000 simulations, 240 s of training
(``benchmarks/ocean.py``: 600 s), 600 coverage draws (IS with 10000 proposals on the first
300), the 200 calibration draws of ``benchmarks/ocean.py``, and 8 reference observations
(about 20 minutes on one core). The results file is rewritten after every phase
(``"complete": false`` until the end).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from benchmarks.ocean import CONFIGS
from vinaflow.atomic import atomic_write_json
from vinaflow.config import deep_merge, resolve_config
from vinaflow.evaluation.calibration import expected_coverage
from vinaflow.evaluation.intervals import binomial_interval, format_interval, seed_interval
from vinaflow.evaluation.metrics import c2st
from vinaflow.experiments.pipeline import environment, run
from vinaflow.models.importance import ImportanceSampledPosterior
from vinaflow.models.posterior import Posterior
from vinaflow.problems.grid_posterior import GridPosterior
from vinaflow.problems.ocean_acoustics import FRONTIER_BOUND, OceanAcousticsProblem
from vinaflow.studies.ocean import OCEAN_BASE

RESULTS = Path(__file__).parent / "results"
CONFIG = "nll-cinn-noise-aug"

#: Refinement ladder of the exact grid posterior; rung 1 is GridPosterior's default.
LEVELS: list[dict[str, float]] = [
    {"resolution": 1.0, "min_effective_cells": 250.0},
    {"resolution": 0.5, "min_effective_cells": 500.0},
    {"resolution": 0.25, "min_effective_cells": 1000.0},
]
TOL_MEAN = 0.01  # largest shift of the posterior mean between rungs, in posterior sds
TOL_STD = 0.005  # largest relative change of the posterior sd between rungs
MASS = 1.0 - 1e-6  # "cells that carry the mass": the heaviest cells holding this fraction
N_SAMPLES = 1000  # posterior draws per C2ST
OVERSAMPLING = 10  # IS proposals per returned draw, as in benchmarks/ocean.py
CAL_SAMPLES = 200  # draws per calibration observation, as in benchmarks/ocean.py


# ---------------------------------------------------------------------------- training


def train_flow(seconds: float, n_sims: int, seed: int) -> tuple[Posterior, dict[str, Any]]:
    """The ``nll-cinn-noise-aug`` flow of ``benchmarks/ocean.py``, with its own evaluation
    cut to one observation (this benchmark does the scoring)."""
    cfg = deep_merge(OCEAN_BASE, CONFIGS[CONFIG])
    cfg["problem"]["num_simulations"] = n_sims
    cfg["training"].update(max_seconds=seconds, steps=10**7, progress=False, seed=seed)
    cfg["evaluation"].update(
        num_observations=1, num_calibration=0, importance_sampling=0, c2st=False
    )
    res = run(resolve_config(cfg), progress=False)
    info = {
        "config": CONFIG,
        "train_seconds": res.metrics["train_seconds"],
        "train_steps": res.metrics["train_steps"],
        "resolved_config": res.config,
    }
    return res.posterior, info


# ---------------------------------------------------------------------------- reference


def _moments(post: GridPosterior) -> tuple[np.ndarray, np.ndarray]:
    return post.mean.numpy(), post.std.numpy()


def refine_exact(
    problem: OceanAcousticsProblem, y: torch.Tensor, min_rungs: int
) -> tuple[GridPosterior, list[dict[str, Any]], bool]:
    """Exact-modal-sum grid posteriors up the ladder until the moments stop changing
    (at least ``min_rungs`` rungs); returns the finest grid, the rungs and convergence."""
    rungs: list[dict[str, Any]] = []
    prev: tuple[np.ndarray, np.ndarray] | None = None
    converged = False
    post: GridPosterior | None = None
    for k, level in enumerate(LEVELS):
        t0 = time.perf_counter()
        post = problem.grid_posterior(y, likelihood="exact", **level)
        m, s = _moments(post)
        row: dict[str, Any] = {**level, **post.diagnostics(), "mean": m.tolist(), "std": s.tolist()}
        row["seconds"] = time.perf_counter() - t0
        if prev is not None:
            row["mean_shift_sd"] = float(np.max(np.abs(m - prev[0]) / s))
            row["std_change_rel"] = float(np.max(np.abs(s / prev[1] - 1.0)))
            converged = row["mean_shift_sd"] < TOL_MEAN and row["std_change_rel"] < TOL_STD
        rungs.append(row)
        prev = (m, s)
        if converged and k + 1 >= min_rungs:
            break
    assert post is not None
    return post, rungs, converged


def tabulation_error(
    problem: OceanAcousticsProblem, y: torch.Tensor, exact: GridPosterior, tab: GridPosterior
) -> dict[str, float]:
    """Lattice vs modal-sum log-likelihood on the exact grid's mass-carrying leaves and on
    the base grid (the whole prior box), and the two grid posteriors' moment differences.

    Both likelihoods drop the same constant, so the raw difference is compared; its spread
    (max - min) over the mass is what can move the posterior.
    """
    qo = problem.to_complex(y.double())
    order = np.argsort(exact.weights)[::-1]
    keep = order[: int(np.searchsorted(np.cumsum(exact.weights[order]), MASS)) + 1]
    d_mass = problem._tabulated_loglik(qo)(exact.centres[keep]) - exact.leaf_loglik[keep]
    base = exact.stages[0]
    pts = base.centres(base.evaluated)  # the cached base grid: no new forward evaluations
    d_box = problem._tabulated_loglik(qo)(pts) - problem._exact_loglik(qo)(pts)
    me, se = _moments(exact)
    mt, st = _moments(tab)
    return {
        "mass_cells": int(keep.size),
        "max_abs_dloglik_mass": float(np.max(np.abs(d_mass))),
        "span_dloglik_mass": float(np.ptp(d_mass)),
        "max_abs_dloglik_box": float(np.max(np.abs(d_box))),
        "mean_shift_sd": float(np.max(np.abs(mt - me) / se)),
        "std_change_rel": float(np.max(np.abs(st / se - 1.0))),
    }


def score_observation(
    problem: OceanAcousticsProblem,
    posterior: Posterior,
    x: torch.Tensor,
    y: torch.Tensor,
    seed: int,
    min_rungs: int,
) -> dict[str, Any]:
    """Everything measured on one held-out observation (C2STs use seed ``seed``)."""
    t0 = time.perf_counter()
    exact, rungs, converged = refine_exact(problem, y, min_rungs)
    tab = problem.grid_posterior(y)  # the reference benchmarks/ocean.py scores against
    g = torch.Generator().manual_seed(seed)
    ref = exact.sample(N_SAMPLES, g).float().numpy()
    ref_tab = tab.sample(N_SAMPLES, g).float().numpy()
    flow = posterior.sample(y, N_SAMPLES, generator=g)[0].numpy()
    isp_tab = ImportanceSampledPosterior(
        posterior, problem.importance_log_likelihood, problem.log_prior, OVERSAMPLING
    )
    isp_exact = ImportanceSampledPosterior(
        posterior, problem.log_likelihood, problem.log_prior, OVERSAMPLING
    )
    is_tab = isp_tab.sample_with_diagnostics(y, N_SAMPLES, generator=g)
    is_exact = isp_exact.sample_with_diagnostics(y, N_SAMPLES, generator=g)
    row: dict[str, Any] = {
        "x_true": x.tolist(),
        "converged": converged,
        "rungs": rungs,
        "reference": exact.diagnostics(),
        "tabulated_reference": tab.diagnostics(),
        "tabulation": tabulation_error(problem, y, exact, tab),
        "c2st_tabulated_vs_exact": c2st(ref, ref_tab, seed=seed),
        "c2st_flow": c2st(ref, flow, seed=seed),
        "c2st_flow_vs_tabulated": c2st(ref_tab, flow, seed=seed),
        "c2st_is": c2st(ref, is_tab.samples[0].numpy(), seed=seed),
        "c2st_is_vs_tabulated": c2st(ref_tab, is_tab.samples[0].numpy(), seed=seed),
        "c2st_is_exact_weights": c2st(ref, is_exact.samples[0].numpy(), seed=seed),
        "is_efficiency": float(is_tab.efficiency[0]),
        "seconds": 0.0,
    }
    row["seconds"] = time.perf_counter() - t0
    return row


# ---------------------------------------------------------------------------- coverage


def _quantile_hits(samples: np.ndarray, truths: np.ndarray, level: float = 0.95) -> np.ndarray:
    """``(n_obs, dim)`` bool: truth inside the equal-tailed sample-quantile interval, the
    rule of :func:`vinaflow.evaluation.calibration.expected_coverage` (checked below)."""
    q = np.quantile(samples, [(1 - level) / 2, (1 + level) / 2], axis=1)
    return (q[0] <= truths) & (truths <= q[1])


def _weighted_hits(
    x: np.ndarray, logw: np.ndarray, truth: np.ndarray, level: float = 0.95
) -> np.ndarray:
    """Truth inside the equal-tailed interval of the weighted proposals ``x`` ``(m, dim)``."""
    w = np.exp(logw - logw.max())
    w /= w.sum()
    out = np.zeros(x.shape[1], dtype=bool)
    for a in range(x.shape[1]):
        o = np.argsort(x[:, a])
        c = np.cumsum(w[o])
        lo, hi = np.interp([(1 - level) / 2, (1 + level) / 2], c, x[o, a])
        out[a] = lo <= truth[a] <= hi
    return out


def _coverage_summary(hits: np.ndarray) -> dict[str, Any]:
    """Binomial intervals per parameter (independent draws) and pooled over both (the two
    parameters of one draw are not independent: the pooled interval is indicative)."""
    n = int(hits.shape[0])
    out: dict[str, Any] = {
        "per_parameter": [binomial_interval(int(hits[:, a].sum()), n) for a in range(2)],
        "pooled": binomial_interval(int(hits.sum()), hits.size),
        "both": binomial_interval(int(hits.all(axis=1).sum()), n),
    }
    out["coverage"] = out["pooled"]["mean"]
    return out


def coverage_study(
    problem: OceanAcousticsProblem, posterior: Posterior, n_draws: int, seed: int, big: int
) -> dict[str, Any]:
    """Coverage of 95% marginal intervals on ``n_draws`` prior draws (see the module doc);
    IS with 10000 proposals on the first ``big`` draws (none if 0).

    The draws are generated as :func:`vinaflow.evaluation.posterior.score_posterior`
    generates its calibration draws (prior, then simulation, from one generator seeded
    with ``seed``), so seed 1234 + 99991 gives the draws behind ``benchmarks/ocean.py``'s
    coverage."""
    t0 = time.perf_counter()
    g = torch.Generator().manual_seed(seed)
    x = problem.sample_prior(n_draws, g)
    y = problem.simulate_checked(x, g)
    xt = x.double().numpy()
    grid_exact, grid_s = np.zeros((n_draws, 2), bool), np.zeros((n_draws, CAL_SAMPLES, 2))
    for i in range(n_draws):
        post = problem.grid_posterior(y[i])
        ci = post.credible_interval(0.95).numpy()
        grid_exact[i] = (ci[:, 0] <= xt[i]) & (xt[i] <= ci[:, 1])
        grid_s[i] = post.sample(CAL_SAMPLES, g).numpy()
    flow = posterior.sample(y, CAL_SAMPLES, generator=g).numpy()
    isp = ImportanceSampledPosterior(
        posterior, problem.importance_log_likelihood, problem.log_prior, OVERSAMPLING
    )
    res = isp.sample_with_diagnostics(y, CAL_SAMPLES, generator=g)
    is_s = res.samples.numpy()
    # The same 2000 proposals' weights, without resampling: weighted quantiles.
    m = CAL_SAMPLES * OVERSAMPLING
    weighted = np.zeros((n_draws, 2), bool)
    props = posterior.sample(y, m, generator=g)
    for i in range(n_draws):
        xi = props[i]
        lp = problem.log_prior(xi).double()
        logw = torch.full((m,), -math.inf, dtype=torch.float64)
        inside = torch.isfinite(lp)
        like = problem.importance_log_likelihood(xi[inside], y[i]).double()
        logw[inside] = like - posterior.log_prob(xi[inside], y[i]).double()
        weighted[i] = _weighted_hits(xi.double().numpy(), logw.numpy(), xt[i])
    hits = {
        "grid_exact_intervals": grid_exact,
        "grid_200_samples": _quantile_hits(grid_s, xt),
        "flow_200_samples": _quantile_hits(flow, xt),
        "is_200_of_2000": _quantile_hits(is_s, xt),
        "is_weighted_2000": weighted,
    }
    ess = res.ess.numpy()
    big_hits = None
    if big > 0:
        big_res = ImportanceSampledPosterior(
            posterior, problem.importance_log_likelihood, problem.log_prior, OVERSAMPLING
        ).sample_with_diagnostics(y[:big], 5 * CAL_SAMPLES, generator=g)
        big_hits = _quantile_hits(big_res.samples.numpy(), xt[:big])
    out: dict[str, Any] = {
        "draws": n_draws,
        "seed": seed,
        "estimators": {k: _coverage_summary(v) for k, v in hits.items()},
        "big_draws": int(min(big, n_draws)),
        # the pipeline's own rule on the same samples, for the record
        "pipeline_coverage_is_200_of_2000": expected_coverage(is_s, xt)["coverage_95"],
        "pipeline_coverage_flow_200": expected_coverage(flow, xt)["coverage_95"],
        "is_ess": {
            "mean": float(ess.mean()),
            "min": float(ess.min()),
            "quantiles_10_50_90": np.quantile(ess, [0.1, 0.5, 0.9]).tolist(),
        },
    }
    # Where IS misses: by ESS tercile, and paired against the exact grid intervals.
    tercile = np.digitize(ess, np.quantile(ess, [1 / 3, 2 / 3]))
    h = hits["is_200_of_2000"]
    out["is_200_by_ess_tercile"] = [
        {
            "ess_range": [float(ess[tercile == t].min()), float(ess[tercile == t].max())],
            **binomial_interval(int(h[tercile == t].sum()), int(h[tercile == t].size)),
        }
        for t in range(3)
        if (tercile == t).any()
    ]
    out["paired_is_200_vs_grid"] = {
        "is_miss_grid_hit": int((~h & grid_exact).sum()),
        "is_hit_grid_miss": int((h & ~grid_exact).sum()),
    }
    if big_hits is not None:
        # the same first draws with 200-of-2000 IS and the grid, for a like-for-like row
        out["estimators"]["is_1000_of_10000"] = _coverage_summary(big_hits)
        out["estimators"]["is_200_of_2000_first_big_draws"] = _coverage_summary(h[:big])
        out["estimators"]["grid_exact_first_big_draws"] = _coverage_summary(grid_exact[:big])
        hits["is_1000_of_10000"] = big_hits
    out["per_draw"] = {
        "x_true": xt.tolist(),
        "is_ess": ess.tolist(),
        **{k: v.astype(int).tolist() for k, v in hits.items()},
    }
    out["seconds"] = time.perf_counter() - t0
    return out


# ---------------------------------------------------------------------------- report


def _f(v: Any, d: int = 3) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.{d}g}" if (v != 0 and abs(v) < 1e-2) else f"{v:.{d}f}"
    return str(v)


def summarise(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and Student-t interval over the observations (one training run)."""
    keys = [
        "c2st_flow",
        "c2st_flow_vs_tabulated",
        "c2st_is",
        "c2st_is_vs_tabulated",
        "c2st_is_exact_weights",
        "c2st_tabulated_vs_exact",
        "is_efficiency",
    ]
    out = {k: seed_interval([r[k] for r in rows]) for k in keys}
    for k in ("max_abs_dloglik_mass", "span_dloglik_mass", "max_abs_dloglik_box"):
        out[k + "_max"] = max(r["tabulation"][k] for r in rows)
    out["tabulation_mean_shift_sd_max"] = max(r["tabulation"]["mean_shift_sd"] for r in rows)
    out["tabulation_std_change_rel_max"] = max(r["tabulation"]["std_change_rel"] for r in rows)
    out["frontier_mass_max"] = max(max(g["frontier_mass"] for g in r["rungs"]) for r in rows)
    out["tabulated_frontier_mass_max"] = max(
        r["tabulated_reference"]["frontier_mass"] for r in rows
    )
    out["all_converged"] = all(r["converged"] for r in rows)
    return out


def print_report(summary: dict[str, Any], rows: list[dict[str, Any]]) -> None:
    print("\nReference ladder (exact modal sum): rung resolution, evaluations, mean shift / sd,")
    print("relative sd change, frontier_mass")
    for i, r in enumerate(rows):
        rungs = "; ".join(
            f"{g['resolution']:g}: {g['n_evaluations']} ev, "
            f"{_f(g.get('mean_shift_sd'))}, {_f(g.get('std_change_rel'))}, "
            f"{g['frontier_mass']:.1e}"
            for g in r["rungs"]
        )
        print(f"  obs {i}: {rungs}")
    print("\n| quantity | mean [95% interval over observations] |\n|---|---|")
    labels = {
        "c2st_flow": "flow C2ST vs exact-modal-sum reference",
        "c2st_flow_vs_tabulated": "flow C2ST vs tabulated reference",
        "c2st_is": "IS C2ST vs exact-modal-sum reference",
        "c2st_is_vs_tabulated": "IS C2ST vs tabulated reference",
        "c2st_is_exact_weights": "IS (modal-sum weights) C2ST vs exact reference",
        "c2st_tabulated_vs_exact": "tabulated vs exact grid posterior C2ST",
        "is_efficiency": "IS efficiency",
    }
    for k, label in labels.items():
        print(f"| {label} | {format_interval(summary[k])} |")
    print(
        f"\ntabulation: max |dlog L| over the mass {_f(summary['max_abs_dloglik_mass_max'])}, "
        f"spread {_f(summary['span_dloglik_mass_max'])}, anywhere "
        f"{_f(summary['max_abs_dloglik_box_max'])} nats; moments "
        f"{_f(summary['tabulation_mean_shift_sd_max'])} sd (mean), "
        f"{_f(summary['tabulation_std_change_rel_max'])} (sd, relative); frontier_mass max "
        f"{summary['frontier_mass_max']:.1e} (bound {FRONTIER_BOUND:g})"
    )


def print_coverage(cov: dict[str, Any]) -> None:
    print(f"\ncoverage of 95% marginal intervals, {cov['draws']} prior draws (Clopper-Pearson):")
    print("| estimator | depth | speed | pooled |\n|---|---|---|---|")
    for k, v in cov["estimators"].items():
        cells = [format_interval(s) for s in (*v["per_parameter"], v["pooled"])]
        print(f"| {k} | " + " | ".join(cells) + " |")
    print(
        f"IS ESS (2000 proposals): mean {cov['is_ess']['mean']:.0f}, min {cov['is_ess']['min']:.0f}"
        f"; paired with the grid: IS misses where the grid covers "
        f"{cov['paired_is_200_vs_grid']['is_miss_grid_hit']}, the reverse "
        f"{cov['paired_is_200_vs_grid']['is_hit_grid_miss']}",
        flush=True,
    )


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="under 3 minutes (see the docstring)")
    ap.add_argument("--seconds", type=float, default=None, help="training budget")
    ap.add_argument("--simulations", type=int, default=None)
    ap.add_argument("--observations", type=int, default=None, help="reference observations")
    ap.add_argument("--coverage-draws", type=int, default=None)
    ap.add_argument("--seed", type=int, default=0, help="training seed")
    ap.add_argument("--eval-seed", type=int, default=2024, help="observations and C2ST")
    ap.add_argument("--coverage-seed", type=int, default=777)
    args = ap.parse_args(argv)
    torch.set_num_threads(1)
    t_start = time.perf_counter()
    seconds = args.seconds or (30.0 if args.quick else 240.0)
    n_sims = args.simulations or (20_000 if args.quick else 100_000)
    n_obs = args.observations or (1 if args.quick else 8)
    n_cov = args.coverage_draws or (100 if args.quick else 600)
    # every observation climbs until converged; the first also climbs one rung past it
    min_rungs_first = 2 if args.quick else len(LEVELS)

    big = 0 if args.quick else min(300, n_cov)
    stem = "ocean_reference_quick" if args.quick else "ocean_reference"
    out = RESULTS / f"{stem}.json"
    result: dict[str, Any] = {
        "settings": {
            "quick": args.quick,
            "snr_db": float(OCEAN_BASE["problem"]["snr_db"]),
            "train_seconds_budget": seconds,
            "simulations": n_sims,
            "observations": n_obs,
            "coverage_draws": n_cov,
            "coverage_draws_10000_proposals": big,
            "levels": LEVELS,
            "tol_mean_sd": TOL_MEAN,
            "tol_std_rel": TOL_STD,
            "mass_fraction": MASS,
            "frontier_bound": FRONTIER_BOUND,
            "num_samples": N_SAMPLES,
            "oversampling": OVERSAMPLING,
            "calibration_samples": CAL_SAMPLES,
            "interval_over_observations": "seed_interval (Student t, ddof=1) over the "
            "observations of one training run",
            "coverage_interval": "Clopper-Pearson, binomial_interval",
        },
        "seeds": {
            "training": args.seed,
            "evaluation": args.eval_seed,
            "coverage": args.coverage_seed,
            "pipeline_calibration": 1234 + 99991,
        },
        "complete": False,
    }

    def save() -> None:
        # written after every phase, so that an interrupted run keeps what it measured
        result["environment"] = environment()
        result["wall_seconds"] = time.perf_counter() - t_start
        atomic_write_json(out, result)

    posterior, train_info = train_flow(seconds, n_sims, args.seed)
    result["training"] = train_info
    print(f"trained {train_info['train_steps']} steps in {train_info['train_seconds']:.0f} s")
    problem = OceanAcousticsProblem(snr_db=float(OCEAN_BASE["problem"]["snr_db"]))
    cov = coverage_study(problem, posterior, n_cov, args.coverage_seed, big=big)
    result["coverage"] = cov
    save()
    print_coverage(cov)
    if not args.quick:
        # the very draws behind benchmarks/ocean.py's coverage (its evaluation seed 1234)
        result["coverage_pipeline_draws"] = coverage_study(
            problem, posterior, 200, 1234 + 99991, big=0
        )
        save()
        print("\nthe 200 calibration draws of benchmarks/ocean.py:")
        print_coverage(result["coverage_pipeline_draws"])
    g = torch.Generator().manual_seed(args.eval_seed)
    x_obs = problem.sample_prior(n_obs, g)
    y_obs = problem.simulate_checked(x_obs, g)
    rows: list[dict[str, Any]] = []
    for i in range(n_obs):
        row = score_observation(
            problem,
            posterior,
            x_obs[i],
            y_obs[i],
            args.eval_seed + 1 + i,
            min_rungs_first if i == 0 else 2,
        )
        rows.append(row)
        result["per_observation"] = rows
        result["summary"] = summarise(rows)
        save()
        print(
            f"obs {i}: flow {row['c2st_flow']:.3f} IS {row['c2st_is']:.3f} "
            f"tab-vs-exact {row['c2st_tabulated_vs_exact']:.3f} max|dlogL| "
            f"{row['tabulation']['max_abs_dloglik_mass']:.2g} ({row['seconds']:.0f} s)",
            flush=True,
        )
    print_report(result["summary"], rows)
    result["complete"] = True
    save()
    print(f"\nwrote {out} ({time.perf_counter() - t_start:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
