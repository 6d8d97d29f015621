"""Benchmark tables of the README and the documentation, from ``benchmarks/results/*.json``.

One implementation of every results table: the README's "## Benchmarks" section holds
them between marker comments::

    <!-- table:ocean -->
    ... generated text ...
    <!-- /table:ocean -->

and ``docs/scripts/make_figures.py`` writes the same builders' output to
``docs/generated/*.md`` for the documentation pages.

Run from the repository root::

    python scripts/results_tables.py            # rewrite the README's generated blocks
    python scripts/results_tables.py --check    # exit 1 if the README disagrees with the JSON

Writing also records every table's cells as data in ``benchmarks/results/tables.json``
(the derived numbers, such as interval ends, beside their sources); ``--check`` fails
when that file is stale.

``--check`` fails when a generated block differs from what the JSON gives now (it prints
the differing lines), when a block names no table, when a table of the README's
results is missing, and, in the Benchmarks section outside the generated blocks and
code, when a markdown table row or a measured-looking number (a decimal, a percentage,
a duration like ``1m54s`` or a ratio like ``2.04x``) appears: such numbers belong in a
block generated from a results file.
"""

from __future__ import annotations

import argparse
import difflib
import json
import math
import re
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.evaluation.intervals import (
    intervals_disjoint,
    seed_interval,
    summary_interval,
    target_verdict,
)

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # the benchmarks package: the peers' targets

from benchmarks.peers.targets import C2ST_TARGETS  # noqa: E402

RESULTS = ROOT / "benchmarks" / "results"
README = ROOT / "README.md"
#: Every generated table's cells as data: the derived numbers (means, interval ends,
#: verdicts) of the README and the docs beside the results files they come from.
TABLES_JSON = RESULTS / "tables.json"

__all__ = [
    "README_TABLES",
    "TABLES",
    "TABLES_JSON",
    "check_readme",
    "load",
    "main",
    "render_readme",
    "tables_record",
]


def load(name: str) -> Any:
    """A results file of ``benchmarks/results/``."""
    with open(RESULTS / name, encoding="utf-8") as f:
        return json.load(f)


# -- formatting --------------------------------------------------------------------------


def f3(v: float | None) -> str:
    """Three decimals, or ``-`` for a missing value."""
    return "-" if v is None else f"{v:.3f}"


def sig(v: float, digits: int = 3) -> str:
    """``digits`` significant digits without scientific notation for ordinary values."""
    if v == 0 or not math.isfinite(v):
        return f"{v:g}"
    decimals = max(0, digits - 1 - math.floor(math.log10(abs(v))))
    return f"{v:.{decimals}f}"


def pm(stat: Sequence[float]) -> str:
    """``mean ± std`` of a ``[mean, std, n]`` record, both to the std's second digit."""
    mean, std = stat[0], stat[1]
    if std <= 0 or not math.isfinite(std):
        return f"{sig(mean)} ± {std:g}"
    decimals = max(0, 1 - math.floor(math.log10(std)))
    return f"{mean:.{decimals}f} ± {std:.{decimals}f}"


def ci(summary: dict[str, Any]) -> str:
    """``mean [low, high]`` of an interval summary (``seed_interval``'s keys), all to the
    half-width's second significant digit; ``mean (1 seed)`` without an interval."""
    mean, low, high = summary["mean"], summary.get("low"), summary.get("high")
    if low is None or high is None or not (math.isfinite(low) and math.isfinite(high)):
        return f"{sig(mean)} (1 seed)"
    half = (high - low) / 2
    if half <= 0:
        return f"{sig(mean)} [{sig(low)}, {sig(high)}]"
    d = max(0, 1 - math.floor(math.log10(half)))

    def r(v: float) -> str:
        return f"{round(v, d) + 0.0:.{d}f}"  # + 0.0: no "-0.000"

    return f"{r(mean)} [{r(low)}, {r(high)}]"


#: How every interval of the tables is computed (``vinaflow.evaluation.intervals``).
INTERVAL_NOTE = (
    "mean [95% interval] (Student-t interval of the mean with the sample standard "
    "deviation, ddof=1: `vinaflow.evaluation.intervals.seed_interval`)"
)


def study_stat(row: dict[str, Any], metric: str) -> dict[str, Any]:
    """A flow-study row's summary of ``metric`` (``benchmarks/generative.py``'s record:
    ``stats`` = mean, std, n; ``ci95`` = low, high) in ``seed_interval``'s keys."""
    mean, std, n = row["stats"][metric][:3]
    low, high = (row.get("ci95") or {}).get(metric) or (None, None)
    nan = math.nan
    return {"mean": mean, "std": std, "n": n, "low": nan if low is None else low,
            "high": nan if high is None else high}  # fmt: skip


def _listing(values: Sequence[Any]) -> str:
    return ", ".join(str(v) for v in values) if values else "none"


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines) + "\n"


def source_note(*files: str) -> str:
    names = ", ".join(f"`benchmarks/results/{f}`" for f in files)
    return f"\n<small>Generated by `scripts/results_tables.py` from {names}.</small>\n"


def _k(n: int) -> str:
    """Simulation budgets: ``50k``."""
    return f"{n // 1000}k" if n % 1000 == 0 else f"{n:,}"


# -- tables --------------------------------------------------------------------------------


def kinematics_table() -> str:
    k = load("kinematics.json")
    # one training run each; the conditional INNs over seeds are kinematics_cinn_table's
    runs = [r for r in k["rows"] if not r["name"].startswith("cinn-")]
    rows = []
    for r in runs:
        tr = r["config"]["training"]
        resim = summary_interval(
            r["resim_error"], r["resim_error_std_over_obs"], r["num_observations"]
        )
        target = r["target_resim"]
        rows.append(
            [
                r["description"],
                f"{_k(r['config']['problem']['num_simulations'])} / {tr['batch_size']}",
                ci(resim),
                "-" if target is None else f"{target:g}: {target_verdict(resim, target)}",
                f3(r["c2st"]),
                f3(r["w1"]),
                f"{r['train_seconds']:.0f}",
                f"{r['train_steps']:,}",
            ]
        )
    head = [
        "configuration",
        "simulations / batch",
        "re-simulation error [95% interval]",
        "target",
        "C2ST",
        "W1",
        "train s",
        "steps",
    ]
    ray = k["ray_scaling"]
    first = runs[0]
    n_obs, n_samples = first["num_observations"], first["num_samples"]
    budgets = sorted({r["config"]["problem"]["num_simulations"] for r in runs})
    text = (
        f"{n_obs} held-out observations, {n_samples} posterior samples each, against "
        "rejection-ABC ground truth. The rows do not share a budget: "
        + ", ".join(_k(b) for b in budgets)
        + " simulations and the batch sizes shown. One training run (one seed) per row; "
        + f"re-simulation error: mean [95% interval] over the {n_obs} observations "
        "(Student-t, from their recorded mean and sample standard deviation: "
        "`vinaflow.evaluation.intervals.summary_interval`). A target is met when the "
        "interval's upper end is at or below it.\n\n" + table(head, rows)
    )
    ref = k.get("reference")
    if ref:
        text += (
            f"\nABC ground truth: tolerance {ref['eps']:g} requested; the effective tolerance "
            f"(doubled where too few draws are accepted) was {ref['eps_effective_min']:g} to "
            f"{ref['eps_effective_max']:g}, widened at {ref['widened']} of "
            f"{ref['num_observations']} observations; mean acceptance rate "
            f"{ref['acceptance_rate_mean']:.2g}.\n"
        )
    text += (
        f"\nRay scaling: a sweep of {ray['runs']} runs took {ray['seconds_1_worker']:.1f} s "
        f"with 1 worker and {ray['seconds_2_worker']:.1f} s with 2 "
        f"({ray['speedup']:.2f}x) on {ray['cpus']} CPUs: one timing of each, not repeated, "
        "so it has no interval"
        + (
            f"; a speed-up above {ray['cpus']}x on {ray['cpus']} CPUs is more than the "
            "extra worker can give, and shows how far one timing on a shared machine can be "
            "off.\n"
            if ray["speedup"] > ray["cpus"]
            else ".\n"
        )
    )
    return text + source_note("kinematics.json")


