"""``vinaflow certify DIR``: the certificate of a finished run folder."""

from __future__ import annotations

import argparse
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.errors import DataError
from vinaflow.evaluation.certificate import (
    CertificateConfig,
    _problem_can_simulate,
    attach_c2st_check,
    certify_flow,
    certify_posterior,
    format_certificate,
)

__all__ = ["certify_run_dir", "register"]


def _load_heldout(path: str | Path) -> dict[str, np.ndarray]:
    path = Path(path)
    if not path.is_file():
        raise DataError(f"--data: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as d:
            return {k: np.asarray(d[k]) for k in d.files}
    except (ValueError, OSError, EOFError) as err:
        raise DataError(f"--data: {path} is not a readable .npz file ({err})") from err


def _run_c2st(d: Path) -> list[float] | None:
    """Per-observation C2ST of a finished run (``metrics.json``), or ``None``."""
    try:
        metrics = json.loads((d / "metrics.json").read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    per = metrics.get("per_observation") if isinstance(metrics, dict) else None
    c2st = per.get("c2st") if isinstance(per, dict) else None
    return c2st if isinstance(c2st, list) else None


def certify_run_dir(
    directory: str | Path,
    divergence: str = "kl",
    n: int = 10000,
    data: str | Path | None = None,
    seed: int | None = None,
    config: CertificateConfig | Mapping[str, Any] | None = None,
    write: bool = True,
) -> dict[str, Any]:
    """Certificate of a finished run folder (``vinaflow run`` or a flow run).

    Held-out data: ``data`` (``.npz`` with ``x`` and, for posterior runs, ``y``), else
    for flow runs ``DIR/heldout.npz``, else fresh simulations of the run's problem.
    For posterior runs whose ``metrics.json`` holds a per-observation C2ST against a
    reference posterior, the certificate is checked against it (``consistent_with_c2st``,
    :func:`~vinaflow.evaluation.certificate.check_against_c2st`). Writes
    ``DIR/certificate.json`` (atomically) when ``write``.
    """
    from vinaflow.atomic import atomic_write_json
    from vinaflow.models import Posterior

    d = Path(directory)
    if not d.is_dir():
        raise DataError(f"run folder not found: {d}")
    # the one loader of run folders: a single model's or an ensemble's (training.ensemble)
    posterior = Posterior.load(d)
    seed = int(seed) if seed is not None else 20240607
    if posterior.dim_y == 0:  # an unconditional flow (vinaflow flow)
        model = posterior.model
        src = Path(data) if data is not None else d / "heldout.npz"
        if not src.is_file():
            raise DataError(
                f"no held-out data for this flow run: {src} is missing; pass --data FILE.npz "
                "(array 'x') with data never used in training"
            )
        arrays = _load_heldout(src)
        if "x" not in arrays:
            raise DataError(f"{src} must hold an array 'x' of held-out data")
        cert = certify_flow(model, arrays["x"], divergence, seed=seed, config=config)
    else:
        from vinaflow.config import load_config
        from vinaflow.problems import make_problem

        if data is not None:
            arrays = _load_heldout(data)
            if "x" not in arrays or "y" not in arrays:
                raise DataError(f"{data} must hold arrays 'x' (n, dx) and 'y' (n, dy)")
            cert = certify_posterior(
                posterior, None, divergence, x=arrays["x"], y=arrays["y"], seed=seed, config=config
            )
        else:
            cfg = load_config(d / "config.yaml")
            problem = make_problem(cfg["problem"])
            if not _problem_can_simulate(problem):
                raise DataError(
                    f"run {d} trained on a bank without a simulator: no held-out data can be "
                    "simulated; pass --data HELDOUT.npz with rows never used in training"
                )
            cert = certify_posterior(posterior, problem, divergence, n=n, seed=seed, config=config)
        # The run's own C2ST against the reference posterior, when it measured one: the
        # certificate is checked against the TV lower bound it implies.
        attach_c2st_check(cert, _run_c2st(d))
    if write:
        atomic_write_json(d / "certificate.json", cert)
    return cert


def _cmd_certify(args: argparse.Namespace) -> int:
    overrides = {}
    if args.steps is not None:
        overrides["steps"] = args.steps
    cert = certify_run_dir(
        args.dir,
        divergence=args.divergence,
        n=args.n,
        data=args.data,
        seed=args.seed,
        config=overrides,
        write=not args.no_write,
    )
    if args.json:
        print(json.dumps(cert, indent=2))
    else:
        print(format_certificate(cert))
    return 0


def register(sub: argparse._SubParsersAction) -> None:  # noqa: SLF001
    """Add ``vinaflow certify DIR`` to the command-line parser."""
    p = sub.add_parser(
        "certify",
        help="held-out f-divergence estimate and TV bound of a trained run (an estimate)",
    )
    p.add_argument("dir", help="run folder (vinaflow run or vinaflow flow)")
    p.add_argument("--divergence", default="kl", help="f-divergence (default kl)")
    p.add_argument("-n", type=int, default=10000, help="fresh simulations (simulator problems)")
    p.add_argument("--data", help="held-out .npz: x (and y for posterior runs)")
    p.add_argument("--seed", type=int, default=None, help="seed of fresh simulations / samples")
    p.add_argument("--steps", type=int, default=None, help="critic training steps")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.add_argument("--no-write", action="store_true", help="do not write DIR/certificate.json")
    p.set_defaults(func=_cmd_certify)
