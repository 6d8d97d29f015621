"""``vinaflow flow``: train a normalizing flow on a target, evaluate it, write everything.

An unconditional flow is a :class:`~vinaflow.models.ConditionalINN` with ``dim_y = 0``,
trained by the same path as posteriors (:func:`vinaflow.training.fitting.prepare_training`
and the :class:`~vinaflow.training.Trainer`) with the same objectives
(:mod:`vinaflow.objectives.losses`); this module translates the flow config into that
path and evaluates the flow against held-out target samples. The run folder, its report
(:func:`vinaflow.experiments.report.write_run_report`) and the ``--resume`` check are
``vinaflow run``'s (:mod:`vinaflow.experiments.pipeline`).

Config sections (YAML; every key checked, errors name the field)::

    target:     {name: gaussian-mixture, dim: 2, ...}  or  {data: FILE.npz, key: x}
    data:       {num_train: 10000, num_validation: 1000, num_test: 5000}
                (data sets: test_fraction / validation_fraction of the rows instead)
    model:      ConditionalINN arguments without an observation (arch, blocks, hidden,
                layers, base, base_offset, base_df, base_width, normalization, ...)
    objective:  an ``objective`` section of the conditional objectives (nll, fdiv,
                sinkhorn, mmd, ...) with flow defaults (:data:`FLOW_OBJECTIVE_DEFAULTS`);
                ``name: pr`` is short for ``name: fdiv, divergence: pr``
    training:   TrainingConfig fields (steps, batch_size, lr, seed, max_seconds, ...)
    pretraining: optional first stage, {objective: {...}, steps, lr, ...}: the flow is
                trained with this objective (default nll) and these training settings
                (over ``training``), then with ``objective`` (e.g. maximum likelihood,
                then PR fine-tuning as in Verine et al. 2023); {} = one stage
    evaluation: {num_samples, w1_samples, w1_scale: identity | slog, pr_k, plots,
                 certificate, certificate_divergence, seed}

Output folder (same conventions as ``vinaflow run``)::

    DIR/config.yaml  DIR/model.safetensors  DIR/model.json  DIR/checkpoint.pt
    DIR/pretrain_checkpoint.pt  (with a pretraining stage)
    DIR/metrics.json DIR/history.json DIR/report.md DIR/plots/*.png
    DIR/heldout.npz  test split ``x`` (never trained on; used by ``vinaflow certify``)

``metrics.json`` is written last: it marks a finished run.
"""

from __future__ import annotations

import dataclasses
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

from vinaflow.atomic import atomic_path, atomic_write_text
from vinaflow.errors import ConfigError, DataError
from vinaflow.evaluation import mmd, w1
from vinaflow.evaluation.certificate import certify_flow
from vinaflow.evaluation.precision_recall import precision_recall
from vinaflow.experiments.flow_config import (  # noqa: F401 - re-exported
    DEFAULT_FLOW_CONFIG,
    FLOW_OBJECTIVE_DEFAULTS,
    FLOW_SECTIONS,
    TRAINED_SECTIONS,
    flow_objective_config,
    load_flow_config,
    resolve_flow_config,
    stage_training,
)
from vinaflow.experiments.pipeline import (
    check_resumable,
    remove_temporaries,
    training_metrics,
    write_run_folder,
)
from vinaflow.models import ConditionalINN
from vinaflow.models.flow import upgrade_nf_file
from vinaflow.models.serialization import load_model
from vinaflow.objectives.build import build_objective
from vinaflow.objectives.losses import slog
from vinaflow.problems.targets import Target, make_target
from vinaflow.training import (
    Trainer,
    TrainingConfig,
    TrainResult,
)
from vinaflow.training.fitting import (
    Dataset,
    TrainingJob,
    build_model_from_config,
    prepare_training,
)

__all__ = [
    "DEFAULT_FLOW_CONFIG",
    "FLOW_OBJECTIVE_DEFAULTS",
    "FlowData",
    "FlowRunResult",
    "evaluate_flow",
    "evaluate_flow_folder",
    "is_flow_folder",
    "fit_flow",
    "flow_objective_config",
    "load_flow_config",
    "make_splits",
    "plot_samples",
    "resolve_flow_config",
    "run_flow",
    "upgrade_flow_checkpoint",
]


@dataclass
class FlowData:
    x: Tensor
    x_val: Tensor
    x_test: Tensor


