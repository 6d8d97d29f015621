"""``vinaflow simulate PROBLEM -n N --out BANK``: the command line of the bank writer."""

from __future__ import annotations

import argparse
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from vinaflow.config import _parse_scalar, read_config_file
from vinaflow.errors import ConfigError
from vinaflow.problems.simulate import BACKENDS, simulate_bank

__all__ = ["problem_spec_from_args", "register"]


def problem_spec_from_args(problem: str, sets: Sequence[str]) -> dict[str, Any]:
    """The problem spec of ``vinaflow simulate PROBLEM --set key=value ...``.

    ``PROBLEM`` is a built-in name, ``module:function`` (a custom simulator, with
    ``--set prior=...``) or a YAML config whose ``problem`` section is used.
    """
    path = Path(problem)
    if path.suffix in (".yaml", ".yml"):
        section = read_config_file(path).get("problem")
        if not isinstance(section, Mapping):
            raise ConfigError(f"simulate: {path} has no 'problem' section")
        spec: dict[str, Any] = dict(section)
    elif ":" in problem:
        spec = {"simulator": problem}
    else:
        spec = {"name": problem}
    for item in sets:
        if "=" not in item:
            raise ConfigError(f"--set expects key=value (a problem parameter), got {item!r}")
        key, value = item.split("=", 1)
        key = key.strip().removeprefix("problem.")
        if not key or "." in key:
            raise ConfigError(f"--set {item!r}: give a problem parameter name such as noise=0.1")
        spec[key] = _parse_scalar(value)
    return spec


def _cmd_simulate(args: argparse.Namespace) -> int:
    spec = problem_spec_from_args(args.problem, args.set or [])
    info = simulate_bank(
        spec,
        args.n,
        args.out,
        chunk_size=args.chunk_size,
        seed=args.seed,
        progress=not args.no_progress,
        overwrite=args.overwrite,
        backend=args.backend,
        address=args.address,
        workers=args.workers,
    )
    shapes = (
        f"x ({info['n']}, {info['dim_x']}), y ({info['n']}, {info['dim_y']}), seed {info['seed']}"
    )
    if info["already_complete"]:
        print(f"{info['path']} is complete already ({shapes}); nothing to do")
    else:
        resumed = info["resumed_chunks"]
        print(
            f"wrote {info['path']}: {shapes}"
            + (f" (resumed {resumed} chunk(s))" if resumed else "")
        )
    return 0


def register(sub: Any) -> None:
    """Add ``vinaflow simulate`` to the CLI's subparsers."""
    p = sub.add_parser(
        "simulate",
        help="simulate a bank of (x, y) pairs (chunked; rerun the same command to resume)",
    )
    p.add_argument("problem", help="built-in problem name, module:function, or a YAML config")
    p.add_argument("-n", type=int, required=True, help="number of simulations")
    p.add_argument(
        "--out",
        required=True,
        help="output bank: FILE.npz (loaded whole) or a FOLDER of .npy shards (streamed)",
    )
    p.add_argument(
        "--set",
        action="append",
        metavar="KEY=VALUE",
        help="problem parameter, e.g. --set snr_db=20 (repeatable; values parsed as YAML)",
    )
    p.add_argument("--chunk-size", type=int, default=10_000, help="simulations per chunk")
    p.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    p.add_argument("--overwrite", action="store_true", help="discard existing output and restart")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument(
        "--backend",
        choices=BACKENDS,
        default="local",
        help="where chunks are simulated: this process, or Ray workers (same bank either way)",
    )
    p.add_argument(
        "--address",
        help="Ray cluster address (HOST:PORT, ray://HOST:PORT or auto); default a local Ray",
    )
    p.add_argument("--workers", type=int, help="Ray tasks at once (default: the cluster's CPUs)")
    p.set_defaults(func=_cmd_simulate)
