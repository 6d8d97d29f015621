"""Objective study: every training objective on the conditional INN, at equal budgets.

Run (reference files as for ``benchmarks.peers.run``; on a shared machine take the lock)::

    flock /tmp/vinaflow-bench.lock nice -n 10 python -m benchmarks.objective_study --quick
    flock /tmp/vinaflow-bench.lock nice -n 10 python -m benchmarks.objective_study
    python -m benchmarks.objective_study --tasks two_moons --seeds 10 11 12 \\
        --objectives fdiv-kl --max-seconds 60 --set critic_steps=2 --out /tmp/dev.json

Every cell (task, objective, seed) trains ``vinaflow.fit(x, y, model="cinn", ...)`` on the
same seeded simulations (``benchmarks.peers.run.simulations``: the seed draws the
simulations and the initialisation) with the same number of simulations, batch size and
wall-clock budget (``max_seconds``; ``steps`` is set out of reach so that time binds and
the learning rate follows the time budget for every objective). Objectives
(:data:`OBJECTIVES`): maximum likelihood, every f-divergence member in the backward
direction (critic on ``(x, y)``), the forward (latent) KL, Sinkhorn, MMD and the
NLL + backward-KL hybrid. Posteriors are sampled at sbibm's observations and scored by
C2ST against sbibm's reference samples (``vinaflow.evaluation.c2st``), averaged over the
observations; the seeds of a cell are summarised by
``vinaflow.evaluation.intervals.seed_interval`` (mean, Student-t 95% interval).

Seeds 0-2 are the reported seeds; objective settings were developed on two_moons with
seeds 10-12 only (``--seeds 10 11 12``), and gaussian_mixture was never used to tune.

``--quick`` (under 15 minutes on one core): 3 seeds, 5 s of training per cell, C2ST on
1,000 samples at the first 2 observations (a check that every row trains, not a ranking:
at 5 s the objectives with a critic have taken a few hundred model steps). The committed
study (``benchmarks/results/objective_study_heldout.json``), every cINN with affine
couplings so that the objectives share one architecture::

    python -m benchmarks.objective_study --tasks two_moons gaussian_mixture \
        --objectives nll fdiv-kl fdiv-js fdiv-hellinger fdiv-pearson fdiv-reverse-kl \
        fdiv-tv fdiv-kl-score fdiv-kl-bound forward-kl sinkhorn mmd nll+fdiv-kl \
        --seeds 0 1 2 --max-seconds 40 --c2st-samples 1000 --observations 5 \
        --set arch=coupling --out benchmarks/results/objective_study_heldout.json

``--contamination EPS`` replaces the parameters of a fraction ``EPS`` of the training pairs
by independent prior draws (:func:`contaminate`: a failed or mislabelled simulator run
whose observation no longer belongs to its parameter) and still scores against the clean
reference posterior: maximum likelihood must put mass on every pair, while an
f-divergence's ``mixture`` gradient weights a pair by ``2 h(r) / (1 + r)``, which for
``hellinger`` (``h = 1 - sqrt(r)``) vanishes where the data outweigh the model by far, as
minimum-Hellinger-distance estimation does (Beran 1977). The committed run
(``benchmarks/results/robustness.json``)::

    python -m benchmarks.objective_study --contamination 0.1 --tasks two_moons \
        gaussian_mixture --objectives nll fdiv-kl fdiv-js fdiv-hellinger \
        fdiv-reverse-kl --seeds 0 1 2 --max-seconds 40 --c2st-samples 1000 \
        --observations 5 --set arch=coupling --out benchmarks/results/robustness.json

Every run prints a table and writes its results file after every cell (``--resume``
continues one) with the budgets in its ``settings`` (``quick`` says which mode wrote it).
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vinaflow
from benchmarks.peers.run import score_posterior, simulations
from benchmarks.peers.sbibm_reference import find_wheel, load_task
from benchmarks.peers.tasks import make_task
from vinaflow.atomic import atomic_write_json
from vinaflow.evaluation.intervals import format_interval, seed_interval
from vinaflow.objectives.divergences import DIVERGENCES

__all__ = ["OBJECTIVES", "TASKS", "main", "run_cell"]

RESULTS = Path(__file__).resolve().parent / "results"
TASKS = ("two_moons", "gaussian_mixture")


def _fdiv(divergence: str, direction: str = "backward") -> dict[str, Any]:
    return {"name": "fdiv", "divergence": divergence, "direction": direction}


#: ``objective`` argument of ``vinaflow.fit`` per study row. Settings not given are the
#: objectives' defaults (critic size, penalty, gradient estimator).
OBJECTIVES: dict[str, Any] = {
    "nll": "nll",
    **{f"fdiv-{d}": _fdiv(d) for d in DIVERGENCES},
    # the backward KL's earlier defaults (the cINN now defaults to the mixture gradient)
    "fdiv-kl-score": {**_fdiv("kl"), "gradient": "score"},
    "fdiv-kl-bound": {**_fdiv("kl"), "gradient": "bound"},
    "forward-kl": _fdiv("kl", "forward"),
    "sinkhorn": {"name": "sinkhorn"},
    "mmd": {"name": "mmd"},
    # maximum likelihood plus the backward KL through the critic, equal weights
    "nll+fdiv-kl": {"name": "nll", "terms": [{**_fdiv("kl"), "weight": 1.0}]},
}

#: Fixed budgets of every cell.
NUM_SIMULATIONS = 10_000
BATCH_SIZE = 256


def _parse_set(items: list[str]) -> dict[str, Any]:
    """``KEY=VALUE`` pairs (values read as JSON where they parse) for ``vinaflow.fit``."""
    out: dict[str, Any] = {}
    for item in items:
        key, _, value = item.partition("=")
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def _objective(name: str, overrides: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
    """The objective of row ``name``, with the ``objective.*`` overrides applied to its
    f-divergence term, and the remaining (model / training) options."""
    spec = OBJECTIVES[name]
    prefix = "objective."
    obj_over = {k[len(prefix) :]: v for k, v in overrides.items() if k.startswith(prefix)}
    rest = {k: v for k, v in overrides.items() if not k.startswith(prefix)}
    if obj_over and isinstance(spec, dict):
        spec = json.loads(json.dumps(spec))
        if spec["name"] == "fdiv":
            spec.update(obj_over)
        for term in spec.get("terms", []):
            if term["name"] == "fdiv":
                term.update(obj_over)
    return spec, rest


def run_cell(
    task: str,
    name: str,
    seed: int,
    refs: list[Any],
    max_seconds: float,
    n_c2st: int,
    overrides: dict[str, Any],
    steps: int | None = None,
    contamination: float = 0.0,
) -> dict[str, Any]:
    """Train row ``name`` on the seed's simulations of ``task``; C2ST at ``refs``.

    ``steps`` (development runs on a loaded machine) fixes the number of model updates
    instead; the study itself leaves it ``None`` so that the wall clock binds.
    ``contamination`` is the fraction of pairs whose parameters :func:`contaminate`
    replaces (``--contamination``); the references stay the clean posteriors.
    """
    x, y = simulations(task, NUM_SIMULATIONS, seed)
    if contamination:
        x = contaminate(task, x, contamination, seed)
    n_val = min(max(len(x) // 10, 1), 2000)  # the peers benchmark's split
    objective, options = _objective(name, overrides)
    options = {"batch_size": BATCH_SIZE, **options}
    t0 = time.perf_counter()
    try:
        posterior = vinaflow.fit(
            x,
            y,
            model="cinn",
            objective=objective,
            max_seconds=None if steps else max_seconds,
            # out of reach by default: the wall-clock budget binds for every objective
            steps=steps or 10**8,
            seed=seed,
            validation_fraction=n_val / len(x),
            progress=False,
            **options,
        )
    except Exception as exc:  # a failed cell is recorded, not a zero
        return {"task": task, "objective": name, "seed": seed, "c2st": None, "error": repr(exc)}
    train_wall = time.perf_counter() - t0
    scores, _ = score_posterior(posterior, refs, n_c2st, seed)
    result = posterior.train_result
    return {
        "task": task,
        "objective": name,
        "seed": seed,
        "c2st": float(np.mean(scores)),
        "c2st_per_observation": scores,
        **heldout_log_prob(posterior, task, seed),
        "train_steps": int(result.steps),
        "stopped": result.stopped,
        "train_seconds": float(train_wall),
    }


def contaminate(task: str, x: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """``x`` with a seeded ``fraction`` of its rows replaced by independent prior draws of
    ``task``: those pairs' observations no longer belong to their parameters."""
    g = torch.Generator().manual_seed(seed + HELDOUT_SEED_OFFSET + 1)
    n = len(x)
    rows = torch.randperm(n, generator=g)[: round(fraction * n)]
    out = x.copy()
    out[rows.numpy()] = make_task(task).sample_prior(len(rows), g).numpy().astype(x.dtype)
    return out


