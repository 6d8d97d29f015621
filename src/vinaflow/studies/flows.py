"""Normalizing-flow studies (support mismatch, heavy tails, precision-recall): run, record, report.

* ``support-mismatch``: target U(0, 1); uniform base U(d, d + 1) displaced by
  d in {0, 3, 5, 10, 15, 20, 25} data units (the flow works in data units:
  ``normalization: none``); Sinkhorn vs variational KL; W1 to held-out target samples.
* ``heavy-tails``: Pareto targets with tail index alpha in 1..10; a flow trained on
  KL(data || model) by maximum likelihood, Gaussian base vs Student-t base (``df`` = 2);
  W1 on the **signed-log scale**
  ``sign(x) log(1 + |x|)`` (for alpha <= 1 the raw W1 is infinite, and for small alpha
  it is dominated by a handful of extreme samples; on the log scale Pareto(alpha) is
  Exp(alpha)-like, so the metric is finite and stable for every alpha).
* ``precision-recall``: 2-D mixture of 8 Gaussians; a maximum-likelihood flow is
  fine-tuned with the PR divergence (Verine et al. 2023) for several lambda; k-NN
  precision / recall (Kynkäänniemi et al. 2019) show where lambda moves along the PR
  curve.

Every run trains a flow -- a :class:`~vinaflow.models.ConditionalINN` with ``dim_y = 0``
-- through :func:`vinaflow.experiments.generative.fit_flow`, the posterior training path.
Runs are spread over the sweeps' process pool
(:func:`~vinaflow.studies.runners.run_in_processes`) and recorded in the sweeps' results
file (:mod:`vinaflow.studies.results`: one record per run with ``id``, ``params``,
``seed``, ``status``, ``metrics``, rewritten atomically, so an interrupted study resumes
where it stopped); the report uses the sweeps' statistics
(:func:`~vinaflow.studies.report.metric_stats`: mean ± sample standard deviation).

Output folder: ``DIR/results.jsonl``, ``DIR/study.json``, ``DIR/summary.json``,
``DIR/report.md`` and ``DIR/plots/*.png``. ``vinaflow study NAME`` runs a study and
``vinaflow report DIR`` rewrites its report.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.atomic import atomic_path, atomic_write_json, atomic_write_text
from vinaflow.errors import ConfigError, DataError
from vinaflow.evaluation.plots import save_figure
from vinaflow.experiments.generative import evaluate_flow, fit_flow, plot_samples
from vinaflow.problems.targets import make_target
from vinaflow.studies.report import metric_stats
from vinaflow.studies.results import RESULTS_FILE, load_results, write_results
from vinaflow.studies.runners import default_workers, run_in_processes

__all__ = ["GENERATIVE_STUDIES", "run_study", "study_summary", "write_generative_report"]


# -- grid definitions -------------------------------------------------------------------
SUPPORT_OFFSETS = (0, 3, 5, 10, 15, 20, 25)
PARETO_ALPHAS = tuple(range(1, 11))
PR_LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0)


def _support_grid(quick: bool) -> list[dict[str, Any]]:
    offsets = (0, 5, 25) if quick else SUPPORT_OFFSETS
    return [{"objective": o, "offset": d} for o in ("sinkhorn", "kl") for d in offsets]


def _support_run(p: Mapping[str, Any], seed: int, quick: bool) -> tuple[dict[str, Any], Any]:
    target = make_target({"name": "uniform", "low": 0.0, "high": 1.0})
    x = target.sample(4000, torch.Generator().manual_seed(seed))
    x_test = target.sample(4000, torch.Generator().manual_seed(seed + 10_000))
    model_cfg = {
        "blocks": 2,
        "hidden": 8,
        "base": "uniform",
        "base_offset": float(p["offset"]),
        "base_width": 1.0,
        "normalization": "none",
    }
    if p["objective"] == "sinkhorn":
        obj = {"name": "sinkhorn", "blur": 0.05, "scaling": 0.5}
    else:
        obj = {"name": "fdiv", "divergence": "kl", "critic_hidden": 32}
    # Same budget for both; lr 0.05 lets the shift travel 25 units within the budget.
    tcfg = {
        "steps": 400 if quick else 600,
        "lr": 0.05,
        "critic_lr": 0.005,
        "batch_size": 256,
        "seed": seed,
        "progress": False,
        "val_every": 10_000,
    }
    model, res = fit_flow(x, model_cfg, obj, tcfg)
    ev = evaluate_flow(model, x_test, {"certificate": False, "num_samples": 4000, "seed": seed})
    return {
        "w1": ev["w1"],
        "test_outside_support": ev["test_outside_support"],
        "train_seconds": res.train_seconds,
    }, (x_test, model.sample(4000, torch.Generator().manual_seed(seed)))


def _heavy_grid(quick: bool) -> list[dict[str, Any]]:
    alphas = (1, 2, 5, 10) if quick else PARETO_ALPHAS
    return [{"base": b, "alpha": a} for b in ("gaussian", "student-t") for a in alphas]


def _heavy_run(p: Mapping[str, Any], seed: int, quick: bool) -> tuple[dict[str, Any], Any]:
    target = make_target({"name": "pareto", "alpha": float(p["alpha"])})
    x = target.sample(5000, torch.Generator().manual_seed(seed))
    x_test = target.sample(5000, torch.Generator().manual_seed(seed + 10_000))
    model_cfg = {
        "blocks": 3,
        "hidden": 16,
        "base": p["base"],
        "base_df": 2.0,
        "normalization": "robust",
    }
    # KL(data || model) minimised exactly through the flow's density (maximum
    # likelihood). The variational KL (fdiv, critic on slog(x)) fits the bulk but, at a
    # few thousand steps, moves little mass into the tail with either base (measured at
    # alpha = 1: W1_slog 0.11 Gaussian vs 0.18 Student-t), so it cannot show the base effect.
    obj = {"name": "nll"}
    tcfg = {
        "steps": 400 if quick else 800,
        "lr": 5e-3,
        "critic_lr": 2e-3,
        "batch_size": 256,
        "seed": seed,
        "progress": False,
        "val_every": 10_000,
    }
    model, res = fit_flow(x, model_cfg, obj, tcfg)
    ev = evaluate_flow(
        model, x_test, {"certificate": False, "num_samples": 5000, "seed": seed, "w1_scale": "slog"}
    )
    q = np.quantile(x_test.numpy()[:, 0], 0.99)
    s = model.sample(5000, torch.Generator().manual_seed(seed)).numpy()[:, 0]
    return {
        "w1_slog": ev["w1_slog"],
        "w1": ev["w1"],
        "q99_ratio": float(np.quantile(s, 0.99) / q),
        "train_seconds": res.train_seconds,
    }, None


def _pr_grid(quick: bool) -> list[dict[str, Any]]:
    lams = (0.1, 1.0, 10.0) if quick else PR_LAMBDAS
    return [{"objective": "nll", "lam": None}] + [{"objective": "pr", "lam": v} for v in lams]


def _pr_run(p: Mapping[str, Any], seed: int, quick: bool) -> tuple[dict[str, Any], Any]:
    target = make_target(
        {"name": "gaussian-mixture", "dim": 2, "modes": 8, "radius": 2.0, "std": 0.15}
    )
    x = target.sample(8000, torch.Generator().manual_seed(seed))
    x_test = target.sample(4000, torch.Generator().manual_seed(seed + 10_000))
    # A capacity-limited flow: one with 6 blocks x 64 fits the 8 modes so closely that a
    # classifier cannot tell its samples from the data (BCE 0.690 vs 0.693 at chance),
    # and then every lambda has the same optimum, P itself. With 2 x 16 the flow must
    # trade mass in the bridges between modes (precision) against covered modes (recall).
    model_cfg = {"blocks": 2, "hidden": 16, "layers": 2}
    base_steps, tune_steps = (400, 300) if quick else (1200, 600)
    tcfg = {"batch_size": 256, "seed": seed, "progress": False, "val_every": 10_000}
    # Maximum-likelihood pre-training, then PR fine-tuning (as Verine et al. fine-tune
    # pre-trained flows); the NLL row continues NLL for the same number of steps.
    model, r1 = fit_flow(x, model_cfg, {"name": "nll"}, {**tcfg, "steps": base_steps, "lr": 2e-3})
    tune: dict[str, Any] = {**tcfg, "steps": tune_steps, "lr": 5e-4}
    if p["objective"] == "nll":
        obj: dict[str, Any] = {"name": "nll"}
    else:
        # No R1 penalty: the log-ratio between modes and bridges is steep. The critic is
        # warmed up before the first update: a fresh critic starts at chance.
        obj = {
            "name": "pr",
            "lam": float(p["lam"]),
            "auxiliary": "gan",
            "critic_hidden": 64,
            "gradient_penalty": 0.0,
        }
        tune.update(critic_lr=1e-3, critic_warmup=1000)
    model, r2 = fit_flow(x, {}, obj, tune, model=model)
    ev = evaluate_flow(model, x_test, {"certificate": False, "num_samples": 4000, "seed": seed})
    samples = model.sample(4000, torch.Generator().manual_seed(seed))
    return {
        "precision": ev["precision"],
        "recall": ev["recall"],
        "w1": ev["w1"],
        "test_nll": ev["test_nll"],
        "train_seconds": r1.train_seconds + r2.train_seconds,
    }, (x_test, samples)


GENERATIVE_STUDIES: dict[str, dict[str, Any]] = {
    "support-mismatch": {
        "description": "uniform target U(0,1), uniform base displaced by d: Sinkhorn vs KL",
        "grid": _support_grid,
        "run": _support_run,
        "seeds": list(range(10)),
        "quick_seeds": [0, 1],
        "metrics": ("w1", "train_seconds"),
    },
    "heavy-tails": {
        "description": "Pareto(alpha) targets: max-likelihood (KL) flow, Gaussian vs t(2) base",
        "grid": _heavy_grid,
        "run": _heavy_run,
        "seeds": [0, 1, 2],
        "quick_seeds": [0],
        "metrics": ("w1_slog", "q99_ratio", "train_seconds"),
    },
    "precision-recall": {
        "description": "8-Gaussian mixture: NLL flow fine-tuned with the PR divergence",
        "grid": _pr_grid,
        "run": _pr_run,
        "seeds": [0, 1, 2],
        "quick_seeds": [0],
        "metrics": ("precision", "recall", "w1", "train_seconds"),
    },
}


def _label(p: Mapping[str, Any]) -> str:
    return ",".join(f"{k}={v}" for k, v in p.items())


def _run_id(label: str, seed: int) -> str:
    return f"{label}/seed={seed}"


def _load(out: Path) -> list[dict[str, Any]]:
    """The study's records; those of earlier versions (label and seed, no id) get an id."""
    path = out / RESULTS_FILE
    if path.is_file():
        lines = [ln for ln in path.read_text(encoding="utf-8").splitlines() if ln.strip()]
        try:
            first = json.loads(lines[0]) if lines else {}
        except json.JSONDecodeError:
            first = {}
        if isinstance(first, dict) and "id" not in first and "label" in first:
            try:
                old = [json.loads(ln) for ln in lines]
            except json.JSONDecodeError as err:
                raise DataError(f"results file {path} is corrupted ({err.msg})") from err
            return [{"id": _run_id(r["label"], r["seed"]), **r} for r in old]
    return load_results(out)