def make_splits(target: Target, data_cfg: Mapping[str, Any], seed: int) -> FlowData:
    """Train / validation / test data; test rows are drawn independently of training."""
    m = target.finite_sample_size
    g = torch.Generator().manual_seed(seed)
    if m is None:
        n_tr = int(data_cfg.get("num_train", 10000))
        n_val = int(data_cfg.get("num_validation", 1000))
        n_te = int(data_cfg.get("num_test", 5000))
        x = target.sample(n_tr + n_val, g)
        x_test = target.sample(n_te, torch.Generator().manual_seed(seed + 7919))
        return FlowData(x[n_val:], x[:n_val], x_test)
    f_te = float(data_cfg.get("test_fraction", 0.2))
    f_val = float(data_cfg.get("validation_fraction", 0.1))
    if not (0 < f_te < 1 and 0 < f_val < 1 and f_te + f_val < 1):
        raise ConfigError("data.test_fraction and data.validation_fraction must be in (0, 1)")
    x = target.sample(m, g)  # a permutation of the rows
    n_te, n_val = max(1, int(f_te * m)), max(1, int(f_val * m))
    if m - n_te - n_val < 20:
        raise DataError(f"data set has {m} rows: too few for training after the splits")
    return FlowData(x[n_te + n_val :], x[n_te : n_te + n_val], x[:n_te])


def fit_flow(
    x: Tensor,
    model_cfg: Mapping[str, Any],
    objective_cfg: Mapping[str, Any],
    training_cfg: Mapping[str, Any] | TrainingConfig,
    x_val: Tensor | None = None,
    checkpoint: str | Path | None = None,
    resume: bool = False,
    model: ConditionalINN | None = None,
) -> tuple[ConditionalINN, TrainResult]:
    """Build a flow (``ConditionalINN`` with ``dim_y = 0``) for ``x`` ``(n, d)`` and train it.

    The same path as posterior training, with no observation: ``y`` has zero columns.
    ``objective_cfg`` is a flow ``objective`` section (:func:`flow_objective_config`).
    Pass ``model`` to continue training an existing flow (e.g. fine-tuning a maximum
    likelihood flow with the PR divergence, as Verine et al. 2023 do); ``model_cfg`` is
    then ignored and the model's normalization kept.
    """
    tcfg = (
        training_cfg
        if isinstance(training_cfg, TrainingConfig)
        else TrainingConfig(**dict(training_cfg))
    )
    objective = flow_objective_config(objective_cfg)
    no_y = x.new_zeros(x.shape[0], 0)
    if model is None:
        xv = x_val if x_val is not None else x[:0]
        data = Dataset(x, no_y, xv, xv.new_zeros(xv.shape[0], 0))
        model = build_model_from_config(
            {**model_cfg, "kind": "cinn"}, objective, int(x.shape[1]), 0, tcfg.seed
        )
        job = prepare_training(model, objective, tcfg, data)
    else:
        # prepare_training would refit the normalization the trained model depends on
        xv_s = None if x_val is None else model.x_norm(x_val)
        yv_s = None if x_val is None else x_val.new_zeros(x_val.shape[0], 0)
        job = TrainingJob(
            model, build_objective(objective, model), Trainer(tcfg), model.x_norm(x), no_y,
            xv_s, yv_s,
        )  # fmt: skip
    return model, job.run(checkpoint, resume)


def _w1(a: np.ndarray, b: np.ndarray, max_samples: int, seed: int) -> float:
    if a.shape[1] == 1:
        from scipy.stats import wasserstein_distance

        # 1-D optimal transport is exact from sorted samples: use all of them
        return float(wasserstein_distance(a[:, 0], b[:, 0]))
    return w1(a, b, max_samples=max_samples, seed=seed)


