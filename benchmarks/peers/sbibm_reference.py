"""Read sbibm's reference posteriors directly from the sbibm wheel (no sbibm install).

sbibm (Lueckmann et al. 2021) ships, per task and per observation ``k = 1..10``::

    sbibm/tasks/<task>/files/num_observation_<k>/observation.csv
    sbibm/tasks/<task>/files/num_observation_<k>/true_parameters.csv
    sbibm/tasks/<task>/files/num_observation_<k>/reference_posterior_samples.csv.bz2

each a CSV with one header line. sbibm does not install beside current sbi, but its wheel
is a plain zip archive, so we read these files with :mod:`zipfile`, :mod:`bz2` and
:mod:`csv`. Obtain the wheel once (the benchmark never downloads anything)::

    pip download sbibm==1.1.0 --no-deps -d ~/.cache/vinaflow/sbibm

and pass ``--sbibm-wheel PATH`` to the benchmark, or leave it in the cache directory
(:func:`cache_dir`), where :func:`find_wheel` looks for ``sbibm-*.whl``. Decoded arrays
are cached as ``.npy`` files beside it, keyed by the wheel's name and size.
"""

from __future__ import annotations

import bz2
import csv
import io
import os
import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

__all__ = [
    "SBIBM_VERSION",
    "TASKS",
    "ReferenceObservation",
    "cache_dir",
    "find_wheel",
    "list_observations",
    "load_reference",
    "load_task",
    "read_csv_array",
]

SBIBM_VERSION = "1.1.0"
TASKS = (
    "two_moons",
    "gaussian_linear",
    "gaussian_mixture",
    "gaussian_linear_uniform",
    "bernoulli_glm",
    "sir",
    "lotka_volterra",
)


@dataclass(frozen=True)
class ReferenceObservation:
    """One sbibm observation: ``observation`` (dy,), ``true_parameters`` (dx,), ``samples``
    (n, dx) from the reference posterior."""

    task: str
    num_observation: int
    observation: np.ndarray
    true_parameters: np.ndarray
    samples: np.ndarray


def cache_dir() -> Path:
    """``$VINAFLOW_CACHE/sbibm`` (default ``~/.cache/vinaflow/sbibm``)."""
    root = os.environ.get("VINAFLOW_CACHE") or Path.home() / ".cache" / "vinaflow"
    return Path(root) / "sbibm"


def find_wheel(path: str | Path | None = None) -> Path:
    """The sbibm wheel at ``path``, or the newest ``sbibm-*.whl`` in :func:`cache_dir`.

    Raises :class:`FileNotFoundError` with the download command if there is none.
    """
    if path is not None:
        p = Path(path)
        if p.is_dir():
            found = sorted(p.glob("sbibm-*.whl"))
            if found:
                return found[-1]
        elif p.is_file():
            return p
        raise FileNotFoundError(f"no sbibm wheel at {p}")
    found = sorted(cache_dir().glob("sbibm-*.whl"))
    if not found:
        raise FileNotFoundError(
            f"no sbibm wheel in {cache_dir()}; get one with: pip download "
            f"sbibm=={SBIBM_VERSION} --no-deps -d {cache_dir()}"
        )
    return found[-1]


def read_csv_array(data: bytes) -> np.ndarray:
    """A CSV with one header line (``.bz2``-compressed or not) -> float64 array (rows, cols)."""
    if data[:3] == b"BZh":
        data = bz2.decompress(data)
    rows = list(csv.reader(io.StringIO(data.decode("utf-8"))))
    body = [r for r in rows[1:] if r]
    if not body:
        raise ValueError("CSV has no data rows")
    return np.asarray([[float(v) for v in r] for r in body], dtype=np.float64)


def _member(task: str, k: int, name: str) -> str:
    return f"sbibm/tasks/{task}/files/num_observation_{k}/{name}"


def list_observations(wheel: str | Path, task: str) -> list[int]:
    """Observation numbers with reference samples for ``task`` in the wheel, sorted."""
    prefix = f"sbibm/tasks/{task}/files/num_observation_"
    out = set()
    with zipfile.ZipFile(wheel) as zf:
        for n in zf.namelist():
            if n.startswith(prefix) and n.endswith("/reference_posterior_samples.csv.bz2"):
                out.add(int(n[len(prefix) :].split("/")[0]))
    return sorted(out)


def _cached(wheel: Path, task: str, k: int, name: str, cache: Path | None) -> np.ndarray:
    member = _member(task, k, name)
    target = None
    if cache is not None:
        key = f"{wheel.stem}-{wheel.stat().st_size}"
        target = cache / key / task / f"{k}-{name.split('.')[0]}.npy"
        if target.is_file():
            return np.load(target, allow_pickle=False)
    with zipfile.ZipFile(wheel) as zf:
        try:
            raw = zf.read(member)
        except KeyError as err:
            raise FileNotFoundError(f"{member} is not in {wheel}") from err
    arr = read_csv_array(raw)
    if target is not None:
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_suffix(f".tmp{os.getpid()}.npy")
        np.save(tmp, arr, allow_pickle=False)
        os.replace(tmp, target)
    return arr


def load_reference(
    wheel: str | Path, task: str, num_observation: int, cache: str | Path | None = None
) -> ReferenceObservation:
    """Observation, true parameters and reference samples of one sbibm observation."""
    w = Path(wheel)
    c = Path(cache) if cache is not None else None
    obs = _cached(w, task, num_observation, "observation.csv", c)
    theta = _cached(w, task, num_observation, "true_parameters.csv", c)
    samples = _cached(w, task, num_observation, "reference_posterior_samples.csv.bz2", c)
    return ReferenceObservation(task, num_observation, obs[0], theta[0], samples)


def load_task(
    wheel: str | Path, task: str, cache: str | Path | None = None
) -> list[ReferenceObservation]:
    """All observations (usually 10) of ``task`` from the wheel."""
    return [load_reference(wheel, task, k, cache) for k in list_observations(wheel, task)]
