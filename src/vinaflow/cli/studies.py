"""Further CLI commands contributed by the experiments: ``sweep``, ``study``, ``report``.

``vinaflow sweep CONFIG.yaml --grid model.hidden=64,128 --seeds 40..60 --out DIR``
runs a grid of configs over seeds (resumable: rerun the same command after an
interruption); ``vinaflow study NAME --out DIR [--quick]`` runs a registered study
(:mod:`vinaflow.studies.base`: the paper's posterior studies and the unconditional-flow
studies alike) as such a sweep and writes its report; ``vinaflow report DIR``
(re)writes ``DIR/report.md`` with tables and figures.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from vinaflow.config import apply_overrides, read_config_file
from vinaflow.errors import ConfigError
from vinaflow.studies.base import get_study, list_studies
from vinaflow.studies.grid import RESOLVERS, Sweep, parse_grid, parse_seeds
from vinaflow.studies.report import write_study_report
from vinaflow.studies.sweep import run_sweep

__all__ = ["register"]


def _add_backend_args(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--backend",
        choices=("local", "ray"),
        default="local",
        help="local process pool (default) or a Ray cluster",
    )
    p.add_argument(
        "--workers",
        type=int,
        help="parallel runs (default: the cores of this machine; with Ray: the cluster's CPUs)",
    )
    p.add_argument(
        "--ray-address",
        help="address of a running Ray cluster (HOST:PORT, ray://HOST:PORT or auto); "
        "default: start a local Ray instance",
    )
    p.add_argument("--save-runs", action="store_true", help="keep each run's folder in DIR/runs/")
    p.add_argument("--retry-failed", action="store_true", help="rerun runs recorded as failed")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def _run_and_report(sweep: Sweep, args: argparse.Namespace, meta: dict[str, Any]) -> str:
    """Run ``sweep`` with the backend options of ``args``, write its report; a summary line."""
    records = run_sweep(
        sweep,
        args.out,
        backend=args.backend,
        workers=args.workers,
        ray_address=args.ray_address,
        save_runs=args.save_runs,
        retry_failed=args.retry_failed,
        progress=not args.quiet,
        meta=meta,
    )
    report = write_study_report(args.out)
    n_ok = sum(r.get("status") == "ok" for r in records)
    return f"{n_ok}/{len(records)} runs ok; wrote {report}"


def _cmd_sweep(args: argparse.Namespace) -> int:
    path = Path(args.config)
    base = read_config_file(path)
    # a config with a target is a vinaflow flow config: its runs train unconditional flows
    kind = "flow" if "target" in base else "run"
    if args.set:
        base = apply_overrides(base, args.set, RESOLVERS[kind][1])
    sweep = Sweep(
        base=base, axes=parse_grid(args.grid or []), seeds=parse_seeds(args.seeds), kind=kind
    )
    summary = _run_and_report(sweep, args, {"config_file": str(path)})
    print(f"{summary} and {Path(args.out) / 'results.jsonl'}")
    return 0


def _cmd_study(args: argparse.Namespace) -> int:
    if args.list or not args.name:
        for name in list_studies():
            s = get_study(name)
            print(f"{name}: {s.description}")
        return 0
    if not args.out:
        raise ConfigError("study: --out DIR is required")
    study = get_study(args.name)
    sweep = study.sweep(quick=args.quick, seeds=args.seeds)
    print(_run_and_report(sweep, args, {"study": study.name, "quick": bool(args.quick)}))
    return 0


def _cmd_report(args: argparse.Namespace) -> int:
    report = write_study_report(args.dir)
    print(f"wrote {report}", file=sys.stdout)
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add experiment commands to the ``vinaflow`` parser."""
    p = sub.add_parser("sweep", help="run a config over a grid of overrides and seeds")
    p.add_argument("config", help="base YAML config (a vinaflow run or vinaflow flow config)")
    p.add_argument(
        "--grid",
        action="append",
        metavar="SECTION.KEY=V1,V2",
        help="a grid axis (repeatable; the grid is the product of all axes)",
    )
    p.add_argument("--seeds", default="0", help="A..B (inclusive) or A,B,C (default 0)")
    p.add_argument("--set", action="append", metavar="SECTION.KEY=VALUE", help="fixed override")
    p.add_argument("--out", required=True, help="output folder (rerun to resume)")
    _add_backend_args(p)
    p.set_defaults(func=_cmd_sweep)

    p = sub.add_parser("study", help="run a named study of the paper and write its report")
    p.add_argument("name", nargs="?", help="study name (see --list)")
    p.add_argument("--out", help="output folder (rerun to resume)")
    p.add_argument("--seeds", help="override the study's seeds, e.g. 40..60")
    p.add_argument("--quick", action="store_true", help="short variant (< 10 min on 2 cores)")
    p.add_argument("--list", action="store_true", help="list the studies")
    _add_backend_args(p)
    p.set_defaults(func=_cmd_study)

    p = sub.add_parser("report", help="tables and figures of a sweep or study folder")
    p.add_argument("dir")
    p.set_defaults(func=_cmd_report)
