"""Sharded simulation banks: a folder of ``.npy`` shards that need not fit in memory.

Layout of a bank folder ``BANK/``::

    bank.json            what is in it: arrays, dims, rows per shard, the problem, settings
    x-000000.npy         shard 0 of x (rows, dim_x), float32
    y-000000.npy         shard 0 of y (rows, dim_y)
    y_clean-000000.npy   shard 0 of the noise-free y (problems with additive noise)
    ...

``bank.json`` is written last, atomically: a folder without it is a bank still being
simulated (its ``manifest.json`` says with what), never a truncated one.

Why plain ``.npy`` shards rather than zarr or HDF5: numpy memory-maps them
(``np.load(mmap_mode="r")``) with no extra dependency, any tool reads them, each shard
is one file written atomically (so a killed writer never leaves a half shard), and
one shard is exactly one simulation chunk of ``vinaflow simulate``, which makes the
sharded bank hold the same rows, bit for bit, as the ``.npz`` bank of the same
arguments.

Readers copy the rows they ask for out of a short-lived memory map, so resident memory
stays at what the caller keeps, not at the size of the bank.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from vinaflow.atomic import atomic_path, atomic_write_json
from vinaflow.errors import DataError

__all__ = [
    "INDEX",
    "ShardedBank",
    "is_sharded_bank",
    "shard_path",
    "shard_shape",
    "write_index",
    "write_shard",
]

#: The file that makes a folder a complete sharded bank.
INDEX = "bank.json"
FORMAT = "vinaflow-shards"
ARRAYS = ("x", "y", "y_clean")


def shard_path(folder: Path, array: str, index: int) -> Path:
    return folder / f"{array}-{index:06d}.npy"


def is_sharded_bank(path: str | Path) -> bool:
    return Path(path).is_dir()


def write_shard(folder: Path, index: int, arrays: Mapping[str, np.ndarray]) -> None:
    """Write shard ``index`` of every array, each file atomically."""
    for name, a in arrays.items():
        with atomic_path(shard_path(folder, name, index), suffix=".npy") as tmp:
            with open(tmp, "wb") as fh:
                np.save(fh, np.ascontiguousarray(a, dtype=np.float32))


def write_index(folder: Path, rows: Sequence[int], names: Sequence[str], info: Mapping) -> None:
    """Mark ``folder`` complete: ``bank.json`` with the shard sizes and ``info``."""
    atomic_write_json(
        folder / INDEX,
        {"format": FORMAT, **info, "arrays": list(names), "rows": [int(r) for r in rows]},
    )


def shard_shape(path: Path) -> tuple[tuple[int, ...], np.dtype]:
    """Shape and dtype from the ``.npy`` header; a missing or truncated file is a DataError."""
    if not path.is_file():
        raise DataError(f"bank shard missing: {path}")
    try:
        a = np.load(path, mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError, EOFError, SyntaxError) as err:
        # numpy refuses to map a file shorter than its header says ("mmap length is
        # greater than file size"), which is how a truncated shard shows.
        raise DataError(f"bank shard {path} is truncated or not an .npy array ({err})") from err
    return tuple(a.shape), a.dtype


class ShardedBank:
    """A complete bank folder, validated on opening (every shard's header, not its rows).

    ``len(bank)`` rows; :meth:`read` copies a row range of one array into memory.
    Values are checked for finiteness as they are read (a full scan of a 10-million-row
    bank on opening would cost more than an epoch of reading it).
    """

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        index_file = self.folder / INDEX
        if not index_file.is_file():
            if (self.folder / "manifest.json").is_file():
                raise DataError(
                    f"bank {self.folder} is incomplete (no {INDEX}); rerun the "
                    "`vinaflow simulate` command that writes it to finish it"
                )
            raise DataError(f"bank folder {self.folder} has no {INDEX}; it is not a vinaflow bank")
        try:
            index = json.loads(index_file.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise DataError(f"bank {index_file} is unreadable ({err})") from err
        if not isinstance(index, dict) or index.get("format") != FORMAT:
            raise DataError(f"bank {index_file}: 'format' must be {FORMAT!r}")
        rows, names = index.get("rows"), index.get("arrays")
        if (
            not isinstance(rows, list)
            or not rows
            or not all(isinstance(r, int) and r > 0 for r in rows)
        ):
            raise DataError(f"bank {index_file}: 'rows' must be a list of positive shard sizes")
        if not isinstance(names, list) or not {"x", "y"} <= set(names) <= set(ARRAYS):
            raise DataError(f"bank {index_file}: 'arrays' must hold 'x', 'y' (and 'y_clean')")
        self.index: dict[str, Any] = index
        self.rows: list[int] = rows
        self.names: list[str] = names
        self.offsets = np.concatenate([[0], np.cumsum(rows)]).astype(np.int64)
        dims: dict[str, int] = {}
        for name in names:
            for i, n in enumerate(rows):
                path = shard_path(self.folder, name, i)
                shape, dtype = shard_shape(path)
                if len(shape) != 2 or shape[0] != n or not np.issubdtype(dtype, np.floating):
                    raise DataError(
                        f"bank shard {path} has shape {shape} and dtype {dtype}; {INDEX} "
                        f"says {n} rows of a float (rows, d) array"
                    )
                if dims.setdefault(name, shape[1]) != shape[1]:
                    raise DataError(
                        f"bank shards disagree in shape: {path} has {shape[1]} columns, "
                        f"{shard_path(self.folder, name, 0).name} has {dims[name]}"
                    )
        if "y_clean" in dims and dims["y_clean"] != dims["y"]:
            raise DataError(
                f"bank {self.folder}: y_clean has {dims['y_clean']} columns, y {dims['y']}"
            )
        self.dim_x, self.dim_y = dims["x"], dims["y"]
        problem = index.get("problem", {})
        self.metadata: dict[str, Any] = dict(problem) if isinstance(problem, dict) else {}

    def __len__(self) -> int:
        return int(self.offsets[-1])

    @property
    def has_clean(self) -> bool:
        return "y_clean" in self.names

    def __repr__(self) -> str:
        return (
            f"ShardedBank({str(self.folder)!r}, n={len(self)}, dim_x={self.dim_x}, "
            f"dim_y={self.dim_y}, shards={len(self.rows)})"
        )

    def pieces(self, start: int, stop: int) -> Iterator[tuple[int, int, int]]:
        """``(shard, first, last)`` row ranges inside shards that cover ``start:stop``."""
        i = int(np.searchsorted(self.offsets, start, side="right")) - 1
        while start < stop:
            end = min(stop, int(self.offsets[i + 1]))
            yield i, start - int(self.offsets[i]), end - int(self.offsets[i])
            start, i = end, i + 1

    def read(self, name: str, start: int, stop: int) -> np.ndarray:
        """Rows ``start:stop`` of array ``name`` as a float32 array in memory."""
        if name not in self.names:
            raise DataError(f"bank {self.folder} has no array {name!r}")
        if not 0 <= start <= stop <= len(self):
            raise DataError(f"bank rows {start}:{stop} are outside 0:{len(self)}")
        parts = []
        for shard, a, b in self.pieces(start, stop):
            path = shard_path(self.folder, name, shard)
            try:
                mapped = np.load(path, mmap_mode="r", allow_pickle=False)
                part = np.array(mapped[a:b], dtype=np.float32)
            except (OSError, ValueError) as err:
                raise DataError(f"bank shard {path} became unreadable ({err})") from err
            del mapped  # unmaps: the pages read stop counting as this process's memory
            if not np.isfinite(part).all():
                raise DataError(f"bank shard {path} contains non-finite values")
            parts.append(part)
        if not parts:
            width = self.dim_x if name == "x" else self.dim_y
            return np.zeros((0, width), np.float32)
        return parts[0] if len(parts) == 1 else np.concatenate(parts)

    def read_rows(self, name: str, ranges: Sequence[tuple[int, int]]) -> np.ndarray:
        """The rows of several ``(start, stop)`` ranges, concatenated in that order."""
        return np.concatenate([self.read(name, a, b) for a, b in ranges])