#: Held-out simulations per cell for :func:`heldout_log_prob`; their seed is offset so
#: that they never coincide with a cell's training simulations.
HELDOUT_ROWS, HELDOUT_SEED_OFFSET = 2000, 1_000_000


def heldout_log_prob(posterior: Any, task: str, seed: int) -> dict[str, Any]:
    """Mean and median of ``log q(x | y)`` over fresh simulations of ``task``, in nats.

    Maximum likelihood maximises the mean; an objective that only sees samples does not,
    and the two numbers tell whether its density is still usable (for ``log_prob``,
    importance sampling, certificates) where its samples may look fine. ``None`` for a
    model without a tractable density.
    """
    if not posterior.has_log_prob:
        return {"heldout_log_prob_mean": None, "heldout_log_prob_median": None}
    x, y = simulations(task, HELDOUT_ROWS, seed + HELDOUT_SEED_OFFSET)
    lp = posterior.log_prob(x, y).double()
    return {
        "heldout_log_prob_mean": float(lp.mean()),
        "heldout_log_prob_median": float(lp.median()),
    }


def _table(cells: dict[str, dict[str, Any]], tasks: list[str], names: list[str]) -> str:
    width = max(len(n) for n in names) + 2
    head = "objective".ljust(width) + "".join(t.ljust(28) for t in tasks)
    lines = [head, "-" * len(head)]
    for n in names:
        row = n.ljust(width)
        for t in tasks:
            c = cells.get(f"{t}/{n}")
            row += (format_interval(c["c2st"]) if c else "-").ljust(28)
        lines.append(row)
    return "\n".join(lines)


