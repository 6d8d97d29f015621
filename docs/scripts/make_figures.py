"""Figures and tables of the documentation, from the benchmark results in the repository.

Reads only JSON files committed under ``benchmarks/results/`` and writes

* ``docs/figures/*.png`` (matplotlib, Agg backend), and
* ``docs/generated/*.md``: markdown tables that the pages include with
  ``pymdownx.snippets`` (``--8<-- "docs/generated/NAME.md"``), built by
  ``scripts/results_tables.py`` (which also writes the README's benchmark tables) and,
  for the guide "Choosing an objective", by ``docs/scripts/guidance.py``,

so that every number quoted on a case-study page comes from a results file.

Run from the repository root::

    python docs/scripts/make_figures.py            # write figures and tables
    python docs/scripts/make_figures.py --check    # tables only: fail if any is stale

``--check`` regenerates the tables in memory and compares them with the committed
files (``tests/test_docs.py`` runs it); figures are not compared, since their bytes
depend on the matplotlib version.
"""

from __future__ import annotations

import argparse
import math
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "docs" / "figures"
GENERATED = ROOT / "docs" / "generated"

# Stable PNG bytes across runs of the same matplotlib: no software/version metadata.
PNG_METADATA = {"Software": None}


# The tables (also the README's) are built in one place: scripts/results_tables.py.
sys.path.insert(0, str(ROOT / "scripts"))
from results_tables import TABLES as RESULTS_TABLES  # noqa: E402
from results_tables import load, ocean_rows, pr_label, study_stat  # noqa: E402

# The guide "Choosing an objective": its tables and recommendations (docs/scripts/guidance.py).
sys.path.insert(0, str(Path(__file__).resolve().parent))
from guidance import GUIDANCE_TABLES  # noqa: E402

TABLES = {**RESULTS_TABLES, **GUIDANCE_TABLES}

# -- figures -------------------------------------------------------------------------------


def _save(fig: Any, name: str) -> None:
    FIGURES.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(FIGURES / name, dpi=90, metadata=PNG_METADATA)


def figure_kinematics(plt: Any) -> None:
    k = load("kinematics.json")
    # one run per joint-INN configuration; the conditional INNs over seeds have their table
    rows = [r for r in k["rows"] if not r["name"].startswith("cinn-")]
    names = [r["name"] for r in rows]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    ax = axes[0]
    ax.barh(names, [r["resim_error"] for r in rows], color="tab:blue")
    ax.set_xscale("log")
    ax.set_xlabel("re-simulation error (log scale)")
    for t in sorted({r["target_resim"] for r in rows if r["target_resim"] is not None}):
        ax.axvline(t, color="k", ls="--", lw=0.8)
    ax.invert_yaxis()
    ax = axes[1]
    ax.barh(names, [r["c2st"] for r in rows], color="tab:orange")
    ax.set_xlim(0.5, 1.0)
    ax.set_xlabel("C2ST vs ABC ground truth")
    ax.set_yticklabels([])
    ax.invert_yaxis()
    fig.suptitle("Inverse kinematics", fontsize=10)
    _save(fig, "kinematics.png")
    plt.close(fig)


def figure_ocean(plt: Any) -> None:
    rows = ocean_rows()
    fig, ax = plt.subplots(figsize=(7, 3.4))
    labels = []
    for i, (_, seconds, r) in enumerate(rows):
        per_obs = r["per_observation_c2st"]
        ax.scatter([i - 0.12] * len(per_obs), per_obs, s=8, alpha=0.4, c="tab:blue")
        ax.scatter(
            [i - 0.12], [r["c2st"]], marker="D", c="tab:blue", label="flow" if i == 0 else None
        )
        ax.scatter(
            [i + 0.12],
            [r["is_c2st"]],
            marker="D",
            c="tab:green",
            label="flow + IS" if i == 0 else None,
        )
        labels.append(f"{r['config']}\n{seconds:.0f} s")
    ax.axhline(
        load("ocean.json")["targets"]["c2st_max"], color="k", ls="--", lw=0.8, label="target"
    )
    ax.axhline(0.5, color="grey", lw=0.6)
    ax.set_xticks(range(len(rows)))
    ax.set_xticklabels(labels, fontsize=7)
    ax.set_ylabel("C2ST vs exact grid posterior")
    ax.legend(fontsize=8, loc="upper right")
    ax.set_title("Ocean-acoustic inversion (dots: per observation)", fontsize=10)
    _save(fig, "ocean.png")
    plt.close(fig)


def _ci_bars(rows: list[dict[str, Any]], metric: str, log: bool = False) -> Any:
    """Means and asymmetric error bars of the seeds' 95% intervals (``study_stat``); on a
    log axis a lower end at or below zero is drawn down to a tenth of the mean."""
    means, lower, upper = [], [], []
    for r in rows:
        st = study_stat(r, metric)
        one_seed = not (math.isfinite(st["low"]) and math.isfinite(st["high"]))
        lo, hi = (st["mean"], st["mean"]) if one_seed else (st["low"], st["high"])
        if log and lo <= 0:
            lo = st["mean"] / 10
        means.append(st["mean"])
        lower.append(st["mean"] - lo)
        upper.append(hi - st["mean"])
    return means, [lower, upper]


