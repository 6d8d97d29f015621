"""``vinaflow run``: simulate, train, evaluate against the ground truth, write everything.

Output folder layout::

    DIR/config.yaml        resolved config (every default filled in)
    DIR/model.safetensors  weights      DIR/model.json  model config + format version
    DIR/checkpoint.pt      trainer state for --resume (weights-only torch file)
    DIR/metrics.json       metrics, per-observation lists, environment, seed
    DIR/history.json       training curves
    DIR/report.md          human-readable summary with the plots
    DIR/plots/*.png
"""

from __future__ import annotations

import platform
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from torch import Tensor
from torch.distributions import Independent, MultivariateNormal, Normal, Uniform

from vinaflow.errors import ConfigError, DataError
from vinaflow.models import AmortizedModel, Posterior, build_model
from vinaflow.objectives.losses import OBJECTIVES, CompositeObjective, Objective, PriorPenalty
from vinaflow.problems import BankProblem, Problem, make_problem
from vinaflow.training import (
    Trainer,
    TrainingConfig,
    TrainResult,
    atomic_write_json,
    atomic_write_text,
)

__all__ = [
    "RunResult",
    "check_output_dir",
    "build_objective",
    "environment",
    "evaluate_posterior",
    "peak_memory_mb",
    "prepare_data",
    "run",
]

#: Files of a run folder written through ``atomic_path`` (temporaries: ``.NAME.*``).
OUTPUT_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "model.safetensors",
    "model.json",
    "history.json",
    "metrics.json",
    "report.md",
)

#: Training settings that may change between a run and its ``--resume`` (they set how
#: long to train and what to log, not what is trained).
RESUMABLE_TRAINING_KEYS = (
    "steps",
    "max_seconds",
    "progress",
    "checkpoint_every",
    "val_every",
    "patience",
    "threads",
)


@dataclass
class Dataset:
    x: Tensor
    y: Tensor
    x_val: Tensor
    y_val: Tensor
    x_test: Tensor | None = None  # held-out bank rows for problems that cannot simulate
    y_test: Tensor | None = None
    y_clean: Tensor | None = None  # noise-free training observations (noise augmentation)


