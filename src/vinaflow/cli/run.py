"""``vinaflow run``, ``sample``, ``evaluate`` and ``problems``: one posterior run."""

from __future__ import annotations

import argparse
import json
import os
import sys
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


def _rank_run(cfg: dict[str, Any], out: str, resume: bool, progress: bool) -> None:
    """One process of ``vinaflow run --nproc N`` (module level: spawn pickles it). A user
    error is printed once, by the rank that hit it, and ends the process with status 2,
    which the launching process passes on."""
    from vinaflow.errors import VinaflowError
    from vinaflow.experiments.pipeline import run

    try:
        run(cfg, out, resume=resume, progress=progress)
    except VinaflowError as err:
        print(f"vinaflow: error: {err}", file=sys.stderr)
        sys.exit(2)


def _run_processes(args: argparse.Namespace, cfg: dict[str, Any], nproc: int) -> int:
    """``--nproc N``: N processes on this machine train one model (data-parallel), rank 0
    writes the run folder; the metrics table is read back from it."""
    import torch.multiprocessing as mp

    from vinaflow.experiments.pipeline import check_output_dir
    from vinaflow.experiments.report import format_metrics_table
    from vinaflow.training.distributed import check_nproc, launch

    device = cfg["training"].get("device", "auto")
    check_nproc(nproc, device)
    out = Path(args.out) if args.out else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    check_output_dir(out, args.resume, args.overwrite)
    try:
        launch(_rank_run, nproc, device, cfg, str(out), args.resume, not args.no_progress)
    except mp.ProcessExitedException as err:
        if err.exit_code == 2:  # a user error, already printed by that rank
            return 2
        raise
    metrics = json.loads((out / "metrics.json").read_text())
    print(format_metrics_table(metrics))
    print(f"\nwrote {out}/ ({nproc} processes; metrics.json, report.md, model.safetensors)")
    return 0


def _run_on_ray(args: argparse.Namespace, cfg: dict[str, Any], nproc: int) -> int:
    """``--backend ray``: ``nproc`` Ray Train workers (on a cluster with ``--address``)
    run the same data-parallel training as ``--nproc`` does on this machine."""
    from vinaflow.cluster import run_ray_train
    from vinaflow.experiments.pipeline import check_output_dir
    from vinaflow.experiments.report import format_metrics_table

    device = cfg["training"].get("device", "auto")
    out = Path(args.out) if args.out else Path("runs") / time.strftime("run-%Y%m%d-%H%M%S")
    check_output_dir(out, args.resume, args.overwrite)
    use_gpu = device.startswith("cuda") or (device == "auto" and _cuda_available())
    run_ray_train(
        _rank_run_raising,
        (cfg, str(out), args.resume, not args.no_progress),
        nproc,
        use_gpu,
        args.address,
    )
    metrics = json.loads((out / "metrics.json").read_text())
    print(format_metrics_table(metrics))
    print(f"\nwrote {out}/ ({nproc} Ray workers; metrics.json, report.md, model.safetensors)")
    return 0


def _cuda_available() -> bool:
    import torch

    return torch.cuda.is_available()


def _rank_run_raising(cfg: dict[str, Any], out: str, resume: bool, progress: bool) -> None:
    """One Ray Train worker's run; rank 0 alone shows progress."""
    from vinaflow.experiments.pipeline import run
    from vinaflow.training.distributed import is_main_process

    run(cfg, out, resume=resume, progress=progress and is_main_process())


def _cmd_run(args: argparse.Namespace) -> int:
    from vinaflow.config import load_config
    from vinaflow.experiments.pipeline import run
    from vinaflow.training.distributed import init_from_environment, is_main_process

    cfg = load_config(args.config, args.set or [])
    device = cfg["training"].get("device", "auto")
    if args.address and args.backend != "ray":
        raise ConfigError("--address needs --backend ray")
    if args.backend == "ray":
        if args.nproc is not None and (isinstance(args.nproc, bool) or args.nproc < 1):
            raise ConfigError(f"--nproc must be a positive integer, got {args.nproc}")
        return _run_on_ray(args, cfg, args.nproc or 1)
    if args.nproc is not None and args.nproc != 1:
        if "WORLD_SIZE" in os.environ:
            raise ConfigError("--nproc: this process was started by torchrun; drop --nproc")
        return _run_processes(args, cfg, args.nproc)
    if init_from_environment(device):  # started by torchrun: one rank of the group
        from vinaflow.experiments.pipeline import check_output_dir

        if not args.out:
            raise ConfigError("--out is required under torchrun (every rank must agree on it)")
        # Every rank checks, so that a refused folder stops all of them, not only rank 0.
        check_output_dir(Path(args.out), args.resume, args.overwrite)
        if not is_main_process():
            run(cfg, args.out, resume=args.resume, progress=False)
            return 0
    return train_into_folder(args, cfg, run, "run")


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
    if cfg["training"].get("rounds", 1) > 1:
        # sequential rounds: the posterior is scored at its one observation
        from vinaflow.experiments.pipeline import evaluate_observation
        from vinaflow.training.sequential import check_observation

        obs = check_observation(cfg["problem"]["observation"], problem.dim_y, "problem.observation")
        metrics = evaluate_observation(posterior, problem, obs, cfg["evaluation"])
        print(json.dumps(metrics, indent=2) if args.json else format_metrics_table(metrics))
        return 0
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
    p.add_argument(
        "--nproc",
        type=int,
        metavar="N",
        help="train data-parallel in N processes on this machine (gloo on CPU cores, NCCL "
        "with one GPU each); torchrun --nproc-per-node N -m vinaflow.cli run ... works too",
    )
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local: --nproc processes on this machine; ray: --nproc Ray Train workers "
        "(TorchTrainer), on the cluster at --address or a local Ray instance",
    )
    p.add_argument("--address", help="Ray cluster address for --backend ray (HOST:PORT or auto)")
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