def _resumed_rows(out: Path, settings: dict[str, Any]) -> list[dict[str, Any]]:
    """Rows of an earlier run of the same study at ``out`` (``--resume``)."""
    if not out.is_file():
        return []
    old = json.loads(out.read_text())
    keep = (
        "max_seconds_per_cell",
        "c2st_max_samples",
        "observations",
        "overrides",
        "contamination",
    )
    differ = [k for k in keep if old["settings"].get(k) != settings[k]]
    if differ:
        raise SystemExit(f"--resume: {out} was written with other {', '.join(differ)}")
    return [r for r in old["rows"] if r.get("c2st") is not None]


def summarise(rows: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per ``task/objective``: C2ST, median held-out log q and steps over seeds, and the
    C2ST minus NLL's paired by seed (the same simulations and initialisation)."""
    cells: dict[str, dict[str, Any]] = {}
    for task, name in dict.fromkeys((r["task"], r["objective"]) for r in rows):
        mine = [r for r in rows if r["task"] == task and r["objective"] == name]
        cell: dict[str, Any] = {
            "c2st": seed_interval([r["c2st"] for r in mine]),
            "heldout_log_prob_median": seed_interval(
                [r.get("heldout_log_prob_median") for r in mine]
            ),
            "train_steps": seed_interval([r.get("train_steps") for r in mine]),
            "failed_seeds": [r["seed"] for r in mine if r["c2st"] is None],
        }
        nll = {r["seed"]: r["c2st"] for r in rows if r["task"] == task and r["objective"] == "nll"}
        paired = [r for r in mine if r["seed"] in nll]
        if name != "nll" and paired:
            cell["c2st_minus_nll"] = seed_interval(
                [None if r["c2st"] is None or nll[r["seed"]] is None
                 else r["c2st"] - nll[r["seed"]] for r in paired]
            )  # fmt: skip
            cell["paired_seeds"] = [r["seed"] for r in paired]
        cells[f"{task}/{name}"] = cell
    return cells


def _write(
    out: Path, settings: dict[str, Any], rows: list[dict[str, Any]], seconds: float
) -> dict[str, dict[str, Any]]:
    """The results file, atomically, after every cell; returns its summary."""
    cells = summarise(rows)
    atomic_write_json(
        out,
        {
            "settings": {
                **settings,
                "seeds": sorted({r["seed"] for r in rows}) or settings["seeds"],
            },
            "notes": (
                "Equal simulations, batch size and wall-clock seconds per cell; objectives "
                "with a critic spend part of the budget on critic updates, so they take "
                "fewer model steps. Timings are loaded timings on a 2-core machine shared "
                "with other sessions. c2st_minus_nll is paired by seed. A failed seed is "
                "listed, not scored."
            ),
            "wall_seconds": seconds,
            "summary": cells,
            "rows": rows,
        },
    )
    return cells


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", nargs="+", default=list(TASKS), choices=TASKS)
    parser.add_argument("--objectives", nargs="+", default=list(OBJECTIVES), choices=OBJECTIVES)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--max-seconds", type=float, default=90.0)
    parser.add_argument("--c2st-samples", type=int, default=10_000)
    parser.add_argument("--observations", type=int, default=10, help="first N of sbibm's 10")
    parser.add_argument(
        "--set",
        nargs="*",
        default=[],
        metavar="KEY=VALUE",
        help="extra vinaflow.fit options for every cell (objective.KEY for the f-divergence "
        "term), for development runs",
    )
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--sbibm-wheel", default=None)
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--resume", action="store_true", help="keep the cells of --out")
    parser.add_argument(
        "--contamination",
        type=float,
        default=0.0,
        help="fraction of training pairs whose parameters are replaced by prior draws "
        "(scored against the clean reference posteriors)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.max_seconds, args.c2st_samples, args.observations = 5.0, 1000, 2
    out = args.out or RESULTS / "objective_study.json"
    overrides = _parse_set(args.set)
    torch.set_num_threads(1)  # the machine is shared; one core per benchmark
    wheel = find_wheel(args.sbibm_wheel)
    refs = {t: load_task(wheel, t)[: args.observations] for t in args.tasks}
    settings = {
        "model": "cinn (vinaflow.fit defaults)",
        "tasks": args.tasks,
        "objectives": {n: OBJECTIVES[n] for n in args.objectives},
        "num_simulations": NUM_SIMULATIONS,
        "validation_rows": min(NUM_SIMULATIONS // 10, 2000),
        "batch_size": BATCH_SIZE,
        "max_seconds_per_cell": args.max_seconds,
        "steps": "unbounded (wall clock binds)",
        "seeds": args.seeds,
        "c2st_max_samples": args.c2st_samples,
        "observations": args.observations,
        "overrides": overrides,
        "contamination": args.contamination,
        "threads": 1,
        "quick": args.quick,
        "sbibm_wheel": wheel.name,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
    }
    rows = _resumed_rows(out, settings) if args.resume else []
    t_start = time.perf_counter()
    # seeds before objectives: an interrupted study holds whole seeds, paired by seed
    for task in args.tasks:
        for seed in args.seeds:
            for name in args.objectives:
                if any(r["task"] == task and r["objective"] == name and r["seed"] == seed
                       for r in rows):  # fmt: skip
                    continue
                row = run_cell(
                    task, name, seed, refs[task], args.max_seconds, args.c2st_samples,
                    overrides, contamination=args.contamination,
                )  # fmt: skip
                rows.append(row)
                c = "failed" if row["c2st"] is None else f"{row['c2st']:.3f}"
                extra = row.get("error") or f"{row['train_steps']} steps"
                print(f"{task:17s} {name:14s} seed {seed}: C2ST {c}  ({extra})", flush=True)
                _write(out, settings, rows, time.perf_counter() - t_start)
    cells = _write(out, settings, rows, time.perf_counter() - t_start)
    print()
    print(_table(cells, args.tasks, args.objectives))
    print(f"\n{len(rows)} cells in {time.perf_counter() - t_start:.0f} s")
    print(f"wrote {out}")
    return 0 if all(math.isfinite(r["c2st"] or math.nan) for r in rows) else 1


if __name__ == "__main__":
    raise SystemExit(main())
