"""``vinaflow report DIR``: tables (mean ± std over seeds) and figures of a sweep or study.

Reads ``DIR/sweep.json`` and ``DIR/results.jsonl`` (see
:mod:`vinaflow.studies.sweep`), writes ``DIR/report.md``, ``DIR/summary.json`` and
``DIR/plots/*.png``. A study's figures come from its registry entry
(:mod:`vinaflow.studies.base`); the figure functions here reproduce the
paper's inverse-kinematics figures:

* :func:`figure_arm_posteriors` - arm posteriors per prior setting (paper Fig. 2);
* :func:`figure_time_vs_resim` - training time vs re-simulation error, one ellipse per
  divergence (centre = means, semi-axes = standard deviations over seeds), one panel
  per architecture x direction (paper Fig. 4);
* :func:`figure_latent_dim` - re-simulation error vs latent dimension (paper Fig. 5);
* :func:`figure_sinkhorn_blur` - re-simulation error vs Sinkhorn blur.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.errors import DataError
from vinaflow.studies.sweep import load_results

__all__ = [
    "StudyData",
    "figure_arm_posteriors",
    "figure_latent_dim",
    "figure_metric_bars",
    "figure_sinkhorn_blur",
    "figure_time_vs_resim",
    "load_study_data",
    "summary_rows",
    "write_study_report",
]

_METRIC_NAMES = {
    "resim_error": "resim error",
    "c2st": "C2ST",
    "w1": "W1",
    "mmd": "MMD",
    "train_seconds": "train time [s]",
    "mean_error": "mean error",
    "coverage": "95% coverage",
    "is_c2st": "C2ST (flow + IS)",
    "is_coverage": "95% coverage (flow + IS)",
    "is_efficiency": "IS efficiency",
}


@dataclass
class StudyData:
    """The results of one sweep folder, grouped by grid point."""

    directory: Path
    meta: dict[str, Any]
    records: list[dict[str, Any]]

    @property
    def axes(self) -> list[str]:
        return [a["name"] for a in self.meta.get("axes", [])]

    def labels(self, axis: str) -> list[str]:
        """The labels of ``axis`` in grid order."""
        for a in self.meta.get("axes", []):
            if a["name"] == axis:
                return [v[0] for v in a["values"]]
        raise DataError(f"sweep has no axis {axis!r}; axes: {self.axes}")

    @property
    def ok(self) -> list[dict[str, Any]]:
        return [r for r in self.records if r.get("status") == "ok"]

    def groups(self, axes: Sequence[str] | None = None) -> dict[tuple[str, ...], list[dict]]:
        """Records grouped by their labels on ``axes`` (default all), in grid order."""
        axes = list(self.axes if axes is None else axes)
        order = [self.labels(a) for a in axes]
        out: dict[tuple[str, ...], list[dict]] = {}
        for r in self.records:
            key = tuple(str(r["params"].get(a)) for a in axes)
            out.setdefault(key, []).append(r)

        def rank(key: tuple[str, ...]) -> tuple[int, ...]:
            return tuple(o.index(k) if k in o else len(o) for o, k in zip(order, key, strict=True))

        return dict(sorted(out.items(), key=lambda kv: rank(kv[0])))

    def samples(self, record: Mapping[str, Any]) -> np.ndarray | None:
        """Demo posterior samples ``(n_obs, n, dim_x)`` saved by a run, if any."""
        path = self.directory / "samples" / f"{record['id']}.npz"
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                return f["samples"]
        except (OSError, ValueError, KeyError):
            return None

    def problem(self) -> Any:
        from vinaflow.config import resolve_config
        from vinaflow.problems import make_problem

        return make_problem(resolve_config(self.meta["base"])["problem"])


def load_study_data(directory: str | Path) -> StudyData:
    """Read a sweep folder; errors name the missing or damaged file."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"report: folder not found: {d}")
    meta_path = d / "sweep.json"
    if not meta_path.is_file():
        raise DataError(f"report: {d} has no sweep.json (not a sweep or study output folder)")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise DataError(f"report: {meta_path} is not valid JSON ({err.msg})") from err
    records = load_results(d)
    ids = {r["id"] for r in records}
    if len(ids) != len(records):
        # A run recorded twice (e.g. --retry-failed): the last record wins.
        last = {r["id"]: r for r in records}
        records = list(last.values())
    return StudyData(d, meta, records)


