"""Crash-safe file writing: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

__all__ = ["atomic_path", "atomic_write_json", "atomic_write_text"]


@contextlib.contextmanager
def atomic_path(path: str | Path, suffix: str = "") -> Iterator[Path]:
    """Yield a temporary path; on success it replaces ``path`` atomically (``os.replace``).

    A crash at any moment leaves either the old file or the new one, never a
    truncated file; the temporary file is removed on error.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix or ".tmp", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as fh:
            os.fsync(fh.fileno())
        # mkstemp creates 0600; a saved file gets the permissions open() would give it,
        # so a bank or model written for a group stays readable by that group.
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _write(path: str | Path, writer: Callable[[IO[str]], None]) -> None:
    with atomic_path(path) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        writer(fh)


def atomic_write_text(path: str | Path, text: str) -> None:
    _write(path, lambda fh: fh.write(text))


def atomic_write_json(path: str | Path, obj: Any) -> None:
    """Write ``obj`` as strict JSON (RFC 8259): a non-finite number (an interval a single
    seed does not have, a failed metric) is written as ``null``. Python's default
    ``NaN`` token is not JSON: other readers reject it, and it breaks sorting and
    comparison in tools that read the numbers back."""
    strict = _strict(obj)
    _write(path, lambda fh: json.dump(strict, fh, indent=2, sort_keys=False, allow_nan=False))


def _strict(o: Any) -> Any:
    """``o`` with NumPy values and paths made plain and non-finite floats made ``None``."""
    if isinstance(o, float):
        return o if math.isfinite(o) else None
    if isinstance(o, dict):
        return {k: _strict(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_strict(v) for v in o]
    if hasattr(o, "tolist"):  # NumPy arrays and scalars, torch tensors
        return _strict(o.tolist())
    if isinstance(o, Path):
        return str(o)
    if o is None or isinstance(o, (str, int)):  # bool is an int
        return o
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
