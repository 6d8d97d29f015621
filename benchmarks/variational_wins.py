"""Where variational wins: time-to-accuracy of an invertible residual network posterior.

Run (on a shared machine take the lock)::

    python -m benchmarks.variational_wins --quick
    flock /tmp/vinaflow-bench.lock nice -n 10 python -m benchmarks.variational_wins
    python -m benchmarks.variational_wins --seeds 100 101 102 103 104 --out /tmp/dev.json

The candidate setting is the one where maximum likelihood pays for something the
backward variational objectives do not need: a conditional INN built from invertible
residual blocks (i-ResNet, Behrmann et al. 2019; residual flows, Chen et al. 2019;
``arch="iresnet"``). Maximum likelihood needs the log-determinant of every block's
Jacobian (exact through ``vmap(jacrev)`` up to 16 dimensions, a truncated power series
with Hutchinson probes above) and trains the direction ``x -> z``, so the residual is
made explicit in that direction. The backward sample-based objectives (the variational
f-divergence through a critic, f-GAN, Nowozin et al. 2016; and MMD, a kernel discrepancy
that is not an f-divergence) only draw samples ``x = T^{-1}(z; y)``: their
residual is explicit in the sampling direction and no log-determinant is computed at all
(``vinaflow.blocks.base.without_logdet``, entered by the backward losses).

Problem: the Gaussian-linear problem (``vinaflow.problems.GaussianLinear``) with a
closed-form posterior, ``dim_x = dim_y =`` :data:`DIM`, observation noise :data:`NOISE`,
a fixed random forward matrix (seed 0), 10,000 simulations drawn with the run's seed,
batch 256. Each row trains with the library's model and objective classes and the
trainer's default optimiser settings (Adam; learning rate 1e-3 without a critic, 3e-4
with one and 5 critic updates at 1e-3 per model update; gradient norm clipped at 5;
constant learning rate, so that one run gives the whole time-to-accuracy curve). Time is
this process's CPU time with one torch thread (``time.process_time``): on a loaded
shared machine it measures the work done, where wall clock would measure the neighbours.
At every checkpoint (5, 10 and 20 CPU seconds) the clock stops and the posterior is
scored: C2ST (``vinaflow.evaluation.c2st``) of 500 posterior samples against 500
closed-form samples at :data:`N_OBS` = 1 fixed observation (drawn with seed 1,000,000;
one, because on a loaded 2-core machine each 10-D C2ST costs several CPU seconds), and the
KL divergence of the samples' Gaussian moment fit from the closed form
(:func:`gaussian_kl`, a cheap second measure).

Seeds: the rows, the problem size and the checkpoints were chosen on development seeds
100 (moment KL at 5-40 CPU s: maximum likelihood 4.69 / 0.89 / 0.22 / 0.10, the backward
KL through its critic 32.4 / 26.3 / 14.8 / 3.06, MMD 1.76 / 0.80 / 0.54 / 0.36) and 101
(maximum likelihood's C2ST on 1,000 samples at 2 observations: 0.73 / 0.62 / 0.56 at
5 / 10 / 20 s); no hyperparameter was tuned (the trainer's defaults). The reported seeds
0-4 were fixed before any run. A *win* at a checkpoint is a row whose 95% seed interval
(Student-t, ``seed_interval``) of C2ST lies entirely below maximum likelihood's; the paired
difference (same simulations and initialisation seed) is reported beside it.

Prints a table and writes ``benchmarks/results/variational_wins.json`` (or ``--out``)
with the settings, per-seed curves, seed_interval summaries, the environment and the wall
seconds, rewritten after every seed (``settings.complete`` says whether all seeds
finished). ``--quick`` (about 3 minutes): 2 seeds, 1 observation, 500 C2ST samples,
checkpoints at 3 and 6 CPU seconds; a check that every row trains and is scored, not a
result; it writes ``variational_wins_quick.json``.
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vinaflow.atomic import atomic_write_json
from vinaflow.evaluation import c2st
from vinaflow.evaluation.intervals import format_interval, intervals_disjoint, seed_interval
from vinaflow.models.cinn import ConditionalINN
from vinaflow.objectives.build import build_objective
from vinaflow.problems.gaussian_linear import GaussianLinear

__all__ = ["ROWS", "gaussian_kl", "main", "run_curve", "summarise"]

RESULTS = Path(__file__).resolve().parent / "results"

DIM = 10
NOISE = 0.5
NUM_SIMULATIONS = 10_000
BATCH_SIZE = 256
N_OBS = 1
N_C2ST = 500
OBS_SEED = 1_000_000
#: Checkpoints of the full run, in CPU seconds of training.
CHECKPOINTS = (5.0, 10.0, 20.0)
HELD_OUT_SEEDS = (0, 1, 2, 3, 4)
DEV_SEEDS = (100, 101, 102, 103, 104)
#: The i-ResNet of every row: 4 residual blocks of 2 hidden layers of 64 units,
#: Lipschitz bound 0.9 (the block's defaults otherwise).
MODEL = {"arch": "iresnet", "blocks": 4, "hidden": 64, "layers": 2}

#: Rows: objective (as ``vinaflow.fit`` takes it) and the direction the residual is
#: explicit in (the one the objective trains through).
ROWS: dict[str, dict[str, Any]] = {
    "nll": {"objective": "nll", "explicit": "forward"},
    "fdiv-kl-bound": {
        "objective": {"name": "fdiv", "divergence": "kl", "gradient": "bound"},
        "explicit": "inverse",
    },
    "mmd": {"objective": {"name": "mmd"}, "explicit": "inverse"},
}
REFERENCE_ROW = "nll"


def _problem(dim: int, noise: float) -> GaussianLinear:
    return GaussianLinear(dim_x=dim, dim_y=dim, noise=noise, seed=0)


def gaussian_kl(samples: np.ndarray, mean: np.ndarray, cov: np.ndarray) -> float:
    """KL(N(m, S) || N(mean, cov)) of the samples' Gaussian moment fit ``N(m, S)`` against
    the closed-form posterior (nats; cheap, and blind to non-Gaussian shape)."""
    m = samples.mean(axis=0)
    s = np.atleast_2d(np.cov(samples.T))
    inv = np.linalg.inv(cov)
    d = m - mean
    logdet = np.linalg.slogdet(cov)[1] - np.linalg.slogdet(s)[1]
    return float(0.5 * (np.trace(inv @ s) + d @ inv @ d - len(m) + logdet))


def run_curve(
    row: str,
    seed: int,
    checkpoints: tuple[float, ...] | list[float],
    *,
    dim: int = DIM,
    noise: float = NOISE,
    n_obs: int = N_OBS,
    n_c2st: int = N_C2ST,
    num_simulations: int = NUM_SIMULATIONS,
    batch_size: int = BATCH_SIZE,
    model_options: dict[str, Any] | None = None,
    rows: dict[str, dict[str, Any]] | None = None,
    score_c2st: bool = True,
) -> list[dict[str, Any]]:
    """Train ``row`` on seed ``seed``'s simulations; C2ST at each CPU-second checkpoint.

    Returns one entry per checkpoint: ``cpu_seconds`` and ``wall_seconds`` of training
    so far (evaluation excluded), model ``steps`` and the mean ``c2st`` over the
    observations (a non-finite sample set scores 1.0; ``score_c2st=False`` skips it, for
    development runs) and ``gaussian_kl``, the mean :func:`gaussian_kl` of the samples.
    """
    spec = (rows or ROWS)[row]
    problem = _problem(dim, noise)
    g = torch.Generator().manual_seed(seed)
    x = problem.sample_prior(num_simulations, g)
    y = problem.simulate(x, g)
    g_obs = torch.Generator().manual_seed(OBS_SEED)
    x_obs = problem.sample_prior(n_obs, g_obs)
    y_obs = problem.simulate(x_obs, g_obs)
    refs = [
        problem.reference_posterior(y_obs[i], n_c2st, torch.Generator().manual_seed(OBS_SEED + i))
        .double()
        .numpy()
        for i in range(n_obs)
    ]
    means = [problem.posterior_mean(y_obs[i]).numpy() for i in range(n_obs)]
    cov = problem.post_cov.numpy()
    options = {**MODEL, **(model_options or {}), "explicit": spec["explicit"]}
    model = ConditionalINN(dim, dim, seed=seed, **options)
    model.fit_normalization(x, y)
    with torch.no_grad():
        x_s, y_s = model.x_norm(x), model.y_norm(y)
    objective = build_objective(spec["objective"], model)
    objective.prepare(model, x_s, y_s)
    critic_params = list(objective.critic_parameters())
    model_params = list(model.parameters())
    # the trainer's defaults (vinaflow.training.TrainingConfig)
    opt = torch.optim.Adam(model_params, lr=3e-4 if critic_params else 1e-3)
    critic_opt = (
        torch.optim.Adam(critic_params, lr=1e-3, betas=(0.5, 0.999)) if critic_params else None
    )
    critic_steps = 5 if critic_params else 0
    torch.manual_seed(seed)
    batches = torch.Generator().manual_seed(seed)

    def update(loss_fn: Any, params: list[torch.nn.Parameter], o: torch.optim.Optimizer) -> None:
        idx = torch.randint(0, num_simulations, (batch_size,), generator=batches)
        loss, _ = loss_fn(model, x_s[idx], y_s[idx])
        o.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 5.0)
        o.step()

    cpu = wall = 0.0
    steps = 0
    curve: list[dict[str, Any]] = []
    model.train()
    objective.train()
    for checkpoint in checkpoints:
        c0, w0 = time.process_time(), time.perf_counter()
        while cpu + (time.process_time() - c0) < checkpoint:
            for _ in range(critic_steps):
                assert critic_opt is not None
                update(objective.critic_loss, critic_params, critic_opt)
            update(objective.generator_loss, model_params, opt)
            steps += 1
        cpu += time.process_time() - c0
        wall += time.perf_counter() - w0
        model.eval()
        scores, kls = [], []
        for i, ref in enumerate(refs):
            s = model.sample(n_c2st, torch.Generator().manual_seed(seed + i), y=y_obs[i])
            s = s.double().numpy()
            ok = bool(np.isfinite(s).all())
            kls.append(gaussian_kl(s, means[i], cov) if ok else math.inf)
            if score_c2st:
                scores.append(float(c2st(ref, s, seed=seed + i, max_samples=n_c2st)) if ok else 1.0)
        model.train()
        curve.append(
            {
                "checkpoint": float(checkpoint),
                "cpu_seconds": cpu,
                "wall_seconds": wall,
                "steps": steps,
                "c2st": float(np.mean(scores)) if score_c2st else None,
                "c2st_per_observation": scores,
                "gaussian_kl": float(np.mean(kls)),
            }
        )
    return curve


def summarise(
    curves: dict[str, dict[int, list[dict[str, Any]]]], reference: str = REFERENCE_ROW
) -> dict[str, Any]:
    """Per row and checkpoint: seed_interval of C2ST and steps; for the other rows the
    paired difference to ``reference`` and whether the row *wins* (its C2ST interval
    entirely below the reference's) or *loses* (entirely above)."""
    out: dict[str, Any] = {}
    ref = curves.get(reference, {})
    for row, by_seed in curves.items():
        seeds = sorted(by_seed)
        n_cp = min(len(c) for c in by_seed.values())
        cells = []
        for k in range(n_cp):
            vals = [by_seed[s][k]["c2st"] for s in seeds]
            cell: dict[str, Any] = {
                "checkpoint": by_seed[seeds[0]][k]["checkpoint"],
                "c2st": seed_interval(vals),
                "steps": seed_interval([by_seed[s][k]["steps"] for s in seeds]),
            }
            if row != reference and ref and all(s in ref and len(ref[s]) > k for s in seeds):
                ref_vals = [ref[s][k]["c2st"] for s in seeds]
                mine, theirs = cell["c2st"], seed_interval(ref_vals)
                cell["c2st_minus_reference"] = seed_interval(
                    [a - b for a, b in zip(vals, ref_vals, strict=True)]
                )
                disjoint = mine["n"] > 1 and intervals_disjoint(mine, theirs)
                cell["wins"] = bool(disjoint and mine["high"] < theirs["low"])
                cell["loses"] = bool(disjoint and mine["low"] > theirs["high"])
            cells.append(cell)
        out[row] = cells
    return out


def _table(summary: dict[str, Any]) -> str:
    rows = list(summary)
    cps = [c["checkpoint"] for c in summary[rows[0]]]
    width = max(len(r) for r in rows) + 2
    head = "row".ljust(width) + "".join(f"{cp:g} CPU s".ljust(30) for cp in cps)
    lines = [head, "-" * len(head)]
    for r in rows:
        line = r.ljust(width)
        for cell in summary[r]:
            mark = " win" if cell.get("wins") else (" lose" if cell.get("loses") else "")
            line += (format_interval(cell["c2st"]) + mark).ljust(30)
        lines.append(line)
    return "\n".join(lines)


def _environment() -> dict[str, Any]:
    try:
        load = os.getloadavg()
    except OSError:  # pragma: no cover - not on every platform
        load = (math.nan, math.nan, math.nan)
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "numpy": np.__version__,
        "machine": f"{platform.machine()}, {platform.processor() or 'cpu'}",
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "load_average_at_end": list(load),
    }


