"""Quick accuracy check of the flow-matching CNF (``model="cnf"``) on sbibm's two_moons.

Run (reference files as for ``benchmarks.peers.run``; about 7 minutes on 2 cores)::

    flock /tmp/vinaflow-bench.lock nice -n 5 python -m benchmarks.cnf_check
    python -m benchmarks.cnf_check --quick        # 1 seed, 20 s, C2ST on 1,000 samples

For each seed, 10,000 seeded simulations of two_moons (``benchmarks.peers.tasks``) train
``vinaflow.fit(x, y, model="cnf")`` with its defaults (flow matching, early stopping on the
held-out likelihood) for at most ``--max-seconds``; the posterior is sampled at sbibm's 10
observations and scored by C2ST on 10,000 samples against sbibm's reference samples, as in
the peers benchmark. The seeds are summarised by ``vinaflow.evaluation.intervals`` (mean,
Student-t 95% interval). Prints a table and writes ``benchmarks/results/cnf_check.json``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vinaflow
from benchmarks.peers.run import score_posterior, simulations
from benchmarks.peers.sbibm_reference import find_wheel, load_task
from vinaflow.atomic import atomic_write_json
from vinaflow.evaluation.intervals import format_interval, seed_interval

TASK, BUDGET = "two_moons", 10_000
RESULTS = Path(__file__).resolve().parent / "results"


def run_seed(seed: int, refs: list[Any], max_seconds: float, n_c2st: int) -> dict[str, Any]:
    """Train on the seed's simulations, sample at every observation, score by C2ST."""
    x, y = simulations(TASK, BUDGET, seed)
    n_val = min(max(len(x) // 10, 1), 2000)  # the peers benchmark's split
    t0 = time.perf_counter()
    posterior = vinaflow.fit(
        x,
        y,
        model="cnf",
        max_seconds=max_seconds,
        seed=seed,
        validation_fraction=n_val / len(x),
        progress=False,
    )
    train_wall = time.perf_counter() - t0
    scores, sample_seconds_per_10k = score_posterior(posterior, refs, n_c2st, seed)
    result = posterior.train_result
    return {
        "seed": seed,
        "c2st": float(np.mean(scores)),
        "c2st_per_observation": scores,
        "train_steps": int(result.steps),
        "stopped": result.stopped,
        "train_seconds": float(train_wall),
        "sample_seconds_per_10k": sample_seconds_per_10k,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-seconds", type=float, default=100.0)
    parser.add_argument("--c2st-samples", type=int, default=10_000)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sbibm-wheel", default=None)
    parser.add_argument("--out", type=Path, default=RESULTS / "cnf_check.json")
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.max_seconds, args.c2st_samples = args.seeds[:1], 20.0, 1000
    torch.set_num_threads(1)  # the machine is shared; one core per benchmark
    wheel = find_wheel(args.sbibm_wheel)
    refs = load_task(wheel, TASK)
    rows = []
    for seed in args.seeds:
        row = run_seed(seed, refs, args.max_seconds, args.c2st_samples)
        print(
            f"seed {seed}: C2ST {row['c2st']:.3f}  steps {row['train_steps']} "
            f"({row['stopped']}, {row['train_seconds']:.0f} s)  "
            f"sampling {row['sample_seconds_per_10k']:.2f} s / 10k",
            flush=True,
        )
        rows.append(row)
    summary = seed_interval([r["c2st"] for r in rows])
    print(f"{TASK} at {BUDGET} simulations, cnf (flow matching): C2ST {format_interval(summary)}")
    if args.quick:
        return 0  # quick runs check that it works; they do not overwrite results
    atomic_write_json(
        args.out,
        {
            "settings": {
                "task": TASK,
                "num_simulations": BUDGET,
                "model": "cnf (defaults)",
                "objective": "flow_matching (default)",
                "max_seconds": args.max_seconds,
                "c2st_max_samples": args.c2st_samples,
                "observations": len(refs),
                "seeds": args.seeds,
                "threads": 1,
                "sbibm_wheel": wheel.name,
            },
            "notes": (
                "Run on a 2-core machine shared with other sessions: timings are loaded "
                "timings. C2ST is vinaflow.evaluation.c2st against sbibm's reference samples."
            ),
            "summary": {"c2st": summary},
            "rows": rows,
        },
    )
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
