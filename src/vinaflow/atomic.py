"""Crash-safe file writing: write to a temporary file beside the target, then rename."""

from __future__ import annotations

import contextlib
import json
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
    _write(path, lambda fh: json.dump(obj, fh, indent=2, sort_keys=False, default=_jsonable))


def _jsonable(o: Any) -> Any:
    if hasattr(o, "tolist"):
        return o.tolist()
    if isinstance(o, Path):
        return str(o)
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")
