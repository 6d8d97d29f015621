"""``vinaflow report DIR``: tables (mean ± std and 95% interval over seeds) and figures of a
sweep or study.

Reads ``DIR/sweep.json`` and ``DIR/results.jsonl`` (see
:mod:`vinaflow.studies.sweep`), writes ``DIR/report.md``, ``DIR/summary.json`` and
``DIR/plots/*.png``. A study's figures come from its registry entry
(:mod:`vinaflow.studies.base`; e.g. the paper's arm figures in
:mod:`vinaflow.studies.kinematics`); a plain sweep gets :func:`figure_metric_bars`.

Flow-study folders of earlier versions (``DIR/study.json`` with the grid as a list of
parameter mappings, records without ``id``, samples in ``DIR/samples/INDEX.npz``) are
read as well: their records are given the study's axis labels.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.atomic import atomic_write_json, atomic_write_text
from vinaflow.config import resolve_config
from vinaflow.errors import DataError
from vinaflow.evaluation.intervals import seed_interval
from vinaflow.problems import make_problem
from vinaflow.studies.base import (
    DEFAULT_METRICS,
    FLOW_METRICS,
    FLOW_METRICS_NOTE,
    POSTERIOR_METRICS_NOTE,
    get_study,
)
from vinaflow.studies.results import load_results

__all__ = [
    "StudyData",
    "figure_metric_bars",
    "load_study_data",
    "metric_stats",
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
    "w1_slog": "W1 (slog scale)",
    "q99_ratio": "q99 ratio",
    "precision": "precision",
    "recall": "recall",
    "test_outside_support": "outside support",
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

    def flow_samples(self, record: Mapping[str, Any]) -> tuple[np.ndarray, np.ndarray] | None:
        """Held-out and model samples ``(data, model)`` saved by a flow run, if any."""
        name = record.get("samples_file") or f"{record['id']}.npz"
        path = self.directory / "samples" / name
        if not path.is_file():
            return None
        try:
            with np.load(path, allow_pickle=False) as f:
                # "model": the key of folders written by earlier versions
                return f["data"], f["samples"] if "samples" in f else f["model"]
        except (OSError, ValueError, KeyError):
            return None

    def problem(self) -> Any:
        """The problem of the sweep's base config."""
        return make_problem(resolve_config(self.meta["base"])["problem"])


def load_study_data(directory: str | Path) -> StudyData:
    """Read a sweep folder; errors name the missing or damaged file."""
    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"report: folder not found: {d}")
    meta_path = d / "sweep.json"
    if not meta_path.is_file() and (d / "study.json").is_file():
        return _load_earlier_flow_study(d)
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


def _load_earlier_flow_study(d: Path) -> StudyData:
    """A flow-study folder of an earlier version, with the axes of the registered study."""
    try:
        old = json.loads((d / "study.json").read_text(encoding="utf-8"))
        name, grid, seeds = old["study"], old["grid"], old["seeds"]
    except (json.JSONDecodeError, KeyError, TypeError) as err:
        raise DataError(f"report: {d / 'study.json'} is not a study description ({err})") from err
    sweep = get_study(name).sweep(quick=bool(old.get("quick")))
    meta = {
        "study": name,
        "quick": bool(old.get("quick")),
        "seeds": list(seeds),
        "kind": sweep.kind,
        "axes": [
            {"name": a.name, "values": [[lab, dict(p)] for lab, p in a.values]} for a in sweep.axes
        ],  # fmt: skip
        "num_tasks": len(grid) * len(seeds),
    }

    def labels(params: Mapping[str, Any]) -> dict[str, str]:
        return {k: "none" if v is None else str(v) for k, v in params.items()}

    index = {json.dumps(labels(p), sort_keys=True): i for i, p in enumerate(grid)}
    records = []
    path = d / "results.jsonl"
    lines = path.read_text(encoding="utf-8").splitlines() if path.is_file() else []
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            r = json.loads(line)
            params, seed = labels(r["params"]), r["seed"]
        except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
            raise DataError(f"report: {path} line {n} is not a study record ({err})") from err
        rec = {**r, "params": params, "id": r.get("id") or f"{r.get('label')}/seed={seed}"}
        i = index.get(json.dumps(params, sort_keys=True))
        if i is not None and seeds and seed == seeds[0]:
            rec["samples_file"] = f"{i}.npz"
        records.append(rec)
    return StudyData(d, meta, records)


