"""Ocean-acoustic posterior accuracy against the exact grid posterior, with targets.

Trains conditional INNs on the ocean-acoustic problem (water depth and seabed sound
speed from 5 receivers x 7 tones, SNR 10 dB) and scores them on held-out observations
against the exact grid posterior: mean C2ST (target <= 0.6 for the best objective) and
the coverage of 95% marginal credible intervals on separate prior draws (target
0.90-1.00). Every configuration is reported twice: the flow's own samples, and the flow
as an importance-sampling proposal with the problem's likelihood (Dax et al. 2023),
with its sampling efficiency.

Run: ``python -m benchmarks.ocean [--quick] [--seconds S] [--configs NAME ...]``;
prints a table and writes ``benchmarks/results/ocean.json`` (``ocean_quick.json`` with
``--quick``, ``ocean-TAG.json`` with ``--tag TAG``). Configurations run on
``--workers`` processes (default 2), one torch thread each.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

from vinaflow.atomic import atomic_write_json
from vinaflow.config import deep_merge, resolve_config
from vinaflow.experiments.pipeline import environment, run
from vinaflow.runtime import tune_allocator
from vinaflow.studies.ocean import OCEAN_BASE
from vinaflow.studies.runners import run_in_processes

RESULTS = Path(__file__).parent / "results"

#: name -> overrides of the study's base configuration.
CONFIGS: dict[str, dict[str, Any]] = {
    "nll-cinn-noise-aug": {
        "model": {"kind": "cinn", "blocks": 6, "hidden": 128, "embedding_dim": 64},
        "training": {"noise_augmentation": True, "batch_size": 256},
    },
    "nll-cinn-fixed-noise": {
        "model": {"kind": "cinn", "blocks": 6, "hidden": 128, "embedding_dim": 64},
        "training": {"noise_augmentation": False, "batch_size": 256},
    },
    "nll-cinn-paper-h403-z2-b4": {
        "model": {"kind": "cinn", "blocks": 4, "hidden": 403, "latent_dim": 2},
        "training": {"noise_augmentation": True, "batch_size": 256},
    },
}


def bench_config(payload: dict[str, Any]) -> dict[str, Any]:
    """Train and score one configuration (a top-level function: runs in worker processes)."""
    name, seconds, n_sims, quick = (
        payload["name"],
        payload["seconds"],
        payload["simulations"],
        payload["quick"],
    )
    cfg = deep_merge(OCEAN_BASE, CONFIGS[name])
    cfg["problem"]["num_simulations"] = n_sims
    cfg["training"].update(max_seconds=seconds, steps=10**7, progress=False)
    if quick:
        cfg["evaluation"].update(num_observations=5, num_calibration=50, calibration_samples=100)
    t0 = time.perf_counter()
    res = run(resolve_config(cfg), progress=False)
    m, imp = res.metrics, res.metrics.get("importance") or {}
    return {
        "config": name,
        "c2st": m["c2st"],
        "coverage": m["coverage"],
        "w1": m["w1"],
        "is_c2st": imp.get("c2st"),
        "is_coverage": imp.get("coverage"),
        "is_efficiency": imp.get("efficiency"),
        "is_efficiency_min": imp.get("efficiency_min"),
        "train_seconds": m["train_seconds"],
        "train_steps": m["train_steps"],
        "wall_seconds": time.perf_counter() - t0,
        "per_observation_c2st": m["per_observation"]["c2st"],
        "num_observations": m["num_observations"],
        "resolved_config": res.config,
    }


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.3f}" if isinstance(v, float) else str(v)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--quick", action="store_true", help="20k simulations, 60 s, 5 observations")
    ap.add_argument("--seconds", type=float, default=None, help="training budget per config")
    ap.add_argument("--simulations", type=int, default=None)
    ap.add_argument("--configs", nargs="+", choices=sorted(CONFIGS), default=list(CONFIGS))
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--tag", default="", help="results file ocean[_quick][-TAG].json")
    args = ap.parse_args(argv)
    tune_allocator()
    seconds = args.seconds or (60.0 if args.quick else 600.0)
    n_sims = args.simulations or (20_000 if args.quick else 100_000)
    rows: list[dict[str, Any]] = []

    def done(row: dict[str, Any]) -> None:
        rows.append(row)
        name = row["config"]
        print(
            f"{name}: C2ST {_fmt(row['c2st'])} coverage {_fmt(row['coverage'])} | "
            f"with importance sampling C2ST {_fmt(row['is_c2st'])} coverage "
            f"{_fmt(row['is_coverage'])} efficiency {_fmt(row['is_efficiency'])}",
            flush=True,
        )

    payloads = [
        {"name": n, "seconds": seconds, "simulations": n_sims, "quick": args.quick}
        for n in args.configs
    ]
    run_in_processes(bench_config, payloads, args.workers, done)
    rows.sort(key=lambda r: args.configs.index(r["config"]))
    cols = [
        "config",
        "c2st",
        "coverage",
        "is_c2st",
        "is_coverage",
        "is_efficiency",
        "train_steps",
        "train_seconds",
    ]
    print("\n| " + " | ".join(cols) + " |\n|" + "---|" * len(cols))
    for row in rows:
        print("| " + " | ".join(_fmt(row[c]) for c in cols) + " |")
    stem = "ocean_quick" if args.quick else "ocean"
    out = RESULTS / (f"{stem}-{args.tag}.json" if args.tag else f"{stem}.json")
    atomic_write_json(
        out,
        {
            "targets": {"c2st_max": 0.6, "coverage_95_range": [0.90, 1.00]},
            "seconds": seconds,
            "simulations": n_sims,
            "rows": rows,
            "environment": environment(),
        },
    )
    print(f"\nwrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
