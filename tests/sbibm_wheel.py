"""A zip laid out like sbibm's wheel, for the peers tests (no download)."""

from __future__ import annotations

import bz2
import zipfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np


def csv_bytes(arr: np.ndarray, prefix: str) -> bytes:
    """``arr`` as sbibm writes it: a header ``prefix_1,...`` and one row per line."""
    head = ",".join(f"{prefix}_{i + 1}" for i in range(arr.shape[1]))
    rows = "\n".join(",".join(f"{v:.8g}" for v in r) for r in arr)
    return f"{head}\n{rows}\n".encode()


def write_wheel(
    wheel: Path,
    task: str,
    observations: Sequence[tuple[np.ndarray, np.ndarray, np.ndarray]],
    extra: dict[str, str] | None = None,
) -> Path:
    """Write ``(y, theta, reference_samples)`` per observation (numbered from 1) of ``task``,
    and the ``extra`` members (path in the wheel -> text)."""
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr("sbibm/__init__.py", "")
        for name, text in (extra or {}).items():
            zf.writestr(name, text)
        for k, (y, theta, samples) in enumerate(observations, start=1):
            base = f"sbibm/tasks/{task}/files/num_observation_{k}/"
            zf.writestr(base + "observation.csv", csv_bytes(y, "data"))
            zf.writestr(base + "true_parameters.csv", csv_bytes(theta, "parameter"))
            zf.writestr(
                base + "reference_posterior_samples.csv.bz2",
                bz2.compress(csv_bytes(samples, "parameter")),
            )
    return wheel
