"""Shared test settings."""

from __future__ import annotations

import pytest
import torch


@pytest.fixture(autouse=True)
def _single_thread() -> None:
    # Small networks on a 2-core machine: extra threads only add contention
    # (a critic-training test took 45 s with 2 threads, 2 s with 1).
    torch.set_num_threads(1)