def _execute(task: tuple[str, int, Mapping[str, Any], int, bool]) -> tuple[int, dict, Any]:
    """Run ``(name, index, params, seed, quick)``; returns ``(index, record, demo)``."""
    name, i, p, seed, quick = task
    t0 = time.perf_counter()
    try:
        metrics, demo = GENERATIVE_STUDIES[name]["run"](p, seed, quick)
        rec = {"status": "ok", "metrics": metrics}
    except (DataError, ConfigError, RuntimeError) as err:  # a failed run is a result
        rec = {"status": "failed", "error": f"{type(err).__name__}: {err}"}
        demo = None
    lab = _label(p)
    rec = {"id": _run_id(lab, seed), "label": lab, "params": p, "seed": seed, **rec}
    rec["wall_seconds"] = time.perf_counter() - t0
    if demo is not None:
        demo = tuple(d.numpy() for d in demo)
    return i, rec, demo


def run_study(
    name: str,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    log: Callable[[str], None] | None = print,
    workers: int | None = None,
) -> Path:
    """Run (or resume) study ``name`` into ``out`` and write its report; returns report path.

    Runs are spread over ``workers`` processes (default: one per available core, each
    with one torch thread); every finished run is appended to ``results.jsonl`` at once.
    """
    if name not in GENERATIVE_STUDIES:
        raise ConfigError(f"unknown study {name!r}; available: {', '.join(GENERATIVE_STUDIES)}")
    spec = GENERATIVE_STUDIES[name]
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    seeds = list(seeds) if seeds is not None else spec["quick_seeds" if quick else "seeds"]
    grid = spec["grid"](quick)
    meta = {"study": name, "description": spec["description"], "quick": quick, "seeds": seeds}
    atomic_write_json(out / "study.json", {**meta, "grid": grid})
    records = _load(out)
    done = {r["id"] for r in records}
    todo = [
        (i, p, seed)
        for i, p in enumerate(grid)
        for seed in seeds
        if _run_id(_label(p), seed) not in done
    ]
    total = len(grid) * len(seeds)

    def record(result: tuple[int, dict[str, Any], Any]) -> None:
        i, rec, demo = result
        seed = rec["seed"]
        records.append(rec)
        write_results(out, records)
        if demo is not None and seed == seeds[0]:
            with atomic_path(out / "samples" / f"{i}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, data=demo[0], model=demo[1])
        if log is not None:
            msg = ", ".join(f"{k}={v:.4g}" for k, v in rec.get("metrics", {}).items())
            log(f"[{len(records)}/{total}] {name} {rec['label']} seed={seed}: "
                f"{msg or rec.get('error')}")  # fmt: skip

    workers = default_workers() if workers is None else max(1, int(workers))
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as in the workers: small flows train fastest on one thread
    try:
        run_in_processes(
            _execute, [(name, i, p, seed, quick) for i, p, seed in todo], workers, record
        )
    finally:
        torch.set_num_threads(threads)
    return write_generative_report(out)


def study_summary(directory: str | Path) -> list[dict[str, Any]]:
    """Per grid point of a flow study in ``directory``: runs, failures, (mean, std, n)."""
    d = Path(directory)
    meta = json.loads((d / "study.json").read_text(encoding="utf-8"))
    return _summary(_load(d), GENERATIVE_STUDIES[meta["study"]]["metrics"])


def _summary(records: list[dict[str, Any]], metrics: Sequence[str]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for r in records:
        row = rows.setdefault(
            r["label"], {"params": r["params"], "n": 0, "failed": 0, "values": {}}
        )
        if r["status"] != "ok":
            row["failed"] += 1
            continue
        row["n"] += 1
        for m in metrics:
            v = r["metrics"].get(m)
            if v is not None and np.isfinite(v):
                row["values"].setdefault(m, []).append(float(v))
    out = []
    for lab, row in rows.items():
        stats = {}
        for m in metrics:
            vs = row["values"].get(m, [])
            stats[m] = metric_stats(vs) if vs else None
        out.append({"label": lab, "params": row["params"], "n": row["n"], "failed": row["failed"],
                    "stats": stats})  # fmt: skip
    return out


def _line_plot(rows, x_key, group_key, metric, path, xlabel, ylabel, logy=False) -> None:  # noqa: ANN001
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure

    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    groups: dict[Any, list] = {}
    for r in rows:
        if r["stats"].get(metric):
            groups.setdefault(r["params"][group_key], []).append(
                (float(r["params"][x_key]), *r["stats"][metric][:2])
            )
    for g, pts in groups.items():
        pts.sort()
        xs, ms, ss = (np.array(v) for v in zip(*pts, strict=True))
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=str(g))
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if logy:
        ax.set_yscale("log")
    ax.legend()
    save_figure(fig, path, dpi=110)


def _pr_plot(rows, path: Path) -> None:  # noqa: ANN001
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    for r in rows:
        p, rc = r["stats"].get("precision"), r["stats"].get("recall")
        if not (p and rc):
            continue
        lab = "NLL" if r["params"]["objective"] == "nll" else f"λ={r['params']['lam']:g}"
        ax.errorbar(rc[0], p[0], xerr=rc[1], yerr=p[1], marker="o", capsize=3)
        ax.annotate(lab, (rc[0], p[0]), textcoords="offset points", xytext=(5, 5))
    ax.set_xlabel("recall (k-NN)")
    ax.set_ylabel("precision (k-NN)")
    save_figure(fig, path, dpi=110)


def write_generative_report(directory: str | Path) -> Path:
    """``DIR/report.md`` with a mean ± std table over seeds and the study's figures."""
    d = Path(directory)
    meta_path = d / "study.json"
    if not meta_path.is_file():
        raise DataError(f"{d} has no study.json (not a generative study folder)")
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    name = meta["study"]
    spec = GENERATIVE_STUDIES[name]
    records = _load(d)
    metrics = spec["metrics"]
    rows = _summary(records, metrics)
    plots = d / "plots"
    plots.mkdir(exist_ok=True)
    figs: list[tuple[str, str]] = []
    if name == "support-mismatch":
        _line_plot(rows, "offset", "objective", "w1", plots / "w1_vs_offset.png",
                   "base offset d", "W1 to U(0, 1)", logy=True)  # fmt: skip
        figs.append(("w1_vs_offset.png", "W1 to the target against the base displacement"))
    elif name == "heavy-tails":
        _line_plot(rows, "alpha", "base", "w1_slog", plots / "w1_vs_alpha.png",
                   "Pareto tail index alpha", "W1 on slog scale")  # fmt: skip
        figs.append(("w1_vs_alpha.png", "W1 (signed-log scale) against the tail index"))
    elif name == "precision-recall":
        _pr_plot(rows, plots / "pr_curve.png")
        figs.append(("pr_curve.png", "k-NN precision vs recall; lambda moves along the curve"))
    grid = meta.get("grid", [])
    for i, p in enumerate(grid):
        f = d / "samples" / f"{i}.npz"
        if f.is_file():
            with np.load(f) as z:
                png = plots / f"samples_{i}.png"
                plot_samples(z["data"], z["model"], png, title=_label(p))
            figs.append((f"samples_{i}.png", f"samples vs target, {_label(p)} (first seed)"))
    lines = [
        f"# Study `{name}`" + (" (quick)" if meta.get("quick") else ""),
        "",
        meta["description"] + ".",
        f"Seeds: {meta['seeds']}. Values: mean ± std over seeds.",
        "",
        "| run | " + " | ".join(metrics) + " | ok / failed |",
        "|---|" + "---|" * (len(metrics) + 1),
    ]
    for r in rows:
        cells = [
            "n/a" if r["stats"][m] is None else f"{r['stats'][m][0]:.4g} ± {r['stats'][m][1]:.2g}"
            for m in metrics
        ]
        lines.append(f"| {r['label']} | " + " | ".join(cells) + f" | {r['n']} / {r['failed']} |")
    lines.append("")
    for png, cap in figs:
        lines += [f"![{cap}](plots/{png})", "", f"*{cap}*", ""]
    atomic_write_json(d / "summary.json", rows)
    path = d / "report.md"
    atomic_write_text(path, "\n".join(lines))
    return path