def _steps_suffix(name: str) -> str:
    """``-8000`` of ``cinn-fdiv-kl-8000``; empty for the default-steps rows."""
    return name[len(name.rstrip("0123456789-")) :]


def _cinn_order(name: str) -> tuple[int, int]:
    """Rows by steps (``cinn-nll`` before ``cinn-nll-8000``), maximum likelihood first."""
    steps = int(_steps_suffix(name).lstrip("-") or 0)
    return (steps, 0 if name.startswith("cinn-nll") else 1)


def kinematics_cinn_table() -> str:
    """The conditional-INN rows of ``kinematics.json`` (``--seeds``), over seeds, with the
    variational members paired by seed against maximum likelihood."""
    k = load("kinematics.json")
    by: dict[str, dict[int, dict[str, Any]]] = {}
    for r in k["rows"]:
        if r["name"].startswith("cinn-"):
            by.setdefault(r["name"], {})[int(r.get("seed", 0))] = r
    rows = []
    for name, seeds in sorted(by.items(), key=lambda kv: _cinn_order(kv[0])):
        # maximum likelihood at the same number of steps
        nll = by.get("cinn-nll" + _steps_suffix(name), {})
        order = sorted(seeds)
        cells = [seeds[s] for s in order]
        row = [
            f"`{name}`",
            cells[0]["description"],
            _listing(order),
            ci(seed_interval([c["resim_error"] for c in cells])),
            ci(seed_interval([c["c2st"] for c in cells])),
            ci(seed_interval([c["w1"] for c in cells])),
            f"{np.mean([c['train_seconds'] for c in cells]):.0f}",
        ]
        common = [s for s in order if s in nll]
        if not name.startswith("cinn-nll") and len(common) >= 2:
            ratio = seed_interval([seeds[s]["resim_error"] / nll[s]["resim_error"] for s in common])
            diff = seed_interval([seeds[s]["c2st"] - nll[s]["c2st"] for s in common])
            row += [
                f"{ci(ratio)}: {target_verdict(ratio, 1.2)}",
                f"{ci(diff)}: {target_verdict(diff, 0.05)}",
            ]
        else:
            row += ["-", "-"]
        rows.append(row)
    head = [
        "configuration",
        "what",
        "seeds",
        "re-simulation error",
        "C2ST",
        "W1",
        "train s (mean)",
        "re-sim. error / NLL's (target 1.2)",
        "C2ST minus NLL's (target 0.05)",
    ]
    some = next(iter(by.values()))
    first = some[min(some)]
    budget = first["config"]["problem"]["num_simulations"]
    steps = sorted(
        {c["config"]["training"]["steps"] for seeds in by.values() for c in seeds.values()}
    )
    text = (
        f"Conditional INNs at one budget for every objective: {_k(budget)} simulations, batch "
        f"{first['config']['training']['batch_size']}, "
        f"{' or '.join(f'{n:,}' for n in steps)} model steps (every row compared with "
        "maximum likelihood at its own number of steps); "
        f"{first['num_observations']} held-out observations with {first['num_samples']} "
        f"samples each against the rejection-ABC ground truth. Per seed the metric is the "
        f"mean over the observations; {INTERVAL_NOTE} over seeds. The ratio and the "
        "difference to maximum likelihood are paired by seed (each seed trains every row "
        "from the same initialisation seed on the same simulations); a target is met when "
        "the whole interval is at or below it.\n\n"
    )
    return text + table(head, rows) + source_note("kinematics.json")


def objectives_table(name: str = "objective_study_heldout.json") -> str:
    """Training objectives on the conditional INN at equal budgets
    (``benchmarks/objective_study.py``): C2ST per task over seeds and its difference to
    maximum likelihood, paired by seed; ``robustness.json`` is the same study on
    contaminated simulations."""
    study = load(name)
    s, summary = study["settings"], study["summary"]
    tasks = s["tasks"]
    rows = []
    for obj in s["objectives"]:
        cells = [summary.get(f"{t}/{obj}") for t in tasks]
        if not all(cells):
            continue
        row = [f"`{obj}`"]
        for c in cells:
            d = c.get("c2st_minus_nll")
            row.append(ci(c["c2st"]))
            row.append("-" if d is None else f"{ci(d)} ({_versus(d)})")
        rows.append(row)
    head = ["objective"]
    for t in tasks:
        head += [f"{t} C2ST", f"{t} minus `nll`"]
    dirty = s.get("contamination") or 0
    text = (
        (
            f"{dirty:.0%} of the training pairs have their parameters replaced by "
            "independent prior draws (as after failed or mislabelled simulator runs); "
            "posteriors are scored against the clean reference. "
            if dirty
            else ""
        )
        + f"Conditional INN with affine couplings, {s['num_simulations']:,} simulations, "
        f"batch {s['batch_size']}, {s['max_seconds_per_cell']:g} s of training per cell on "
        f"one thread (a critic objective spends part of it on critic updates), seeds "
        f"{_listing(sorted({r['seed'] for r in study['rows']}))}; C2ST against sbibm's "
        f"reference posteriors at {s['observations']} observations "
        f"({s['c2st_max_samples']:,} samples), {INTERVAL_NOTE} over seeds, and the "
        "difference to `nll` paired by seed (the same simulations and initialisation seed). "
        "`fdiv-*` rows use each member's default generator gradient (`mixture` for kl, js, "
        "hellinger and pearson, `bound` for reverse-kl and tv); `fdiv-kl-score` and "
        "`fdiv-kl-bound` are the backward KL with the score gradient on model samples alone "
        "and with the bound's gradient.\n\n"
    )
    return text + table(head, rows) + source_note(name)


