"""``vinaflow run``: simulate, train, evaluate against the ground truth, write everything.

Output folder layout::

    DIR/config.yaml        resolved config (every default filled in)
    DIR/model.safetensors  weights      DIR/model.json  model config + format version
    DIR/checkpoint.pt      trainer state for --resume (weights-only torch file)
    DIR/metrics.json       metrics, per-observation lists, environment, seed
    DIR/history.json       training curves
    DIR/report.md          human-readable summary with the plots
    DIR/plots/*.png

Training goes through :func:`vinaflow.training.fitting.prepare_training`, the path
``vinaflow.fit`` uses; this module adds the run folder, checkpoints and ``--resume``,
evaluation (:mod:`vinaflow.evaluation.posterior`), figures and the report.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy
import scipy
import torch
import yaml
from torch import Tensor

from vinaflow import objectives
from vinaflow._version import __version__
from vinaflow.atomic import atomic_write_json, atomic_write_text
from vinaflow.config import resolve_config
from vinaflow.errors import ConfigError
from vinaflow.evaluation.certificate import certificate_for_run
from vinaflow.evaluation.posterior import PosteriorScores, score_posterior
from vinaflow.models import AmortizedModel, BoxSupport, EnsemblePosterior, Posterior
from vinaflow.models.ensemble import member_dir
from vinaflow.models.support import write_support
from vinaflow.objectives.losses import Objective
from vinaflow.problems import Problem, make_problem
from vinaflow.training import (
    TrainingConfig,
    TrainResult,
    fitting,
)
from vinaflow.training.distributed import is_main_process
from vinaflow.training.fitting import Dataset, noise_augmentation_inputs, prepare_data

__all__ = [
    "Dataset",
    "RunResult",
    "check_output_dir",
    "check_resumable",
    "build_objective",
    "environment",
    "evaluate_posterior",
    "noise_augmentation_inputs",
    "peak_memory_mb",
    "prepare_data",
    "remove_temporaries",
    "run",
    "training_metrics",
    "write_run_folder",
]

#: Files of a run folder written through ``atomic_path`` (temporaries: ``.NAME.*``).
OUTPUT_FILES = (
    "config.yaml",
    "checkpoint.pt",
    "pretrain_checkpoint.pt",
    "heldout.npz",
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
    # the weights are device-independent: a run may resume on another device
    "device",
)


@dataclass
class RunResult:
    config: dict[str, Any]
    model: AmortizedModel
    posterior: Posterior
    problem: Problem
    train: TrainResult
    metrics: dict[str, Any]


def training_metrics(result: TrainResult, seed: int) -> dict[str, Any]:
    """What every run records about its training and environment."""
    return {
        "train_seconds": result.train_seconds,
        "train_steps": result.steps,
        "stopped": result.stopped,
        "retries": result.retries,
        "processes": result.world_size,
        "device": result.device,
        "seed": seed,
        "peak_memory_mb": peak_memory_mb(),
        "environment": environment(),
    }


def write_run_folder(
    out_dir: Path,
    model: AmortizedModel | Posterior,
    cfg: Mapping[str, Any],
    metrics: dict[str, Any],
    history: Mapping[str, Any],
    plots: Path | None,
    source: str,
) -> None:
    """Model files, history, loss curves, ``report.md``, then ``metrics.json``.

    ``source`` is the config section saved with the model (``problem`` or ``target``).
    ``model`` may be a posterior: an :class:`EnsemblePosterior` writes its members to
    ``member-<k>/`` and ``ensemble.json`` (:meth:`EnsemblePosterior.save`).
    """
    # matplotlib (plots) and safetensors (model files) load only when a folder is written.
    from vinaflow.evaluation.plots import plot_training_history
    from vinaflow.experiments.report import write_run_report
    from vinaflow.models.serialization import save_model

    if isinstance(model, EnsemblePosterior):
        model.save(out_dir)
    else:
        net = model.model if isinstance(model, Posterior) else model
        save_model(net, out_dir, extra={source: cfg[source]})
        write_support(out_dir, model.support if isinstance(model, Posterior) else None)
    atomic_write_json(out_dir / "history.json", history)
    if plots is not None:
        plot_training_history(history, plots / "loss_curves.png")
    write_run_report(out_dir, cfg, metrics)
    # Last: metrics.json marks a finished run (the CLI refuses to overwrite it), so a run
    # killed before this point is resumed, not mistaken for a complete one.
    metrics["peak_memory_mb"] = peak_memory_mb()
    atomic_write_json(out_dir / "metrics.json", metrics)


def check_output_dir(out: Path, resume: bool, overwrite: bool) -> None:
    """Refuse to write into a folder that holds a finished run (``metrics.json``)."""
    if (out / "metrics.json").exists() and not (resume or overwrite):
        raise ConfigError(
            f"{out} already holds a finished run; use --overwrite to replace it or another --out"
        )


def environment() -> dict[str, str]:
    """Library versions recorded with every run."""
    # scikit-learn takes about a second to import; only runs that record it pay for it.
    import sklearn

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


def check_resumable(
    out_dir: Path,
    cfg: Mapping[str, Any],
    resolve: Callable[[Mapping[str, Any]], dict[str, Any]] = resolve_config,
    sections: Sequence[str] = ("problem", "model", "objective", "training"),
) -> None:
    """Refuse ``--resume`` with a config that trains something else than the checkpoint.

    ``resolve`` is the config's resolver (:func:`~vinaflow.config.resolve_config`, or
    the flow configs' one) and ``sections`` those that decide what is trained.
    """
    path = out_dir / "config.yaml"
    try:
        old = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return  # nothing to compare with; the checkpoint's own checks still apply
    if not isinstance(old, Mapping):
        return
    # Folders of earlier versions saved fewer settings (e.g. an objective section
    # without the defaults later versions list): both configs are resolved with the
    # current defaults, so only settings that differ count. A config the resolver no
    # longer accepts is compared as written.
    old, cfg = _resolved(old, resolve), _resolved(cfg, resolve)
    changed = []
    for section in sections:
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


def _resolved(
    cfg: Mapping[str, Any], resolve: Callable[[Mapping[str, Any]], dict[str, Any]]
) -> Mapping[str, Any]:
    """``cfg`` resolved with the current defaults, or as given where ``resolve`` refuses it."""
    try:
        return resolve({k: v for k, v in cfg.items() if k != "vinaflow_version"})
    except ConfigError:
        return cfg


#: The name of earlier versions.
_check_resumable = check_resumable


def remove_temporaries(out_dir: Path) -> None:
    """Delete half-written temporaries of a killed run (a SIGKILL skips their cleanup):
    those of :data:`OUTPUT_FILES` and of the figures in ``plots/`` (``atomic_path``
    names them ``.NAME.*`` beside their target)."""
    for name in OUTPUT_FILES:
        for tmp in out_dir.glob(f".{name}.*"):
            tmp.unlink(missing_ok=True)
    for tmp in (out_dir / "plots").glob(".*.png.*"):
        tmp.unlink(missing_ok=True)
    # ensemble members' and sequential rounds' own files (model, checkpoint, simulations)
    for sub in (*out_dir.glob("member-*"), *out_dir.glob("round-*")):
        for tmp in sub.glob(".*.*"):
            tmp.unlink(missing_ok=True)


def build_objective(cfg: Mapping[str, Any], model: AmortizedModel, problem: Problem) -> Objective:
    """The objective of a config: main term, extra ``terms`` and the prior penalty (whose
    parameters default to those of ``problem``'s prior)."""
    return objectives.build_objective(cfg, model, problem.prior)


def _held_out(dataset: Dataset | None) -> tuple[Tensor, Tensor] | None:
    if dataset is None or dataset.x_test is None or dataset.y_test is None:
        return None
    return dataset.x_test, dataset.y_test


def evaluate_posterior(
    posterior: Posterior,
    problem: Problem,
    cfg: Mapping[str, Any],
    dataset: Dataset | None = None,
    plots_dir: Path | None = None,
) -> dict[str, Any]:
    """Metrics of a posterior on held-out observations (see
    :func:`vinaflow.evaluation.posterior.score_posterior`), with figures in ``plots_dir``."""
    scores = score_posterior(posterior, problem, cfg, _held_out(dataset))
    if plots_dir is not None:
        _plot_scores(scores, plots_dir)
    return scores.metrics


def _plot_scores(scores: PosteriorScores, plots_dir: Path) -> None:
    """SBC ranks, coverage and the first three posteriors of an evaluation."""
    from vinaflow.evaluation.plots import plot_coverage, plot_posterior_pairs, plot_sbc_histogram

    if scores.ranks is not None and scores.coverage is not None:
        plot_sbc_histogram(
            scores.ranks,
            scores.calibration_samples,
            plots_dir / "sbc_ranks.png",
            names=scores.param_names,
        )
        cov = scores.coverage
        plot_coverage(
            cov["levels"],
            {"marginal": cov["coverage_marginal"], "joint": cov["coverage_joint"]},
            plots_dir / "coverage.png",
            n_obs=scores.num_calibration,
        )
    for i in range(min(3, len(scores.x_true))):
        ref = scores.references[i]
        plot_posterior_pairs(
            scores.samples[i].numpy(),
            None if ref is None else ref.numpy(),
            truth=scores.x_true[i].numpy(),
            names=scores.param_names,
            path=plots_dir / f"posterior_obs{i}.png",
        )


def run(
    config: Mapping[str, Any],
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> RunResult:
    """Train and evaluate one resolved config; writes outputs to ``out`` if given.

    ``training.ensemble: K`` trains ``K`` members (member ``k`` with seed ``seed + k``,
    checkpoint ``member-<k>/checkpoint.pt``) and saves their mixture;
    ``training.rounds: R`` trains by truncated sequential rounds for
    ``problem.observation`` (:mod:`vinaflow.training.sequential`).
    """
    cfg = dict(config)
    out_dir = Path(out) if out is not None else None
    problem = make_problem(cfg["problem"])
    tcfg = TrainingConfig(
        **{**cfg["training"], "progress": progress and cfg["training"].get("progress", True)}
    )
    if tcfg.rounds > 1:
        return _run_rounds(cfg, problem, tcfg, out_dir, resume)
    data = prepare_data(
        problem, cfg["problem"], tcfg.seed, n_test=cfg["evaluation"]["num_observations"]
    )
    members = tcfg.ensemble

    def job(k: int) -> fitting.TrainingJob:
        member_data = data if k == 0 else fitting.member_dataset(data, tcfg.seed + k)
        return fitting.member_job(
            k, cfg["model"], cfg["objective"], cfg["objective"], tcfg, member_data, problem
        )

    # Member 0 is prepared first: every config error is raised before anything is written.
    first = job(0)
    checkpoint = None if out_dir is None else _checkpoints(out_dir, members)
    resume = _start_folder(out_dir, cfg, resume, checkpoint)
    main = is_main_process()
    trained = fitting.train_members(members, job, checkpoint, resume, first=first)
    results = [p.train_result for p in trained]
    posterior = trained[0] if members == 1 else EnsemblePosterior(trained)
    # as vinaflow.fit does: samples stay where the prior has mass
    posterior.support = BoxSupport.from_prior(problem.prior)
    if not main:
        # Data-parallel: the other ranks trained the same model; rank 0 evaluates and
        # writes the run folder once.
        train_metrics = _training_metrics(results, tcfg.seed)
        return RunResult(cfg, posterior.model, posterior, problem, results[0], train_metrics)
    plots = _plots_dir(out_dir, cfg)
    metrics = evaluate_posterior(posterior, problem, cfg["evaluation"], data, plots)
    if cfg["evaluation"].get("certificate", True):
        metrics["certificate"] = certificate_for_run(
            posterior,
            problem,
            data,
            cfg["evaluation"],
            c2st_per_observation=metrics.get("per_observation", {}).get("c2st"),
        )
    metrics.update(_training_metrics(results, tcfg.seed), problem=problem.name)
    if out_dir is not None:
        if members > 1:
            for k, result in enumerate(results):
                atomic_write_json(out_dir / member_dir(k) / "history.json", result.history)
        write_run_folder(out_dir, posterior, cfg, metrics, results[0].history, plots, "problem")
    return RunResult(cfg, posterior.model, posterior, problem, results[0], metrics)


def _checkpoints(out_dir: Path, members: int) -> Callable[[int], Path]:
    """Checkpoint file of member ``k``: ``checkpoint.pt`` for a single posterior, each
    member's own folder's for an ensemble (a resumed run continues the member it was
    killed in and trains none of the finished ones again)."""
    if members == 1:
        return lambda k: out_dir / "checkpoint.pt"
    return lambda k: out_dir / member_dir(k) / "checkpoint.pt"


def _start_folder(
    out_dir: Path | None,
    cfg: Mapping[str, Any],
    resume: bool,
    checkpoint: Callable[[int], Path] | None,
) -> bool:
    """Check a ``--resume`` against the folder, then (rank 0) create the folder, remove
    killed writers' temporaries and write ``config.yaml``; whether to resume."""
    if out_dir is None:
        return False
    if resume:
        check_resumable(out_dir, cfg)
        if checkpoint is not None and not checkpoint(0).is_file():
            # Killed before its first checkpoint (or never started): nothing to resume.
            print(
                f"[vinaflow] --resume: no checkpoint in {out_dir}; training from step 0",
                file=sys.stderr,
            )
            resume = False
    if is_main_process():
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out_dir)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
    return resume


def _plots_dir(out_dir: Path | None, cfg: Mapping[str, Any]) -> Path | None:
    if out_dir is None or not cfg["evaluation"].get("plots", True):
        return None
    plots = out_dir / "plots"
    plots.mkdir(exist_ok=True)
    return plots


def _training_metrics(results: Sequence[TrainResult], seed: int) -> dict[str, Any]:
    """:func:`training_metrics` of one posterior; for an ensemble (or sequential rounds)
    the totals over its members, with each member's steps, seconds and stop reason."""
    out = training_metrics(results[0], seed)
    if len(results) > 1:
        out["train_seconds"] = sum(r.train_seconds for r in results)
        out["train_steps"] = sum(r.steps for r in results)
        out["retries"] = sum(r.retries for r in results)
        out["members"] = [
            {"train_steps": r.steps, "train_seconds": r.train_seconds, "stopped": r.stopped}
            for r in results
        ]
    return out


def _run_rounds(
    cfg: dict[str, Any],
    problem: Problem,
    tcfg: TrainingConfig,
    out_dir: Path | None,
    resume: bool,
) -> RunResult:
    """``training.rounds: R``: TSNPE for ``problem.observation``; each round trains a
    fresh posterior with the checkpoint ``round-<r>/checkpoint.pt`` and keeps its
    simulations in ``round-<r>/simulations.npz``, so ``--resume`` repeats neither a
    finished round's training nor any simulation."""
    from vinaflow.training import sequential

    observation = sequential.check_observation(
        cfg["problem"].get("observation"), problem.dim_y, "problem.observation"
    )
    sizes = sequential.round_sizes(int(cfg["problem"]["num_simulations"]), tcfg.rounds)
    num_validation = cfg["problem"].get("num_validation")
    if num_validation is not None and num_validation >= sizes[0] - 1:
        raise ConfigError(
            f"problem.num_validation ({num_validation}) must be below the first round's "
            f"{sizes[0]} simulations (problem.num_simulations / training.rounds)"
        )

    def checkpoint(r: int) -> Path:
        assert out_dir is not None
        return sequential.round_dir(out_dir, r) / "checkpoint.pt"

    def train_round(r: int, x: Tensor, y: Tensor, clean: Tensor | None) -> Posterior:
        # the amortized run's rule (prepare_data), on all simulations so far
        n_val = int(num_validation or min(max(x.shape[0] // 10, 1), 2000))
        path = None if out_dir is None else checkpoint(r)
        model, objective = cfg["model"], cfg["objective"]
        post = sequential.train_round(
            r, x, y, clean, n_val, model, objective, tcfg, problem, path, resume
        )
        results.append(post.train_result)
        return post

    results: list[TrainResult] = []

    resume = _start_folder(out_dir, cfg, resume, None)
    posterior, records = sequential.run_rounds(
        problem,
        observation,
        sizes,
        train_round,
        tcfg.seed,
        quantile=tcfg.truncation_quantile,
        store=out_dir,
    )
    result = posterior.train_result
    posterior.support = BoxSupport.from_prior(problem.prior)
    plots = _plots_dir(out_dir, cfg)
    metrics = evaluate_observation(posterior, problem, observation, cfg["evaluation"])
    metrics["rounds"] = [
        {**rec.to_dict(), "train_steps": res.steps, "train_seconds": res.train_seconds}
        for rec, res in zip(records, results, strict=True)
    ]
    metrics.update(training_metrics(result, tcfg.seed), problem=problem.name)
    # the totals over the rounds (each round's own are listed under "rounds")
    metrics["train_steps"] = sum(res.steps for res in results)
    metrics["train_seconds"] = sum(res.train_seconds for res in results)
    if out_dir is not None:
        write_run_folder(out_dir, posterior, cfg, metrics, result.history, plots, "problem")
    return RunResult(cfg, posterior.model, posterior, problem, result, metrics)


def evaluate_observation(
    posterior: Posterior, problem: Problem, observation: Tensor, cfg: Mapping[str, Any]
) -> dict[str, Any]:
    """Metrics of a sequential run's posterior at its one observation: distances to the
    problem's reference posterior there (when it has one) and the posterior's mean and
    standard deviation. Held-out observations from the prior are not scored: after
    truncated rounds the posterior is accurate near ``observation`` only."""
    from vinaflow.evaluation.posterior import score_against_reference

    metrics: dict[str, Any] = {}
    if problem.has_reference_posterior:
        metrics = score_against_reference(posterior, observation, problem.reference_posterior, cfg)
    g = torch.Generator().manual_seed(int(cfg.get("seed", 1234)))
    samples = posterior.sample(observation, int(cfg["num_samples"]), generator=g)[0]
    metrics["observation"] = observation[0].tolist()
    metrics["posterior_mean"] = samples.mean(0).tolist()
    metrics["posterior_std"] = samples.std(0).tolist()
    return metrics