def evaluate_flow(
    model: ConditionalINN,
    x_test: Tensor,
    evaluation: Mapping[str, Any] | None = None,
    plots_dir: Path | None = None,
    target: Target | None = None,
) -> dict[str, Any]:
    """Sample metrics of a flow against held-out data.

    ``w1``: exact optimal transport (1-D: sorted samples, all of them; otherwise
    ``evaluation.w1`` on ``w1_samples``); ``w1_slog``: the same on the signed-log scale
    ``sign(x) log(1 + |x|)``, finite for heavy tails whose W1 is infinite or dominated by a
    few extreme samples; ``mmd`` (Gaussian kernel, median bandwidth); k-NN
    ``precision`` / ``recall``; held-out ``test_nll`` where the density is finite; for
    1-D data ``q99_ratio``, the model's 99% quantile over the data's (how far the tail
    reaches).
    """
    ev = {**DEFAULT_FLOW_CONFIG["evaluation"], **dict(evaluation or {})}
    seed = int(ev["seed"])
    g = torch.Generator().manual_seed(seed)
    n = int(ev["num_samples"])
    t0 = time.perf_counter()
    samples = model.sample(n, generator=g)
    sample_seconds = time.perf_counter() - t0
    a, b = x_test.double().numpy(), samples.double().numpy()
    metrics: dict[str, Any] = {}
    finite = np.isfinite(b).all(1)
    metrics["nonfinite_samples"] = int((~finite).sum())
    b = b[finite]
    if len(b) < 10:
        raise DataError("the trained flow produced fewer than 10 finite samples")
    ws = int(ev["w1_samples"])
    metrics["w1"] = _w1(a, b, ws, seed)
    if ev["w1_scale"] == "slog" or a.shape[1] == 1:
        sa, sb = slog(torch.as_tensor(a)).numpy(), slog(torch.as_tensor(b)).numpy()
        metrics["w1_slog"] = _w1(sa, sb, ws, seed)
    if a.shape[1] == 1:
        metrics["q99_ratio"] = float(np.quantile(b[:, 0], 0.99) / np.quantile(a[:, 0], 0.99))
    sub = min(2000, len(a), len(b))
    metrics["mmd"] = mmd(a[:sub], b[:sub])
    pr = precision_recall(a, b, k=int(ev["pr_k"]), max_samples=5000, seed=seed)
    metrics["precision"], metrics["recall"] = pr["precision"], pr["recall"]
    lp = model.log_prob(x_test)
    ok = torch.isfinite(lp)
    metrics["test_nll"] = float(-lp[ok].mean()) if bool(ok.all()) else None
    metrics["test_outside_support"] = float((~ok).double().mean())
    if target is not None and target.has_log_prob:
        metrics["target_nll"] = float(-target.log_prob(x_test).double().mean())
    metrics["sampling_seconds_per_10k"] = sample_seconds / n * 1e4
    if ev.get("certificate"):
        try:
            metrics["certificate"] = certify_flow(
                model, x_test, ev["certificate_divergence"], seed=seed + 17
            )
        except DataError as err:
            metrics["certificate"] = {"skipped": str(err)}
    if plots_dir is not None:
        plot_samples(a, b, plots_dir / "samples.png", slog_scale=ev["w1_scale"] == "slog")
    return metrics


def plot_samples(
    data: np.ndarray,
    model: np.ndarray,
    path: Path,
    title: str = "",
    slog_scale: bool = False,
    max_points: int = 3000,
) -> None:
    """Histogram (1-D) or side-by-side scatter (2-D, first two coordinates) of samples."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    data, model = np.asarray(data), np.asarray(model)
    if slog_scale:
        data = np.sign(data) * np.log1p(np.abs(data))
        model = np.sign(model) * np.log1p(np.abs(model))
    if data.shape[1] == 1:
        fig, ax = plt.subplots(figsize=(5, 3.2))
        lo, hi = np.quantile(np.concatenate([data[:, 0], model[:, 0]]), [0.002, 0.998])
        bins = np.linspace(lo, hi, 80)
        ax.hist(data[:, 0], bins=bins, density=True, alpha=0.5, label="target")
        ax.hist(model[:, 0], bins=bins, density=True, alpha=0.5, label="model")
        ax.set_xlabel("slog(x)" if slog_scale else "x")
        ax.legend()
    else:
        fig, axes = plt.subplots(1, 2, figsize=(8, 4), sharex=True, sharey=True)
        lo = np.quantile(data[:, :2], 0.001, axis=0) - 0.5
        hi = np.quantile(data[:, :2], 0.999, axis=0) + 0.5
        for ax, pts, name in ((axes[0], data, "target"), (axes[1], model, "model")):
            pts = pts[:max_points]
            ax.scatter(pts[:, 0], pts[:, 1], s=2, alpha=0.4)
            ax.set_title(name)
            ax.set_xlim(lo[0], hi[0])
            ax.set_ylim(lo[1], hi[1])
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, suffix=".png") as tmp:
        fig.savefig(tmp, dpi=110, format="png")
    plt.close(fig)


@dataclass
class FlowRunResult:
    config: dict[str, Any]
    model: ConditionalINN
    target: Target
    train: TrainResult
    metrics: dict[str, Any]
    #: The held-out test rows the metrics were computed on.
    x_test: Tensor | None = None


def is_flow_folder(directory: str | Path) -> bool:
    """Whether ``directory`` holds a ``vinaflow flow`` run (its config has a target)."""
    try:
        cfg = yaml.safe_load((Path(directory) / "config.yaml").read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError):
        return False
    return isinstance(cfg, Mapping) and "target" in cfg


def evaluate_flow_folder(directory: str | Path) -> dict[str, Any]:
    """The sample metrics of the flow in a ``vinaflow flow`` folder, recomputed against
    its held-out rows (``heldout.npz``) with the folder's evaluation settings (no plots;
    the certificate is ``vinaflow certify``'s)."""
    d = Path(directory)
    cfg = load_flow_config(d / "config.yaml")
    model, _ = load_model(d)
    try:
        with np.load(d / "heldout.npz", allow_pickle=False) as f:
            x_test = torch.as_tensor(f["x"], dtype=torch.get_default_dtype())
    except (OSError, KeyError, ValueError) as err:
        raise DataError(f"{d}: no readable held-out data (heldout.npz: {err})") from err
    evaluation = {**cfg["evaluation"], "certificate": False}
    metrics = evaluate_flow(model, x_test, evaluation, None, make_target(cfg["target"]))
    metrics["target"] = cfg["target"]
    return metrics