def _versus(d: dict[str, Any]) -> str:
    """A paired difference's verdict against zero: lower, higher or within noise."""
    return {"met": "lower", "not met": "higher"}.get(target_verdict(d, 0.0), "within noise")


OCEAN_LABELS = {
    "nll-cinn-noise-aug": "6 blocks x 128, embedding 64, noise augmentation",
    "nll-cinn-fixed-noise": "the same, fixed noise",
    "nll-cinn-paper-h403-z2-b4": "the paper's hidden 403 / latent 2 / 4 blocks, noise augmentation",
}
OCEAN_FILES = ("ocean.json", "ocean-1200s.json")


def ocean_rows() -> list[tuple[str, float, dict[str, Any]]]:
    """``(file, training seconds, row)`` of every ocean results file."""
    out = []
    for name in OCEAN_FILES:
        o = load(name)
        for r in o["rows"]:
            out.append((name, o["seconds"], r))
    return out


def ocean_table() -> str:
    o = load("ocean.json")
    t = o["targets"]
    rows = []
    all_rows = ocean_rows()
    for file, seconds, r in all_rows:
        label = OCEAN_LABELS.get(r["config"], r["config"])
        per_obs = seed_interval(r["per_observation_c2st"])
        rows.append(
            [
                f"{label}, {seconds:.0f} s (`{file}`)",
                ci(per_obs),
                target_verdict(per_obs, t["c2st_max"]),
                f3(r["coverage"]),
                f3(r["is_c2st"]),
                f3(r["is_coverage"]),
                f"{r['is_efficiency']:.2f} / {r['is_efficiency_min']:.2f}",
                f"{r['train_steps']:,}",
            ]
        )
    head = [
        "configuration",
        "flow C2ST [95% interval]",
        f"C2ST <= {t['c2st_max']}",
        "flow coverage",
        "flow + IS C2ST",
        "flow + IS coverage",
        "IS efficiency (mean / worst)",
        "steps",
    ]
    lo, hi = t["coverage_95_range"]
    ev = o["rows"][0]["resolved_config"]["evaluation"]
    text = (
        f"{o['simulations']:,} simulations; C2ST on {ev['num_observations']} held-out "
        f"observations x {ev['num_samples']:,} samples against the exact grid posterior, "
        f"coverage of 95% marginal credible intervals on {ev['num_calibration']} other prior "
        f"draws; importance sampling with {ev['importance_sampling']} proposals per draw. "
        f"Targets: mean C2ST <= {t['c2st_max']}, coverage within {lo:.0%}-{hi:.0%}. Flow "
        f"C2ST: {INTERVAL_NOTE} over the {ev['num_observations']} observations of one "
        "training run (one seed) per row, so it holds the spread between observations, not "
        "between seeds. The target is met only when the interval's upper end is at or below "
        "it, not met when its lower end is above it, and within noise otherwise.\n\n"
    )
    is_c2st = [r["is_c2st"] for _, _, r in all_rows]
    eff = [r["is_efficiency"] for _, _, r in all_rows]
    summary = (
        f"\nReweighted by the likelihood, every flow reaches C2ST {min(is_c2st):.3f}-"
        f"{max(is_c2st):.3f}, with a mean sampling efficiency of {min(eff):.0%}-{max(eff):.0%}.\n"
    )
    return text + table(head, rows) + summary + source_note(*OCEAN_FILES)


def support_mismatch_table() -> str:
    g = load("generative.json")["support-mismatch"]["rows"]
    offsets = sorted({r["params"]["offset"] for r in g})
    by = {(r["params"]["objective"], r["params"]["offset"]): r for r in g}
    names = {"sinkhorn": "Sinkhorn", "kl": "variational KL"}
    rows = []
    for obj in ("sinkhorn", "kl"):
        rows.append([names[obj]] + [ci(study_stat(by[(obj, d)], "w1")) for d in offsets])
    n = g[0]["stats"]["w1"][2]
    text = (
        f"W1 to held-out samples of U(0, 1), uniform base U(d, d + 1); {INTERVAL_NOTE}, "
        f"over {n} seeds.\n\n"
    )
    head = ["base offset d"] + [str(d) for d in offsets]
    sink = [study_stat(by[("sinkhorn", d)], "w1") for d in offsets]
    kl = [study_stat(by[("kl", d)], "w1") for d in offsets]
    worse = [d for d, a, b in zip(offsets, sink, kl, strict=True) if a["high"] < b["low"]]
    overlap = [d for d, a, b in zip(offsets, sink, kl, strict=True) if not a["high"] < b["low"]]
    summary = (
        f"\nSinkhorn's upper interval end stays at or below {max(a['high'] for a in sink):.3f} "
        f"at every offset. The KL fit's interval lies wholly above Sinkhorn's at d = "
        f"{_listing(worse)}; the two overlap at d = {_listing(overlap)}.\n"
    )
    return text + table(head, rows) + summary + source_note("generative.json")


def heavy_tails_table() -> str:
    g = load("generative.json")["heavy-tails"]["rows"]
    alphas = sorted({r["params"]["alpha"] for r in g})
    by = {(r["params"]["base"], r["params"]["alpha"]): r for r in g}
    names = {"gaussian": "Gaussian base", "student-t": "Student-t base (df 2)"}
    rows = []
    for base in ("gaussian", "student-t"):
        rows.append(
            [names[base] + ", W1 (signed log)"]
            + [ci(study_stat(by[(base, a)], "w1_slog")) for a in alphas]
        )
    for base in ("gaussian", "student-t"):
        rows.append(
            [names[base] + ", 99% quantile ratio"]
            + [ci(study_stat(by[(base, a)], "q99_ratio")) for a in alphas]
        )
    n = g[0]["stats"]["w1_slog"][2]
    text = (
        "Pareto(alpha) targets, maximum likelihood. W1 on the signed-log scale "
        "`sign(x) log(1 + |x|)`, and the ratio of the model's 99% quantile to the "
        f"target's; {INTERVAL_NOTE}, over {n} seeds.\n\n"
    )
    head = ["alpha"] + [str(a) for a in alphas]
    t_wins, g_wins, tie = [], [], []
    for a in alphas:
        sg = study_stat(by[("gaussian", a)], "w1_slog")
        st = study_stat(by[("student-t", a)], "w1_slog")
        if not intervals_disjoint(sg, st):
            tie.append(a)
        else:
            (t_wins if st["mean"] < sg["mean"] else g_wins).append(a)
    summary = (
        f"\nBy W1, the Student-t base is better with disjoint intervals at alpha = "
        f"{_listing(t_wins)}, the Gaussian base at alpha = {_listing(g_wins)}; within noise "
        f"(overlapping intervals) at alpha = {_listing(tie)}.\n"
    )
    return text + table(head, rows) + summary + source_note("generative.json")


