"""Unconditional-flow studies (support mismatch, heavy tails, precision-recall).

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
  curve. ``precision-recall-rings`` repeats it, unchanged, on two concentric rings.

Each is a :class:`~vinaflow.studies.base.Study` of ``kind: "flow"``: its base is a
``vinaflow flow`` config (:mod:`vinaflow.experiments.generative`; the flow is a
:class:`~vinaflow.models.ConditionalINN` with ``dim_y = 0``), its axes patch that config,
and ``vinaflow study NAME`` runs it through the sweeps' runner, results file and report
like every other study. Folders written by earlier versions (``study.json`` and id-less
records, e.g. ``benchmarks/results/study-*``) are read by ``vinaflow report``
(:func:`vinaflow.studies.report.load_study_data`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.config import _parse_scalar
from vinaflow.evaluation.plots import save_figure
from vinaflow.experiments.generative import plot_samples
from vinaflow.studies.base import FLOW_METRICS_NOTE, Study, get_study, register_study
from vinaflow.studies.grid import Axis
from vinaflow.studies.report import StudyData, load_study_data, summary_rows, write_study_report
from vinaflow.studies.sweep import run_sweep

__all__ = [
    "FLOW_STUDIES",
    "figure_flow_samples",
    "figure_pr_curve",
    "run_study",
    "study_summary",
]

SUPPORT_OFFSETS = (0, 3, 5, 10, 15, 20, 25)
PARETO_ALPHAS = tuple(range(1, 11))
PR_LAMBDAS = (0.1, 0.3, 1.0, 3.0, 10.0)

#: The flow studies' names, in the order the benchmark runs them.
FLOW_STUDIES = ("support-mismatch", "heavy-tails", "precision-recall", "precision-recall-rings")

#: No early stopping or time limit in studies: every run gets its full step budget, and
#: validation (never checked) costs nothing.
_STUDY_TRAINING = {"batch_size": 256, "progress": False, "val_every": 10_000, "max_seconds": None}
_STUDY_EVALUATION = {"certificate": False, "plots": False}


# -- figures -----------------------------------------------------------------------------
def _line_figure(
    data: StudyData,
    plots: Path,
    x_axis: str,
    group_axis: str,
    metric: str,
    labels: tuple[str, str, str],
    logy: bool = False,
) -> list[tuple[Path, str]]:
    """``metric`` (mean ± std) against the numeric labels of ``x_axis``, a line per group."""
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure

    groups: dict[str, list[tuple[float, float, float]]] = {}
    for row in summary_rows(data, [metric]):
        if row[metric]["n"]:
            pts = groups.setdefault(str(row[group_axis]), [])
            pts.append((float(row[x_axis]), row[metric]["mean"], row[metric]["std"]))
    if not groups:
        return []
    fig = Figure(figsize=(5.5, 3.6))
    ax = fig.add_subplot()
    for g, pts in groups.items():
        xs, ms, ss = (np.array(v) for v in zip(*sorted(pts), strict=True))
        ax.errorbar(xs, ms, yerr=ss, marker="o", capsize=3, label=g)
    ax.set_xlabel(labels[0])
    ax.set_ylabel(labels[1])
    if logy:
        ax.set_yscale("log")
    ax.legend()
    path = save_figure(fig, plots / f"{metric}_vs_{x_axis}.png", dpi=110)
    return [(path, labels[2])]


def figure_support_mismatch(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """W1 to U(0, 1) against the base displacement, Sinkhorn vs variational KL."""
    return _line_figure(
        data, plots, "offset", "objective", "w1",
        ("base offset d", "W1 to U(0, 1)", "W1 to the target against the base displacement"),
        logy=True,
    )  # fmt: skip


def figure_heavy_tails(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """W1 on the signed-log scale against the Pareto tail index, per base."""
    return _line_figure(
        data, plots, "alpha", "base", "w1_slog",
        ("Pareto tail index alpha", "W1 on slog scale",
         "W1 (signed-log scale) against the tail index"),
    )  # fmt: skip


def figure_pr_curve(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """k-NN precision against recall, one point per grid point (mean ± std)."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(4.5, 4))
    ax = fig.add_subplot()
    drawn = 0
    for row in summary_rows(data, ["precision", "recall"]):
        p, rc = row["precision"], row["recall"]
        if not (p["n"] and rc["n"]):
            continue
        lab = "NLL" if row["objective"] == "nll" else f"λ={float(row['lam']):g}"
        ax.errorbar(rc["mean"], p["mean"], xerr=rc["std"], yerr=p["std"], marker="o", capsize=3)
        ax.annotate(lab, (rc["mean"], p["mean"]), textcoords="offset points", xytext=(5, 5))
        drawn += 1
    if not drawn:
        return []
    ax.set_xlabel("recall (k-NN)")
    ax.set_ylabel("precision (k-NN)")
    path = save_figure(fig, plots / "pr_curve.png", dpi=110)
    return [(path, "k-NN precision vs recall; lambda moves along the curve")]