# -- tables ------------------------------------------------------------------------------
def _stats(values: Sequence[float | None]) -> tuple[float, float, int]:
    v = np.array([x for x in values if x is not None and math.isfinite(x)], dtype=float)
    if len(v) == 0:
        return math.nan, math.nan, 0
    return float(v.mean()), float(v.std(ddof=1)) if len(v) > 1 else 0.0, len(v)


def _fmt(mean: float, std: float) -> str:
    if not math.isfinite(mean):
        return "n/a"
    return f"{mean:.4g} ± {std:.2g}"


def summary_rows(data: StudyData, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per grid point: labels, run counts and ``(mean, std)`` of each metric."""
    rows = []
    for key, recs in data.groups().items():
        ok = [r for r in recs if r.get("status") == "ok"]
        row: dict[str, Any] = dict(zip(data.axes, key, strict=True))
        row["runs"], row["failed"] = len(recs), len(recs) - len(ok)
        for m in metrics:
            mean, std, n = _stats([(r.get("metrics") or {}).get(m) for r in ok])
            row[m] = {"mean": mean, "std": std, "n": n}
        rows.append(row)
    return rows


def _markdown_table(data: StudyData, rows: list[dict[str, Any]], metrics: Sequence[str]) -> str:
    heads = (
        [a.split(".")[-1] for a in data.axes]
        + ["runs"]
        + [_METRIC_NAMES.get(m, m) for m in metrics]
    )
    lines = ["| " + " | ".join(heads) + " |", "|" + "---|" * len(heads)]
    for row in rows:
        runs = f"{row['runs'] - row['failed']}/{row['runs']}"
        cells = [str(row[a]) for a in data.axes] + [runs]
        cells += [_fmt(row[m]["mean"], row[m]["std"]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------
def _pretty(axis: str, label: str) -> str:
    names = {"objective.prior_weight": "λ'", "objective.divergence": "", "model.arch": ""}
    name = names.get(axis, axis.split(".")[-1] + "=")
    return f"{name}{'=' if name and not name.endswith('=') else ''}{label}"


def figure_arm_posteriors(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Arm posteriors at the demo observation, one panel per grid point (first seed)."""
    from vinaflow.studies.kinematics_plots import plot_arm_panels

    obs = data.meta.get("demo_observations") or []
    if not obs:
        return []
    panels: list[tuple[str, Any]] = []
    for key, recs in data.groups().items():
        for r in sorted((r for r in recs if r.get("status") == "ok"), key=lambda r: r["seed"]):
            s = data.samples(r)
            if s is not None:
                title = ", ".join(_pretty(a, k) for a, k in zip(data.axes, key, strict=True))
                panels.append((f"{title} (seed {r['seed']})", s[0]))
                break
    if not panels:
        return []
    problem = data.problem()
    import torch

    ref = problem.reference_posterior(
        torch.tensor(obs[0]), len(panels[0][1]), torch.Generator().manual_seed(0)
    )
    panels.append((f"reference (ABC, eps={getattr(problem, 'abc_tolerance', '?')})", ref))
    lengths = getattr(problem, "lengths", torch.tensor([0.5, 0.5, 1.0])).tolist()
    path = plot_arm_panels(panels, obs[0], plots / "arm_posteriors.png", lengths=lengths)
    caption = (
        f"Posterior arm configurations for the target y* = {tuple(obs[0])} (cross), one panel "
        "per setting, with the rejection-ABC ground truth last."
    )
    return [(path, caption)]


def figure_time_vs_resim(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Training time vs re-simulation error ellipses per divergence, per arch x direction."""
    from matplotlib.figure import Figure
    from matplotlib.patches import Ellipse

    from vinaflow.evaluation.plots import _save

    div, arch, dirn = "objective.divergence", "model.arch", "objective.direction"
    if not {div, arch, dirn} <= set(data.axes):
        return []
    archs, dirs, divs = data.labels(arch), data.labels(dirn), data.labels(div)
    fig = Figure(figsize=(4.6 * len(dirs), 3.8 * len(archs)), layout="constrained")
    axes = fig.subplots(len(archs), len(dirs), squeeze=False)
    colors = {d: f"C{i}" for i, d in enumerate(divs)}
    groups = data.groups([arch, dirn, div])
    for i, a in enumerate(archs):
        for j, dr in enumerate(dirs):
            ax = axes[i, j]
            for d in divs:
                ok = [r for r in groups.get((a, dr, d), []) if r.get("status") == "ok"]
                pts = np.array(
                    [
                        (r["metrics"].get("train_seconds"), r["metrics"].get("resim_error"))
                        for r in ok
                        if r["metrics"].get("resim_error") is not None
                    ],
                    dtype=float,
                ).reshape(-1, 2)
                pts = pts[np.isfinite(pts).all(1)]
                if len(pts) == 0:
                    continue
                mean, std = pts.mean(0), pts.std(0, ddof=1) if len(pts) > 1 else np.zeros(2)
                ax.scatter(pts[:, 0], pts[:, 1], s=8, color=colors[d], alpha=0.5)
                ax.add_patch(
                    Ellipse(
                        tuple(mean),
                        2 * max(std[0], 1e-9),
                        2 * max(std[1], 1e-9),
                        facecolor=colors[d],
                        edgecolor=colors[d],
                        alpha=0.3,
                        lw=1.5,
                    )
                )
                ax.plot(*mean, marker="o", color=colors[d], label=d)
            ax.set_title(f"{a}, {dr} loss", fontsize=10)
            ax.set_xlabel("training time [s]")
            ax.set_ylabel("re-simulation error")
            ax.grid(alpha=0.3)
            ax.autoscale_view()
            if i == 0 and j == 0:
                ax.legend(fontsize=8)
    path = _save(fig, plots / "time_vs_resim.png")
    caption = (
        "Training time vs re-simulation error: one ellipse per divergence (centre = mean "
        "over seeds, semi-axes = standard deviations), dots = single seeds; panels are "
        "architecture x direction (backward = posterior loss, forward = latent loss)."
    )
    return [(path, caption)]


def _line_figure(
    data: StudyData, x_axis: str, plots: Path, name: str, xlabel: str, logx: bool = False
) -> Path | None:
    from matplotlib.figure import Figure

    from vinaflow.evaluation.plots import _save

    if x_axis not in data.axes:
        return None
    others = [a for a in data.axes if a != x_axis]
    fig = Figure(figsize=(5.5, 4))
    ax = fig.add_subplot()
    series: dict[tuple[str, ...], list[tuple[float, float, float]]] = {}
    for key, recs in data.groups(others + [x_axis]).items():
        ok = [r for r in recs if r.get("status") == "ok"]
        mean, std, n = _stats([r["metrics"].get("resim_error") for r in ok])
        if n:
            series.setdefault(key[:-1], []).append((float(key[-1]), mean, std))
    if not series:
        return None
    for k, pts in series.items():
        p = np.array(sorted(pts))
        label = ", ".join(k) if k else "resim error"
        ax.errorbar(p[:, 0], p[:, 1], yerr=p[:, 2], marker="o", capsize=3, label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("re-simulation error (mean ± std)")
    ax.grid(alpha=0.3)
    ax.legend()
    return _save(fig, plots / name)


def figure_latent_dim(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Re-simulation error vs latent dimension, one line per objective."""
    path = _line_figure(data, "model.latent_dim", plots, "latent_dim.png", "latent dimension")
    if path is None:
        return []
    return [(path, "Re-simulation error vs latent dimension (mean ± std over seeds).")]


def figure_sinkhorn_blur(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Re-simulation error vs blur (log scale), plus the arm posteriors per blur."""
    out = []
    path = _line_figure(data, "objective.blur", plots, "sinkhorn_blur.png", "blur ε", logx=True)
    if path is not None:
        out.append((path, "Re-simulation error vs Sinkhorn blur (mean ± std over seeds)."))
    return out + figure_arm_posteriors(data, plots)


def figure_metric_bars(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Generic sweep figure: re-simulation error (or C2ST) per grid point."""
    from matplotlib.figure import Figure

    from vinaflow.evaluation.plots import _save

    rows = summary_rows(data, ["resim_error", "c2st"])
    metric = "resim_error" if any(r["resim_error"]["n"] for r in rows) else "c2st"
    rows = [r for r in rows if r[metric]["n"]]
    if not rows:
        return []
    fig = Figure(figsize=(max(4.0, 0.6 * len(rows) + 2), 4))
    ax = fig.add_subplot()
    labels = [", ".join(str(r[a]) for a in data.axes) or "base" for r in rows]
    ax.bar(
        range(len(rows)),
        [r[metric]["mean"] for r in rows],
        yerr=[r[metric]["std"] for r in rows],
        capsize=3,
    )
    ax.set_xticks(range(len(rows)), labels, rotation=45, ha="right", fontsize=8)
    ax.set_ylabel(f"{_METRIC_NAMES[metric]} (mean ± std)")
    ax.grid(alpha=0.3, axis="y")
    path = _save(fig, plots / "grid_points.png")
    return [(path, f"{_METRIC_NAMES[metric]} per grid point (mean ± std over seeds).")]


# -- report ------------------------------------------------------------------------------
def write_study_report(directory: str | Path) -> Path:
    """Write ``DIR/report.md`` (+ ``summary.json``, ``plots/``); returns the report path."""
    from vinaflow.atomic import atomic_write_json, atomic_write_text

    data = load_study_data(directory)
    if not data.records:
        raise DataError(f"report: {data.directory} has no finished runs yet (results.jsonl empty)")
    study = None
    name = data.meta.get("study")
    if name:
        from vinaflow.studies.base import get_study

        study = get_study(name)
    metrics = list(study.metrics) if study else ["resim_error", "c2st", "w1", "train_seconds"]
    rows = summary_rows(data, metrics)
    plots = data.directory / "plots"
    plots.mkdir(exist_ok=True)
    funcs = study.figure_functions() if study else [figure_metric_bars]
    figures: list[tuple[Path, str]] = []
    for fn in funcs:
        figures += fn(data, plots)

    title = f"Study `{name}`" if name else "Sweep"
    n_ok = len(data.ok)
    total_train = sum((r.get("metrics") or {}).get("train_seconds") or 0 for r in data.ok)
    lines = [f"# {title}", ""]
    if study:
        lines += [study.description, ""]
    if data.meta.get("quick"):
        lines += ["*Quick variant* (short training, few observations): indicative only.", ""]
    seeds = data.meta.get("seeds", [])
    lines += [
        f"- runs: {n_ok} finished, {len(data.records) - n_ok} failed, "
        f"{data.meta.get('num_tasks', '?')} in the grid",
        f"- seeds: {seeds[0]}..{seeds[-1]} ({len(seeds)})" if seeds else "- seeds: none",
        f"- grid: {', '.join(data.axes) or '(none)'}",
        f"- total training time: {total_train:.0f} s",
        "",
        "Metrics are means ± standard deviations over seeds: re-simulation error "
        "`mean ||f(x_hat) - y*||`, C2ST accuracy and W1 distance to the ground-truth "
        "posterior (0.5 and 0 are perfect), training wall time.",
        "",
        _markdown_table(data, rows, metrics),
        "",
    ]
    failed = [r for r in data.records if r.get("status") != "ok"]
    if failed:
        lines += ["## Failed runs", ""]
        for r in failed:
            lines.append(f"- `{r['params']}` seed {r['seed']}: {r.get('error', '?')}")
        lines.append("")
    if figures:
        lines += ["## Figures", ""]
        for path, caption in figures:
            rel = Path(path).relative_to(data.directory)
            lines += [f"![{rel.stem}]({rel.as_posix()})", "", caption, ""]
    atomic_write_json(
        data.directory / "summary.json", {"study": name, "metrics": metrics, "rows": rows}
    )
    report = data.directory / "report.md"
    atomic_write_text(report, "\n".join(lines))
    return report
