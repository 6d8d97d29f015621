r"""Conditional flow matching (Lipman et al. 2023) for the continuous normalizing flow.

On the ODE time axis of :class:`~vinaflow.models.cnf.ContinuousFlow` (data at ``t = 0``,
the base ``N(0, I)`` at ``t = 1``) the conditional optimal-transport path from a data
point ``x`` to a base draw ``z`` is

.. math:: x_t = (1 - t)\, x + (\sigma_{\min} + (1 - \sigma_{\min})\, t)\, z,
   \qquad u_t = \dot x_t = (1 - \sigma_{\min})\, z - x,

Lipman et al.'s path with time reversed: at the data end it is a Gaussian of width
:math:`\sigma_{\min}` about ``x``, which keeps the marginal field smooth there. The loss
is :math:`\mathbb E_{t \sim U(0,1),\, z,\, (x, y)} \lVert v_\phi(t, x_t; y) - u_t
\rVert^2` (per coordinate), whose minimiser is the marginal field that carries the base
to the posterior ``q(x | y)`` for every ``y`` at once (flow-matching posterior
estimation, Wildberger et al. 2023). No ODE is solved during training.

References:
    Lipman, Chen, Ben-Hamu, Nickel, Le. Flow Matching for Generative Modeling. ICLR 2023.

    Wildberger, Dax, Buchholz, Green, Macke, Schölkopf. Flow Matching for Scalable
    Simulation-Based Inference. NeurIPS 2023.
"""

from __future__ import annotations

import math
from typing import ClassVar

import torch
from torch import Tensor

from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel
from vinaflow.models.cnf import ContinuousFlow
from vinaflow.objectives.base import Logs, Objective

__all__ = ["FlowMatchingObjective", "flow_matching_loss"]


def flow_matching_loss(
    model: ContinuousFlow, x_s: Tensor, y_s: Tensor | None, sigma_min: float
) -> Tensor:
    """Mean squared error of the velocity against the conditional OT target, per coordinate.

    Times and base draws come from torch's global random state (the trainer seeds it, and
    fixes it for validation).
    """
    t = torch.rand(x_s.shape[0], 1, dtype=x_s.dtype).to(x_s)
    z = torch.randn(x_s.shape, dtype=x_s.dtype).to(x_s)
    x_t = (1.0 - t) * x_s + (sigma_min + (1.0 - sigma_min) * t) * z
    target = (1.0 - sigma_min) * z - x_s
    return (model.velocity(t[:, 0], x_t, y_s) - target).pow(2).mean()


class FlowMatchingObjective(Objective):
    """Flow matching (``flow_matching``) of a :class:`ContinuousFlow`'s velocity field.

    Arguments:
        model: The CNF.
        sigma_min: Width of the path at the data end (Lipman et al. use 1e-4 to 1e-5).
    """

    name = "flow_matching"
    #: The model interface the loss trains (checked against the model kind's ``interfaces``).
    interface: ClassVar[str] = "velocity"

    def __init__(self, model: AmortizedModel, sigma_min: float = 1e-4) -> None:
        super().__init__()
        if not isinstance(model, ContinuousFlow):
            raise ConfigError(
                f"objective flow_matching trains a continuous flow (model.kind=cnf), got "
                f"model.kind={getattr(model, 'kind', type(model).__name__)}"
            )
        if not (math.isfinite(sigma_min) and 0 <= sigma_min < 1):
            raise ConfigError(f"objective.sigma_min must be a number in [0, 1), got {sigma_min}")
        self.sigma_min = float(sigma_min)

    def generator_loss(
        self, model: AmortizedModel, x_s: Tensor, y_s: Tensor
    ) -> tuple[Tensor, Logs]:
        assert isinstance(model, ContinuousFlow)
        loss = flow_matching_loss(model, x_s, y_s, self.sigma_min)
        return loss, {"flow_matching": float(loss.detach())}