def pr_label(params: dict[str, Any]) -> str:
    return "NLL" if params["objective"] == "nll" else f"λ = {params['lam']:g}"


def precision_recall_table(study: str = "precision-recall") -> str:
    """A precision-recall study of ``generative.json``: ``precision-recall`` (the target it
    was designed on) or ``precision-recall-rings`` (one it was not)."""
    g = load("generative.json")[study]["rows"]
    head = [""] + [pr_label(r["params"]) for r in g]
    metrics = ("precision", "recall", "w1")
    rows = [[m] + [ci(study_stat(r, m)) for r in g] for m in metrics]
    n = g[0]["stats"]["precision"][2]
    text = f"k-NN precision and recall, and W1; {INTERVAL_NOTE}, over {n} seeds.\n\n"
    nll = next(r for r in g if r["params"]["objective"] == "nll")
    parts = []
    for m in ("precision", "recall"):
        base = study_stat(nll, m)
        apart = [
            pr_label(r["params"])
            for r in g
            if r is not nll and intervals_disjoint(study_stat(r, m), base)
        ]
        parts.append(
            f"{m} differs from the NLL flow's (disjoint intervals) at {', '.join(apart)}"
            if apart
            else f"no {m} interval is disjoint from the NLL flow's"
        )
    summary = "\nOver these seeds, " + "; ".join(parts) + ".\n"
    return text + table(head, rows) + summary + source_note("generative.json")


def gaussian_table() -> str:
    g = load("gaussian.json")
    rows = [
        [
            f"`{r['name']}`",
            ci(seed_interval(r["per_observation_c2st"])),
            "-"
            if r["target_c2st"] is None
            else f"<= {r['target_c2st']:g}: "
            + target_verdict(seed_interval(r["per_observation_c2st"]), r["target_c2st"]),
            f3(r["w1"]),
            f3(r["coverage"]),
            f"{r['steps']:,}",
        ]
        for r in g["results"]
    ]
    text = (
        f"Up to {g['max_seconds']:.0f} s of training per objective, one training run (one "
        f"seed) each; C2ST against the closed-form posterior: {INTERVAL_NOTE} over the "
        f"{len(g['results'][0]['per_observation_c2st'])} observations; a target is met when "
        "the interval's upper end is at or below it.\n\n"
    )
    head = ["configuration", "C2ST [95% interval]", "target", "W1", "coverage", "steps"]
    return text + table(head, rows) + source_note("gaussian.json")


def _certificate_resolved(row: dict[str, Any]) -> tuple[bool, float]:
    """Whether a recorded certificate is resolved, and its detection limit.

    Files written before certificates recorded ``resolved`` are judged by the same rules
    (:func:`vinaflow.evaluation.certificate.certify_samples`) from what they recorded --
    the permutation null, which they lack, aside.
    """
    from vinaflow.evaluation.certificate import detection_limit
    from vinaflow.objectives.divergences import get_divergence

    cert = row["certificate"]
    limit = cert.get("detection_limit")
    if limit is None:
        limit = detection_limit(cert["divergence"], cert["n_test"], cert["level"])
    if "resolved" in cert:
        return bool(cert["resolved"]), float(limit)
    shift = get_divergence(cert["divergence"]).shift
    null_critic = cert["critic_best_step"] == 0 and not (
        cert["gaussian_offset_used"] or cert["quadratic_offset_used"]
    )
    ok = (
        not null_critic
        and (cert["ci_low"] is None or cert["ci_low"] + shift > 0)
        and cert["estimate"] + shift > limit
    )
    return ok, float(limit)


def certificates_table() -> str:
    c = load("certificates.json")
    rows = []
    for r in c["rows"]:
        rel = "n/a" if r["rel_error"] is None else f"{100 * r['rel_error']:+.1f}%"
        resolved, limit = _certificate_resolved(r)
        tv = f3(r["tv_bound"]) if resolved else f"not resolved (limit {sig(limit, 2)})"
        rows.append(
            [
                r["model"],
                sig(r["exact_kl"]) if r["exact_kl"] else "0",
                f"{sig(r['estimate'])} [{sig(r['ci_low'])}, {sig(r['ci_high'])}]",
                rel,
                tv,
                f3(r["c2st_joint"]),
            ]
        )
    head = ["model", "exact KL", "estimate [95% CI]", "rel. error", "TV bound", "joint C2ST"]
    n_test = c["rows"][0]["certificate"]["n_test"]
    text = (
        f"{c['n_heldout']:,} held-out pairs on `{c['problem']['name']}` ({n_test:,} of them "
        "test pairs). A certificate within its noise is not resolved and gives no TV bound; "
        "its limit is the smallest KL those test pairs could resolve.\n\n"
    )
    return text + table(head, rows) + source_note("certificates.json")


def certificates_heldout_table(name: str = "certificates_heldout.json") -> str:
    """Certificates against the exact KL on non-Gaussian problems
    (``benchmarks/certificates_heldout.py``): held-out rows first, development rows apart."""
    c = load(name)
    st = c["settings"]
    rows = []
    ordered = sorted(c["rows"], key=lambda r: r.get("role", "held-out") != "held-out")
    for r in ordered:
        kl = r["exact_kl"]
        seeds = r["seeds"]
        n_res = sum(bool(p["resolved"]) for p in seeds)
        if kl < 1e-9:
            verdict = "no false detection" if r["no_false_detection"] else "FALSE DETECTION"
        else:
            parts = []
            if "within_25pct" in r:
                parts.append(f"within 25%: {r['within_25pct']}")
            if "resolved_target" in r:
                parts.append(f"resolved on every seed: {r['resolved_target']}")
            verdict = "; ".join(parts) or "-"
        rows.append(
            [
                r["task"],
                r.get("role", "held-out"),
                r["model"],
                f"`{r['config']}`",
                f"{sig(kl)} (se {sig(r['exact_kl_se'], 2)})" if kl >= 1e-9 else "0",
                ci(r["estimate"]),
                f"{n_res}/{len(seeds)}",
                "n/a" if r["ratio"] is None else ci(r["ratio"]),
                verdict,
            ]
        )
    head = ["task", "role", "model", "certificate", "exact KL", "estimate", "resolved",
            "estimate / exact", "target"]  # fmt: skip
    feats = sorted({str(p.get("critic_features")) for r in c["rows"] for p in r["seeds"]})
    configs = ", ".join(f"`{k}`" for k in st["configs_run"])
    text = (
        f"`{c['command']}`: certificate configuration {configs}, "
        f"{st['certificate_pairs']:,} fresh held-out pairs per certificate, seeds "
        f"{_listing(st['seeds'])}; the exact KL is a Monte Carlo average over "
        f"{st['exact_kl_pairs']:,} pairs (its standard error in brackets). Critic inputs: "
        f"{_listing(feats)}. The cINNs are `vinaflow.fit` with the task's simulator "
        f"({st['cinn_simulations']:,} simulations) for the given steps. Estimate and "
        f"estimate / exact: {INTERVAL_NOTE} over seeds. Targets: within 25% of an exact KL "
        "of at least 0.05 (met when the whole interval of the ratio lies in [0.75, 1.25]), "
        "resolved on every seed where it is at least 0.01, never resolved for the exact "
        "posterior. Held-out problems were chosen before the estimator was run on them; "
        "development problems are where it was changed.\n\n"
    )
    return text + table(head, rows) + source_note(name)


