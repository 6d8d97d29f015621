"""Development study of ``vinaflow.fit``'s defaults, on sbibm tasks held out from the
peers benchmark.

The peers benchmark (:mod:`benchmarks.peers.run`) reports vinaflow's defaults on its
tasks; choosing those defaults by their scores there would tune on the reported
instances. Candidate settings are compared here instead, on :data:`DEV_TASKS` (tasks of
sbibm that the peers benchmark does not run), with the same simulations, scoring (C2ST
against sbibm's reference samples) and seeds machinery::

    python -m benchmarks.peers.defaults_dev --variants constant small ensemble3 --seeds 0 1

Each variant is a set of ``vinaflow.fit`` options on top of no options at all
(:data:`VARIANTS`), or one of sbi's estimators (:data:`PEERS`, as the peers benchmark runs
them), so that a candidate is measured against the tools it has to beat on the same
development cases; every variant of a seed trains on the same simulations. The results
file (``benchmarks/results/defaults_dev.json``) is rewritten atomically after every cell,
and ``--resume`` keeps the cells it holds; the summary is the mean C2ST over seeds with a
95% interval and the difference to the task's baseline (its first variant) paired by seed.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vinaflow
from benchmarks.peers.run import SBI_METHODS, _environment, _score, run_sbi, simulations
from benchmarks.peers.sbibm_reference import TASKS, ReferenceObservation, find_wheel, load_task
from benchmarks.peers.tasks import make_task, posterior_predictive_check
from vinaflow.atomic import atomic_write_json
from vinaflow.evaluation.intervals import format_interval, seed_interval

#: Tasks for tuning the defaults: sbibm tasks outside the peers benchmark's ``TASKS``, and
#: fresh instances of a benchmark task (:data:`FRESH`).
DEV_TASKS = ("slcp", "gaussian_linear@fresh")
assert not set(DEV_TASKS) & set(TASKS), "development tasks must be held out"

#: ``task@fresh``: a peers task on instances it never reports. Its simulations use seed
#: ``FRESH_SEED + seed`` (the peers benchmark uses ``seed``), its observations are
#: simulated at prior draws from generator seed ``FRESH_SEED``, not sbibm's ten, and its
#: reference samples are drawn from the exact posterior (tasks with one:
#: ``reference_posterior``).
FRESH = "@fresh"
FRESH_SEED = 1000

#: Early stopping of ``fit`` before it validated once per epoch on small data: every 200
#: steps, 10 validations of patience. The variants run under it say so.
EVERY_200 = {"val_every": 200, "patience": 10}

#: ``vinaflow.fit`` options per variant (each task's first is the baseline of the paired
#: diffs). Each names every option its rows were run with, so that a later change of
#: ``fit``'s defaults does not change what a variant means.
AFFINE = {"arch": "coupling", "lr_schedule": "constant"}
#: spline couplings at DEFAULT_CONFIG's width and the trainer's learning rate
SPLINE_WIDE = {"arch": "spline", "lr_schedule": "constant", "hidden": 128, "lr": 1e-3}
VARIANTS: dict[str, dict[str, Any]] = {
    # affine couplings (fit's default architecture before splines)
    "constant": {**AFFINE, **EVERY_200},
    "plateau": {**AFFINE, "lr_schedule": "plateau", **EVERY_200},
    # half the width of the affine cINN's subnets and embedding
    "small": {**AFFINE, "hidden": 64, "embedding_hidden": 64, **EVERY_200},
    # a mixture of three independently trained affine members
    "ensemble3": {**AFFINE, "ensemble": 3, **EVERY_200},
    # rational-quadratic spline couplings (the flow of sbi's NSF) instead of affine ones
    "spline": {**SPLINE_WIDE, **EVERY_200},
    "spline_small": {**SPLINE_WIDE, "hidden": 64, "embedding_hidden": 64, **EVERY_200},
    # spline couplings validated once per epoch (36 steps at 10,000 simulations) with 20
    # epochs of patience (sbi's stop_after_epochs)
    "spline_epoch20": {**SPLINE_WIDE, "val_every": 36, "patience": 20},
    # spline couplings validated once per epoch with 2,000 steps of patience: fit's
    # default before spline_narrow
    "spline_epoch": SPLINE_WIDE,
    # half the width and half the learning rate (fit's default): at 128 units and 1e-3 the
    # validation loss on 10-D gaussian_linear@fresh was lowest after 3-7 epochs
    "spline_narrow": {**SPLINE_WIDE, "hidden": 64, "lr": 5e-4},
}

#: The variant that is ``fit``'s default now (checked by the tests against
#: ``vinaflow.config``): every other variant of a task is also compared with it.
DEFAULT_VARIANT = "spline_narrow"

#: sbi's estimators, run as :func:`benchmarks.peers.run.run_sbi` runs them (its defaults and
#: early stopping); never a baseline for the paired diffs unless listed first.
PEERS = tuple(SBI_METHODS)
assert not set(PEERS) & set(VARIANTS)
#: What every variant is, as the results file records it.
SPECS: dict[str, dict[str, Any]] = {
    **VARIANTS,
    **{p: {"sbi": list(SBI_METHODS[p])} for p in PEERS},
}

OUT = Path(__file__).resolve().parents[1] / "results" / "defaults_dev.json"


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--tasks", nargs="*", default=list(DEV_TASKS), choices=DEV_TASKS)
    p.add_argument("--variants", nargs="*", default=list(VARIANTS), choices=list(SPECS))
    p.add_argument("--seeds", nargs="*", type=int, default=[0, 1, 2])
    p.add_argument("--budget", type=int, default=10_000)
    p.add_argument("--observations", type=int, default=5, help="sbibm observations scored")
    p.add_argument("--c2st-samples", type=int, default=5_000)
    p.add_argument("--sbibm-wheel", default=None)
    p.add_argument("--out", type=Path, default=OUT)
    p.add_argument("--resume", action="store_true")
    return p.parse_args(argv)


def summarise(rows: list[dict[str, Any]], variants: list[str]) -> list[dict[str, Any]]:
    """Per (task, variant): C2ST over seeds, minus the task's baseline (the first of
    ``variants`` that the task has rows of), and :data:`DEFAULT_VARIANT` minus it, paired
    by seed."""
    out = []
    for task in dict.fromkeys(r["task"] for r in rows):
        by = {v: {r["seed"]: r for r in rows if r["task"] == task and r["variant"] == v}
              for v in variants}  # fmt: skip
        held = [v for v in variants if by[v]]
        base = by[held[0]]
        for v in held:
            mine = by[v]
            common = sorted(set(mine) & set(base))
            out.append({
                "task": task,
                "variant": v,
                "baseline": held[0],
                "seeds": sorted(mine),
                "c2st": seed_interval([mine[k]["c2st"] for k in sorted(mine)]),
                "train_seconds": seed_interval([mine[k]["train_seconds"] for k in sorted(mine)]),
                "minus_baseline": seed_interval(
                    [mine[k]["c2st"] - base[k]["c2st"] for k in common]
                ),
            })  # fmt: skip
            default = by.get(DEFAULT_VARIANT) or {}
            paired = sorted(set(mine) & set(default))
            if v != DEFAULT_VARIANT and paired:
                out[-1]["default_minus"] = seed_interval(
                    [default[k]["c2st"] - mine[k]["c2st"] for k in paired]
                )
    return out


def _present(rows: list[dict[str, Any]]) -> list[str]:
    """The variants the rows hold, in :data:`VARIANTS` order then :data:`PEERS` (the first
    is the baseline)."""
    held = {r["variant"] for r in rows}
    return [v for v in SPECS if v in held]


def _settings(settings: dict[str, Any], rows: list[dict[str, Any]]) -> dict[str, Any]:
    """This call's settings, with tasks, variants and seeds those of all rows held
    (a ``--resume`` run may add a few cells to an earlier, larger run)."""
    return {
        **settings,
        "tasks": list(dict.fromkeys(r["task"] for r in rows)),
        "variants": _present(rows),
        "seeds": sorted({r["seed"] for r in rows}),
    }


def references(task: str, n: int, wheel: Path) -> list[ReferenceObservation]:
    """``n`` reference observations of a :data:`DEV_TASKS` entry: sbibm's first ``n``, or
    for ``task@fresh`` new ones with 10,000 samples of the exact posterior each."""
    if FRESH not in task:
        return load_task(wheel, task)[:n]
    name = task.removesuffix(FRESH)
    problem = make_task(name)
    g = torch.Generator().manual_seed(FRESH_SEED)
    theta = problem.sample_prior(n, g)
    obs = problem.simulate_checked(theta, g)
    return [
        ReferenceObservation(
            task=task,
            num_observation=k + 1,
            observation=o.numpy(),
            true_parameters=t.numpy(),
            samples=problem.reference_posterior(o, 10_000, g).numpy().astype(np.float64),
        )
        for k, (t, o) in enumerate(zip(theta, obs, strict=True))
    ]


def _run_variant(
    v: str, x: np.ndarray, y: np.ndarray, obs: np.ndarray, n: int, seed: int,
    refs: list[ReferenceObservation],
) -> dict[str, Any]:  # fmt: skip
    post = vinaflow.fit(
        x, y, seed=seed, validation_fraction=min(0.1, 2000 / len(x)), progress=False,
        **VARIANTS[v],
    )  # fmt: skip
    samples = [
        post.sample(torch.as_tensor(o), n, seed=seed + i)[0].numpy().astype(np.float64)
        for i, o in enumerate(obs)
    ]
    scores = _score(samples, refs, n, seed)
    # an ensemble's history is the list of its members' histories
    res = post.train_result if isinstance(post.train_result, list) else [post.train_result]
    return {
        "options": VARIANTS[v],
        "c2st": float(np.mean(scores)), "c2st_per_observation": scores,
        "train_seconds": float(sum(m.train_seconds for m in res)),
        "train_steps": int(sum(m.steps for m in res)),
        "stopped": ", ".join(str(m.stopped) for m in res),
    }  # fmt: skip


def _run_peer(
    task: str, v: str, x: np.ndarray, y: np.ndarray, obs: np.ndarray, n: int, seed: int,
    refs: list[ReferenceObservation],
) -> dict[str, Any]:  # fmt: skip
    out = run_sbi(task, x, y, obs, n, None, seed, method=v)
    scores = _score(out["samples"], refs, n, seed)
    return {
        "options": SPECS[v],
        "c2st": float(np.mean(scores)), "c2st_per_observation": scores,
        "train_seconds": float(out["train_seconds"]),
        "train_epochs": out.get("train_epochs"),
        "stopped": "sbi's early stopping",
    }  # fmt: skip


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(1)
    settings = {k: v for k, v in vars(args).items() if k not in ("out", "resume", "sbibm_wheel")}
    rows: list[dict[str, Any]] = []
    if args.resume and args.out.is_file():
        old = json.loads(args.out.read_text())
        keep = ("budget", "observations", "c2st_samples")
        if any(old["settings"].get(k) != settings[k] for k in keep):
            raise SystemExit(f"--resume: {args.out} was written with other {', '.join(keep)}")
        rows = old["rows"]
    done = {(r["task"], r["seed"], r["variant"]) for r in rows}
    wheel = find_wheel(args.sbibm_wheel)
    env = _environment()
    ppc: dict[str, list[dict[str, float]]] = {}
    for task in args.tasks:
        refs = references(task, args.observations, wheel)
        name = task.removesuffix(FRESH)
        seed_offset = FRESH_SEED if name != task else 0
        problem = make_task(name)
        # the simulator agrees with sbibm's reference posteriors (as in the peers run)
        ppc[task] = [posterior_predictive_check(problem, r.samples, r.observation) for r in refs]
        obs = np.stack([r.observation for r in refs]).astype(np.float32)
        for seed in args.seeds:
            x, y = simulations(name, args.budget, seed + seed_offset)
            for v in args.variants:
                if (task, seed, v) in done:
                    continue
                t0 = time.perf_counter()
                if v in PEERS:
                    rows.append(_run_peer(name, v, x, y, obs, args.c2st_samples, seed, refs))
                else:
                    rows.append(_run_variant(v, x, y, obs, args.c2st_samples, seed, refs))
                r = rows[-1] = {"task": task, "seed": seed, "variant": v, **rows[-1]}
                r["wall_seconds"] = time.perf_counter() - t0
                length = r.get("train_steps", r.get("train_epochs"))
                unit = "steps" if "train_steps" in r else "epochs"
                print(
                    f"{task:8s} seed {seed} {v:10s} C2ST {r['c2st']:.3f}  {length} {unit} "
                    f"({r['stopped']})  train {r['train_seconds']:.0f} s",
                    flush=True,
                )
                atomic_write_json(args.out, {
                    "settings": _settings(settings, rows), "variants": SPECS,
                    "default_variant": DEFAULT_VARIANT,
                    "summary": summarise(rows, _present(rows)),
                    "posterior_predictive_check": ppc, "rows": rows, "environment": env,
                })  # fmt: skip
    for s in summarise(rows, _present(rows)):
        print(
            f"{s['task']:8s} {s['variant']:12s} C2ST {format_interval(s['c2st'])}  minus "
            f"{s['baseline']}: {format_interval(s['minus_baseline'])}"
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
