"""``vinaflow flow CONFIG --out DIR``: train and evaluate a normalizing flow on a target."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from vinaflow.experiments.generative import load_flow_config, run_flow
from vinaflow.experiments.report import format_metrics_table

__all__ = ["register"]


def _cmd_flow(args: argparse.Namespace) -> int:
    from vinaflow.experiments.pipeline import check_output_dir

    cfg = load_flow_config(args.config, args.set or [])
    out = Path(args.out) if args.out else Path("runs") / time.strftime("flow-%Y%m%d-%H%M%S")
    check_output_dir(out, args.resume, args.overwrite)
    result = run_flow(cfg, out, resume=args.resume, progress=not args.no_progress)
    print(format_metrics_table(result.metrics))
    print(f"\nwrote {out}/ (metrics.json, report.md, model.safetensors, heldout.npz, plots/)")
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add ``vinaflow flow CONFIG --out DIR`` to the command-line parser."""
    p = sub.add_parser("flow", help="train and evaluate a normalizing flow on a target")
    p.add_argument("config", nargs="?", help="flow YAML config (default: 2-D Gaussian mixture)")
    p.add_argument("--out", help="output folder (default: runs/flow-TIMESTAMP)")
    p.add_argument(
        "--set", action="append", metavar="SECTION.KEY=VALUE", help="override a config value"
    )
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint.pt")
    p.add_argument("--overwrite", action="store_true", help="replace a finished run in --out")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(func=_cmd_flow)