PEER_METHODS = ("sbi-npe", "nll-cinn", "inn-mmd", "fdiv-kl", "fdiv-js", "sinkhorn")


def _paired(a: Sequence[float], b: Sequence[float]) -> dict[str, Any]:
    """Interval of the mean per-observation difference ``a - b`` (same observations)."""
    return seed_interval([x - y for x, y in zip(a, b, strict=True)])


def _published_verdict(summary: dict[str, Any], value: float) -> str:
    if summary["high"] < value:
        return "below"
    if summary["low"] > value:
        return "above"
    return "within noise of"


def peers_table() -> str:
    p = load("peers.json")
    tasks: dict[str, dict[str, Any]] = {}
    for r in p["rows"]:
        tasks.setdefault(r["task"], {})[r["method"]] = r
    methods = [m for m in PEER_METHODS if any(m in t for t in tasks.values())]
    rows = []
    for task, by in tasks.items():
        any_row = next(iter(by.values()))
        cells = []
        for m in methods:
            if m not in by:
                cells.append("-")
                continue
            cell = ci(seed_interval(by[m]["c2st_per_observation"]))
            if m == "sbi-npe":  # its own schedule: the time it took
                cell += f" ({by[m]['train_seconds']:.0f} s)"
            cells.append(cell)
        published = f"{any_row['sbibm_npe_c2st']:.3f} / {any_row['sbibm_paper_npe_c2st']:.3f}"
        rows.append([task] + cells + [published])
    s = p["settings"]
    sbi = p.get("environment", {}).get("sbi")
    n_obs = len(next(iter(next(iter(tasks.values())).values()))["c2st_per_observation"])
    text = (
        f"C2ST against sbibm's reference posteriors at its {n_obs} observations; "
        f"{s['budgets'][0]:,} simulations, {s['c2st_max_samples']:,} samples per side, "
        f"vinaflow methods capped at {s['vinaflow_max_seconds']:.0f} s of training, sbi"
        + (f" {sbi}" if sbi else "")
        + " NPE with its own schedule. One training run (one seed) per cell; "
        + INTERVAL_NOTE
        + f" over the {n_obs} observations. The last column is sbibm's published NPE (the "
        "sbi 0.23 re-run / the original paper), each the mean over the same observations "
        "of sbibm's own runs, scored by sbibm's classifier, not vinaflow's.\n\n"
    )
    head = ["task"] + [f"`{m}`" for m in methods] + ["sbibm NPE (published)"]
    text += table(head, rows)
    if all("nll-cinn" in by and "sbi-npe" in by for by in tasks.values()):
        word = {"met": "lower", "not met": "higher", "within noise": "within noise"}
        parts = []
        for task, by in tasks.items():
            d = _paired(
                by["nll-cinn"]["c2st_per_observation"], by["sbi-npe"]["c2st_per_observation"]
            )
            parts.append(f"{task} {ci(d)} ({word[target_verdict(d, 0.0)]})")
        text += (
            "\n`nll-cinn` minus `sbi-npe`, paired over the same observations in the same "
            f"run: {'; '.join(parts)}.\n"
        )
        rel = []
        for task, by in tasks.items():
            summary = seed_interval(by["nll-cinn"]["c2st_per_observation"])
            published = next(iter(by.values()))
            rel.append(
                f"{task}: {_published_verdict(summary, published['sbibm_npe_c2st'])} the "
                f"re-run, {_published_verdict(summary, published['sbibm_paper_npe_c2st'])} "
                "the paper"
            )
        text += (
            "\n`nll-cinn`'s interval against the published NPE values (below: better; "
            "scored by different classifiers): " + "; ".join(rel) + ".\n"
        )
    longer = load("peers_two_moons_nll_240s.json")
    for r in longer["rows"]:
        text += (
            f"\nWith {longer['settings']['vinaflow_max_seconds']:.0f} s of training, "
            f"`{r['method']}` on {r['task']} reaches "
            f"{ci(seed_interval(r['c2st_per_observation']))} "
            "(`peers_two_moons_nll_240s.json`).\n"
        )
    return text + source_note("peers.json", "peers_two_moons_nll_240s.json")


#: The multi-seed peers comparison's methods, in column order.
SEED_PEER_METHODS = (
    "sbi-nsf",
    "sbi-fmpe",
    "vinaflow-affine",
    "vinaflow-every200",
    "vinaflow-spline128",
    "cinn-fdiv-kl",
    "cinn-fdiv-js",
    "vinaflow-default",
    "vinaflow-prior",
)
DEFAULT_PEER = "vinaflow-default"