def upgrade_flow_checkpoint(path: Path) -> None:
    """Rewrite a checkpoint of the former flow class (``kind: nf``, release 0.1) in the
    form of the ``ConditionalINN`` with ``dim_y = 0`` that resumes it; others are left as
    they are (an unreadable one is reported by the trainer when it loads it)."""
    if not path.is_file():
        return
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:  # noqa: BLE001 - the trainer's load names the problem
        return
    weights = state.get("model") if isinstance(state, dict) else None
    if not isinstance(weights, dict) or "y_norm.mean" in weights:
        return
    _, _, state["model"] = upgrade_nf_file({}, weights)
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def run_flow(
    config: Mapping[str, Any],
    out: str | Path | None = None,
    resume: bool = False,
    progress: bool = True,
) -> FlowRunResult:
    """Train and evaluate one flow config; writes outputs to ``out`` if given.

    ``metrics.json`` is written after everything else (model, history, plots, report):
    a folder without it is an unfinished run (``--resume`` continues it).
    """
    cfg = resolve_flow_config(config)
    out_dir = Path(out) if out is not None else None
    target = make_target(cfg["target"])
    tcfg = TrainingConfig(
        **{**cfg["training"], "progress": progress and cfg["training"].get("progress", True)}
    )
    data = make_splits(target, cfg["data"], tcfg.seed)
    checkpoints: tuple[Path, ...] = ()
    if out_dir is not None:
        checkpoints = (out_dir / "checkpoint.pt", out_dir / "pretrain_checkpoint.pt")
        if resume:
            check_resumable(out_dir, cfg, resolve_flow_config, TRAINED_SECTIONS)
            if not any(c.is_file() for c in checkpoints):
                # Killed before its first checkpoint (or never started): nothing to resume.
                print(f"[vinaflow] --resume: no checkpoint in {out_dir}; training from step 0",
                      file=sys.stderr)  # fmt: skip
                resume = False
        out_dir.mkdir(parents=True, exist_ok=True)
        remove_temporaries(out_dir)
        if resume:
            for c in checkpoints:
                upgrade_flow_checkpoint(c)
        atomic_write_text(out_dir / "config.yaml", yaml.safe_dump(cfg, sort_keys=False))
        with atomic_path(out_dir / "heldout.npz", suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, x=data.x_test.numpy())
    model, pre = None, None
    if cfg["pretraining"]:
        pre_tcfg = TrainingConfig(**stage_training(dataclasses.asdict(tcfg), cfg["pretraining"]))
        pre_ckpt = checkpoints[1] if checkpoints else None
        model, pre = fit_flow(
            data.x,
            cfg["model"],
            cfg["pretraining"]["objective"],
            pre_tcfg,
            data.x_val,
            checkpoint=pre_ckpt,
            # A finished stage is reloaded, not retrained: it returns at once.
            resume=resume and pre_ckpt is not None and pre_ckpt.is_file(),
        )
    model, result = fit_flow(
        data.x,
        cfg["model"],
        cfg["objective"],
        tcfg,
        data.x_val,
        checkpoint=checkpoints[0] if checkpoints else None,
        resume=resume and checkpoints[0].is_file(),
        model=model,
    )
    plots = None
    if out_dir is not None and cfg["evaluation"].get("plots", True):
        plots = out_dir / "plots"
        plots.mkdir(exist_ok=True)
    metrics = evaluate_flow(model, data.x_test, cfg["evaluation"], plots, target)
    metrics.update(training_metrics(result, tcfg.seed), target=target.describe())
    if pre is not None:
        metrics["train_seconds"] += pre.train_seconds
        metrics.update(pretrain_steps=pre.steps, pretrain_seconds=pre.train_seconds)
    if out_dir is not None:
        write_run_folder(out_dir, model, cfg, metrics, result.history, plots, "target")
    return FlowRunResult(cfg, model, target, result, metrics, data.x_test)
