"""``vinaflow simulate``: chunked, resumable simulation banks for any problem.

A bank is an ``.npz`` file with arrays ``x`` ``(n, dim_x)`` and ``y`` ``(n, dim_y)``, the
generating problem as a JSON string ``problem`` (so that ``problem: {bank: FILE}``
rebuilds the simulator and the reference posterior) and the generation settings as
a JSON string ``simulate`` (``n``, ``seed``, ``chunk_size``, vinaflow version).

While it runs, chunks go to a sidecar folder ``FILE.parts/`` (one atomically written
``.npz`` per chunk plus ``manifest.json``). Killing the command at any moment loses
at most the chunk in progress; the same command again resumes. The bank is a
deterministic function of ``(problem, n, seed, chunk_size)``: chunk ``i`` draws from
its own generator seeded by ``(seed, i)``, whatever the interruptions.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import shutil
import sys
import zipfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from vinaflow._version import __version__
from vinaflow.atomic import atomic_path, atomic_write_json
from vinaflow.errors import ConfigError, DataError
from vinaflow.problems.base import Problem
from vinaflow.problems.registry import (
    BUILTIN_PROBLEMS,
    DATA_KEYS,
    make_problem,
    problem_parameters,
)

__all__ = ["BANK_FORMAT_VERSION", "simulate_bank"]

BANK_FORMAT_VERSION = 1
MANIFEST = "manifest.json"


def _chunk_seed(seed: int, index: int) -> int:
    # SeedSequence mixes (seed, index) into independent streams; a plain ``seed + index``
    # would make bank(seed=1) a shifted copy of bank(seed=0).
    return int(np.random.SeedSequence([seed, index]).generate_state(1, np.uint64)[0])


def _resolved_spec(spec: Mapping[str, Any]) -> dict[str, Any]:
    """The problem spec with every constructor default filled in, as plain JSON values.

    Stored defaults keep a bank reproducible if a later vinaflow changes a default.
    """
    spec = {k: v for k, v in spec.items() if k not in DATA_KEYS}
    if "bank" in spec:
        raise ConfigError("simulate: the problem is a bank already; give a problem name")
    if spec.get("name") in BUILTIN_PROBLEMS:
        spec = {"name": spec["name"], **problem_parameters(spec["name"]), **spec}
    try:
        return json.loads(json.dumps(spec, default=_plain))
    except (TypeError, ValueError) as err:
        raise ConfigError(f"simulate: problem parameters must be plain values ({err})") from err


def _plain(o: Any) -> Any:
    if isinstance(o, tuple):
        return list(o)
    if hasattr(o, "tolist"):
        return o.tolist()
    raise TypeError(f"{type(o).__name__} is not JSON serialisable")


def _positive_int(name: str, value: Any, limit: int = 10**12) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)):
        raise ConfigError(f"simulate: {name} must be an integer, got {value!r}")
    if not 1 <= int(value) <= limit:
        raise ConfigError(f"simulate: {name} must be between 1 and {limit}, got {value}")
    return int(value)


def _check_manifest(found: Mapping[str, Any], wanted: Mapping[str, Any], where: Path) -> None:
    def flat(d: Mapping[str, Any]) -> dict[str, Any]:
        problem = d.get("problem") if isinstance(d.get("problem"), Mapping) else {}
        rest = {k: v for k, v in d.items() if k not in ("problem", "vinaflow_version")}
        return {**rest, **{f"problem.{k}": v for k, v in problem.items()}}  # type: ignore[union-attr]

    old, new = flat(found), flat(wanted)
    diff = [k for k in {**old, **new} if old.get(k) != new.get(k)]
    if diff:
        detail = "; ".join(f"{k}: existing {old.get(k)!r} vs now {new.get(k)!r}" for k in diff)
        raise ConfigError(
            f"simulate: {where} holds a bank generated with other parameters ({detail}). "
            "Rerun with the original parameters to resume, or pass --overwrite to start over"
        )


def _read_npz(path: Path, names: Sequence[str]) -> dict[str, Any] | None:
    """Arrays of a complete ``.npz`` or ``None`` when it is unreadable (never unpickles)."""
    try:
        with np.load(path, allow_pickle=False) as f:
            return {k: f[k] for k in names}
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile):
        return None


def _bank_settings(path: Path) -> dict[str, Any] | None:
    arrays = _read_npz(path, ("problem", "simulate"))
    if arrays is None:
        return None
    try:
        return {
            "problem": json.loads(str(arrays["problem"])),
            **json.loads(str(arrays["simulate"])),
        }
    except (TypeError, ValueError):
        return None


def _remove_temporaries(folder: Path, prefix: str) -> None:
    # atomic_path removes its temporary on exceptions, but a SIGKILL leaves it behind.
    for p in folder.glob(f"{prefix}*"):
        with contextlib.suppress(OSError):
            p.unlink()


def _progress(total: int, initial: int, enabled: bool):  # noqa: ANN202
    if not enabled:
        return None
    return tqdm(
        total=total,
        initial=initial,
        desc="simulating",
        unit="sim",
        file=sys.stderr,
        dynamic_ncols=True,
        mininterval=0.5,
        leave=False,
    )


def _simulate_chunk(problem: Problem, size: int, seed: int) -> dict[str, np.ndarray]:
    """``x``, ``y`` and, for problems with additive noise, ``y_clean`` of one chunk."""
    g = torch.Generator().manual_seed(seed)
    x = problem.sample_prior(size, g)
    y, clean = problem.simulate_with_clean_checked(x, g)
    out = {"x": x.detach().cpu().numpy(), "y": y.detach().cpu().numpy()}
    if clean is not None:
        out["y_clean"] = clean.detach().cpu().numpy()
    return out


def simulate_bank(
    problem_spec: Mapping[str, Any],
    n: int,
    out: str | Path,
    chunk_size: int = 10_000,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
) -> dict[str, Any]:
    """Simulate ``n`` pairs ``(x, y)`` of a problem into the bank ``out`` (``.npz``).

    Resumes from ``out.parts/`` when a previous call with the same arguments was
    interrupted; raises :class:`ConfigError` when the existing partial or finished
    output was generated with different arguments (unless ``overwrite``).

    Returns the bank's settings (problem, n, seed, chunk_size, dim_x, dim_y).

    Example:
        >>> # simulate_bank({"name": "gaussian-linear"}, 100_000, "bank.npz")
    """
    if not isinstance(problem_spec, Mapping):
        raise ConfigError("simulate: the problem must be a mapping such as {name: NAME, ...}")
    n = _positive_int("n", n)
    chunk_size = _positive_int("chunk_size", chunk_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    out = Path(out)
    if out.suffix != ".npz":
        raise ConfigError(f"simulate: --out must end in .npz, got {out}")
    if out.is_dir():
        raise ConfigError(f"simulate: --out {out} is a folder; give a file name ending in .npz")
    spec = _resolved_spec(problem_spec)
    problem = make_problem(spec)
    settings = {
        "format_version": BANK_FORMAT_VERSION,
        "problem": spec,
        "n": n,
        "seed": int(seed),
        "chunk_size": chunk_size,
        "dim_x": int(problem.dim_x),
        "dim_y": int(problem.dim_y),
        "vinaflow_version": __version__,
    }
    parts = out.with_name(out.name + ".parts")
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out.parent, f".{out.name}.")
    if overwrite:
        shutil.rmtree(parts, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            out.unlink()
    if out.exists():
        found = _bank_settings(out)
        if found is None:
            raise DataError(
                f"simulate: {out} exists but is not a vinaflow bank; pass --overwrite to replace it"
            )
        _check_manifest(found, settings, out)
        # A kill between the final rename and removing the sidecar leaves both.
        shutil.rmtree(parts, ignore_errors=True)
        return {**found, "resumed_chunks": 0, "already_complete": True, "path": str(out)}

    parts.mkdir(exist_ok=True)
    _remove_temporaries(parts, ".")
    manifest = parts / MANIFEST
    if manifest.exists():
        try:
            found = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"simulate: {manifest} is unreadable ({err}); use --overwrite") from err
        _check_manifest(found, settings, parts)
    else:
        atomic_write_json(manifest, settings)

    n_chunks = math.ceil(n / chunk_size)
    sizes = [min(chunk_size, n - i * chunk_size) for i in range(n_chunks)]
    names = ("x", "y", "y_clean") if problem.observation_noise_std is not None else ("x", "y")
    done = []
    for i, size in enumerate(sizes):
        arrays = _read_npz(parts / f"chunk_{i:06d}.npz", names)
        ok = arrays is not None and arrays["x"].shape == (size, problem.dim_x)
        ok = (
            ok
            and all(
                arrays[k].shape == (size, problem.dim_y)  # type: ignore[index]
                for k in names[1:]
            )
        )
        done.append(ok)
    bar = _progress(n, sum(s for s, d in zip(sizes, done, strict=True) if d), progress)
    try:
        for i, size in enumerate(sizes):
            if done[i]:
                continue
            chunk = _simulate_chunk(problem, size, _chunk_seed(int(seed), i))
            with atomic_path(parts / f"chunk_{i:06d}.npz", suffix=".npz") as tmp:
                with open(tmp, "wb") as fh:
                    np.savez(fh, **chunk)
            if bar is not None:
                bar.update(size)
    finally:
        if bar is not None:
            bar.close()

    columns: dict[str, list[np.ndarray]] = {k: [] for k in names}
    for i in range(n_chunks):
        arrays = _read_npz(parts / f"chunk_{i:06d}.npz", names)
        if arrays is None:  # only if someone edits the sidecar while we run
            raise DataError(f"simulate: chunk {i} in {parts} vanished or is unreadable; rerun")
        for k in names:
            columns[k].append(arrays[k])
    meta = {k: v for k, v in settings.items() if k != "problem"}
    with atomic_path(out, suffix=".npz") as tmp:
        with open(tmp, "wb") as fh:
            np.savez(
                fh,
                **{k: np.concatenate(v) for k, v in columns.items()},
                problem=np.array(json.dumps(spec)),
                simulate=np.array(json.dumps(meta)),
            )
    shutil.rmtree(parts, ignore_errors=True)
    _fsync_dir(out.parent)
    return {**settings, "resumed_chunks": sum(done), "already_complete": False, "path": str(out)}


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power loss (POSIX only).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