@dataclass
class RunResult:
    config: dict[str, Any]
    model: AmortizedModel
    posterior: Posterior
    problem: Problem
    train: TrainResult
    metrics: dict[str, Any]


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write into a folder that holds a finished run (``metrics.json``)."""
    if (out / "metrics.json").exists() and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a finished run; use --overwrite to replace it or another --out"
        )


def environment() -> dict[str, str]:
    """Library versions recorded with every run."""
    import numpy
    import scipy
    import sklearn

    from vinaflow import __version__

    return {
        "vinaflow": __version__,
        "python": sys.version.split()[0],
        "torch": str(torch.__version__),
        "numpy": numpy.__version__,
        "scipy": scipy.__version__,
        "scikit-learn": sklearn.__version__,
        "platform": platform.platform(),
        "threads": str(torch.get_num_threads()),
    }


def peak_memory_mb() -> float | None:
    """Peak resident memory of this process so far in MiB (``None`` where unknown).

    ``ru_maxrss`` is a high-water mark of the whole process: for several runs in one
    process it is the largest so far, not each run's own.
    """
    try:
        import resource
    except ImportError:  # Windows
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    # Linux reports KiB, macOS bytes.
    return round(peak / (2**20 if sys.platform == "darwin" else 2**10), 1)


def _check_resumable(out_dir: Path, cfg: Mapping[str, Any]) -> None:
    """Refuse ``--resume`` with a config that trains something else than the checkpoint."""
    path = out_dir / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return  # nothing to compare with; the checkpoint's own checks still apply
    if not isinstance(old, Mapping):
        return
    changed = []
    for section in ("problem", "model", "objective", "training"):
        a, b = old.get(section) or {}, cfg.get(section) or {}
        for key in sorted(set(a) | set(b)):
            if section == "training" and key in RESUMABLE_TRAINING_KEYS:
                continue
            if a.get(key) != b.get(key):
                changed.append(f"{section}.{key}: {a.get(key)!r} -> {b.get(key)!r}")
    if changed:
        raise ConfigError(
            f"--resume: the config differs from the one {out_dir} was started with "
            f"({'; '.join(changed[:5])}); resume with the original settings or use a new --out"
        )


def _remove_temporaries(out_dir: Path) -> None:
    """Delete half-written temporaries of a killed run (a SIGKILL skips their cleanup)."""
    for name in OUTPUT_FILES:
        for tmp in out_dir.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)


def _split(x: Tensor, y: Tensor, n_val: int) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    return x[n_val:], y[n_val:], x[:n_val], y[:n_val]


def prepare_data(
    problem: Problem, problem_cfg: Mapping[str, Any], seed: int, n_test: int = 0
) -> Dataset:
    """Training and validation simulations (or bank rows), reproducible from ``seed``."""
    clean: Tensor | None = None
    if isinstance(problem, BankProblem):
        x, y, clean = problem.bank.x, problem.bank.y, problem.bank.y_clean
        n = min(len(x), problem_cfg.get("num_simulations") or len(x))
        g = torch.Generator().manual_seed(seed)
        perm = torch.randperm(len(x), generator=g)
        x, y = x[perm], y[perm]
        clean = None if clean is None else clean[perm]
        need_test = n_test if problem.source is None else 0
        if n - need_test < 20:
            raise DataError(f"bank has {len(x)} rows: too few for training and {need_test} tests")
        x_test, y_test = (x[n - need_test : n], y[n - need_test : n]) if need_test else (None, None)
        x, y = x[: n - need_test], y[: n - need_test]
        clean = None if clean is None else clean[: n - need_test]
    else:
        n = int(problem_cfg["num_simulations"])
        g = torch.Generator().manual_seed(seed)
        x = problem.sample_prior(n, g)
        y, clean = problem.simulate_with_clean_checked(x, g)
        x_test = y_test = None
    n_val = int(problem_cfg.get("num_validation") or min(max(len(x) // 10, 1), 2000))
    if n_val >= len(x):
        raise ConfigError(f"problem.num_validation ({n_val}) must be below the data size {len(x)}")
    xt, yt, xv, yv = _split(x, y, n_val)
    return Dataset(xt, yt, xv, yv, x_test, y_test, None if clean is None else clean[n_val:])


def noise_augmentation_inputs(
    problem: Problem, data: Dataset, model: AmortizedModel
) -> tuple[Tensor, Tensor]:
    """Standardised noise-free training observations and noise scales for the trainer."""
    std = problem.observation_noise_std
    if std is None or data.y_clean is None:
        why = (
            "a bank without 'y_clean' (re-create it with `vinaflow simulate`)"
            if isinstance(problem, BankProblem) and problem.source is not None
            else f"problem {problem.name!r}, whose noise is not additive Gaussian"
        )
        raise ConfigError(f"training.noise_augmentation is not available for {why}")
    std = torch.as_tensor(std, dtype=torch.float32)
    return model.y_norm(data.y_clean.float()), std / model.y_norm.std


def _prior_parameters(problem: Problem, kind: str) -> dict[str, list[float]]:
    prior = problem.prior
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if kind == "gaussian":
        if isinstance(base, Normal):
            return {"loc": base.loc.tolist(), "scale": base.scale.tolist()}
        if isinstance(base, MultivariateNormal):
            return {"loc": base.loc.tolist(), "scale": base.variance.sqrt().tolist()}
    if kind == "uniform" and isinstance(base, Uniform):
        return {"low": base.low.tolist(), "high": base.high.tolist()}
    return {}


def _single_objective(cfg: Mapping[str, Any], model: AmortizedModel) -> Objective:
    params = {
        k: v
        for k, v in cfg.items()
        if k not in ("name", "weight", "terms") and not k.startswith("prior")
    }
    cls = OBJECTIVES[cfg["name"]]
    if cfg["name"] == "nll":
        if params:
            raise ConfigError(f"objective nll takes no parameters, got {sorted(params)}")
        return cls()
    if cfg["name"] == "fdiv":
        allowed = {
            "divergence",
            "direction",
            "critic_hidden",
            "critic_layers",
            "gradient_penalty",
            "spectral_norm",
            "nonsaturating",
            "whiten",
            "y_weight",
        }
    elif cfg["name"] == "sinkhorn":
        allowed = {"blur", "direction", "y_weight", "whiten", "scaling"}
    else:
        allowed = {"direction", "widths", "y_weight", "whiten"}
    extra = set(params) - allowed
    if extra:
        raise ConfigError(
            f"objective {cfg['name']!r} does not take {sorted(extra)}; allowed: {sorted(allowed)}"
        )
    return cls(model, **params)


def build_objective(cfg: Mapping[str, Any], model: AmortizedModel, problem: Problem) -> Objective:
    """The objective of a config: main term, extra ``terms`` and the prior penalty."""
    terms: list[tuple[Objective, float]] = [(_single_objective(cfg, model), cfg.get("weight", 1.0))]
    for t in cfg.get("terms", []):
        terms.append((_single_objective(t, model), t.get("weight", 1.0)))
    kind = cfg.get("prior", "none")
    weight = cfg.get("prior_weight", 0.0)
    if kind != "none" and weight > 0:
        keys = ("loc", "scale") if kind == "gaussian" else ("low", "high")
        params = _prior_parameters(problem, kind)
        for k in keys:
            if cfg.get(f"prior_{k}") is not None:
                params[k] = cfg[f"prior_{k}"]
        if any(k not in params for k in keys):
            raise ConfigError(
                f"objective.prior={kind}: give objective.prior_{keys[0]} and "
                f"objective.prior_{keys[1]} (the problem's prior is not {kind})"
            )
        for k in keys:
            if len(params[k]) != model.dim_x:
                raise ConfigError(f"objective.prior_{k} needs {model.dim_x} values")
        terms.append((PriorPenalty(kind, **params), weight))
    elif kind == "none" and weight > 0:
        raise ConfigError("objective.prior_weight > 0 needs objective.prior: gaussian|uniform")
    return CompositeObjective(terms)


def _model_kwargs(model_cfg: Mapping[str, Any], objective: Mapping[str, Any]) -> dict[str, Any]:
    kwargs = {k: v for k, v in model_cfg.items() if k != "kind"}
    if kwargs.get("arch") == "iresnet":
        explicit = kwargs.get("explicit", "auto")
        if explicit == "auto":
            # Train through explicit maps only: sampling objectives use T^{-1}, the
            # likelihood uses T (backpropagating through fixed-point inverses is slow).
            sampling = objective["name"] != "nll" and objective.get("direction") == "backward"
            kwargs["explicit"] = "inverse" if sampling else "forward"
    else:
        for k in (
            "explicit",
            "logdet",
            "n_series_terms",
            "n_hutchinson",
            "fixed_point_tol",
            "fixed_point_max_iter",
            "lipschitz",
        ):
            kwargs.pop(k, None)
        if kwargs.get("explicit") == "auto":
            kwargs.pop("explicit")
    return kwargs


def _reference(problem: Problem, y: Tensor, n: int, seed: int) -> Tensor | None:
    if not problem.has_reference_posterior:
        return None
    g = torch.Generator().manual_seed(seed)
    return problem.reference_posterior(y, n, g)


def evaluate_posterior(
    posterior: Posterior,
    problem: Problem,
    cfg: Mapping[str, Any],
    dataset: Dataset | None = None,
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of a posterior on held-out observations ``y* = sim(x*)``, ``x*`` from the prior."""
    from vinaflow.evaluation import (
        expected_coverage,
        posterior_summary,
        sbc_ranks,
        sbc_uniformity_pvalues,
    )

    seed = int(cfg.get("seed", 1234))
    n_obs, n_samples = int(cfg["num_observations"]), int(cfg["num_samples"])
    g = torch.Generator().manual_seed(seed)
    if dataset is not None and dataset.x_test is not None:
        x_true, y_obs = dataset.x_test[:n_obs], dataset.y_test[:n_obs]
        n_obs = len(x_true)
    else:
        x_true = problem.sample_prior(n_obs, g)
        y_obs = problem.simulate_checked(x_true, g)
    t0 = time.perf_counter()
    samples = posterior.sample(y_obs, n_samples, generator=g)
    sample_seconds = time.perf_counter() - t0
    per: dict[str, list[float]] = {
        k: []
        for k in ("c2st", "w1", "mmd", "mean_error", "mean_error_truth", "resim_error", "ci_width")
    }
    references = []
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
            for k, v in _reference_metrics(ref, s, cfg, seed + i).items():
                per[k].append(v)
        y_clean = problem.simulate_noise_free(s)
        if y_clean is not None:
            per["resim_error"].append(float((y_clean - y_obs[i]).norm(dim=-1).mean()))
    metrics: dict[str, Any] = {}
    for k, v in per.items():
        metrics[k] = float(np.mean(v)) if v else None
    metrics["sampling_seconds_per_10k"] = sample_seconds / (n_obs * n_samples) * 1e4
    # Calibration on separate prior draws: SBC ranks and expected coverage.
    n_cal, n_cal_s = int(cfg.get("num_calibration", 0)), int(cfg.get("calibration_samples", 200))
    if n_cal > 0 and not (dataset is not None and dataset.x_test is not None):
        gc = torch.Generator().manual_seed(seed + 99991)
        x_cal = problem.sample_prior(n_cal, gc)
        y_cal = problem.simulate_checked(x_cal, gc)
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
        if plots_dir is not None:
            from vinaflow.evaluation.plots import plot_coverage, plot_sbc_histogram

            plot_sbc_histogram(
                ranks, n_cal_s, plots_dir / "sbc_ranks.png", names=problem.param_names
            )
            plot_coverage(
                cov["levels"],
                {"marginal": cov["coverage_marginal"], "joint": cov["coverage_joint"]},
                plots_dir / "coverage.png",
                n_obs=n_cal,
            )
    else:
        metrics["coverage"] = None
    if cfg.get("importance_sampling"):
        cal = (x_cal, y_cal) if metrics["coverage"] is not None else None
        metrics["importance"] = _importance_metrics(posterior, problem, y_obs, references, cfg, cal)
    metrics["per_observation"] = {k: v for k, v in per.items() if v}
    metrics["num_observations"] = n_obs
    metrics["num_samples"] = n_samples
    if plots_dir is not None:
        from vinaflow.evaluation.plots import plot_posterior_pairs

        for i in range(min(3, n_obs)):
            ref = references[i]
            plot_posterior_pairs(
                samples[i].numpy(),
                None if ref is None else ref.numpy(),
                truth=x_true[i].numpy(),
                names=problem.param_names,
                path=plots_dir / f"posterior_obs{i}.png",
            )
    return metrics


