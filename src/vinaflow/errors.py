"""Exception types.

Everything a user can cause (bad config, bad data, bad file) derives from
:class:`VinaflowError`; the CLI prints these as one line and exits non-zero,
without a traceback. Anything else is a bug in vinaflow.
"""

from __future__ import annotations

__all__ = [
    "VinaflowError",
    "ConfigError",
    "DataError",
    "ConvergenceError",
    "TrainingDivergedError",
    "ModelFileError",
]


class VinaflowError(Exception):
    """Base class of errors caused by user input or by the numerical problem itself."""


class ConfigError(VinaflowError, ValueError):
    """A configuration value is missing, unknown or out of range."""


class DataError(VinaflowError, ValueError):
    """An array (observations, bank, simulator output) has the wrong shape or non-finite values."""


class ConvergenceError(VinaflowError, RuntimeError):
    """An iterative numerical procedure (e.g. a fixed-point inverse) did not converge."""


class TrainingDivergedError(VinaflowError, RuntimeError):
    """Training produced non-finite losses or gradients and could not recover."""


class ModelFileError(VinaflowError, OSError):
    """A saved model or checkpoint is missing, truncated or inconsistent."""
