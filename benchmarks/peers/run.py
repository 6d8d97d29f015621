"""Side by side with peer tools on sbibm tasks, against sbibm's reference posteriors.

Run::

    pip download sbibm==1.1.0 --no-deps -d ~/.cache/vinaflow/sbibm   # once: reference files
    pip install -e ".[bench]"                                         # optional: sbi
    python -m benchmarks.peers.run --quick        # budgets 1k, 10k; 12 s per vinaflow method
    python -m benchmarks.peers.run                # budgets 1k, 10k, 100k; seeds 0 1 2
    python -m benchmarks.peers.run --tasks two_moons --budgets 1000 --seeds 0 1 2 \
        --methods sbi-nsf sbi-fmpe vinaflow-default --resume

For each task (``two_moons``, ``gaussian_linear``, ``gaussian_mixture``,
``gaussian_linear_uniform``, ``bernoulli_glm``, ``sir``, ``lotka_volterra``), simulation
budget and seed (``--seeds``, default ``0 1 2``; ``--seed N`` is the same as ``--seeds N``),
one set of simulations is drawn with :func:`simulations` ``(task, budget, seed)`` and given
to every method: all methods see the same arrays for a seed. Each method is trained on
them, and its posterior is sampled at sbibm's first ``--observations`` observations (of 10)
and scored by C2ST against sbibm's 10,000 reference samples
(``vinaflow.evaluation.c2st``; its classifier schedule differs slightly from sbibm's, see
its docstring). With ``--sbibm-classifier`` the same sample sets are also scored by sbibm's
own classifier (:mod:`benchmarks.peers.sbibm_c2st`; ``c2st_sbibm`` in rows and summary,
with ``c2st_sbibm_minus_c2st`` paired by seed), the classifier behind the published
numbers. A seed's C2ST is the mean over the observations. Methods:

- ``sbi-npe``: sbi's NPE with its default flow (MAF) and training schedule;
- ``sbi-nsf``: sbi's NPE with ``density_estimator="nsf"`` (the configuration sbibm and
  sbi recommend), otherwise sbi's defaults;
- ``sbi-fmpe``: sbi's flow-matching posterior estimation (``sbi.inference.FMPE``), its
  defaults (the sbi methods run only if sbi imports, and stop on their own early-stopping
  schedule unless ``--sbi-max-epochs`` is given);
- ``vinaflow-default``: ``vinaflow.fit(x, y)`` with no model or objective options, its
  own defaults and stopping rule (no time cap unless ``--max-seconds``, no step cap unless
  ``--steps`` is given);
- ``vinaflow-spline128``: the same with ``hidden=128, lr=1e-3`` (``fit``'s spline cINN
  before it was narrowed);
- ``vinaflow-affine``: the same with ``arch="coupling"`` (affine couplings, ``fit``'s
  default before rational-quadratic splines), validated every 200 steps as its rows were;
- ``vinaflow-every200``: ``vinaflow-spline128`` validated every 200 steps with a patience
  of 10 validations (``fit``'s rule before it validated once per epoch on small data);
- ``inn-mmd``: an Ardizzone-style INN trained with MMD, built from vinaflow's blocks;
- ``nll-cinn``, ``fdiv-kl``, ``fdiv-js``, ``sinkhorn``: vinaflow's objectives, trained
  for ``--max-seconds`` (default 240 s, ``--quick`` 12 s) or ``--steps`` (100,000);
  ``fdiv-kl`` and ``fdiv-js`` on the paper's joint INN, ``cinn-fdiv-kl`` and
  ``cinn-fdiv-js`` on the conditional INN (``vinaflow.fit(x, y, objective="kl")``).

vinaflow methods train with ``vinaflow.fit`` on the same arrays (a tenth of the rows, at most
2,000, for validation; sbi holds out its default tenth).
Also reported: training seconds of every method, seconds per 10,000 posterior samples, and
a posterior predictive check of our simulator against each reference (see
:func:`benchmarks.peers.tasks.posterior_predictive_check`).

Prints one line per cell (task, budget, seed, method) and, at the end, a table per
(task, budget, method): the mean C2ST over seeds with its 95% Student-t interval
(:func:`vinaflow.evaluation.intervals.seed_interval`) and the mean training seconds.
Writes ``benchmarks/results/peers_seeds.json`` (``--out``): ``rows`` (one per cell),
``summary`` (one per task, budget and method), settings and notes. The file is rewritten
atomically after every cell; ``--resume`` keeps the cells already in it (rows without an
error) and runs only the missing ones, refusing a file written with other scoring or
training settings. ``benchmarks/results/peers.json`` (the single-seed results the README
tables read) is written by an earlier version of this script and is not touched.

``--quick``: 12 s of training per vinaflow method (full: 240 s), C2ST on 1,000 samples per
set (full: 10,000) and, on the 10-D ``gaussian_linear``, on the first 3 observations only.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

import vinaflow
from benchmarks.peers.sbibm_reference import TASKS, ReferenceObservation, find_wheel, load_task
from benchmarks.peers.tasks import make_task, posterior_predictive_check

__all__ = [
    "DEFAULT_RULE_METHODS",
    "METHODS",
    "SBI_METHODS",
    "VINAFLOW_METHODS",
    "main",
    "run_sbi",
    "run_vinaflow",
    "simulations",
    "summarise",
]

#: ``vinaflow.fit`` arguments of each method (model kind, objective, objective settings).
VINAFLOW_METHODS: dict[str, dict[str, Any]] = {
    "inn-mmd": {"model": "inn", "objective": "mmd"},
    # affine couplings, fit's default when its rows (peers.json) were run
    "nll-cinn": {"model": "cinn", "objective": "nll", "arch": "coupling"},
    "fdiv-kl": {"model": "inn", "objective": "kl"},
    "fdiv-js": {"model": "inn", "objective": "js"},
    "sinkhorn": {"model": "inn", "objective": "sinkhorn", "blur": 0.05},
    # the variational members on the conditional INN, with fit's defaults (mixture gradient)
    "cinn-fdiv-kl": {"model": "cinn", "objective": "kl"},
    "cinn-fdiv-js": {"model": "cinn", "objective": "js"},
}
#: sbi methods: the trainer class in ``sbi.inference`` and its constructor arguments.
SBI_METHODS: dict[str, tuple[str, dict[str, Any]]] = {
    "sbi-npe": ("NPE", {}),
    "sbi-nsf": ("NPE", {"density_estimator": "nsf"}),
    "sbi-fmpe": ("FMPE", {}),
}
#: ``vinaflow.fit(x, y)`` with no model or objective options: its own defaults and stopping.
DEFAULT_METHOD = "vinaflow-default"
#: ``vinaflow.fit(x, y, prior=task.prior)``: the default as sbi's users call theirs.
PRIOR_METHOD = "vinaflow-prior"
#: ``fit``'s default spline cINN before it was narrowed (``SPLINE_NLL_CINN_DEFAULTS``).
SPLINE128 = {"hidden": 128, "lr": 1e-3}
#: Methods on ``fit``'s own stopping rule (no time or step cap unless asked): the default
#: and earlier defaults, each with the options that reproduce it now.
DEFAULT_RULE_METHODS: dict[str, dict[str, Any]] = {
    DEFAULT_METHOD: {},
    # the default given the task's prior, as sbi's estimators are: it trains the same
    # model (the prior does not enter training) and keeps its samples in the prior's
    # support, as sbi's posteriors do
    PRIOR_METHOD: {},
    "vinaflow-spline128": SPLINE128,
    # affine couplings and fit's validation rule before it validated once per epoch on
    # small data
    "vinaflow-affine": {"arch": "coupling", "val_every": 200, "patience": 10},
    "vinaflow-every200": {**SPLINE128, "val_every": 200, "patience": 10},
}
METHODS = (*SBI_METHODS, *DEFAULT_RULE_METHODS, *VINAFLOW_METHODS)
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
    max_seconds: float | None,
    steps: int | None,
    seed: int,
    prior: Any = None,
) -> dict[str, Any]:
    """Train ``method`` (a key of :data:`DEFAULT_RULE_METHODS` or :data:`VINAFLOW_METHODS`)
    on ``(x, y)``; sample at ``obs``. ``prior`` is passed to ``fit`` (it bounds the
    posterior to its support).

    ``vinaflow.fit`` with the run config's default model and training settings; its
    validation split matches ``vinaflow run``'s (a tenth of the rows, at most 2,000).
    ``max_seconds`` and ``steps`` are passed only when not ``None``; ``"vinaflow-default"``
    gets no model or objective options, so ``fit`` chooses them and its stopping rule.
    """
    n_val = min(max(len(x) // 10, 1), 2000)
    table = DEFAULT_RULE_METHODS if method in DEFAULT_RULE_METHODS else VINAFLOW_METHODS
    options = dict(table[method])
    if steps is not None:
        options["steps"] = steps
    if max_seconds is not None:
        options["max_seconds"] = max_seconds
    if prior is not None:
        options["prior"] = prior
    posterior = vinaflow.fit(
        x, y, **options, seed=seed, validation_fraction=n_val / len(x), progress=False
    )

    def sample(o: np.ndarray, n: int) -> np.ndarray:
        return posterior.sample(torch.as_tensor(o, dtype=torch.float32), n)[0].numpy()

    samples, per_10k = _time_sampling(sample, obs, n_samples)
    result = posterior.train_result
    out: dict[str, Any] = {
        "train_seconds": float(result.train_seconds),
        "sample_seconds_per_10k": per_10k,
        "samples": samples,
    }
    out["train_steps"] = int(getattr(result, "steps", 0))
    out["train_stopped"] = str(getattr(result, "stopped", ""))
    return out


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
    method: str = "sbi-npe",
) -> dict[str, Any]:
    """sbi's ``method`` (a key of :data:`SBI_METHODS`; default training schedule, its own
    early stopping) on the same ``(x, y)``; sample at ``obs``."""
    import inspect

    import sbi.inference

    cls_name, options = SBI_METHODS[method]
    cls = getattr(sbi.inference, cls_name)
    torch.manual_seed(seed)
    kwargs: dict[str, Any] = {
        "prior": _sbi_prior(task_name),
        "show_progress_bars": False,
        **options,
    }
    if "tracker" in inspect.signature(cls.__init__).parameters:  # sbi >= 0.26
        kwargs["tracker"] = _NullTracker()
    inference = cls(**kwargs)
    t0 = time.perf_counter()
    inference.append_simulations(torch.as_tensor(x), torch.as_tensor(y))
    train_kwargs: dict[str, Any] = {"show_train_summary": False}
    if max_epochs is not None:
        train_kwargs["max_num_epochs"] = max_epochs
    with contextlib.redirect_stdout(io.StringIO()):  # sbi prints "converged after N epochs"
        estimator = inference.train(**train_kwargs)
    train_seconds = time.perf_counter() - t0
    posterior = inference.build_posterior(estimator)

    def sample(o: np.ndarray, n: int) -> np.ndarray:
        s = posterior.sample(
            (n,), x=torch.as_tensor(o, dtype=torch.float32), show_progress_bars=False
        )
        return s.numpy()

    samples, per_10k = _time_sampling(sample, obs, n_samples)
    out: dict[str, Any] = {
        "train_seconds": train_seconds,
        "sample_seconds_per_10k": per_10k,
        "samples": samples,
    }
    epochs = getattr(inference, "_summary", {}).get("epochs_trained")
    if epochs:
        out["train_epochs"] = int(epochs[-1])
    return out


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


def _score_sbibm(
    wheel: Path,
    samples: list[np.ndarray],
    refs: Sequence[ReferenceObservation],
    max_samples: int,
    seed: int,
) -> list[float]:
    """:func:`_score` with sbibm's own classifier (same samples, same seeds)."""
    from benchmarks.peers.sbibm_c2st import sbibm_c2st

    return [
        sbibm_c2st(wheel, r.samples, s, seed=seed + i, max_samples=max_samples)
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


#: Settings that change what a cell measures: ``--resume`` refuses a file whose differ.
CELL_SETTINGS = (
    "quick",
    "observations",
    "c2st_max_samples",
    "c2st_observations",
    "vinaflow_max_seconds",
    "vinaflow_steps",
    "default_max_seconds",
    "default_steps",
    "sbi_max_epochs",
    "sbibm_wheel",
    "sbibm_classifier",
)
#: The value of a cell setting in a file written before that setting existed.
CELL_SETTING_DEFAULTS: dict[str, Any] = {"sbibm_classifier": False}
NOTES = {
    "seeds": "each seed draws its own simulations (simulations(task, budget, seed)); every "
    "method gets the same arrays for that seed",
    "c2st": "a row's c2st is the mean over the scored observations; summary c2st is the mean "
    "over seeds with a Student-t interval (ddof=1, vinaflow.evaluation.intervals.seed_interval)",
    "stopping": "sbi methods (sbi-npe: NPE with MAF, sbi-nsf: NPE with NSF, sbi-fmpe: FMPE) "
    "stop on their own early-stopping schedule (no time cap; sbi_max_epochs if set); "
    "vinaflow-default, vinaflow-spline128, vinaflow-affine and vinaflow-every200 stop on "
    "vinaflow.fit's own rule (validation "
    "patience, at most 20,000 steps) with no time cap unless default_max_seconds is set; "
    "the other vinaflow methods train for vinaflow_max_seconds or vinaflow_steps",
    "affine": "vinaflow-affine is vinaflow.fit(x, y, arch='coupling'); its rows written before "
    "spline couplings became fit's default architecture were run as vinaflow-default (the same "
    "call then)",
    "every200": "vinaflow-every200 is vinaflow.fit(x, y, hidden=128, lr=1e-3, val_every=200, "
    "patience=10), fit's early stopping before it validated once per epoch (20 epochs of "
    "patience) when an epoch is shorter than 200 steps; its rows written before that change "
    "were run as vinaflow-default (the same call then)",
    "spline128": "vinaflow-spline128 is vinaflow.fit(x, y, hidden=128, lr=1e-3), fit's default "
    "before the spline cINN was narrowed to 64 units and learning rate 5e-4; its rows "
    "written before that change were run as vinaflow-default (the same call then)",
    "validation": "vinaflow methods hold out a tenth of the rows (at most 2,000); sbi its "
    "default tenth",
}


def _cell_key(row: dict[str, Any]) -> tuple[str, int, int, str]:
    return (str(row["task"]), int(row["budget"]), int(row["seed"]), str(row["method"]))


def _finite_or_none(v: float | None) -> float | None:
    return float(v) if v is not None and math.isfinite(v) else None


def _clean(iv: dict[str, Any]) -> dict[str, Any]:
    """An interval with undefined (non-finite) entries as ``None``."""
    return {k: v if k in ("n", "level") else _finite_or_none(v) for k, v in iv.items()}


def summarise(rows: Sequence[dict[str, Any]], level: float = 0.95) -> list[dict[str, Any]]:
    """One entry per (task, budget, method) in ``rows``' order: C2ST and seconds over the
    seeds that succeeded (mean, ``std`` ddof=1 and Student-t ``level`` interval by
    :func:`vinaflow.evaluation.intervals.seed_interval`; ``None`` where undefined, as for
    one seed), with the seeds counted and the failed ones named."""
    from vinaflow.evaluation.intervals import seed_interval

    out = []
    for key in dict.fromkeys((r["task"], r["budget"], r["method"]) for r in rows):
        cell = [r for r in rows if (r["task"], r["budget"], r["method"]) == key]
        ok = [r for r in cell if "c2st" in r]
        entry: dict[str, Any] = {"task": key[0], "budget": key[1], "method": key[2]}
        entry["seeds"] = sorted(int(r["seed"]) for r in ok)
        entry["failed_seeds"] = sorted(int(r["seed"]) for r in cell if "c2st" not in r)
        metrics = ["c2st", "train_seconds", "sample_seconds_per_10k", "wall_seconds"]
        both = [r for r in ok if "c2st_sbibm" in r]
        if both:
            metrics.append("c2st_sbibm")
        for metric in metrics:
            entry[metric] = _clean(seed_interval([r.get(metric) for r in ok], level=level))
        if both:
            # sbibm's classifier minus vinaflow's on the same samples, paired by seed
            entry["c2st_sbibm_minus_c2st"] = _clean(
                seed_interval([r["c2st_sbibm"] - r["c2st"] for r in both], level=level)
            )
        entry["sbibm_npe_c2st"] = SBIBM_NPE_C2ST.get((key[0], key[1]))
        out.append(entry)
    return out


def _load_resume(path: Path, settings: dict[str, Any]) -> tuple[list[dict[str, Any]], dict]:
    """Rows (without errors) and posterior predictive checks of an earlier run at ``path``."""
    if not path.is_file():
        return [], {}
    old = json.loads(path.read_text())
    before = old.get("settings", {})
    before = {**CELL_SETTING_DEFAULTS, **before}
    differ = [k for k in CELL_SETTINGS if before.get(k) != settings.get(k)]
    if differ:
        raise SystemExit(
            f"[peers] --resume: {path} was written with other settings ("
            + ", ".join(f"{k}: {before.get(k)!r} there, {settings.get(k)!r} now" for k in differ)
            + "); use another --out or the same settings"
        )
    rows = [r for r in old.get("rows", []) if "error" not in r]
    return rows, dict(old.get("posterior_predictive_check", {}))


def _parse(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="budgets 1k, 10k; short training")
    parser.add_argument("--sbibm-wheel", default=None, help="sbibm wheel file or folder")
    parser.add_argument("--tasks", nargs="*", default=list(TASKS), choices=TASKS)
    parser.add_argument("--methods", nargs="*", default=list(METHODS), choices=METHODS)
    parser.add_argument("--budgets", nargs="*", type=int, default=None)
    seeds = parser.add_mutually_exclusive_group()
    seeds.add_argument("--seeds", nargs="+", type=int, default=None, help="default: 0 1 2")
    seeds.add_argument("--seed", type=int, default=None, help="one seed: --seeds SEED")
    parser.add_argument("--observations", type=int, default=10, help="first N of sbibm's 10")
    parser.add_argument(
        "--max-seconds",
        type=float,
        default=None,
        help="vinaflow training cap (default 240 s, --quick 12 s; vinaflow-default: none)",
    )
    parser.add_argument(
        "--steps",
        type=int,
        default=None,
        help="vinaflow step cap (default 100,000; vinaflow-default: its own rule)",
    )
    parser.add_argument("--sbi-max-epochs", type=int, default=None)
    parser.add_argument("--c2st-samples", type=int, default=None)
    parser.add_argument(
        "--c2st-observations",
        type=int,
        default=None,
        help="score only the first N observations (default: all; --quick: 3 on gaussian_linear,"
        " whose 10-D C2ST costs about 10-30 s per observation on 2 cores)",
    )
    parser.add_argument(
        "--sbibm-classifier",
        action="store_true",
        help="also score every sample set with sbibm's own C2ST classifier (c2st_sbibm)",
    )
    parser.add_argument(
        "--resume", action="store_true", help="keep the cells already in --out, run the rest"
    )
    parser.add_argument(
        "--out", default=str(Path(__file__).parents[1] / "results" / "peers_seeds.json")
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    budgets = args.budgets or ([1000, 10000] if args.quick else [1000, 10000, 100000])
    if args.seeds is not None:
        seeds = list(dict.fromkeys(args.seeds))
    else:
        seeds = [0, 1, 2] if args.seed is None else [args.seed]
    max_seconds = args.max_seconds or (12.0 if args.quick else 240.0)
    steps = args.steps or 100_000
    sbi_epochs = args.sbi_max_epochs  # default: sbi's own schedule (early stopping)
    n_c2st = args.c2st_samples or (1000 if args.quick else 10000)
    n_samples = 10000
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    from vinaflow.runtime import tune_allocator

    tune_allocator()

    wheel = find_wheel(args.sbibm_wheel)
    out_path = Path(args.out)
    settings: dict[str, Any] = {
        "quick": args.quick,
        "tasks": list(args.tasks),
        "budgets": budgets,
        "seeds": seeds,
        "methods": list(args.methods),
        "observations": args.observations,
        "vinaflow_max_seconds": max_seconds,
        "vinaflow_steps": steps,
        "default_max_seconds": args.max_seconds,
        "default_steps": args.steps,
        "sbi_max_epochs": sbi_epochs,
        "c2st_max_samples": n_c2st,
        "c2st_observations": args.c2st_observations,
        "posterior_samples": n_samples,
        "sbibm_wheel": wheel.name,
        "sbibm_classifier": args.sbibm_classifier,
        "threads": torch.get_num_threads(),
    }
    rows, ppc = _load_resume(out_path, settings) if args.resume else ([], {})
    done = {_cell_key(r) for r in rows}
    if args.resume:
        print(f"[peers] --resume: {len(done)} cells already in {out_path}")

    sbi_ok = _sbi_available()
    methods = [m for m in args.methods if m not in SBI_METHODS or sbi_ok]
    skipped = [m for m in args.methods if m not in methods]
    if skipped:
        print(
            f"[peers] sbi is not importable: skipping {', '.join(skipped)} "
            "(pip install -e '.[bench]')"
        )
    env = _environment()
    for task_name in args.tasks:
        refs = load_task(wheel, task_name)[: args.observations]
        task = make_task(task_name)
        obs = np.stack([r.observation for r in refs]).astype(np.float32)
        n_scored = args.c2st_observations or (3 if args.quick and task.dim_x > 2 else len(refs))
        for budget in budgets:
            for seed in seeds:
                todo = [m for m in methods if (task_name, budget, seed, m) not in done]
                if not todo:
                    continue
                if len(ppc.get(task_name, [])) != len(refs):
                    ppc[task_name] = [
                        posterior_predictive_check(task, r.samples, r.observation) for r in refs
                    ]
                x, y = simulations(task_name, budget, seed)
                for method in todo:
                    default = method in DEFAULT_RULE_METHODS
                    row = _run_cell(
                        task_name,
                        budget,
                        seed,
                        method,
                        x,
                        y,
                        obs,
                        refs[:n_scored],
                        n_samples=n_samples,
                        n_c2st=n_c2st,
                        sbi_epochs=sbi_epochs,
                        max_seconds=args.max_seconds if default else max_seconds,
                        steps=args.steps if default else steps,
                        sbibm_wheel=wheel if args.sbibm_classifier else None,
                    )
                    rows = [r for r in rows if _cell_key(r) != _cell_key(row)] + [row]
                    _print_row(row)
                    _write(out_path, settings, rows, ppc, env)
    _print_summary(summarise(rows))
    _write(out_path, settings, rows, ppc, env)
    print(f"wrote {out_path}")
    return 0


def _run_cell(
    task_name: str,
    budget: int,
    seed: int,
    method: str,
    x: np.ndarray,
    y: np.ndarray,
    obs: np.ndarray,
    refs: Sequence[ReferenceObservation],
    *,
    n_samples: int,
    n_c2st: int,
    sbi_epochs: int | None,
    max_seconds: float | None,
    steps: int | None,
    sbibm_wheel: Path | None = None,
) -> dict[str, Any]:
    """Train, sample and score one method on one seed's simulations: one result row
    (scored by sbibm's classifier too, on the same samples, when ``sbibm_wheel`` is given)."""
    t0 = time.perf_counter()
    try:
        if method in SBI_METHODS:
            res = run_sbi(task_name, x, y, obs, n_samples, sbi_epochs, seed, method=method)
        else:
            prior = make_task(task_name).prior if method == PRIOR_METHOD else None
            res = run_vinaflow(method, x, y, obs, n_samples, max_seconds, steps, seed, prior=prior)
        samples = res.pop("samples")[: len(refs)]
        scores = _score(samples, refs, n_c2st, seed)
        row: dict[str, Any] = {
            **res,
            "c2st": float(np.mean(scores)),
            "c2st_per_observation": scores,
        }
        if sbibm_wheel is not None:
            theirs = _score_sbibm(sbibm_wheel, samples, refs, n_c2st, seed)
            row["c2st_sbibm"] = float(np.mean(theirs))
            row["c2st_sbibm_per_observation"] = theirs
    except Exception as err:  # noqa: BLE001 - a failed method is reported
        row = {"error": f"{type(err).__name__}: {err}"}
    return {
        "task": task_name,
        "budget": budget,
        "seed": seed,
        "method": method,
        **row,
        "wall_seconds": time.perf_counter() - t0,
        "sbibm_npe_c2st": SBIBM_NPE_C2ST.get((task_name, budget)),
        "sbibm_paper_npe_c2st": SBIBM_PAPER_NPE_C2ST.get((task_name, budget)),
    }


def _fmt_interval(iv: dict[str, Any], digits: int = 3) -> str:
    mean, low, high = iv["mean"], iv["low"], iv["high"]
    if mean is None:
        return "-"
    if low is None or high is None:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} [{low:.{digits}f}, {high:.{digits}f}]"


def _print_summary(summary: list[dict[str, Any]]) -> None:
    """One line per (task, budget, method): C2ST over seeds with its 95% interval."""
    print()
    print(
        f"{'task':<17} {'budget':>7} {'method':<17} {'seeds':>5} {'C2ST mean [95% CI]':<24}"
        f" {'train s':>8} {'wall s':>8}  sbibm-NPE"
    )
    for e in summary:
        pub = e["sbibm_npe_c2st"]
        fails = f"  ({len(e['failed_seeds'])} failed)" if e["failed_seeds"] else ""
        train, wall = e["train_seconds"]["mean"], e["wall_seconds"]["mean"]
        print(
            f"{e['task']:<17} {e['budget']:>7} {e['method']:<17} {e['c2st']['n']:>5}"
            f" {_fmt_interval(e['c2st']):<24}"
            f" {'-' if train is None else f'{train:.1f}':>8}"
            f" {'-' if wall is None else f'{wall:.1f}':>8}"
            f"  {'-' if pub is None else f'{pub:.3f}'}{fails}",
            flush=True,
        )
        if "c2st_sbibm" in e:
            print(
                f"{'':<17} {'':>7} {'  sbibm classifier':<17} {e['c2st_sbibm']['n']:>5}"
                f" {_fmt_interval(e['c2st_sbibm']):<24}  minus vinaflow's: "
                f"{_fmt_interval(e['c2st_sbibm_minus_c2st'])}",
                flush=True,
            )


def _print_row(r: dict[str, Any]) -> None:
    head = f"{r['task']:<17} {r['budget']:>7} seed {r['seed']:<3} {r['method']:<17}"
    if "error" in r:
        print(f"{head} FAILED: {r['error']}", flush=True)
        return
    pub = "" if r["sbibm_npe_c2st"] is None else f"{r['sbibm_npe_c2st']:.2f}"
    theirs = f" / sbibm's classifier {r['c2st_sbibm']:.3f}" if "c2st_sbibm" in r else ""
    print(
        f"{head} C2ST {r['c2st']:.3f}{theirs} (sbibm NPE {pub or '-':>4})"
        f"  train {r['train_seconds']:7.1f} s"
        f"  sample {r['sample_seconds_per_10k']:.3f} s/10k"
        f"  wall {r['wall_seconds']:7.1f} s",
        flush=True,
    )


def _environment() -> dict[str, str]:
    from vinaflow.experiments.pipeline import environment

    env = environment()
    try:
        import sbi

        env["sbi"] = sbi.__version__
    except Exception:  # noqa: BLE001
        env["sbi"] = "not installed"
    return env


def _write(
    path: Path,
    settings: dict[str, Any],
    rows: list[dict[str, Any]],
    ppc: dict[str, list[dict[str, float]]],
    env: dict[str, str],
) -> None:
    """The whole results file, atomically (a crash leaves the previous complete file)."""
    from vinaflow.atomic import atomic_write_json

    out = {
        "settings": settings,
        "notes": NOTES,
        "summary": summarise(rows),
        "posterior_predictive_check": ppc,
        "rows": rows,
        "environment": env,
    }
    atomic_write_json(path, out)


if __name__ == "__main__":
    raise SystemExit(main())
