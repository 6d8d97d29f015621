"""A user's own simulator, referenced from custom_simulator.yaml as
``my_simulator:simulate`` (run vinaflow from this folder, or put it on PYTHONPATH).

vinaflow imports this module only because the config names it.
"""

import torch


def simulate(x: torch.Tensor) -> torch.Tensor:
    """Two noisy nonlinear measurements of a 2-D parameter."""
    y = torch.stack([x[:, 0] + x[:, 1] ** 2, torch.sin(x[:, 0]) * x[:, 1]], dim=1)
    return y + 0.05 * torch.randn_like(y)


def noise_free(x: torch.Tensor) -> torch.Tensor:
    return torch.stack([x[:, 0] + x[:, 1] ** 2, torch.sin(x[:, 0]) * x[:, 1]], dim=1)
