"""``vinaflow run``, ``sample``, ``evaluate`` and ``problems``: one posterior run."""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from vinaflow.errors import ConfigError, DataError

__all__ = ["add_run_options", "register", "train_into_folder"]


def add_run_options(p: argparse.ArgumentParser, what: str) -> None:
    """The options of a command that trains into a run folder (``run``, ``flow``)."""
    p.add_argument("--out", help=f"output folder (default: runs/{what}-TIMESTAMP)")
    p.add_argument(
        "--set",
        action="append",
        metavar="SECTION.KEY=VALUE",
        help="override a config value (repeatable)",
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def train_into_folder(
    args: argparse.Namespace,
    cfg: Mapping[str, Any],
    run: Callable[..., Any],
    what: str,
    files: str = "plots/",
) -> int:
    """``run(cfg, out, resume=, progress=)`` into ``--out`` (refusing a finished run
    unless ``--resume`` or ``--overwrite``); prints the metrics table and the folder."""
    from vinaflow.experiments.pipeline import check_output_dir
    from vinaflow.experiments.report import format_metrics_table

    out = Path(args.out) if args.out else Path("runs") / time.strftime(f"{what}-%Y%m%d-%H%M%S")
    check_output_dir(out, args.resume, args.overwrite)
    result = run(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(format_metrics_table(result.metrics))
    print(f"\nwrote {out}/ (metrics.json, report.md, model.safetensors, {files})")
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    from vinaflow.config import load_config
    from vinaflow.experiments.pipeline import run

    return train_into_folder(args, load_config(args.config, args.set or []), run, "run")


def _load_run(directory: str) -> tuple[dict[str, Any], Any]:
    from vinaflow.config import load_config
    from vinaflow.experiments.generative import is_flow_folder, load_flow_config
    from vinaflow.models import Posterior

    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"run folder not found: {d}")
    # a vinaflow flow folder: its model is a conditional INN with no observation
    cfg = (load_flow_config if is_flow_folder(d) else load_config)(d / "config.yaml")
    return cfg, Posterior.load(d)


def _cmd_sample(args: argparse.Namespace) -> int:
    import numpy as np

    from vinaflow.atomic import atomic_path

    _, posterior = _load_run(args.dir)
    if args.observations is None:
        if posterior.dim_y:
            raise DataError(f"sample: --observations is required (dim_y = {posterior.dim_y})")
        samples = posterior.sample(None, args.n).numpy()  # a flow: no observation
        with atomic_path(args.out, suffix=".npy") as tmp:
            np.save(tmp, samples)
        print(f"wrote {args.out}: shape {samples.shape} (1, n, dim_x)")
        return 0
    obs_path = Path(args.observations)
    if not obs_path.is_file():
        raise DataError(f"--observations: file not found: {obs_path}")
    try:
        obs = np.load(obs_path, allow_pickle=False)
    except (ValueError, OSError) as err:
        raise DataError(f"--observations: {obs_path} is not a readable .npy file ({err})") from err
    samples = posterior.sample(obs, args.n).numpy()
    with atomic_path(args.out, suffix=".npy") as tmp:
        np.save(tmp, samples)
    print(f"wrote {args.out}: shape {samples.shape} (n_obs, n, dim_x)")
    return 0


def _cmd_evaluate(args: argparse.Namespace) -> int:
    from vinaflow.experiments.pipeline import evaluate_posterior, prepare_data
    from vinaflow.experiments.report import format_metrics_table
    from vinaflow.problems import BankProblem, make_problem

    cfg, posterior = _load_run(args.dir)
    if "target" in cfg:  # a vinaflow flow folder
        from vinaflow.experiments.generative import evaluate_flow_folder

        metrics = evaluate_flow_folder(args.dir)
        print(json.dumps(metrics, indent=2) if args.json else format_metrics_table(metrics))
        return 0
    problem = make_problem(cfg["problem"])
    data = None
    if isinstance(problem, BankProblem) and problem.source is None:
        data = prepare_data(
            problem,
            cfg["problem"],
            cfg["training"]["seed"],
            n_test=cfg["evaluation"]["num_observations"],
        )
    metrics = evaluate_posterior(posterior, problem, cfg["evaluation"], data)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(format_metrics_table(metrics))
    return 0


def _cmd_problems(args: argparse.Namespace) -> int:
    from vinaflow.problems.registry import BUILTIN_PROBLEMS, problem_class, problem_parameters

    for name in BUILTIN_PROBLEMS:
        try:
            cls = problem_class(name)
            params = problem_parameters(name)
        except (ImportError, ConfigError) as err:
            print(f"{name}: unavailable ({err})")
            continue
        doc = (cls.__doc__ or "").strip().splitlines()[0] if cls.__doc__ else ""
        print(f"{name}: {doc}")
        for k, v in params.items():
            print(f"    {k} = {v!r}")
    print("custom: problem: {simulator: 'module:function', prior: {normal|uniform: ...}}")
    print("bank:   problem: {bank: FILE.npz}  (arrays x (n, dx) and y (n, dy))")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add ``run``, ``sample``, ``evaluate`` and ``problems`` to the parser."""
    p = sub.add_parser("run", help="train, evaluate and report one config")
    p.add_argument("config", nargs="?", help="YAML config (default: built-in example)")
    add_run_options(p, "run")
    p.set_defaults(func=_cmd_run)

    p = sub.add_parser("sample", help="posterior samples from a trained run")
    p.add_argument("dir")
    p.add_argument(
        "--observations",
        help=".npy of shape (dim_y,) or (n_obs, dim_y); a flow folder (dim_y = 0) needs none",
    )
    p.add_argument("-n", type=int, default=1000, help="samples per observation")
    p.add_argument("--out", required=True, help="output .npy, shape (n_obs, n, dim_x)")
    p.set_defaults(func=_cmd_sample)

    p = sub.add_parser("evaluate", help="recompute the metrics of a trained run")
    p.add_argument("dir")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=_cmd_evaluate)

    p = sub.add_parser("problems", help="list the built-in problems and their parameters")
    p.set_defaults(func=_cmd_problems)
