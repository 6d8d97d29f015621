"""Side by side with peer tools on sbibm tasks, against sbibm's reference posteriors.

Run::

    pip download sbibm==1.1.0 --no-deps -d ~/.cache/vinaflow/sbibm   # once: reference files
    pip install -e ".[bench]"                                         # optional: sbi (NPE)
    python -m benchmarks.peers.run --quick        # budgets 1k, 10k; 12 s per vinaflow method
    python -m benchmarks.peers.run                # budgets 1k, 10k, 100k
    python -m benchmarks.peers.run --tasks two_moons --budgets 1000 --methods sbi-npe nll-cinn

For each task (``two_moons``, ``gaussian_linear``, ``gaussian_mixture``,
``gaussian_linear_uniform``, ``bernoulli_glm``, ``sir``, ``lotka_volterra``) and simulation
budget, one seeded set of simulations is drawn and given to every method, each method is
trained on it, and its posterior is sampled at sbibm's 10 observations and scored by C2ST
against sbibm's 10,000 reference samples (``vinaflow.evaluation.c2st``; its classifier
schedule differs slightly from sbibm's, see its docstring). Methods:

- ``sbi-npe``: sbi's NPE with its default flow and training schedule (if sbi imports);
- ``inn-mmd``: an Ardizzone-style INN trained with MMD, built from vinaflow's blocks;
- ``nll-cinn``, ``fdiv-kl``, ``fdiv-js``, ``sinkhorn``: vinaflow's objectives.

vinaflow methods train with ``vinaflow.fit`` on the same arrays (a tenth of the rows, at most
2,000, for validation, as sbi holds out a tenth).
Also reported: training seconds, seconds per 10,000 posterior samples, and a posterior
predictive check of our simulator against each reference (see
:func:`benchmarks.peers.tasks.posterior_predictive_check`). Prints a table and writes
``benchmarks/results/peers.json``.

``--quick``: 12 s of training per vinaflow method (full: 240 s), C2ST on 1,000 samples per
set (full: 10,000) and, on the 10-D ``gaussian_linear``, on the first 3 observations only.
sbi always runs its default schedule (early stopping) unless ``--sbi-max-epochs`` is given.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vinaflow
from benchmarks.peers.sbibm_reference import TASKS, ReferenceObservation, find_wheel, load_task
from benchmarks.peers.tasks import make_task, posterior_predictive_check

__all__ = ["METHODS", "VINAFLOW_METHODS", "main", "run_sbi", "run_vinaflow", "simulations"]

#: ``vinaflow.fit`` arguments of each method (model kind, objective, objective settings).
VINAFLOW_METHODS: dict[str, dict[str, Any]] = {
    "inn-mmd": {"model": "inn", "objective": "mmd"},
    "nll-cinn": {"model": "cinn", "objective": "nll"},
    "fdiv-kl": {"model": "inn", "objective": "kl"},
    "fdiv-js": {"model": "inn", "objective": "js"},
    "sinkhorn": {"model": "inn", "objective": "sinkhorn", "blur": 0.05},
}
METHODS = ("sbi-npe", *VINAFLOW_METHODS)
# Published NPE C2ST per (task, budget), the mean over sbibm's 10 observations. The
# target compares against the sbi >= 0.23 re-run of sbibm (closest to the sbi installed
# here): github.com/sbi-benchmark/results, benchmarking_sbi_023/results/re-sbibm_sbi_023.csv
# (commit 8693d6d), algorithm "NPE" (NSF, 10 rows per cell, one per observation; every
# value below re-checked as the mean of its 10 C2ST rows). The original paper's numbers
# (Lueckmann et al. 2021, NPE-NSF rows of benchmarking_sbi/results/
# supplement_hyperparameters_snpe.csv, commit 2a49a57; its gaussian_mixture predates
# sbibm 1.1's fix of that task) are kept beside them for reference.
SBIBM_NPE_C2ST: dict[tuple[str, int], float] = {
    ("two_moons", 1000): 0.6674,
    ("two_moons", 10000): 0.5783,
    ("two_moons", 100000): 0.5286,
    ("gaussian_linear", 1000): 0.7533,
    ("gaussian_linear", 10000): 0.5631,
    ("gaussian_linear", 100000): 0.5081,
    ("gaussian_mixture", 1000): 0.6390,
    # The same four digits as gaussian_linear at 10k, by coincidence: the CSV's rows
    # average 0.56310 (gaussian_linear, multirun 2024-11-20/22-13-23) and 0.56308
    # (gaussian_mixture, multirun 2024-11-21/01-06-32).
    ("gaussian_mixture", 10000): 0.5631,
    ("gaussian_mixture", 100000): 0.5213,
}
SBIBM_PAPER_NPE_C2ST: dict[tuple[str, int], float] = {
    ("two_moons", 1000): 0.7251,
    ("two_moons", 10000): 0.6064,
    ("two_moons", 100000): 0.5417,
    ("gaussian_linear", 1000): 0.6945,
    ("gaussian_linear", 10000): 0.5522,
    ("gaussian_linear", 100000): 0.5060,
    ("gaussian_mixture", 1000): 0.7315,
    ("gaussian_mixture", 10000): 0.6605,
    ("gaussian_mixture", 100000): 0.5554,
}


def simulations(task_name: str, n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """``n`` seeded prior draws and simulations ``(x, y)`` of ``task_name``, float32."""
    task = make_task(task_name)
    g = torch.Generator().manual_seed(seed)
    x = task.sample_prior(n, g)
    y = task.simulate_checked(x, g)
    return x.numpy().astype(np.float32), y.numpy().astype(np.float32)


def _time_sampling(sample: Any, obs: np.ndarray, n: int) -> tuple[list[np.ndarray], float]:
    """Samples ``n`` per observation; returns them and seconds per 10,000 samples."""
    out = []
    t0 = time.perf_counter()
    for o in obs:
        out.append(np.asarray(sample(o, n), dtype=np.float64))
    seconds = time.perf_counter() - t0
    return out, seconds / (len(obs) * n) * 10_000


def run_vinaflow(
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    obs: np.ndarray,
    n_samples: int,
    max_seconds: float,
    steps: int,
    seed: int,
) -> dict[str, Any]:
    """Train ``method`` (a key of :data:`VINAFLOW_METHODS`) on ``(x, y)``; sample at ``obs``.

    ``vinaflow.fit`` with the run config's default model and training settings; its
    validation split matches ``vinaflow run``'s (a tenth of the rows, at most 2,000).
    """
    n_val = min(max(len(x) // 10, 1), 2000)
    posterior = vinaflow.fit(
        x,
        y,
        **VINAFLOW_METHODS[method],
        steps=steps,
        max_seconds=max_seconds,
        seed=seed,
        validation_fraction=n_val / len(x),
        progress=False,
    )

    def sample(o: np.ndarray, n: int) -> np.ndarray:
        return posterior.sample(torch.as_tensor(o, dtype=torch.float32), n)[0].numpy()

    samples, per_10k = _time_sampling(sample, obs, n_samples)
    return {
        "train_seconds": float(posterior.train_result.train_seconds),
        "sample_seconds_per_10k": per_10k,
        "samples": samples,
    }


class _NullTracker:
    """An sbi ``Tracker`` that records nothing (sbi's default writes ``sbi-logs/`` to cwd)."""

    log_dir = None

    def log_metric(self, name: str, value: float, step: int | None = None) -> None:
        """Ignore a metric."""

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        """Ignore metrics."""

    def log_params(self, params: dict[str, Any]) -> None:
        """Ignore parameters."""

    def add_figure(self, name: str, figure: Any, step: int | None = None) -> None:
        """Ignore a figure."""

    def flush(self) -> None:
        """Nothing to flush."""


def _sbi_prior(task_name: str) -> Any:
    from sbi.utils import BoxUniform
    from torch.distributions import Independent, Normal

    if task_name == "two_moons":
        return BoxUniform(-torch.ones(2), torch.ones(2))
    if task_name == "gaussian_mixture":
        return BoxUniform(-10 * torch.ones(2), 10 * torch.ones(2))
    if task_name == "gaussian_linear_uniform":
        return BoxUniform(-torch.ones(10), torch.ones(10))
    if task_name == "gaussian_linear":
        return Independent(Normal(torch.zeros(10), 0.1**0.5 * torch.ones(10)), 1)
    return make_task(task_name).prior  # sbi takes torch distributions with a 1-D event


def run_sbi(
    task_name: str,
    x: np.ndarray,
    y: np.ndarray,
    obs: np.ndarray,
    n_samples: int,
    max_epochs: int | None,
    seed: int,
) -> dict[str, Any]:
    """sbi's NPE (default density estimator and training schedule) on the same ``(x, y)``."""
    from sbi.inference import NPE

    torch.manual_seed(seed)
    import inspect

    npe_kwargs: dict[str, Any] = {"prior": _sbi_prior(task_name), "show_progress_bars": False}
    if "tracker" in inspect.signature(NPE.__init__).parameters:  # sbi >= 0.26
        npe_kwargs["tracker"] = _NullTracker()
    inference = NPE(**npe_kwargs)
    t0 = time.perf_counter()
    inference.append_simulations(torch.as_tensor(x), torch.as_tensor(y))
    kwargs: dict[str, Any] = {"show_train_summary": False}
    if max_epochs is not None:
        kwargs["max_num_epochs"] = max_epochs
    with contextlib.redirect_stdout(io.StringIO()):  # sbi prints "converged after N epochs"
        estimator = inference.train(**kwargs)
    train_seconds = time.perf_counter() - t0
    posterior = inference.build_posterior(estimator)

    def sample(o: np.ndarray, n: int) -> np.ndarray:
        s = posterior.sample(
            (n,), x=torch.as_tensor(o, dtype=torch.float32), show_progress_bars=False
        )
        return s.numpy()

    samples, per_10k = _time_sampling(sample, obs, n_samples)
    return {"train_seconds": train_seconds, "sample_seconds_per_10k": per_10k, "samples": samples}


def _score(
    samples: list[np.ndarray], refs: Sequence[ReferenceObservation], max_samples: int, seed: int
) -> list[float]:
    from vinaflow.evaluation import c2st

    # Non-finite samples score as a perfect separation rather than failing the whole row.
    return [
        float(c2st(r.samples, s, seed=seed + i, max_samples=max_samples))
        if np.isfinite(s).all()
        else 1.0
        for i, (r, s) in enumerate(zip(refs, samples, strict=True))
    ]


def score_posterior(
    posterior: Any, refs: Sequence[ReferenceObservation], n: int, seed: int
) -> tuple[list[float], float]:
    """C2ST of ``n`` posterior samples per reference observation (sample seed ``seed + i``
    for observation ``i``), and the sampling seconds per 10,000 samples."""
    t0 = time.perf_counter()
    samples = [
        posterior.sample(torch.as_tensor(r.observation, dtype=torch.float32), n, seed=seed + i)[0]
        .numpy()
        .astype(np.float64)
        for i, r in enumerate(refs)
    ]
    per_10k = (time.perf_counter() - t0) / (len(refs) * n) * 10_000
    return _score(samples, refs, n, seed), per_10k


def _sbi_available() -> bool:
    try:
        import sbi.inference  # noqa: F401
    except Exception:  # noqa: BLE001 - any import failure means "not available"
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets 1k, 10k; short training")
    parser.add_argument("--sbibm-wheel", default=None, help="sbibm wheel file or folder")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budgets", nargs="*", type=int, default=None)
    parser.add_argument("--observations", type=int, default=10, help="first N of sbibm's 10")
    parser.add_argument("--max-seconds", type=float, default=None, help="vinaflow training cap")
    parser.add_argument("--sbi-max-epochs", type=int, default=None)
    parser.add_argument("--c2st-samples", type=int, default=None)
    parser.add_argument(
        "--c2st-observations",
        type=int,
        default=None,
        help="score only the first N observations (default: all; --quick: 3 on gaussian_linear,"
        " whose 10-D C2ST costs about 10-30 s per observation on 2 cores)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default=str(Path(__file__).parents[1] / "results" / "peers.json"))
    args = parser.parse_args(argv)
    budgets = args.budgets or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    max_seconds = args.max_seconds or (12.0 if args.quick else 240.0)
    sbi_epochs = args.sbi_max_epochs  # default: sbi's own schedule (early stopping)
    n_c2st = args.c2st_samples or (1000 if args.quick else 10000)
    n_samples = 10000
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from vinaflow.runtime import tune_allocator

    tune_allocator()

    wheel = find_wheel(args.sbibm_wheel)
    methods = [m for m in args.methods if m != "sbi-npe" or _sbi_available()]
    if "sbi-npe" in args.methods and "sbi-npe" not in methods:
        print("[peers] sbi is not importable: skipping sbi-npe (pip install -e '.[bench]')")
    rows: list[dict[str, Any]] = []
    ppc: dict[str, list[dict[str, float]]] = {}
    for task_name in args.tasks:
        refs = load_task(wheel, task_name)[: args.observations]
        task = make_task(task_name)
        ppc[task_name] = [posterior_predictive_check(task, r.samples, r.observation) for r in refs]
        obs = np.stack([r.observation for r in refs]).astype(np.float32)
        for budget in budgets:
            x, y = simulations(task_name, budget, args.seed)
            for method in methods:
                t0 = time.perf_counter()
                try:
                    if method == "sbi-npe":
                        res = run_sbi(task_name, x, y, obs, n_samples, sbi_epochs, args.seed)
                    else:
                        res = run_vinaflow(
                            method, x, y, obs, n_samples, max_seconds, 100_000, args.seed
                        )
                    n_scored = args.c2st_observations or (
                        3 if args.quick and task.dim_x > 2 else len(refs)
                    )
                    scores = _score(
                        res.pop("samples")[:n_scored], refs[:n_scored], n_c2st, args.seed
                    )
                    row = {
                        **res,
                        "c2st": float(np.mean(scores)),
                        "c2st_per_observation": scores,
                    }
                except Exception as err:  # noqa: BLE001 - a failed method is reported
                    row = {"error": f"{type(err).__name__}: {err}"}
                row = {
                    "task": task_name,
                    "budget": budget,
                    "method": method,
                    **row,
                    "wall_seconds": time.perf_counter() - t0,
                    "sbibm_npe_c2st": SBIBM_NPE_C2ST.get((task_name, budget)),
                    "sbibm_paper_npe_c2st": SBIBM_PAPER_NPE_C2ST.get((task_name, budget)),
                }
                rows.append(row)
                _print_row(row)
    _print_summary(rows)
    _write(args, rows, ppc, wheel, budgets, max_seconds, sbi_epochs, n_c2st)
    return 0


def _print_summary(rows: list[dict[str, Any]]) -> None:
    """One line per (task, budget): C2ST per method, the best vinaflow method vs sbi."""
    methods = list(dict.fromkeys(r["method"] for r in rows))
    print()
    print(
        f"{'task':<17} {'budget':>7} "
        + " ".join(f"{m:>9}" for m in methods)
        + "  sbibm-NPE  best vinaflow"
    )
    for key in dict.fromkeys((r["task"], r["budget"]) for r in rows):
        cells = {r["method"]: r for r in rows if (r["task"], r["budget"]) == key}
        line = f"{key[0]:<17} {key[1]:>7} "
        line += " ".join(
            f"{cells[m]['c2st']:>9.3f}" if "c2st" in cells.get(m, {}) else f"{'-':>9}"
            for m in methods
        )
        pub = SBIBM_NPE_C2ST.get(key)
        line += f"  {pub:>9.3f}" if pub is not None else f"  {'-':>9}"
        ours = {m: c["c2st"] for m, c in cells.items() if m != "sbi-npe" and "c2st" in c}
        if ours:
            best = min(ours, key=ours.__getitem__)
            line += f"  {best} {ours[best]:.3f}"
        print(line)


def _print_row(r: dict[str, Any]) -> None:
    head = f"{r['task']:<17} {r['budget']:>7} {r['method']:<9}"
    if "error" in r:
        print(f"{head} FAILED: {r['error']}", flush=True)
        return
    pub = "" if r["sbibm_npe_c2st"] is None else f"{r['sbibm_npe_c2st']:.2f}"
    print(
        f"{head} C2ST {r['c2st']:.3f} (sbibm NPE {pub or '-':>4})"
        f"  train {r['train_seconds']:7.1f} s"
        f"  sample {r['sample_seconds_per_10k']:.3f} s/10k",
        flush=True,
    )


def _write(
    args: argparse.Namespace,
    rows: list[dict[str, Any]],
    ppc: dict[str, list[dict[str, float]]],
    wheel: Path,
    budgets: list[int],
    max_seconds: float,
    sbi_epochs: int | None,
    n_c2st: int,
) -> None:
    from vinaflow.atomic import atomic_write_json
    from vinaflow.experiments.pipeline import environment

    env = environment()
    try:
        import sbi

        env["sbi"] = sbi.__version__
    except Exception:  # noqa: BLE001
        env["sbi"] = "not installed"
    out = {
        "settings": {
            "quick": args.quick,
            "budgets": budgets,
            "vinaflow_max_seconds": max_seconds,
            "sbi_max_epochs": sbi_epochs,
            "c2st_max_samples": n_c2st,
            "seed": args.seed,
            "sbibm_wheel": wheel.name,
            "threads": torch.get_num_threads(),
        },
        "posterior_predictive_check": ppc,
        "rows": rows,
        "environment": env,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_json(args.out, json.loads(json.dumps(out)))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    raise SystemExit(main())
