"""``vinaflow flow CONFIG --out DIR``: train and evaluate a normalizing flow on a target.

The flow is a conditional INN with no observation; the command is ``vinaflow run``'s
(:func:`vinaflow.cli.run.train_into_folder`) with a flow config.
"""

from __future__ import annotations

import argparse

from vinaflow.cli.run import add_run_options, train_into_folder
from vinaflow.experiments.generative import load_flow_config, run_flow

__all__ = ["register"]


def _cmd_flow(args: argparse.Namespace) -> int:
    cfg = load_flow_config(args.config, args.set or [])
    return train_into_folder(args, cfg, run_flow, "flow", "heldout.npz, plots/")


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add ``vinaflow flow CONFIG --out DIR`` to the command-line parser."""
    p = sub.add_parser("flow", help="train and evaluate a normalizing flow on a target")
    p.add_argument("config", nargs="?", help="flow YAML config (default: 2-D Gaussian mixture)")
    add_run_options(p, "flow")
    p.set_defaults(func=_cmd_flow)