def figure_flow_samples(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Model samples beside held-out target samples, per grid point (first seed)."""
    out = []
    for key, records in data.groups().items():
        for r in records:
            pair = data.flow_samples(r)
            if pair is None:
                continue
            title = ", ".join(f"{a}={v}" for a, v in zip(data.axes, key, strict=True))
            png = plots / ("samples_" + "_".join(key).replace("/", "-") + ".png")
            plot_samples(pair[0], pair[1], png, title=title)
            out.append((png, f"samples vs target, {title} (seed {r['seed']})"))
            break
    return out


# -- the studies -------------------------------------------------------------------------
_SINKHORN = {"name": "sinkhorn", "blur": 0.05, "scaling": 0.5}
_VARIATIONAL_KL = {"name": "fdiv", "divergence": "kl", "critic_hidden": 32}
_PR_OBJECTIVE = {
    # No R1 penalty: the log-ratio between modes and bridges is steep.
    "name": "pr",
    "auxiliary": "gan",
    "critic_hidden": 64,
    "gradient_penalty": 0.0,
}

register_study(
    Study(
        name="support-mismatch",
        description="uniform target U(0,1), uniform base displaced by d: Sinkhorn vs KL",
        kind="flow",
        base={
            "target": {"name": "uniform", "low": 0.0, "high": 1.0},
            "data": {"num_train": 4000, "num_validation": 100, "num_test": 4000},
            "model": {
                "blocks": 2,
                "hidden": 8,
                "base": "uniform",
                "base_offset": 0.0,
                "base_width": 1.0,
                "normalization": "none",
            },
            "objective": _SINKHORN,
            # Same budget for both; lr 0.05 lets the shift travel 25 units within it.
            "training": {"steps": 600, "lr": 0.05, "critic_lr": 0.005, **_STUDY_TRAINING},
            "evaluation": {"num_samples": 4000, **_STUDY_EVALUATION},
        },
        axes=[
            Axis(
                "objective",
                [
                    ("sinkhorn", {"objective": _SINKHORN}),
                    ("kl", {"objective": _VARIATIONAL_KL}),
                ],
            ),
            Axis("offset", [(str(d), {"model.base_offset": float(d)}) for d in SUPPORT_OFFSETS]),
        ],
        seeds="0..9",
        quick={
            "seeds": "0,1",
            "overrides": {"training.steps": 400},
            "axes": {"offset": ["0", "5", "25"]},
        },
        figures=[figure_support_mismatch, figure_flow_samples],
        demo_samples=2000,
        metrics=("w1", "train_seconds"),
        metrics_note=FLOW_METRICS_NOTE,
    )
)

register_study(
    Study(
        name="heavy-tails",
        description="Pareto(alpha) targets: max-likelihood (KL) flow, Gaussian vs t(2) base",
        kind="flow",
        base={
            "target": {"name": "pareto", "alpha": 1.0},
            "data": {"num_train": 5000, "num_validation": 100, "num_test": 5000},
            "model": {
                "blocks": 3,
                "hidden": 16,
                "base": "gaussian",
                "base_df": 2.0,
                "normalization": "robust",
            },
            # KL(data || model) minimised exactly through the flow's density (maximum
            # likelihood). The variational KL (fdiv, critic on slog(x)) fits the bulk but,
            # at a few thousand steps, moves little mass into the tail with either base
            # (measured at alpha = 1: W1_slog 0.11 Gaussian vs 0.18 Student-t), so it
            # cannot show the base effect.
            "objective": {"name": "nll"},
            "training": {"steps": 800, "lr": 5e-3, "critic_lr": 2e-3, **_STUDY_TRAINING},
            "evaluation": {"num_samples": 5000, "w1_scale": "slog", **_STUDY_EVALUATION},
        },
        axes=[
            Axis("base", [(b, {"model.base": b}) for b in ("gaussian", "student-t")]),
            Axis("alpha", [(str(a), {"target.alpha": float(a)}) for a in PARETO_ALPHAS]),
        ],
        seeds="0..2",
        quick={
            "seeds": "0",
            "overrides": {"training.steps": 400},
            "axes": {"alpha": ["1", "2", "5", "10"]},
        },
        figures=[figure_heavy_tails],
        demo_samples=0,
        metrics=("w1_slog", "q99_ratio", "train_seconds"),
        metrics_note=FLOW_METRICS_NOTE,
    )
)


def _pr_excluded(params: Mapping[str, str]) -> bool:
    """The NLL row has no lambda; every PR row has one."""
    return (params["objective"] == "nll") != (params["lam"] == "none")


def _register_pr_study(name: str, description: str, target: dict[str, Any], seeds: str) -> None:
    """A precision-recall study of ``target``: an NLL flow fine-tuned by the PR divergence
    for each lambda of :data:`PR_LAMBDAS`, beside the NLL flow trained as long."""
    register_study(
        Study(
            name=name,
            description=description,
            kind="flow",
            base={
                "target": target,
                "data": {"num_train": 8000, "num_validation": 100, "num_test": 4000},
                # A capacity-limited flow: one with 6 blocks x 64 fits the 8 modes so
                # closely that a classifier cannot tell its samples from the data (BCE
                # 0.690 vs 0.693 at chance), and then every lambda has the same optimum,
                # P itself. With 2 x 16 the flow must trade mass in the bridges between
                # modes (precision) against covered modes (recall).
                "model": {"blocks": 2, "hidden": 16, "layers": 2},
                # Maximum-likelihood pre-training, then fine-tuning (as Verine et al.
                # fine-tune pre-trained flows); the NLL row continues NLL as long.
                "pretraining": {"objective": {"name": "nll"}, "steps": 1200, "lr": 2e-3},
                "objective": {"name": "nll"},
                "training": {"steps": 600, "lr": 5e-4, **_STUDY_TRAINING},
                "evaluation": {"num_samples": 4000, **_STUDY_EVALUATION},
            },
            axes=[
                Axis("objective", [("nll", {}), ("pr", {})]),
                Axis(
                    "lam",
                    [("none", {})]
                    + [
                        (
                            str(v),
                            {
                                "objective": {**_PR_OBJECTIVE, "lam": v},
                                # A fresh critic starts at chance: warmed up before the
                                # first update of the pre-trained flow.
                                "training.critic_lr": 1e-3,
                                "training.critic_warmup": 1000,
                            },
                        )
                        for v in PR_LAMBDAS
                    ],
                ),
            ],
            exclude=_pr_excluded,
            seeds=seeds,
            quick={
                "seeds": "0",
                "overrides": {"pretraining.steps": 400, "training.steps": 300},
                "axes": {"lam": ["none", "0.1", "1.0", "10.0"]},
            },
            figures=[figure_pr_curve],
            demo_samples=0,
            metrics=("precision", "recall", "w1", "train_seconds"),
            metrics_note=FLOW_METRICS_NOTE,
        )
    )


_register_pr_study(
    "precision-recall",
    "8-Gaussian mixture: NLL flow fine-tuned with the PR divergence",
    {"name": "gaussian-mixture", "dim": 2, "modes": 8, "radius": 2.0, "std": 0.15},
    seeds="0..2",
)
# The same study on a target it was not designed on (the rings target's own defaults,
# fixed before the study was run): does lambda move the flow along the PR curve there too?
_register_pr_study(
    "precision-recall-rings",
    "two concentric rings: NLL flow fine-tuned with the PR divergence",
    {"name": "rings"},
    seeds="0..4",
)


# -- running -----------------------------------------------------------------------------
def run_study(
    name: str,
    out: str | Path,
    seeds: Sequence[int] | None = None,
    quick: bool = False,
    log: Callable[[str], None] | None = print,
    workers: int | None = None,
) -> Path:
    """Run (or resume) study ``name`` into ``out`` and write its report; returns its path.

    What ``vinaflow study NAME --out DIR`` does, with the local process pool of
    ``workers`` processes (default: one per available core); ``log=None`` silences the
    progress lines.
    """
    study = get_study(name)
    sweep = study.sweep(quick=quick, seeds=None if seeds is None else ",".join(map(str, seeds)))
    run_sweep(
        sweep,
        out,
        workers=workers,
        progress=log is not None,
        meta={"study": study.name, "quick": bool(quick)},
    )
    return write_study_report(out)


def _axis_value(label: str) -> Any:
    return None if label == "none" else _parse_scalar(label)


def study_summary(directory: str | Path) -> list[dict[str, Any]]:
    """Per grid point of the study in ``directory``, as ``benchmarks/generative.py``
    records it: ``label``, ``params`` (axis values, numbers as numbers, ``none`` as
    ``None``), ``n`` finished and ``failed`` runs, ``stats``: ``(mean, std, n)`` of each
    of the study's metrics (``std`` with ``ddof=1``), and ``ci95``: its Student-t 95%
    interval ``(low, high)`` over seeds (both from
    :func:`vinaflow.evaluation.intervals.seed_interval`; ``None`` where no run has the
    metric, ``(None, None)`` with one seed)."""
    data = load_study_data(directory)
    metrics = list(get_study(data.meta["study"]).metrics)
    out = []
    for row in summary_rows(data, metrics):
        out.append(
            {
                "label": ",".join(f"{a}={row[a]}" for a in data.axes),
                "params": {
                    a: None if row[a] == "none" else _parse_scalar(row[a]) for a in data.axes
                },
                "n": row["runs"] - row["failed"],
                "failed": row["failed"],
                "stats": {
                    m: (row[m]["mean"], row[m]["std"], row[m]["n"]) if row[m]["n"] else None
                    for m in metrics
                },
                "ci95": {
                    m: (row[m]["low"], row[m]["high"]) if row[m]["n"] else None for m in metrics
                },
            }
        )
    return out
