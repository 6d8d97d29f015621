"""The run report (``report.md``) and the plain-text metrics table of the CLI.

One writer for ``vinaflow run`` and ``vinaflow flow`` folders: a header (problem or
target, model, objective, training), then the sections whose metrics exist: the
posterior's metrics against ground truth (:data:`HEADLINE_METRICS`) or the flow's
against held-out target samples (:data:`FLOW_METRICS`), plots, the importance-sampled
posterior, the certificate, the environment and the resolved config.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from vinaflow.atomic import atomic_write_text
from vinaflow.evaluation.certificate import format_certificate

__all__ = [
    "FLOW_METRICS",
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


#: Metrics of an unconditional flow (a run whose config has a ``target``).
FLOW_METRICS = {
    "w1": "Wasserstein-1 to held-out data (exact OT)",
    "w1_slog": "W1 on the signed-log scale sign(x) log(1+|x|)",
    "mmd": "MMD^2 to held-out data (Gaussian kernel)",
    "precision": "k-NN precision (model samples on the data manifold)",
    "recall": "k-NN recall (data on the model manifold)",
    "test_nll": "held-out negative log-likelihood [nats/sample]",
    "target_nll": "same for the true density (lower bound in expectation)",
    "q99_ratio": "model's 99% quantile / the data's (1-D)",
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


def _is_flow(values: Mapping[str, Any]) -> bool:
    """Whether a config or metrics mapping is an unconditional flow's (it has a target)."""
    return "target" in values


def format_metrics_table(metrics: Mapping[str, Any]) -> str:
    """A two-column plain-text table of the headline metrics of a run or a flow (and,
    when computed, those of the importance-sampled posterior, prefixed ``is_``, and the
    certificate's estimate and TV bound)."""
    meanings = FLOW_METRICS if _is_flow(metrics) else HEADLINE_METRICS
    rows = [(k, _fmt(metrics.get(k))) for k in meanings if k in metrics]
    imp = metrics.get("importance") or {}
    rows += [(f"is_{k}", _fmt(imp[k])) for k in ("c2st", "coverage", "efficiency") if k in imp]
    cert = metrics.get("certificate") or {}
    if "estimate" in cert and cert.get("resolved", True):
        rows.append((f"D_{cert.get('divergence')} estimate", _fmt(cert["estimate"])))
        rows.append(("TV bound (estimate)", _fmt(cert.get("tv_bound"))))
    elif "estimate" in cert:  # within noise: no value to quote, the detection limit instead
        limit = _fmt(cert.get("detection_limit"))
        rows.append(("certificate", f"not resolved (detection limit {limit})"))
    if cert.get("consistent_with_c2st") is False:
        rows.append(("certificate vs C2ST", "CONTRADICTS (see report.md)"))
    width = max(len(k) for k, _ in rows) if rows else 0
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _flow_header(cfg: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    t, m, o = cfg["target"], cfg["model"], cfg["objective"]
    pre = cfg.get("pretraining") or {}
    lines = [
        f"- target: `{t.get('name') or t.get('data')}` {dict(t)}",
        f"- model: normalizing flow (`cinn` without observation) `{m['arch']}`, "
        f"{m['blocks']} blocks, hidden {m['hidden']}, base `{m.get('base', 'gaussian')}`, "
        f"normalization `{m.get('normalization')}`",
        f"- objective: `{o['name']}` {dict(o)} (P = data, Q = model)",
    ]
    if pre:
        lines.append(
            f"- pretraining: `{pre['objective']['name']}`, "
            f"{metrics.get('pretrain_steps')} steps, then the objective above"
        )
    return lines + [
        f"- seed {metrics.get('seed')}, steps {metrics.get('train_steps')} "
        f"(stopped by {metrics.get('stopped')})",
    ]


def write_run_report(out_dir: Path, cfg: Mapping[str, Any], metrics: Mapping[str, Any]) -> None:
    """``out_dir/report.md`` of a ``vinaflow run`` or ``vinaflow flow`` folder."""
    flow = _is_flow(cfg)
    header, meanings = (_flow_header, FLOW_METRICS) if flow else (_run_header, HEADLINE_METRICS)
    lines = [
        f"# vinaflow {'flow' if flow else 'run'} report",
        "",
        *header(cfg, metrics),
        "",
        *_metric_rows(metrics, meanings),
        "",
        *_sections(out_dir, cfg, metrics),
    ]
    atomic_write_text(out_dir / "report.md", "\n".join(lines))


def _run_header(cfg: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    p, m, o = cfg["problem"], cfg["model"], cfg["objective"]
    desc = p.get("name") or p.get("simulator") or p.get("bank")
    obj = o["name"] + (
        f" ({o.get('divergence')}, {o.get('direction')})"
        if o["name"] == "fdiv"
        else f" ({o.get('direction')})"
        if o.get("direction")
        else ""
    )
    return [
        f"- problem: `{desc}`",
        f"- model: `{m['kind']}` / `{m['arch']}`, {m['blocks']} blocks, hidden {m['hidden']}"
        if "arch" in m
        else f"- model: `{m['kind']}`, hidden {m.get('hidden')} x {m.get('layers')} layers",
        f"- objective: {obj}",
        f"- seed: {metrics.get('seed')}, steps: {metrics.get('train_steps')} "
        f"(stopped by {metrics.get('stopped')})",
        f"- evaluated on {metrics.get('num_observations')} held-out observations x "
        f"{metrics.get('num_samples')} samples",
    ]


def _sections(out_dir: Path, cfg: Mapping[str, Any], metrics: Mapping[str, Any]) -> list[str]:
    """Plots, importance sampling and certificate where present; environment and config."""
    lines = []
    plots = sorted((out_dir / "plots").glob("*.png")) if (out_dir / "plots").exists() else []
    if plots:
        lines += ["## Plots", ""]
        lines += [f"![{q.stem}](plots/{q.name})" for q in plots]
        lines.append("")
    if metrics.get("importance"):
        lines += [format_importance(metrics["importance"]), ""]
    if metrics.get("certificate"):
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
    return lines
