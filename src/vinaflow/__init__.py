"""vinaflow: variational invertible neural architectures for amortized posterior inference.

Example:
    >>> import vinaflow  # doctest: +SKIP
    >>> posterior = vinaflow.fit(x, y, max_seconds=60)  # doctest: +SKIP
    >>> samples = posterior.sample(y_obs, 1000, seed=0)  # doctest: +SKIP
    >>> posterior.save("my-posterior")  # doctest: +SKIP
    >>> vinaflow.load("my-posterior").sample(y_obs, 1000, seed=0)  # doctest: +SKIP
"""

from __future__ import annotations

from vinaflow._version import __version__
from vinaflow.api import certify, evaluate, fit, load
from vinaflow.models import EnsemblePosterior, Posterior

__all__ = ["EnsemblePosterior", "Posterior", "__version__", "certify", "evaluate", "fit", "load"]
