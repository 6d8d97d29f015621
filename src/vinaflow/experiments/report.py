"""Markdown reports and plain-text metric tables."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vinaflow.atomic import atomic_write_text

__all__ = [
    "HEADLINE_METRICS",
    "IMPORTANCE_METRICS",
    "format_importance",
    "format_metrics_table",
    "write_run_report",
]

HEADLINE_METRICS = {
    "c2st": "C2ST accuracy vs ground truth (0.5 = perfect)",
    "w1": "Wasserstein-1 to ground truth",
    "mmd": "MMD^2 to ground truth",
    "mean_error": "posterior-mean error vs ground-truth mean",
    "mean_error_truth": "posterior-mean error vs true parameters",
    "resim_error": "re-simulation error mean ||f(x_hat) - y*||",
    "ci_width": "mean 95% credible-interval width",
    "coverage": "coverage of 95% marginal credible intervals",
    "coverage_joint": "coverage of 95% joint credible regions",
    "train_seconds": "training time [s]",
    "sampling_seconds_per_10k": "sampling time per 10,000 samples [s]",
}


IMPORTANCE_METRICS = {
    "c2st": "C2ST accuracy vs ground truth",
    "w1": "Wasserstein-1 to ground truth",
    "mean_error": "posterior-mean error vs ground-truth mean",
    "coverage": "coverage of 95% marginal credible intervals",
    "efficiency": "mean effective sample size / proposals (1 = perfect proposal)",
    "efficiency_min": "worst observation's ESS / proposals",
    "sampling_seconds_per_10k": "seconds per 10,000 resampled draws (incl. likelihoods)",
}


def format_importance(imp: Mapping[str, Any]) -> str:
    """Markdown section for the importance-sampled posterior (``metrics["importance"]``)."""
    lines = ["## Importance-sampled posterior", ""]
    if "skipped" in imp:
        return "\n".join(lines + [f"Not computed: {imp['skipped']}."])
    lines += [
        f"The flow as proposal, {imp['oversampling']} proposals per draw, weights "
        "`p(y|x) p(x) / q(x|y)` with the problem's likelihood, then resampled. "
        "The flow's own metrics are above; the efficiency says how good a proposal the "
        "flow is (Dax et al. 2023).",
        "",
        *_metric_rows(imp, IMPORTANCE_METRICS),
    ]
    if imp.get("efficiency_min") is not None and imp["efficiency_min"] < 0.01:
        lines += [
            "",
            "**Warning:** an efficiency below 1% means few effective draws; the "
            "resampled posterior is then unreliable for that observation.",
        ]
    return "\n".join(lines)


def _metric_rows(values: Mapping[str, Any], meanings: Mapping[str, str]) -> list[str]:
    """A markdown table of the ``meanings`` keys present in ``values``."""
    rows = ["| metric | value | meaning |", "|---|---|---|"]
    return rows + [
        f"| `{k}` | {_fmt(values[k])} | {m} |" for k, m in meanings.items() if k in values
    ]


def _fmt(v: Any) -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A two-column plain-text table of the headline metrics (and, when computed, those
    of the importance-sampled posterior, prefixed ``is_``)."""
    rows = [(k, _fmt(metrics.get(k))) for k in HEADLINE_METRICS if k in metrics]
    imp = metrics.get("importance") or {}
    rows += [(f"is_{k}", _fmt(imp[k])) for k in ("c2st", "coverage", "efficiency") if k in imp]
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def write_run_report(out_dir: Path, cfg: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    lines = ["# vinaflow run report", ""]
    p, m, o = cfg["problem"], cfg["model"], cfg["objective"]
    desc = p.get("name") or p.get("simulator") or p.get("bank")
    obj = o["name"] + (
        f" ({o.get('divergence')}, {o.get('direction')})"
        if o["name"] == "fdiv"
        else f" ({o.get('direction')})"
        if o["name"] != "nll"
        else ""
    )
    lines += [
        f"- problem: `{desc}`",
        f"- model: `{m['kind']}` / `{m['arch']}`, {m['blocks']} blocks, hidden {m['hidden']}",
        f"- objective: {obj}",
        f"- seed: {metrics.get('seed')}, steps: {metrics.get('train_steps')} "
        f"(stopped by {metrics.get('stopped')})",
        f"- evaluated on {metrics.get('num_observations')} held-out observations x "
        f"{metrics.get('num_samples')} samples",
        "",
        *_metric_rows(metrics, HEADLINE_METRICS),
        "",
    ]
    plots = sorted((out_dir / "plots").glob("*.png")) if (out_dir / "plots").exists() else []
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{q.stem}](plots/{q.name})" for q in plots]
        lines.append("")
    if metrics.get("importance"):
        lines += [format_importance(metrics["importance"]), ""]
    if metrics.get("certificate"):
        from vinaflow.evaluation.certificate import format_certificate

        lines += [format_certificate(metrics["certificate"]), ""]
    env = metrics.get("environment", {})
    lines += [
        "## Environment",
        "",
        "```",
        yaml.safe_dump(dict(env), sort_keys=False).strip(),
        "```",
        "",
        "## Configuration",
        "",
        "```yaml",
        yaml.safe_dump(dict(cfg), sort_keys=False).strip(),
        "```",
        "",
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))
