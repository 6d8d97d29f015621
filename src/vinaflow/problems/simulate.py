"""``vinaflow simulate``: chunked, resumable simulation banks for any problem.

A bank is either an ``.npz`` file with arrays ``x`` ``(n, dim_x)`` and ``y``
``(n, dim_y)``, or a folder of ``.npy`` shards (:mod:`vinaflow.problems.shards`) that
training streams without loading it whole. Both record the generating problem
(``problem``, so that ``problem: {bank: PATH}`` rebuilds the simulator and the reference
posterior) and the generation settings (``simulate``: ``n``, ``seed``, ``chunk_size``,
vinaflow version).

While it runs, chunks go to a sidecar folder ``FILE.parts/`` (an ``.npz`` bank) or
straight into the bank folder as its shards, each written atomically, beside a
``manifest.json``. Killing the command at any moment loses at most the chunks in
progress; the same command again resumes. The bank is a deterministic function of
``(problem, n, seed, chunk_size)``: chunk ``i`` draws from its own generator seeded by
``(seed, i)``, whatever the interruptions, the format or the backend (local or Ray).
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
from vinaflow.cluster import check_ray_address, require_ray, run_on_ray
from vinaflow.errors import ConfigError, DataError
from vinaflow.problems import shards
from vinaflow.problems.base import Problem
from vinaflow.problems.registry import (
    BUILTIN_PROBLEMS,
    DATA_KEYS,
    make_problem,
    problem_parameters,
)

__all__ = ["BACKENDS", "BANK_FORMAT_VERSION", "simulate_bank"]

BANK_FORMAT_VERSION = 1
#: Where chunks are simulated: in this process, or as tasks on a Ray cluster.
BACKENDS = ("local", "ray")
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


class _NpzStore:
    """Chunks in the sidecar ``FILE.parts/``, joined into one ``.npz`` at the end."""

    def __init__(self, out: Path, names: Sequence[str]) -> None:
        self.out, self.names = out, names
        self.parts = out.with_name(out.name + ".parts")

    def complete_settings(self) -> dict[str, Any] | None:
        if not self.out.exists():
            return None
        found = _bank_settings(self.out)
        if found is None:
            raise DataError(
                f"simulate: {self.out} exists but is not a vinaflow bank; "
                "pass --overwrite to replace it"
            )
        return found

    def discard(self) -> None:
        shutil.rmtree(self.parts, ignore_errors=True)
        with contextlib.suppress(FileNotFoundError):
            self.out.unlink()

    def _chunk(self, i: int) -> Path:
        return self.parts / f"chunk_{i:06d}.npz"

    def has_chunk(self, i: int, shapes: Mapping[str, tuple[int, int]]) -> bool:
        arrays = _read_npz(self._chunk(i), self.names)
        return arrays is not None and all(arrays[k].shape == shapes[k] for k in self.names)

    def write_chunk(self, i: int, chunk: Mapping[str, np.ndarray]) -> None:
        with atomic_path(self._chunk(i), suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, **chunk)

    def finish(self, settings: Mapping[str, Any], sizes: Sequence[int]) -> None:
        columns: dict[str, list[np.ndarray]] = {k: [] for k in self.names}
        for i in range(len(sizes)):
            arrays = _read_npz(self._chunk(i), self.names)
            if arrays is None:  # only if someone edits the sidecar while we run
                raise DataError(f"simulate: chunk {i} in {self.parts} vanished or is unreadable")
            for k in self.names:
                columns[k].append(arrays[k])
        meta = {k: v for k, v in settings.items() if k != "problem"}
        with atomic_path(self.out, suffix=".npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(
                    fh,
                    **{k: np.concatenate(v) for k, v in columns.items()},
                    problem=np.array(json.dumps(settings["problem"])),
                    simulate=np.array(json.dumps(meta)),
                )
        shutil.rmtree(self.parts, ignore_errors=True)
        _fsync_dir(self.out.parent)


class _ShardStore:
    """Chunks written as the ``.npy`` shards of a bank folder; ``bank.json`` at the end."""

    def __init__(self, out: Path, names: Sequence[str]) -> None:
        self.out, self.names, self.parts = out, names, out

    def complete_settings(self) -> dict[str, Any] | None:
        index = self.out / shards.INDEX
        if not index.exists():
            return None
        try:
            found = json.loads(index.read_text(encoding="utf-8"))
            return {"problem": found["problem"], **found["simulate"]}
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise DataError(
                f"simulate: {index} is unreadable ({err}); pass --overwrite to start over"
            ) from err

    def discard(self) -> None:
        shutil.rmtree(self.out, ignore_errors=True)

    def has_chunk(self, i: int, shapes: Mapping[str, tuple[int, int]]) -> bool:
        try:
            return all(
                shards.shard_shape(shards.shard_path(self.out, k, i))[0] == shapes[k]
                for k in self.names
            )
        except DataError:
            return False

    def write_chunk(self, i: int, chunk: Mapping[str, np.ndarray]) -> None:
        shards.write_shard(self.out, i, chunk)

    def finish(self, settings: Mapping[str, Any], sizes: Sequence[int]) -> None:
        meta = {k: v for k, v in settings.items() if k != "problem"}
        info = {"problem": settings["problem"], "simulate": meta}
        shards.write_index(self.out, sizes, self.names, info)
        with contextlib.suppress(FileNotFoundError):
            (self.out / MANIFEST).unlink()
        _fsync_dir(self.out)


_WORKER_PROBLEMS: dict[str, Problem] = {}


def _ray_chunk(payload: tuple[dict[str, Any], int, int, int]) -> tuple[int, dict[str, np.ndarray]]:
    """One chunk on a Ray worker; the problem is built once per worker process."""
    spec, index, size, seed = payload
    key = json.dumps(spec, sort_keys=True)
    if key not in _WORKER_PROBLEMS:
        _WORKER_PROBLEMS[key] = make_problem(spec)
    return index, _simulate_chunk(_WORKER_PROBLEMS[key], size, seed)


def simulate_bank(
    problem_spec: Mapping[str, Any],
    n: int,
    out: str | Path,
    chunk_size: int = 10_000,
    seed: int = 0,
    progress: bool = True,
    overwrite: bool = False,
    backend: str = "local",
    address: str | None = None,
    workers: int | None = None,
) -> dict[str, Any]:
    """Simulate ``n`` pairs ``(x, y)`` of a problem into the bank ``out``.

    ``out`` ending in ``.npz`` is one file loaded whole by training; any other path is a
    folder of ``.npy`` shards, one per chunk, that training streams with bounded memory
    (:mod:`vinaflow.problems.shards`). Both hold the same rows for the same arguments.

    ``backend="ray"`` farms the chunks to Ray workers (``address`` of a running cluster,
    or a local instance with ``workers`` CPUs); the driver writes every chunk, so the
    bank is the same, bit for bit, as the local backend's, and a killed worker's chunk
    is retried by Ray. Custom ``module:function`` simulators must be importable on the
    workers (install the module there, or ship it with Ray's ``runtime_env``).

    Resumes from the chunks already written when a previous call with the same
    arguments was interrupted; raises :class:`ConfigError` when the existing partial or
    finished output was generated with different arguments (unless ``overwrite``).

    Returns the bank's settings (problem, n, seed, chunk_size, dim_x, dim_y).

    Example:
        >>> # simulate_bank({"name": "ocean-acoustics"}, 10_000_000, "ocean_bank/")
    """
    if not isinstance(problem_spec, Mapping):
        raise ConfigError("simulate: the problem must be a mapping such as {name: NAME, ...}")
    n = _positive_int("n", n)
    chunk_size = _positive_int("chunk_size", chunk_size)
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ConfigError(f"simulate: seed must be a non-negative integer, got {seed!r}")
    if backend not in BACKENDS:
        raise ConfigError(
            f"simulate: --backend must be one of {', '.join(BACKENDS)}, got {backend!r}"
        )
    if address and backend != "ray":
        raise ConfigError("simulate: --address needs --backend ray")
    if workers is not None:
        workers = _positive_int("workers", workers, 10_000)
    out = Path(out)
    sharded = out.suffix != ".npz"
    if sharded and (out.is_file() or (out.suffix and not out.is_dir())):
        # A name like bank.txt is far more likely a mistyped file than a shard folder.
        raise ConfigError(
            f"simulate: --out {out} must end in .npz (one file) or name a folder without a "
            "file extension (a sharded bank)"
        )
    if not sharded and out.is_dir():
        raise ConfigError(f"simulate: --out {out} is a folder; give a file name ending in .npz")
    spec = _resolved_spec(problem_spec)
    problem = make_problem(spec)
    if backend == "ray":
        require_ray()  # before anything is written
        if address:
            check_ray_address(address, flag="--address")
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
    names = ("x", "y", "y_clean") if problem.observation_noise_std is not None else ("x", "y")
    store = (_ShardStore if sharded else _NpzStore)(out, names)
    out.parent.mkdir(parents=True, exist_ok=True)
    _remove_temporaries(out.parent, f".{out.name}.")
    if overwrite:
        store.discard()
    found = store.complete_settings()
    if found is not None:
        _check_manifest(found, settings, out)
        # A kill between the final rename and removing the sidecar leaves both.
        if not sharded:
            shutil.rmtree(store.parts, ignore_errors=True)
        return {**found, "resumed_chunks": 0, "already_complete": True, "path": str(out)}

    parts = store.parts
    parts.mkdir(exist_ok=True)
    _remove_temporaries(parts, ".")
    manifest = parts / MANIFEST
    if manifest.exists():
        try:
            previous = json.loads(manifest.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"simulate: {manifest} is unreadable ({err}); use --overwrite") from err
        _check_manifest(previous, settings, parts)
    elif sharded and any(parts.iterdir()):
        raise ConfigError(
            f"simulate: --out {out} is a folder with other files in it; give a new or empty "
            "folder (or --overwrite to delete its contents)"
        )
    else:
        atomic_write_json(manifest, settings)

    n_chunks = math.ceil(n / chunk_size)
    sizes = [min(chunk_size, n - i * chunk_size) for i in range(n_chunks)]

    def shapes(size: int) -> dict[str, tuple[int, int]]:
        return {k: (size, problem.dim_x if k == "x" else problem.dim_y) for k in names}

    done = [store.has_chunk(i, shapes(size)) for i, size in enumerate(sizes)]
    todo = [i for i in range(n_chunks) if not done[i]]
    bar = _progress(n, sum(s for s, d in zip(sizes, done, strict=True) if d), progress)

    def write(i: int, chunk: Mapping[str, np.ndarray]) -> None:
        store.write_chunk(i, chunk)
        if bar is not None:
            bar.update(sizes[i])

    try:
        if backend == "ray":
            payloads = [(spec, i, sizes[i], _chunk_seed(int(seed), i)) for i in todo]
            run_on_ray(_ray_chunk, payloads, workers, address, lambda r: write(*r))
        else:
            for i in todo:
                write(i, _simulate_chunk(problem, sizes[i], _chunk_seed(int(seed), i)))
    finally:
        if bar is not None:
            bar.close()
    store.finish(settings, sizes)
    return {
        **settings,
        "resumed_chunks": sum(done),
        "already_complete": False,
        "path": str(out),
        "backend": backend,
    }


def _fsync_dir(folder: Path) -> None:
    # Makes the rename itself durable across a power loss (POSIX only).
    with contextlib.suppress(OSError, AttributeError):
        fd = os.open(folder, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