def _reference_metrics(ref: Tensor, s: Tensor, cfg: Mapping[str, Any], seed: int) -> dict:
    """Distances of samples ``s`` to ground-truth samples ``ref`` of one observation."""
    from vinaflow.evaluation import c2st, mmd, w1

    r, q = ref.numpy(), s.numpy()
    out = {"c2st": c2st(r, q, seed=seed)} if cfg.get("c2st", True) else {}
    out["w1"] = w1(r, q, max_samples=cfg.get("w1_samples", 1000), seed=seed)
    out["mmd"] = mmd(r, q)
    out["mean_error"] = float((s.mean(0) - ref.mean(0)).norm())
    return out


def _importance_metrics(
    posterior: Posterior,
    problem: Problem,
    y_obs: Tensor,
    references: list[Tensor | None],
    cfg: Mapping[str, Any],
    calibration: tuple[Tensor, Tensor] | None,
) -> dict[str, Any]:
    """The flow as an importance-sampling proposal, scored like the flow itself.

    Reported beside the flow's own metrics (``metrics["importance"]``), never instead.
    """
    from vinaflow.evaluation import expected_coverage
    from vinaflow.models.importance import ImportanceSampledPosterior

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
            for k, v in _reference_metrics(ref, res.samples[i], cfg, seed + i).items():
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


