"""Further CLI commands contributed by the experiments (simulation banks, studies)."""

from __future__ import annotations

import argparse

__all__ = ["register"]


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add experiment commands to the ``vinaflow`` parser."""
