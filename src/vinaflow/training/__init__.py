"""Training: the trainer, its configuration, and the one training path (``fitting``)."""

from __future__ import annotations

from vinaflow.training.trainer import LR_SCHEDULES, Trainer, TrainingConfig, TrainResult

__all__ = ["LR_SCHEDULES", "TrainResult", "Trainer", "TrainingConfig"]