def _write(
    out: Path,
    args: argparse.Namespace,
    curves: dict[str, dict[int, list[dict[str, Any]]]],
    total: float,
    complete: bool,
    verbose: bool,
) -> None:
    summary = summarise(curves)
    if verbose:
        print()
        print(_table(summary))
    wins = [
        f"{row} at {cell['checkpoint']:g} CPU s"
        for row, cells in summary.items()
        for cell in cells
        if cell.get("wins")
    ]
    if verbose:
        print(f"\nwins over {REFERENCE_ROW}: {', '.join(wins) or 'none'}; {total:.0f} s")
    dev = set(args.seeds) <= set(DEV_SEEDS)
    atomic_write_json(
        out,
        {
            "settings": {
                "problem": {
                    "name": "gaussian-linear",
                    "dim_x": DIM,
                    "dim_y": DIM,
                    "noise": NOISE,
                    "matrix_seed": 0,
                },
                "model": {"kind": "cinn", **MODEL},
                "rows": {r: ROWS[r] for r in args.rows},
                "reference_row": REFERENCE_ROW,
                "num_simulations": NUM_SIMULATIONS,
                "batch_size": BATCH_SIZE,
                "optimiser": "Adam; lr 1e-3 (no critic) or 3e-4 with 5 critic steps at 1e-3, "
                "betas (0.5, 0.999); grad-norm clip 5; constant learning rate",
                "checkpoints_cpu_seconds": args.checkpoints,
                "clock": "process CPU time, one torch thread, evaluation excluded",
                "observations": args.observations,
                "observation_seed": OBS_SEED,
                "c2st_samples": args.c2st_samples,
                "seeds": sorted(next(iter(curves.values()))),
                "complete": complete,
                "seed_role": "development" if dev else "held-out (fixed before any run)",
                "development_seeds_used": [100, 101],
                "quick": args.quick,
            },
            "notes": (
                "A win is a row whose 95% Student-t seed interval of C2ST lies entirely "
                "below the reference row's at the same CPU-second checkpoint; "
                "c2st_minus_reference is paired by seed. Rows and settings were chosen on "
                "the development seeds only."
            ),
            "environment": _environment(),
            "wall_seconds": total,
            "wins": wins,
            "summary": summary,
            "curves": {r: {str(s): c for s, c in by.items()} for r, by in curves.items()},
        },
    )
    if verbose:
        print(f"wrote {out}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", nargs="+", default=list(ROWS), choices=list(ROWS))
    parser.add_argument("--seeds", type=int, nargs="+", default=list(HELD_OUT_SEEDS))
    parser.add_argument("--checkpoints", type=float, nargs="+", default=list(CHECKPOINTS))
    parser.add_argument("--observations", type=int, default=N_OBS)
    parser.add_argument("--c2st-samples", type=int, default=N_C2ST)
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.checkpoints = args.seeds[:2], [3.0, 6.0]
        args.observations, args.c2st_samples = 1, 500
    if REFERENCE_ROW not in args.rows:
        args.rows = [REFERENCE_ROW, *args.rows]
    # a quick run never overwrites the full run's file
    out = args.out or RESULTS / (
        "variational_wins_quick.json" if args.quick else "variational_wins.json"
    )
    torch.set_num_threads(1)  # the machine is shared; one core per benchmark
    t_start = time.perf_counter()
    curves: dict[str, dict[int, list[dict[str, Any]]]] = {r: {} for r in args.rows}
    for k, seed in enumerate(args.seeds):  # interleaved: load changes hit every row alike
        for row in args.rows:
            curve = run_curve(
                row, seed, args.checkpoints, n_obs=args.observations, n_c2st=args.c2st_samples
            )
            curves[row][seed] = curve
            pts = "  ".join(f"{c['checkpoint']:g}s {c['c2st']:.3f} ({c['steps']})" for c in curve)
            print(f"{row:15s} seed {seed}: {pts}", flush=True)
        done = k + 1 == len(args.seeds)
        # written after every seed, so that an interrupted run leaves its finished seeds
        _write(out, args, curves, time.perf_counter() - t_start, complete=done, verbose=done)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