def run(
    config: Mapping[str, Any],
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one resolved config; writes outputs to ``out`` if given."""
    cfg = dict(config)
    out_dir = Path(out) if out is not None else None
    problem = make_problem(cfg["problem"])
    tcfg = TrainingConfig(
        **{**cfg["training"], "progress": progress and cfg["training"].get("progress", True)}
    )
    data = prepare_data(
        problem, cfg["problem"], tcfg.seed, n_test=cfg["evaluation"]["num_observations"]
    )
    model_kwargs = _model_kwargs(cfg["model"], cfg["objective"])
    model_kwargs.setdefault("seed", tcfg.seed)
    model = build_model(cfg["model"]["kind"], problem.dim_x, problem.dim_y, **model_kwargs)
    model.fit_normalization(data.x, data.y)
    objective = build_objective(cfg["objective"], model, problem)
    if out_dir is not None:
        if resume:
            _check_resumable(out_dir, cfg)
            if not (out_dir / "checkpoint.pt").is_file():
                # Killed before its first checkpoint (or never started): nothing to resume.
                print(
                    f"[vinaflow] --resume: no checkpoint in {out_dir}; training from step 0",
                    file=sys.stderr,
                )
                resume = False
        out_dir.mkdir(parents=True, exist_ok=True)
        _remove_temporaries(out_dir)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    trainer = Trainer(tcfg)
    x_s, y_s = model.x_norm(data.x), model.y_norm(data.y)
    xv_s, yv_s = model.x_norm(data.x_val), model.y_norm(data.y_val)
    noise_std = None
    if cfg["training"].get("noise_augmentation", False):
        y_s, noise_std = noise_augmentation_inputs(problem, data, model)
    result = trainer.fit(
        model,
        objective,
        x_s,
        y_s,
        xv_s,
        yv_s,
        checkpoint=None if out_dir is None else out_dir / "checkpoint.pt",
        resume=resume,
        y_noise_std=noise_std,
    )
    posterior = Posterior(model)
    plots = None
    if out_dir is not None and cfg["evaluation"].get("plots", True):
        plots = out_dir / "plots"
        plots.mkdir(exist_ok=True)
    metrics = evaluate_posterior(posterior, problem, cfg["evaluation"], data, plots)
    if cfg["evaluation"].get("certificate", True):
        from vinaflow.evaluation.certificate import certificate_for_run

        metrics["certificate"] = certificate_for_run(posterior, problem, data, cfg["evaluation"])
    metrics.update(
        train_seconds=result.train_seconds,
        train_steps=result.steps,
        stopped=result.stopped,
        retries=result.retries,
        seed=tcfg.seed,
        problem=problem.name,
        peak_memory_mb=peak_memory_mb(),
        environment=environment(),
    )
    if out_dir is not None:
        from vinaflow.evaluation.plots import plot_training_history
        from vinaflow.experiments.report import write_run_report
        from vinaflow.models.serialization import save_model

        save_model(model, out_dir, extra={"problem": cfg["problem"]})
        atomic_write_json(out_dir / "history.json", result.history)
        if plots is not None:
            plot_training_history(result.history, plots / "loss_curves.png")
        write_run_report(out_dir, cfg, metrics)
        # Last: metrics.json marks a finished run (the CLI refuses to overwrite it), so
        # a run killed before this point is resumed, not mistaken for a complete one.
        metrics["peak_memory_mb"] = peak_memory_mb()
        atomic_write_json(out_dir / "metrics.json", metrics)
    return RunResult(cfg, model, posterior, problem, result, metrics)