def peers_seeds_table() -> str:
    """vinaflow's defaults against sbi's NPE (NSF) and FMPE over seeds, from
    ``peers_seeds.json``: each seed's simulations are shared by every method."""
    p = load("peers_seeds.json")
    cells: dict[tuple[str, int], dict[str, dict[int, dict[str, Any]]]] = {}
    for r in p["rows"]:
        if "c2st" in r:
            by = cells.setdefault((r["task"], r["budget"]), {})
            by.setdefault(r["method"], {})[int(r["seed"])] = r
    methods = [m for m in SEED_PEER_METHODS if any(m in by for by in cells.values())]
    rows, paired = [], []
    for (task, budget), by in cells.items():
        row = [task, f"{budget:,}"]
        for m in methods:
            seeds = by.get(m, {})
            if not seeds:
                row.append("-")
                continue
            iv = seed_interval([seeds[k]["c2st"] for k in sorted(seeds)])
            # one seed has no interval, and ci says so itself
            row.append(ci(iv) if len(seeds) == 1 else f"{ci(iv)} ({len(seeds)})")
        target = C2ST_TARGETS.get((task, budget))
        mine = by.get(DEFAULT_PEER, {})
        if target is None or not mine:
            row.append("-")
        else:
            verdict = target_verdict(seed_interval([r["c2st"] for r in mine.values()]), target)
            row.append(f"{target:.2f}: {verdict}")
        rows.append(row)
        for m in methods:
            common = sorted(set(mine) & set(by.get(m, {}))) if m != DEFAULT_PEER else []
            if len(common) >= 2:
                d = seed_interval([mine[k]["c2st"] - by[m][k]["c2st"] for k in common])
                paired.append(
                    f"{task} at {budget:,} minus `{m}`: {ci(d)} over seeds "
                    f"{_listing(common)} ({_versus(d)})"
                )
    s = p["settings"]
    sbi = p.get("environment", {}).get("sbi")
    text = (
        f"C2ST against sbibm's reference posteriors, the mean over its {s['observations']} "
        f"observations, {s['c2st_max_samples']:,} samples per side; in brackets the number "
        "of seeds. Each seed draws its own simulations and every method trains on the same "
        "arrays. `sbi-nsf` is sbi"
        + (f" {sbi}" if sbi else "")
        + "'s NPE with a neural spline flow and `sbi-fmpe` its flow-matching estimator, both "
        "with sbi's defaults and early stopping; `vinaflow-default` is `vinaflow.fit(x, y)` "
        "with no options (spline couplings, 64 units, learning rate 5e-4), stopping on its "
        "own validation rule; `vinaflow-spline128` the same with `hidden=128, lr=1e-3` (the "
        'default before it was narrowed), `vinaflow-affine` with `arch="coupling"` (affine '
        "couplings, the default before splines) and `vinaflow-every200` is "
        "`vinaflow-spline128` validated every 200 steps with 10 validations of patience "
        "(these two as fit validated before it validated once per epoch on small data). "
        + (
            '`cinn-fdiv-kl` and `cinn-fdiv-js` are `vinaflow.fit(x, y, objective="kl")` and '
            '`objective="js"`: the variational members on the conditional INN with their '
            f"default (mixture) gradient, trained for {s['vinaflow_max_seconds']:.0f} s. "
            if any(m.startswith("cinn-") for m in methods)
            else ""
        )
        + (
            "`vinaflow-prior` is `vinaflow.fit(x, y, prior=prior)`, the task's prior given as "
            "sbi's estimators get it: the same training as `vinaflow-default` on the same "
            "seed, with samples kept inside the prior's support as sbi keeps its own. "
            if "vinaflow-prior" in methods
            else ""
        )
        + INTERVAL_NOTE
        + " over seeds. The target is met when the whole interval is at or below it.\n\n"
    )
    head = ["task", "simulations"] + [f"`{m}`" for m in methods] + ["target"]
    text += table(head, rows)
    if paired:
        text += (
            "\n`vinaflow-default` minus each other method, paired by seed (same "
            "simulations): " + "; ".join(paired) + ".\n"
        )
    return text + source_note("peers_seeds.json")


def peers_classifiers_table() -> str:
    """The same posterior samples scored by vinaflow's C2ST classifier and by sbibm's own
    (``peers_classifiers.json``, ``benchmarks.peers.run --sbibm-classifier``)."""
    p = load("peers_classifiers.json")
    rows = []
    for e in p["summary"]:
        if "c2st_sbibm" not in e:
            continue
        # the run stores an undefined interval end (one seed) as None
        d = {k: math.nan if v is None else v for k, v in e["c2st_sbibm_minus_c2st"].items()}
        word = {"met": "sbibm's lower", "not met": "sbibm's higher"}
        pub = e.get("sbibm_npe_c2st")
        rows.append([
            e["task"], f"{e['budget']:,}", f"`{e['method']}`", str(e["c2st"]["n"]),
            ci(e["c2st"]), ci(e["c2st_sbibm"]), ci(d),
            word.get(target_verdict(d, 0.0), "within noise"),
            "-" if pub is None else f"{pub:.3f}",
        ])  # fmt: skip
    s = p["settings"]
    capped = sorted(
        {(r["task"], r["method"], r["default_max_seconds"]) for r in p["rows"]
         if r.get("default_max_seconds") and r["method"].startswith("vinaflow-")}
    )  # fmt: skip
    caps = "".join(
        f" `{m}` on {t} trained for at most {c:g} s (`--max-seconds`), not to its own rule."
        for t, m, c in capped
    )
    text = (
        "Each posterior's sample sets scored twice: by `vinaflow.evaluation.c2st` (the "
        "peers tables' classifier) and by sbibm's own `sbibm.metrics.c2st`, run unchanged "
        "from the sbibm wheel (the classifier behind the published NPE numbers), on the same "
        f"{s['c2st_max_samples']:,} samples per side and seeds, mean over "
        f"{s['observations']} observations; {INTERVAL_NOTE} over seeds, the difference "
        f"paired by seed.{caps}\n\n"
    )
    head = ["task", "simulations", "method", "seeds", "vinaflow's classifier",
            "sbibm's classifier", "sbibm's minus vinaflow's", "verdict",
            "published NPE"]  # fmt: skip
    return text + table(head, rows) + source_note("peers_classifiers.json")


def defaults_dev_table() -> str:
    """Candidate defaults of ``vinaflow.fit`` on the held-out development task(s), from
    ``defaults_dev.json`` (``benchmarks.peers.defaults_dev``)."""
    p = load("defaults_dev.json")
    rows, against = [], []
    for e in p["summary"]:
        base, d = e["baseline"], e["minus_baseline"]
        spec = p["variants"][e["variant"]]
        if "sbi" in spec:  # one of sbi's estimators, beside fit's variants
            cls, kwargs = spec["sbi"]
            args = ", ".join(f"{k}={v!r}" for k, v in kwargs.items())
            options = f"sbi {p['environment']['sbi']} {cls}({args})"
            against.append(
                f"{e['task']}: `{p['default_variant']}` minus `{e['variant']}` "
                f"{ci(e['default_minus'])} ({_versus(e['default_minus'])})"
            )
        else:
            options = ", ".join(f"{k}={v}" for k, v in spec.items())
        verdict = "-" if e["variant"] == base else target_verdict(d, 0.0)
        word = {"met": "better", "not met": "worse"}.get(verdict, verdict)
        rows.append([
            e["task"], f"`{e['variant']}`", f"`{options}`", _listing(e["seeds"]),
            ci(e["c2st"]), "-" if e["variant"] == base else f"{ci(d)} (`{base}`)", word,
            f"{e['train_seconds']['mean']:.0f}",
        ])  # fmt: skip
    s = p["settings"]
    text = (
        f"C2ST against reference posterior samples at {s['budget']:,} simulations, the mean "
        f"over the first {s['observations']} observations ({s['c2st_samples']:,} samples "
        f"each); {INTERVAL_NOTE} over seeds, and the difference to the task's baseline (its "
        "first variant) paired by seed (every variant of a seed trains on the same "
        "simulations). `slcp` is scored against sbibm's reference posteriors at its "
        "observations; `gaussian_linear@fresh` is the peers task on instances the peers "
        "benchmark does not report (other simulation seeds, other observations, exact "
        "posterior samples as the reference).\n\n"
    )
    head = ["task", "variant", "`vinaflow.fit` options", "seeds", "C2ST",
            "minus the baseline, paired", "verdict", "train s (mean)"]  # fmt: skip
    tail = ""
    if against:
        tail = (
            f"\nfit's default (`{p['default_variant']}`) against sbi's estimators on the same "
            "simulations, paired by seed: " + "; ".join(against) + ".\n"
        )
    return text + table(head, rows) + tail + source_note("defaults_dev.json")


