"""sbibm's own C2ST classifier, loaded from the sbibm wheel.

sbibm (Lueckmann et al. 2021) scores every published posterior with
``sbibm.metrics.c2st``: z-scoring by the reference sample's mean and standard deviation,
scikit-learn's ``MLPClassifier`` (ReLU, two hidden layers of ``10 * dim`` units, Adam,
``max_iter=10000``, its default tolerance stop) and the mean accuracy over a shuffled
5-fold ``KFold``. ``vinaflow.evaluation.c2st`` uses a different classifier schedule, so a
score compared with a published number should also be computed by this one.

``import sbibm`` pulls in pyro and an sbi version that do not install beside current sbi,
while ``sbibm/metrics/c2st.py`` itself needs only numpy, torch and scikit-learn; so that one
file is read from the wheel (a zip archive) and executed as a module, unchanged.
"""

from __future__ import annotations

import types
import zipfile
from collections.abc import Callable
from functools import cache
from pathlib import Path

import numpy as np
import torch

__all__ = ["sbibm_c2st", "load_sbibm_c2st"]

_MEMBER = "sbibm/metrics/c2st.py"


@cache
def load_sbibm_c2st(wheel: Path) -> Callable[..., torch.Tensor]:
    """sbibm's ``c2st(X, Y, seed=1, n_folds=5, ...)`` from ``wheel``, as sbibm ships it."""
    with zipfile.ZipFile(wheel) as zf:
        try:
            source = zf.read(_MEMBER).decode("utf-8")
        except KeyError:
            raise FileNotFoundError(f"{wheel} has no {_MEMBER}; is it an sbibm wheel?") from None
    module = types.ModuleType("sbibm_metrics_c2st")
    module.__file__ = f"{wheel}!{_MEMBER}"
    exec(compile(source, module.__file__, "exec"), module.__dict__)  # noqa: S102 - sbibm's code
    return module.c2st


def sbibm_c2st(
    wheel: Path, reference: np.ndarray, samples: np.ndarray, *, seed: int, max_samples: int
) -> float:
    """sbibm's C2ST accuracy of ``samples`` against ``reference`` (each cut to its first
    ``max_samples`` rows, as sbibm's benchmark compares equal-size sets), seeded ``seed``.

    Non-finite samples score 1.0 (a perfect separation), as in the peers benchmark.
    """
    n = min(max_samples, len(reference), len(samples))
    if not np.isfinite(samples[:n]).all():
        return 1.0
    c2st = load_sbibm_c2st(Path(wheel))
    x = torch.as_tensor(np.asarray(reference[:n], dtype=np.float32))
    y = torch.as_tensor(np.asarray(samples[:n], dtype=np.float32))
    return float(c2st(x, y, seed=seed)[0])
