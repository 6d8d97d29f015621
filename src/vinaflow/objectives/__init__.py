"""Training objectives: variational f-divergences, Sinkhorn, MMD and prior penalties.

Convention everywhere: ``P`` is the data law, ``Q`` the model law, and
``D_f(P || Q) = E_Q[f(dP/dQ)]``.

The objective specs (:class:`NLL`, :class:`FDivergence`, :class:`Sinkhorn`,
:class:`MMD`, :class:`PriorPenalty`, combined with ``+`` and ``*`` or
:class:`Composite`) say what to train with; :func:`build_objective` makes the
trainable objective of a spec or ``objective`` config section for a model.
:class:`Divergence` is one member of the f-divergence family (its math).
"""

from __future__ import annotations

from vinaflow.objectives.build import build_objective, check_objective_model
from vinaflow.objectives.critic import Critic
from vinaflow.objectives.divergences import (
    DEFAULT_MAX_LOG_RATIO,
    DIVERGENCES,
    Divergence,
    get_divergence,
    pr_divergence,
)
from vinaflow.objectives.mmd import ARDIZZONE_WIDTHS, mmd_gaussian, mmd_imq
from vinaflow.objectives.priors import box_prior_penalty, gaussian_prior_penalty
from vinaflow.objectives.sinkhorn import sinkhorn_divergence
from vinaflow.objectives.specs import (
    MMD,
    NLL,
    Composite,
    FDivergence,
    ObjectiveSpec,
    PriorPenalty,
    Sinkhorn,
    Term,
    objective_config,
    parse_objective,
)
from vinaflow.objectives.variational import (
    critic_loss,
    generator_loss,
    optimal_critic_output,
    primal_estimate,
    variational_bound,
)

__all__ = [
    "ARDIZZONE_WIDTHS",
    "DEFAULT_MAX_LOG_RATIO",
    "DIVERGENCES",
    "MMD",
    "NLL",
    "Composite",
    "Critic",
    "Divergence",
    "FDivergence",
    "ObjectiveSpec",
    "PriorPenalty",
    "Sinkhorn",
    "Term",
    "box_prior_penalty",
    "build_objective",
    "check_objective_model",
    "critic_loss",
    "gaussian_prior_penalty",
    "generator_loss",
    "get_divergence",
    "mmd_gaussian",
    "mmd_imq",
    "objective_config",
    "optimal_critic_output",
    "parse_objective",
    "pr_divergence",
    "primal_estimate",
    "sinkhorn_divergence",
    "variational_bound",
]
