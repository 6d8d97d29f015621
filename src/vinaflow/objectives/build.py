"""Building the trainable objective of a spec for a model, and refusing combinations of
objective and model settings that cannot train."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from torch.distributions import Distribution

from vinaflow.errors import ConfigError
from vinaflow.models import MODEL_KINDS
from vinaflow.models.base import AmortizedModel
from vinaflow.objectives.divergences import DIVERGENCES
from vinaflow.objectives.fdivergence import GRADIENTS, FDivergenceObjective
from vinaflow.objectives.losses import OBJECTIVES, Objective
from vinaflow.objectives.losses import PriorPenalty as PriorPenaltyObjective
from vinaflow.objectives.specs import Composite, ObjectiveSpec, PriorPenalty, Term, parse_objective

__all__ = ["build_objective", "check_objective_model"]


def build_objective(
    cfg: str | ObjectiveSpec | Mapping[str, Any],
    model: AmortizedModel,
    prior: Distribution | None = None,
) -> Objective:
    """The trainable objective of ``cfg`` (a spec, config section or name) for ``model``.

    Always a :class:`~vinaflow.objectives.losses.CompositeObjective` (which logs the
    total ``loss``). Prior-penalty parameters not in ``cfg`` are read from ``prior``.
    """
    spec = parse_objective(cfg)
    if isinstance(spec, Term):
        spec = Composite([(spec, 1.0)])
    return spec.build(model, prior)


def check_objective_model(
    objective_cfg: str | ObjectiveSpec | Mapping[str, Any], model_cfg: Mapping[str, Any]
) -> None:
    """Refuse objective settings that the model of ``model_cfg`` cannot train with.

    An objective that trains through the model's log-density (``needs_log_prob`` of its
    class, e.g. the score gradient of the PR divergence) needs a model kind with one;
    a cinn has one unless ``latent_dim`` pads it, which is checked when it is built.
    ``y_weight`` weighs the supervised fit of a predicted ``y`` in the forward (latent)
    loss; it does nothing in the backward direction or on a model that does not
    predict ``y``. ``nonsaturating`` changes only the backward generator loss.

    Raises:
        ConfigError: naming the setting and listing the combinations that work.
    """
    spec = parse_objective(objective_cfg)
    kind = model_cfg.get("kind")
    predicts_y = [k for k, cls in MODEL_KINDS.items() if getattr(cls, "predicts_y", False)]
    # a kind that does not override AmortizedModel.has_log_prob never has a density
    with_density = [
        k for k, cls in MODEL_KINDS.items() if cls.has_log_prob is not AmortizedModel.has_log_prob
    ]
    terms = [t for t, _ in spec.weighted() if isinstance(t, Term)]
    for i, term in enumerate(terms):
        field = "objective" if i == 0 else f"objective.terms[{i - 1}]"
        s = term.settings
        direction = s.get("direction")
        _check_interface(field, _interface(OBJECTIVES[term.name]), repr(term), kind)
        if OBJECTIVES[term.name].needs_log_prob(**s) and kind not in with_density:
            trainable = _kinds_with(_interface(OBJECTIVES[term.name]))
            raise ConfigError(
                f"{field}: {term!r} trains through the model's log-density, which "
                f"model.kind={kind} does not have; valid combinations: model.kind in "
                f"({', '.join(k for k in with_density if k in trainable)}) without latent "
                "padding, or another objective "
                "setting (e.g. gradient: pathwise)"
            )
        if (s.get("y_weight") or 0) > 0 and (kind not in predicts_y or direction != "forward"):
            raise ConfigError(
                f"{field}.y_weight={s['y_weight']} has no effect with model.kind={kind} and "
                f"direction={direction}; it applies to direction=forward with model.kind in "
                f"({', '.join(predicts_y)}); remove it otherwise"
            )
        if term.name == "fdiv":
            _check_fdiv_gradient(field, s)
        if s.get("nonsaturating") and direction != "backward":
            raise ConfigError(
                f"{field}.nonsaturating applies to direction=backward only, got "
                f"direction={direction}"
            )
    if any(isinstance(t, PriorPenalty) and w > 0 for t, w in spec.weighted()):
        _check_interface("objective.prior", _interface(PriorPenaltyObjective), "a prior", kind)


def _interface(objective: type[Objective]) -> str:
    """The model interface an objective trains: ``bijection`` (encode, generate, nll,
    differentiated) unless the class says otherwise (flow matching: ``velocity``)."""
    return getattr(objective, "interface", "bijection")


def _kinds_with(interface: str) -> list[str]:
    return [
        k
        for k, cls in MODEL_KINDS.items()
        if interface in getattr(cls, "interfaces", ("bijection",))
    ]


def _check_interface(field: str, interface: str, what: str, kind: Any) -> None:
    """Refuse an objective on a model kind that does not offer what it trains.

    A CNF is trained through its velocity field only: the objectives that differentiate
    the bijection would backpropagate through the ODE solver, which is not supported.
    """
    if kind not in MODEL_KINDS or kind in _kinds_with(interface):
        return
    by_interface: dict[str, list[str]] = {}
    for name, cls in OBJECTIVES.items():
        by_interface.setdefault(_interface(cls), []).append(name)
    valid = "; ".join(
        f"objective.name in ({', '.join(names)}) with model.kind in "
        f"({', '.join(_kinds_with(face))})"
        for face, names in by_interface.items()
    )
    raise ConfigError(
        f"{field}: {what} trains a model through its {interface}, which model.kind={kind} "
        f"does not offer; valid combinations: {valid} (a prior penalty needs a kind "
        f"in ({', '.join(_kinds_with(_interface(PriorPenaltyObjective)))}))"
    )


def _check_fdiv_gradient(field: str, s: Mapping[str, Any]) -> None:
    """Refuse a generator gradient the divergence or direction cannot use, at config time
    (the objective's constructor would refuse it only once the model is built)."""
    divergence, direction = s.get("divergence", "kl"), s.get("direction")
    gradient = FDivergenceObjective.resolved_gradient(divergence, s.get("gradient"))
    ratio_free = [d for d, div in DIVERGENCES.items() if div.log_ratio is None]
    with_ratio = [d for d in DIVERGENCES if d not in ratio_free]
    estimators = [g for g in GRADIENTS if g != "bound"]
    valid = (
        f"valid combinations: gradient=bound with divergence in ({', '.join(DIVERGENCES)}) "
        f"and direction backward or forward; gradient in ({', '.join(estimators)}) with "
        f"divergence in ({', '.join([*DIVERGENCES, 'pr'])}), direction backward and an "
        f"auxiliary in ({', '.join(with_ratio)})"
    )
    if gradient != "bound" and direction != "backward":
        raise ConfigError(
            f"{field}.gradient={gradient} (divergence={divergence}) is not defined for "
            f"direction={direction}; {valid}"
        )
    if gradient == "bound" and (divergence == "pr" or s.get("auxiliary") is not None):
        raise ConfigError(
            f"{field}.gradient=bound cannot train divergence={divergence} with auxiliary="
            f"{s.get('auxiliary')}; {valid}"
        )
    if gradient != "bound" and divergence in ratio_free and s.get("auxiliary") is None:
        raise ConfigError(
            f"{field}.gradient={gradient} needs a density-ratio estimate, which "
            f"divergence={divergence} does not give; set auxiliary; {valid}"
        )
    if s.get("auxiliary") in ratio_free:
        raise ConfigError(
            f"{field}.auxiliary={s['auxiliary']} gives no density-ratio estimate; {valid}"
        )