def figure_support_mismatch(plt: Any) -> None:
    g = load("generative.json")["support-mismatch"]["rows"]
    fig, ax = plt.subplots(figsize=(6, 3.4))
    for obj, label, color in (
        ("sinkhorn", "Sinkhorn", "tab:blue"),
        ("kl", "variational KL", "tab:red"),
    ):
        rs = sorted(
            (r for r in g if r["params"]["objective"] == obj), key=lambda r: r["params"]["offset"]
        )
        d = [r["params"]["offset"] for r in rs]
        m, err = _ci_bars(rs, "w1", log=True)
        ax.errorbar(d, m, yerr=err, marker="o", capsize=3, label=label, color=color)
    ax.set_yscale("log")
    ax.set_xlabel("base offset d (base U(d, d + 1), target U(0, 1))")
    ax.set_ylabel("W1 to target (log scale)")
    ax.legend(fontsize=8)
    ax.set_title("Support mismatch (bars: 95% intervals over seeds)", fontsize=10)
    _save(fig, "support_mismatch.png")
    plt.close(fig)


def figure_heavy_tails(plt: Any) -> None:
    g = load("generative.json")["heavy-tails"]["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(8, 3.2))
    bases = (
        ("gaussian", "Gaussian base", "tab:blue"),
        ("student-t", "Student-t base (df 2)", "tab:purple"),
    )
    for metric, ax, ylabel in (
        ("w1_slog", axes[0], "W1, signed-log scale"),
        ("q99_ratio", axes[1], "99% quantile ratio model / target"),
    ):
        for base, label, color in bases:
            rs = sorted(
                (r for r in g if r["params"]["base"] == base), key=lambda r: r["params"]["alpha"]
            )
            a = [r["params"]["alpha"] for r in rs]
            m, err = _ci_bars(rs, metric, log=metric == "w1_slog")
            ax.errorbar(a, m, yerr=err, marker="o", capsize=3, label=label, color=color)
        ax.set_xlabel("Pareto tail index alpha")
        ax.set_ylabel(ylabel)
    axes[0].set_yscale("log")
    axes[1].axhline(1.0, color="k", ls="--", lw=0.8)
    axes[0].legend(fontsize=8)
    fig.suptitle("Heavy tails (bars: 95% intervals over seeds)", fontsize=10)
    _save(fig, "heavy_tails.png")
    plt.close(fig)


def figure_precision_recall(plt: Any) -> None:
    g = load("generative.json")["precision-recall"]["rows"]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for i, r in enumerate(g):
        (p,), perr = _ci_bars([r], "precision")
        (rc,), rerr = _ci_bars([r], "recall")
        nll = r["params"]["objective"] == "nll"
        ax.errorbar(
            rc,
            p,
            xerr=rerr,
            yerr=perr,
            marker="s" if nll else "o",
            capsize=3,
            color="k" if nll else "tab:blue",
        )
        ax.annotate(
            pr_label(r["params"]),
            (rc, p),
            textcoords="offset points",
            xytext=(-38, 6) if i % 2 else (5, -12),
            fontsize=8,
        )
    ax.set_xlabel("recall")
    ax.set_ylabel("precision")
    ax.set_title("PR-divergence fine-tuning (bars: 95% intervals over seeds)", fontsize=10)
    _save(fig, "precision_recall.png")
    plt.close(fig)


def figure_certificates(plt: Any) -> None:
    c = load("certificates.json")
    rows = [r for r in c["rows"] if r["exact_kl"] > 0]
    fig, ax = plt.subplots(figsize=(5, 3.8))
    for i, r in enumerate(rows):
        err = [[r["estimate"] - r["ci_low"]], [r["ci_high"] - r["estimate"]]]
        ax.errorbar(r["exact_kl"], r["estimate"], yerr=err, marker="o", capsize=3, color="tab:blue")
        ax.annotate(
            r["model"],
            (r["exact_kl"], r["estimate"]),
            textcoords="offset points",
            xytext=(-110, 6) if i % 2 else (6, -10),
            fontsize=7,
        )
    lo = min(r["exact_kl"] for r in rows) / 2
    hi = max(r["exact_kl"] for r in rows) * 2
    ax.plot([lo, hi], [lo, hi], "k--", lw=0.8)
    ax.set_xscale("log")
    ax.set_yscale("log")
    ax.set_xlabel("exact KL(P_XY || Q_XY)")
    ax.set_ylabel("certificate estimate")
    ax.set_title("Certificates against the exact KL", fontsize=10)
    _save(fig, "certificates.png")
    plt.close(fig)


FIGURES_FUNCS = (
    figure_kinematics,
    figure_ocean,
    figure_support_mismatch,
    figure_heavy_tails,
    figure_precision_recall,
    figure_certificates,
)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="fail if a generated table is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, make in TABLES.items():
        text = make()
        path = GENERATED / f"{name}.md"
        if args.check:
            if not path.is_file() or path.read_text(encoding="utf-8") != text:
                stale.append(str(path.relative_to(ROOT)))
        else:
            GENERATED.mkdir(parents=True, exist_ok=True)
            path.write_text(text, encoding="utf-8")
    if args.check:
        if stale:
            print("stale tables (run python docs/scripts/make_figures.py):", *stale, sep="\n  ")
            return 1
        print(f"{len(TABLES)} tables up to date")
        return 0
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    for make_figure in FIGURES_FUNCS:
        make_figure(plt)
    print(
        f"wrote {len(TABLES)} tables to {GENERATED} and {len(FIGURES_FUNCS)} figures to {FIGURES}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