def speed_table() -> str:
    s = load("peers_speed.json")
    r, st = s["results"], s["settings"]
    rows = [
        [
            f"training steps/s (batch {st['batch']})",
            f"{r['train_steps_per_s']:.1f}",
            f"{r['floor_steps_per_s']:.1f}",
            f"{r['train_overhead_ratio']:.2f}",
        ],
        [
            "samples/s, unconditional flow",
            f"{r['samples_per_s_inference_mode']:,.0f}",
            f"{r['floor_samples_per_s']:,.0f}",
            f"{r['sample_overhead_ratio']:.2f}",
        ],
    ]
    labels = {"spline": "spline couplings", "cnf": "CNF (flow matching)"}
    for name, m in s.get("models", {}).items():
        if name not in labels:
            continue
        solve = (
            f", {m['function_evaluations']} velocity evaluations per solve"
            if "function_evaluations" in m
            else ""
        )
        rows += [
            [
                f"{labels[name]}: training steps/s",
                f"{m['train_steps_per_s']:.1f}",
                f"{m['floor_steps_per_s']:.1f}",
                f"{m['train_overhead_ratio']:.2f}",
            ],
            [
                f"{labels[name]}: samples/s{solve}",
                f"{m['samples_per_s_inference_mode']:,.0f}",
                f"{m['floor_samples_per_s']:,.0f}",
                f"{m['sample_overhead_ratio']:.2f}",
            ],
        ]
    compiled_floor = r.get("compiled_floor_steps_per_s")
    if "compiled_train_steps_per_s" in r:
        rows.append(
            [
                "training steps/s, compiled (`torch.compile`)",
                f"{r['compiled_train_steps_per_s']:.1f}",
                "not compiled in this run" if compiled_floor is None else f"{compiled_floor:.1f}",
                "n/a" if compiled_floor is None else f"{r['compiled_train_overhead_ratio']:.2f}",
            ]
        )
    text = (
        f"A coupling INN ({st['blocks']} blocks, hidden {st['hidden']}, D = {st['dim']}), "
        f"{st['threads']} threads, medians of {st['repeats']} measurements; ratio = "
        "bare-torch rate / vinaflow rate. The flow is unconditional (no observation, no "
        "summary network), so the sampling row is not a posterior's sampling rate, which "
        "also conditions every block on the observation."
    )
    if "models" in s:
        text += (
            " The spline flow has the same blocks, width and floor (its subnets chained in "
            "bare torch, so its ratio includes the spline arithmetic); the CNF's floor is its "
            "velocity MLP on the same inputs, run as many times as the ODE solve evaluated "
            "it (an untrained field)."
        )
    text += "\n\n"
    head = ["", "vinaflow", "bare-torch floor", "ratio"]
    text += table(head, rows)
    if "compiled_train_steps_per_s" in r:
        compiled = r["compiled_train_steps_per_s"] / r["train_steps_per_s"]
        text += (
            f"\n`torch.compile` speeds vinaflow's training step up {compiled:.2f}x, not "
            f"sampling ({r['compiled_samples_per_s']:,.0f} samples/s compiled), and took "
            f"{r['compile_seconds_train']:.1f} s to compile the training step."
        )
        if compiled_floor is None:
            vs = r["floor_steps_per_s"] / r["compiled_train_steps_per_s"]
            text += (
                " This run did not compile the floor, so there is no overhead ratio for "
                f"compiled training; the uncompiled floor runs at {vs:.2f} of the compiled "
                "step's rate, a comparison of compiled against uncompiled code, not of "
                "framework overhead."
            )
        text += "\n"
    return text + source_note("peers_speed.json")


def scaling_table() -> str:
    """``benchmarks/scaling.py``: Ray simulation, DDP, precision and streaming memory."""
    r = load("scaling.json")
    env = r["environment"]
    rows = []
    sim = r.get("simulation")
    if sim:
        rows += [
            [f"ocean simulations/s, {name}", ci(sim[key])]
            for key, name in (
                ("local", "local process"),
                ("ray_1", "Ray, 1 worker"),
                ("ray_2", "Ray, 2 workers"),
            )
        ]
        rows.append(["Ray 2 workers / 1 worker", ci(sim["ray_2_over_ray_1"])])
    ddp = r.get("ddp")
    if ddp:
        batch = ddp["global_batch"]
        for k in ("1", "2"):
            rows.append([f"training steps/s, {k} process(es), global batch {batch}",
                         ci(ddp["steps_per_second"][k])])  # fmt: skip
        rows.append(["DDP 2 processes / 1", ci(ddp["two_over_one"])])
    prec = r.get("precision")
    if prec:
        for k in ("fp32", "bf16"):
            rows.append([f"training steps/s, {k}", ci(prec["steps_per_second"][k])])
            rows.append([f"validation NLL after {prec['steps']} steps, {k}",
                         ci(prec["val_nll"][k])])  # fmt: skip
        rows.append(["bf16 / fp32 steps/s", ci(prec["bf16_over_fp32"])])
    mem = r.get("memory")

    def mb(summary: dict[str, Any]) -> str:
        # ru_maxrss counts whole kilobytes: a megabyte is the resolution worth printing.
        return f"{summary['mean']:,.0f} [{summary['low']:,.0f}, {summary['high']:,.0f}]"

    if mem:
        peak = mem["peak_rss_mb"]
        rows += [
            [f"peak memory MB, {mem['sharded_rows']:,}-row sharded bank, streamed",
             mb(peak["sharded"])],
            [f"peak memory MB, {mem['sharded_quarter_rows']:,} rows of it, streamed",
             mb(peak["sharded_quarter"])],
            [f"peak memory MB, {mem['npz_rows']:,}-row .npz bank, loaded whole",
             mb(peak["npz"])],
        ]  # fmt: skip
        met = peak["sharded"]["high"] < mem["target_mb"]
        rows.append(
            [
                f"target: streamed peak below {mem['target_mb']:,} MB",
                "met (upper interval end below it)" if met else "not met",
            ]
        )
    if mem:
        tr = mem["training"]
        rows.append(
            [
                "memory runs: rows read per run",
                f"{tr['rows_streamed']:,} ({tr['steps']:,} steps of {tr['batch_size']}; "
                f"{tr['windows_read']} streaming windows of {tr['shuffle_window']:,} rows)",
            ]
        )
    repeats = sorted({e["repeats"] for k, e in env.items() if isinstance(e, dict)})
    loads = [e["load_average_at_start"][0] for e in env.values() if isinstance(e, dict)]
    text = (
        f"{INTERVAL_NOTE} over {_listing(repeats)} repeated measurements, on "
        f"{env['cpus']} CPU cores shared with other work (1-minute load average "
        f"{min(loads):.1f}-{max(loads):.1f} when the sections started); {r['gpu']}.\n\n"
    )
    return text + table(["measurement", "value"], rows) + source_note("scaling.json")


