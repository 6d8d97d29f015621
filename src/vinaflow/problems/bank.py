"""Precomputed simulation banks: ``.npz`` files with arrays ``x`` (n, dx) and ``y`` (n, dy),
loaded whole, or folders of ``.npy`` shards (:class:`~vinaflow.problems.shards.ShardedBank`)
that training streams."""

from __future__ import annotations

import json
import os
import zipfile
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from vinaflow.errors import DataError
from vinaflow.problems.base import Problem
from vinaflow.problems.shards import ShardedBank

__all__ = ["BankProblem", "SimulationBank", "load_bank"]


class SimulationBank:
    """Arrays ``x`` and ``y`` plus the metadata of the problem that generated them.

    ``metadata`` is the JSON stored under the key ``problem`` by ``vinaflow simulate``;
    user banks may omit it. ``y_clean`` (optional) holds the noise-free observations of
    the same rows, written for problems with additive Gaussian noise (noise augmentation).
    """

    def __init__(
        self,
        x: Tensor,
        y: Tensor,
        metadata: dict[str, Any] | None = None,
        y_clean: Tensor | None = None,
    ) -> None:
        self.x, self.y, self.metadata, self.y_clean = x, y, dict(metadata or {}), y_clean

    def __len__(self) -> int:
        return self.x.shape[0]

    @property
    def dim_x(self) -> int:
        return self.x.shape[1]

    @property
    def dim_y(self) -> int:
        return self.y.shape[1]

    @property
    def has_clean(self) -> bool:
        return self.y_clean is not None


def load_bank(path: str | Path) -> SimulationBank | ShardedBank:
    """Load and validate a bank; every problem is reported as a :class:`DataError`.

    A folder opens as a :class:`ShardedBank` (validated, not read); a file is loaded.
    """
    if not isinstance(path, (str, os.PathLike)) or not str(path):
        raise DataError(
            f"problem.bank must be the path of an .npz file or a bank folder, got {path!r}"
        )
    path = Path(path)
    if path.is_dir():
        sharded = ShardedBank(path)
        if len(sharded) < 10:
            raise DataError(f"bank {path} has only {len(sharded)} rows; need at least 10")
        return sharded
    if not path.is_file():
        raise DataError(f"problem.bank: file not found: {path}")
    try:
        with np.load(path, allow_pickle=False) as data:
            if not hasattr(data, "files"):
                raise DataError(f"bank {path} is a single .npy array; expected an .npz with x, y")
            missing = [k for k in ("x", "y") if k not in data.files]
            if missing:
                raise DataError(
                    f"bank {path} lacks array(s) {missing}; expected 'x' (n, dx) and 'y' (n, dy)"
                )
            x, y = np.asarray(data["x"]), np.asarray(data["y"])
            y_clean = np.asarray(data["y_clean"]) if "y_clean" in data.files else None
            meta_text = str(data["problem"]) if "problem" in data.files else None
    # A damaged member fails inside numpy's header parser (SyntaxError), zlib or zipfile;
    # a forged header may declare an impossible size (MemoryError).
    except (
        zipfile.BadZipFile,
        zlib.error,
        ValueError,
        OSError,
        EOFError,
        SyntaxError,
        KeyError,
        MemoryError,
        NotImplementedError,  # zipfile, for a damaged compression method or flag
    ) as err:
        raise DataError(f"bank {path} is not a readable .npz file ({err})") from err
    meta: Any = {}
    if meta_text is not None:
        try:
            meta = json.loads(meta_text)
        except ValueError as err:
            raise DataError(f"bank {path}: the 'problem' entry is not valid JSON ({err})") from err
        if not isinstance(meta, dict):
            raise DataError(f"bank {path}: the 'problem' entry must be a JSON object")
    checked = []
    arrays = [("x", x), ("y", y)] + ([("y_clean", y_clean)] if y_clean is not None else [])
    for name, a in arrays:
        if a.ndim == 1:
            a = a[:, None]
        numeric = np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)
        if a.ndim != 2 or not numeric:
            raise DataError(
                f"bank array {name!r} must be a real numeric (n, d) array, got shape "
                f"{a.shape} and dtype {a.dtype}"
            )
        if a.shape[1] == 0:
            raise DataError(f"bank array {name!r} has no columns")
        if not np.isfinite(a).all():
            raise DataError(f"bank array {name!r} contains non-finite values")
        if np.abs(a).max(initial=0.0) > np.finfo(np.float32).max:
            raise DataError(f"bank array {name!r} has values beyond the float32 range")
        checked.append(a)
    x, y = checked[:2]
    if x.shape[0] != y.shape[0]:
        raise DataError(f"bank arrays x and y have different lengths: {len(x)} vs {len(y)}")
    clean = None
    if y_clean is not None:
        if checked[2].shape != y.shape:
            raise DataError(
                f"bank array 'y_clean' must have the shape of 'y' {y.shape}, got {checked[2].shape}"
            )
        clean = torch.as_tensor(checked[2], dtype=torch.float32)
    if x.shape[0] < 10:
        raise DataError(f"bank {path} has only {len(x)} rows; need at least 10")
    return SimulationBank(
        torch.as_tensor(x, dtype=torch.float32),
        torch.as_tensor(y, dtype=torch.float32),
        meta,
        clean,
    )


class BankProblem(Problem):
    """A problem known only through a bank; wraps the generating problem when recorded."""

    name = "bank"

    def __init__(self, bank: SimulationBank | ShardedBank, source: Problem | None = None) -> None:
        self.bank, self.source = bank, source
        self.dim_x, self.dim_y = bank.dim_x, bank.dim_y
        if source is not None and (source.dim_x, source.dim_y) != (self.dim_x, self.dim_y):
            raise DataError(
                f"bank shapes ({self.dim_x}, {self.dim_y}) do not match its recorded problem "
                f"{source.name!r} ({source.dim_x}, {source.dim_y})"
            )
        self.param_names = list(
            source.param_names if source else [f"x{i + 1}" for i in range(self.dim_x)]
        )
        self.prior = source.prior if source else None  # type: ignore[assignment]

    def _source(self, what: str) -> Problem:
        if self.source is None:
            raise NotImplementedError(f"a bank without a recorded problem has no {what}")
        return self.source

    def simulate(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        if self.source is None:
            raise DataError("this bank has no recorded simulator; it cannot simulate new data")
        return self.source.simulate(x, generator)

    def simulate_noise_free(self, x: Tensor) -> Tensor | None:
        return None if self.source is None else self.source.simulate_noise_free(x)

    @property
    def observation_noise_std(self) -> Tensor | None:
        """The recorded problem's noise, usable only with the bank's ``y_clean``."""
        if self.source is None or not self.bank.has_clean:
            return None
        return self.source.observation_noise_std

    @property
    def has_reference_posterior(self) -> bool:
        return self.source is not None and self.source.has_reference_posterior

    def reference_posterior(
        self, y: Tensor, n: int, generator: torch.Generator | None = None
    ) -> Tensor:
        return self._source("reference posterior").reference_posterior(y, n, generator)

    @property
    def has_likelihood(self) -> bool:
        return self.source is not None and self.source.has_likelihood

    def log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        return self._source("likelihood").log_likelihood(x, y)

    def importance_log_likelihood(self, x: Tensor, y: Tensor) -> Tensor:
        return self._source("likelihood").importance_log_likelihood(x, y)
