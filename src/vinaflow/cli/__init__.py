"""The ``vinaflow`` command line.

User errors (bad config, bad data, missing files) print one line to stderr and
exit with status 2; nothing is left half-written in the output folder.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from vinaflow._version import __version__
from vinaflow.cli import certify, flow, run, simulate, studies
from vinaflow.errors import VinaflowError
from vinaflow.runtime import tune_allocator

__all__ = ["main"]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="vinaflow",
        description="Train invertible networks with variational objectives for posterior "
        "inference.",
    )
    parser.add_argument("--version", action="version", version=f"vinaflow {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)

    for module in (run, studies, simulate, flow, certify):
        module.register(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    tune_allocator()
    try:
        return int(args.func(args) or 0)
    except VinaflowError as err:
        print(f"vinaflow: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("vinaflow: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