TABLES: dict[str, Callable[[], str]] = {
    "kinematics": kinematics_table,
    "kinematics_cinn": kinematics_cinn_table,
    "objectives": objectives_table,
    "robustness": lambda: objectives_table("robustness.json"),
    "ocean": ocean_table,
    "support_mismatch": support_mismatch_table,
    "heavy_tails": heavy_tails_table,
    "precision_recall": precision_recall_table,
    "precision_recall_rings": lambda: precision_recall_table("precision-recall-rings"),
    "gaussian": gaussian_table,
    "certificates": certificates_table,
    "certificates_heldout": certificates_heldout_table,
    "certificates_heldout_before_density": lambda: certificates_heldout_table(
        "certificates_heldout_before_density.json"
    ),
    "certificates_heldout_likelihood": lambda: certificates_heldout_table(
        "certificates_heldout_quick.json"
    ),
    "peers": peers_table,
    "peers_seeds": peers_seeds_table,
    "peers_classifiers": peers_classifiers_table,
    "defaults_dev": defaults_dev_table,
    "speed": speed_table,
    "scaling": scaling_table,
}

#: The tables the README's Benchmarks section must hold.
README_TABLES = (
    "ocean",
    "kinematics",
    "kinematics_cinn",
    "objectives",
    "robustness",
    "peers",
    "peers_seeds",
    "peers_classifiers",
    "support_mismatch",
    "heavy_tails",
    "precision_recall",
    "precision_recall_rings",
    "certificates",
    "certificates_heldout",
    "speed",
    "scaling",
)

# -- the tables as data --------------------------------------------------------------------

SOURCE = re.compile(r"`benchmarks/results/([\w.-]+)`")


def tables_record() -> dict[str, Any]:
    """Every table of :data:`TABLES` as data: its results files and, per markdown table in
    its text, the header and rows of cells, exactly as rendered."""
    out: dict[str, Any] = {}
    for name, make in TABLES.items():
        text = make()
        grids: list[dict[str, Any]] = []
        rows: list[list[str]] = []
        for line in [*text.splitlines(), ""]:
            if line.startswith("|"):
                rows.append([c.strip() for c in line.strip().strip("|").split("|")])
            elif rows:
                grids.append({"header": rows[0], "rows": rows[2:]})  # rows[1]: the rule
                rows = []
        out[name] = {"sources": sorted(set(SOURCE.findall(text))), "tables": grids}
    return {
        "generated_by": "scripts/results_tables.py",
        "note": "derived from the sources; rewritten with the README's generated blocks",
        "tables": out,
    }


def _tables_json() -> str:
    return json.dumps(tables_record(), indent=1, ensure_ascii=False) + "\n"


# -- the README ----------------------------------------------------------------------------

BLOCK = re.compile(
    r"(?P<open><!-- table:(?P<name>[\w-]+) -->\n)(?P<body>.*?)(?P<close><!-- /table:(?P=name) -->)",
    re.S,
)
#: Numbers that look measured: decimals, percentages, durations, ratios.
MEASURED = re.compile(r"(?<![\w.])(\d+\.\d+|\d+(?:\.\d+)?%|\d+m\d+s|\d+(?:\.\d+)?x)(?!\w|\.\d)")


def render_readme(text: str) -> str:
    """``text`` with every generated block's body rebuilt from the results files."""

    def body(m: re.Match[str]) -> str:
        make = TABLES.get(m["name"])
        if make is None:
            return m[0]  # reported by check_readme
        return m["open"] + make() + m["close"]

    return BLOCK.sub(body, text)


def _benchmarks_section(text: str) -> str:
    start = text.find("\n## Benchmarks")
    if start < 0:
        return ""
    end = text.find("\n## ", start + 1)
    return text[start : end if end >= 0 else len(text)]


def _strip_code(text: str) -> str:
    text = re.sub(r"```.*?```", "", text, flags=re.S)
    return re.sub(r"`[^`\n]*`", "", text)


def check_readme(text: str) -> list[str]:
    """Problems of ``text`` (a README): empty when every number comes from a results file."""
    problems = []
    found = set()
    for m in BLOCK.finditer(text):
        name = m["name"]
        found.add(name)
        make = TABLES.get(name)
        if make is None:
            problems.append(f"block {name!r}: no table of that name (no results file behind it)")
            continue
        want = make()
        if m["body"] != want:
            diff = difflib.unified_diff(
                m["body"].splitlines(), want.splitlines(), "README.md", "from JSON", lineterm=""
            )
            changed = [d for d in diff if d[:1] in "+-" and d[:3] not in ("+++", "---")]
            problems.append(
                f"block {name!r} disagrees with its JSON:\n    " + "\n    ".join(changed)
            )
    for name in README_TABLES:
        if name not in found:
            problems.append(f"table {name!r} is missing (expected <!-- table:{name} --> ...)")
    section = BLOCK.sub("", _benchmarks_section(text))
    if not section:
        problems.append("README.md has no '## Benchmarks' section")
    prose = _strip_code(section)
    for line in prose.splitlines():
        if line.lstrip().startswith("|"):
            problems.append(f"table row outside a generated block (no JSON behind it): {line}")
        elif MEASURED.search(line):
            nums = ", ".join(MEASURED.findall(line))
            problems.append(f"number(s) {nums} outside a generated block: {line.strip()}")
    return problems


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if the README is stale")
    parser.add_argument("--readme", type=Path, default=README, help="README to check or update")
    args = parser.parse_args(argv)
    text = args.readme.read_text(encoding="utf-8")
    if args.check:
        problems = check_readme(text)
        if not TABLES_JSON.is_file() or TABLES_JSON.read_text(encoding="utf-8") != _tables_json():
            problems.append(f"{TABLES_JSON.relative_to(ROOT)} is stale or missing")
        if problems:
            print(f"{args.readme}: benchmark numbers not generated from benchmarks/results/:")
            for p in problems:
                print("  " + p)
            print("run: python scripts/results_tables.py")
            return 1
        print(f"{args.readme}: {len(README_TABLES)} benchmark tables match benchmarks/results/")
        return 0
    new = render_readme(text)
    if new != text:
        args.readme.write_text(new, encoding="utf-8")
    TABLES_JSON.write_text(_tables_json(), encoding="utf-8")
    print(f"{args.readme}: generated blocks rewritten; {TABLES_JSON.relative_to(ROOT)} written")
    problems = check_readme(new)
    for p in problems:
        print("  " + p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