# -- tables ------------------------------------------------------------------------------
def metric_stats(values: Sequence[float | None]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (``ddof=1``) and count of the finite values
    (``None`` skipped), by :func:`vinaflow.evaluation.intervals.seed_interval`; the
    standard deviation of a single value is reported as 0."""
    s = seed_interval(values)
    if s["n"] == 0:
        return math.nan, math.nan, 0
    return s["mean"], s["std"] if s["n"] > 1 else 0.0, s["n"]


def _fmt(stat: Mapping[str, Any]) -> str:
    """``mean ± std [low, high]``: the 95% interval over seeds where there is one."""
    mean, std, low, high = stat["mean"], stat["std"], stat.get("low"), stat.get("high")
    if not math.isfinite(mean):
        return "n/a"
    text = f"{mean:.4g} ± {std:.2g}"
    return text if low is None or high is None else f"{text} [{low:.4g}, {high:.4g}]"


def summary_rows(data: StudyData, metrics: Sequence[str]) -> list[dict[str, Any]]:
    """One row per grid point: labels, run counts and, per metric, the mean, ``std``
    (``ddof=1``), ``n`` and the Student-t 95% interval ``low``/``high`` over seeds
    (:func:`vinaflow.evaluation.intervals.seed_interval`; ``None`` with fewer than 2 seeds)."""
    rows = []
    for key, recs in data.groups().items():
        ok = [r for r in recs if r.get("status") == "ok"]
        row: dict[str, Any] = dict(zip(data.axes, key, strict=True))
        row["runs"], row["failed"] = len(recs), len(recs) - len(ok)
        for m in metrics:
            values = [(r.get("metrics") or {}).get(m) for r in ok]
            mean, std, n = metric_stats(values)
            ci = seed_interval(values)
            low, high = (ci[k] if math.isfinite(ci[k]) else None for k in ("low", "high"))
            row[m] = {"mean": mean, "std": std, "n": n, "low": low, "high": high}
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
        cells += [_fmt(row[m]) for m in metrics]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


# -- figures -----------------------------------------------------------------------------
def figure_metric_bars(data: StudyData, plots: Path) -> list[tuple[Path, str]]:
    """Generic sweep figure: re-simulation error (or C2ST, or W1 for flows) per grid point."""
    # matplotlib is heavy: loaded only when a report draws figures.
    from matplotlib.figure import Figure

    from vinaflow.evaluation.plots import save_figure

    candidates = ["resim_error", "c2st", "w1"]
    rows = summary_rows(data, candidates)
    metric = next((m for m in candidates if any(r[m]["n"] for r in rows)), "c2st")
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
    path = save_figure(fig, plots / "grid_points.png")
    return [(path, f"{_METRIC_NAMES[metric]} per grid point (mean ± std over seeds).")]


# -- report ------------------------------------------------------------------------------
def write_study_report(directory: str | Path) -> Path:
    """Write ``DIR/report.md`` (+ ``summary.json``, ``plots/``); returns the report path."""
    data = load_study_data(directory)
    if not data.records:
        raise DataError(f"report: {data.directory} has no finished runs yet (results.jsonl empty)")
    study = None
    name = data.meta.get("study")
    if name:
        study = get_study(name)
    flow = data.meta.get("kind") == "flow"
    if study:
        metrics, note = list(study.metrics), study.metrics_note
    else:
        metrics = list(FLOW_METRICS if flow else DEFAULT_METRICS)
        note = FLOW_METRICS_NOTE if flow else POSTERIOR_METRICS_NOTE
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
        note,
        "",
        "Cells: mean ± standard deviation (ddof=1) [Student-t 95% interval of the mean] "
        "over seeds (`vinaflow.evaluation.intervals.seed_interval`); no interval with one "
        "seed.",
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
