"""Training objectives: variational f-divergences, Sinkhorn, MMD and prior penalties.

Convention everywhere: ``P`` is the data law, ``Q`` the model law, and
``D_f(P || Q) = E_Q[f(dP/dQ)]``.
"""

from __future__ import annotations

from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import (
    DEFAULT_MAX_LOG_RATIO,
    DIVERGENCES,
    FDivergence,
    get_divergence,
    pr_divergence,
)
from vinaflow.objectives.mmd import ARDIZZONE_WIDTHS, mmd_gaussian, mmd_imq
from vinaflow.objectives.priors import box_prior_penalty, gaussian_prior_penalty
from vinaflow.objectives.sinkhorn import sinkhorn_divergence
from vinaflow.objectives.variational import (
    critic_loss,
    generator_loss,
    optimal_critic_output,
    primal_estimate,
    variational_bound,
)

__all__ = [
    "ARDIZZONE_WIDTHS",
    "Critic",
    "DEFAULT_MAX_LOG_RATIO",
    "DIVERGENCES",
    "FDivergence",
    "box_prior_penalty",
    "critic_loss",
    "generator_loss",
    "get_divergence",
    "gaussian_prior_penalty",
    "mmd_gaussian",
    "mmd_imq",
    "optimal_critic_output",
    "pr_divergence",
    "primal_estimate",
    "sinkhorn_divergence",
    "variational_bound",
]
