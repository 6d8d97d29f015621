r"""Sample-based precision and recall of a generative model (k-NN manifolds).

Kynkäänniemi et al. (2019): the data manifold is estimated as the union of balls
around each data point :math:`r_i` with radius :math:`\rho_k(r_i)`, the distance to its
k-th nearest other data point; likewise for the model samples. Then

* **precision** = fraction of model samples inside the data manifold (sample quality),
* **recall** = fraction of data points inside the model manifold (coverage).

Both lie in [0, 1]; a mode-dropping model has high precision and low recall, one that
spreads mass off the data the reverse. With equal sample sizes and identical laws both
are close to 1 (for k = 3, about 0.9-1.0 in 2-D). Compare models with the same ``k`` and
sample sizes: the estimates depend on both.

References:
    Kynkäänniemi, Karras, Laine, Lehtinen, Aila. Improved Precision and Recall Metric
    for Assessing Generative Models. NeurIPS 2019.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from vinaflow.errors import DataError
from vinaflow.evaluation.metrics import check_samples

__all__ = ["knn_radii", "precision_recall"]


def _sq_dists(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    d = (a * a).sum(1)[:, None] + (b * b).sum(1)[None, :] - 2.0 * a @ b.T
    return np.maximum(d, 0.0)


def knn_radii(x: np.ndarray, k: int = 3, chunk: int = 2048) -> np.ndarray:
    """Distance of each row of ``x`` to its ``k``-th nearest *other* row."""
    if k >= len(x):
        raise DataError(f"k={k} needs more than k samples, got {len(x)}")
    out = np.empty(len(x))
    for i in range(0, len(x), chunk):
        d = _sq_dists(x[i : i + chunk], x)
        # index k, not k - 1: the smallest distance is the point to itself
        out[i : i + chunk] = np.sqrt(np.partition(d, k, axis=1)[:, k])
    return out


def _coverage(points: np.ndarray, centres: np.ndarray, radii: np.ndarray, chunk: int) -> float:
    inside = np.zeros(len(points), dtype=bool)
    r2 = radii**2
    for i in range(0, len(points), chunk):
        d = _sq_dists(points[i : i + chunk], centres)
        inside[i : i + chunk] = (d <= r2[None, :]).any(1)
    return float(inside.mean())


def precision_recall(
    data: Any,
    model: Any,
    k: int = 3,
    max_samples: int | None = 5000,
    seed: int = 0,
    chunk: int = 1024,
) -> dict[str, float]:
    """Improved precision and recall of ``model`` samples against ``data`` samples.

    Args:
        data: Samples of the target, ``(n, d)``.
        model: Samples of the model, ``(m, d)``.
        k: Neighbour used for the ball radii (3 in Kynkäänniemi et al.).
        max_samples: Subsample each set to at most this many points (cost is O(n m)).
        seed: Seed of the subsampling.

    Returns:
        ``{"precision": ..., "recall": ..., "k": k, "n_data": n, "n_model": m}``.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
        raise DataError(f"k must be an integer >= 1, got {k!r}")
    a = check_samples("data", data, min_samples=k + 1)
    b = check_samples("model", model, min_samples=k + 1, dim=a.shape[1])
    rng = np.random.default_rng(seed)
    if max_samples is not None:
        if len(a) > max_samples:
            a = a[rng.choice(len(a), max_samples, replace=False)]
        if len(b) > max_samples:
            b = b[rng.choice(len(b), max_samples, replace=False)]
    ra, rb = knn_radii(a, k, chunk), knn_radii(b, k, chunk)
    return {
        "precision": _coverage(b, a, ra, chunk),
        "recall": _coverage(a, b, rb, chunk),
        "k": int(k),
        "n_data": int(len(a)),
        "n_model": int(len(b)),
    }
