"""Training: the trainer, its configuration, and crash-safe file writing."""

from __future__ import annotations

from vinaflow.atomic import atomic_path, atomic_write_json, atomic_write_text
from vinaflow.training.trainer import LR_SCHEDULES, Trainer, TrainingConfig, TrainResult

__all__ = [
    "LR_SCHEDULES",
    "TrainResult",
    "Trainer",
    "TrainingConfig",
    "atomic_path",
    "atomic_write_json",
    "atomic_write_text",
]
