"""Objective specifications: what a model is trained with, as plain settings.

A spec is the ``objective`` config section as an object. It validates when it is made,
converts to the config form with :meth:`~ObjectiveSpec.to_config` and back with
:func:`parse_objective`, and builds the trainable :class:`~vinaflow.objectives.losses.Objective`
for a model with :meth:`~ObjectiveSpec.build` (or
:func:`vinaflow.objectives.build.build_objective`).

    >>> spec = 0.5 * NLL() + FDivergence("js", critic_hidden=64)
    >>> cfg = spec.to_config()
    >>> cfg["name"], cfg["weight"], cfg["terms"][0]["divergence"]
    ('nll', 0.5, 'js')
    >>> parse_objective(cfg) == spec
    True

Names and keys are not listed here: the objective names are those of
:data:`~vinaflow.objectives.losses.OBJECTIVES`, each objective's keys are its
constructor's arguments (after ``model``), typed by their annotations, with string
choices from the class's ``CHOICES`` table; the divergence names are those of
:data:`~vinaflow.objectives.divergences.DIVERGENCES`.

Config form (``objective`` section): the main term's ``name`` and settings at the top,
its ``weight`` (default 1), further terms in ``terms: [{name, weight, ...}]`` and one
optional prior penalty as ``prior``, ``prior_weight`` and ``prior_<parameter>``.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Mapping
from typing import Any

from torch.distributions import Distribution, Independent, MultivariateNormal, Normal, Uniform

from vinaflow.errors import ConfigError
from vinaflow.models.base import AmortizedModel
from vinaflow.objectives.divergences import DIVERGENCES
from vinaflow.objectives.losses import (
    OBJECTIVES,
    CompositeObjective,
    Objective,
    check_weights,
)

# The trainable penalty; the spec of the same name below says what to build.
from vinaflow.objectives.losses import PriorPenalty as PriorPenaltyObjective
from vinaflow.settings import Setting, check_setting, check_settings, signature_settings

__all__ = [
    "MMD",
    "NLL",
    "Composite",
    "FDivergence",
    "ObjectiveSpec",
    "PriorPenalty",
    "Sinkhorn",
    "Term",
    "objective_config",
    "objective_keys",
    "objective_names",
    "parse_objective",
    "prior_keys",
    "term_settings",
]

#: Top-level keys of the ``objective`` section that are not settings of the main term.
_COMPOSITE_KEYS = ("weight", "terms")
_NO_PRIOR = "none"
_WEIGHT = Setting("weight", 1.0, (float,))


def objective_names() -> tuple[str, ...]:
    """Names ``objective.name`` accepts."""
    return tuple(OBJECTIVES)


def term_settings(name: str) -> dict[str, Setting]:
    """Settings of objective ``name``: its constructor's arguments after ``model``."""
    cls = OBJECTIVES[name]
    return signature_settings(cls.__init__, skip=("model",), choices=cls.CHOICES)


def prior_keys() -> dict[str, Setting]:
    """The ``prior*`` keys of the ``objective`` section, from the prior penalty's signature."""
    params = signature_settings(
        PriorPenaltyObjective.__init__, choices=PriorPenaltyObjective.CHOICES
    )
    kind = params.pop("kind")
    out = {
        "prior": Setting("prior", _NO_PRIOR, (str,), (_NO_PRIOR, *kind.choices)),
        "prior_weight": Setting("prior_weight", 0.0, (float,)),
    }
    out.update({f"prior_{k}": Setting(f"prior_{k}", s.default, s.types) for k, s in params.items()})
    return out


def objective_keys() -> dict[str, Setting]:
    """Every key an ``objective`` section may hold, over all objectives (for listings)."""
    out = {
        "name": Setting("name", None, (str,), objective_names()),
        "weight": _WEIGHT,
        "terms": Setting("terms", None, (list,)),
    }
    for name in OBJECTIVES:
        for key, s in term_settings(name).items():
            out.setdefault(key, s)
    out.update(prior_keys())
    return out


class ObjectiveSpec:
    """Base of the objective specs; ``+`` and ``*`` combine them into a :class:`Composite`."""

    def to_config(self) -> dict[str, Any]:
        """The ``objective`` config section of this spec."""
        raise NotImplementedError

    def build(self, model: AmortizedModel, prior: Distribution | None = None) -> Objective:
        """The trainable objective for ``model``; ``prior`` gives prior-penalty defaults."""
        raise NotImplementedError

    def weighted(self) -> list[tuple[ObjectiveSpec, float]]:
        """``(term, weight)`` pairs of this spec (a single term has weight 1)."""
        return [(self, 1.0)]

    def __add__(self, other: object) -> Composite:
        if not isinstance(other, ObjectiveSpec):
            return NotImplemented
        return Composite([*self.weighted(), *other.weighted()])

    def __radd__(self, other: object) -> ObjectiveSpec:
        # sum([...]) starts from 0
        if isinstance(other, (int, float)) and not isinstance(other, bool) and other == 0:
            return self
        return NotImplemented

    def __mul__(self, weight: object) -> Composite:
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            return NotImplemented
        return Composite([(t, w * float(weight)) for t, w in self.weighted()])

    __rmul__ = __mul__

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, ObjectiveSpec):
            return NotImplemented
        return _comparable(self) == _comparable(other)

    __hash__ = None  # type: ignore[assignment]


def _comparable(spec: ObjectiveSpec) -> Any:
    if isinstance(spec, PriorPenalty):
        return ("prior", spec.kind, spec.parameters)
    return spec.to_config()


class Term(ObjectiveSpec):
    """One registered objective (``name``, a key of ``OBJECTIVES``) with its settings.

    Settings left out take the objective constructor's defaults; :attr:`settings`
    holds all of them.
    """

    def __init__(self, name: str, /, **settings: Any) -> None:
        self._set(name, settings, "objective")

    def _set(self, name: object, settings: Mapping[str, Any], field: str) -> None:
        if not isinstance(name, str) or name not in OBJECTIVES:
            raise ConfigError(
                f"{field}.name: unknown value {name!r}; allowed: {', '.join(OBJECTIVES)}"
            )
        allowed = term_settings(name)
        where = f" of objective {name!r}" if allowed else f" (objective {name!r} takes none)"
        checked = check_settings(field, settings, allowed, where)
        self.name = name
        self.settings = {k: s.default for k, s in allowed.items()} | checked
        self._defaults = {k: s.default for k, s in allowed.items()}

    def to_config(self) -> dict[str, Any]:
        return {"name": self.name, **_plain(self.settings)}

    def build(self, model: AmortizedModel, prior: Distribution | None = None) -> Objective:
        cls = OBJECTIVES[self.name]
        params = inspect.signature(cls.__init__).parameters
        if "model" in params:
            return cls(model, **self.settings)
        return cls(**self.settings)

    def __repr__(self) -> str:
        changed = {k: v for k, v in self.settings.items() if v != self._defaults.get(k)}
        args = ", ".join(f"{k}={v!r}" for k, v in changed.items())
        cls = type(self).__name__
        if cls == "Term":
            return f"Term({self.name!r}{', ' if args else ''}{args})"
        return f"{cls}({args})"


class NLL(Term):
    """Maximum likelihood (``nll``): the model's own negative log-likelihood."""

    def __init__(self, **settings: Any) -> None:
        self._set("nll", settings, "objective")


class FDivergence(Term):
    """Variational f-divergence (``fdiv``); ``divergence`` is a name of ``DIVERGENCES``.

    Other settings are those of :class:`~vinaflow.objectives.losses.FDivergenceObjective`
    (``direction``, ``critic_hidden``, ``critic_layers``, ``gradient_penalty``, ...).
    """

    def __init__(self, divergence: str | None = None, /, **settings: Any) -> None:
        if divergence is not None:
            if "divergence" in settings:
                raise ConfigError("give the divergence once, positionally or as divergence=")
            settings["divergence"] = divergence
        self._set("fdiv", settings, "objective")


class Sinkhorn(Term):
    """Debiased Sinkhorn divergence (``sinkhorn``); settings of ``SinkhornObjective``."""

    def __init__(self, **settings: Any) -> None:
        self._set("sinkhorn", settings, "objective")


class MMD(Term):
    """Maximum mean discrepancy (``mmd``); settings of ``MMDObjective``."""

    def __init__(self, **settings: Any) -> None:
        self._set("mmd", settings, "objective")


#: Spec class of each objective name that has one (others parse to :class:`Term`).
_SPEC_CLASSES: dict[str, type[Term]] = {
    "nll": NLL,
    "fdiv": FDivergence,
    "sinkhorn": Sinkhorn,
    "mmd": MMD,
}


def _term(name: object, settings: Mapping[str, Any], field: str) -> Term:
    cls = _SPEC_CLASSES.get(name, Term) if isinstance(name, str) else Term
    term = cls.__new__(cls)
    term._set(name, settings, field)
    return term


class PriorPenalty(ObjectiveSpec):
    """Prior penalty on generated parameters, added to an objective with a weight.

    ``kind`` is ``gaussian`` (``loc``, ``scale``) or ``uniform`` (``low``, ``high``);
    parameters left out are read from the problem's prior when the objective is built.

        >>> spec = NLL() + 0.1 * PriorPenalty("gaussian")
    """

    def __init__(self, kind: str, **parameters: Any) -> None:
        self._set(kind, parameters, "objective")

    def _set(self, kind: object, parameters: Mapping[str, Any], field: str) -> None:
        keys = prior_keys()
        kind = check_setting(f"{field}.prior", kind, keys["prior"])
        if kind == _NO_PRIOR:
            raise ConfigError(
                f"{field}.prior: a prior penalty needs a kind; allowed: "
                f"{', '.join(keys['prior'].choices[1:])}"
            )
        own = PriorPenaltyObjective.PARAMETERS[kind]
        out = {}
        for k, v in parameters.items():
            if k not in own:
                raise ConfigError(
                    f"{field}.prior_{k}: not a parameter of a {kind} prior; allowed: "
                    f"{', '.join(f'prior_{p}' for p in own)}"
                )
            out[k] = check_setting(f"{field}.prior_{k}", v, keys[f"prior_{k}"])
        self.kind = kind
        self.parameters = {k: v for k, v in _plain(out).items() if v is not None}

    def to_config(self) -> dict[str, Any]:
        raise ConfigError(
            "a prior penalty is added to an objective, e.g. NLL() + 0.1 * PriorPenalty("
            f"{self.kind!r}); alone it trains nothing"
        )

    def config_entries(self, weight: float) -> dict[str, Any]:
        """The ``prior*`` keys of this penalty with ``weight``."""
        out: dict[str, Any] = {"prior": self.kind, "prior_weight": float(weight)}
        out.update({f"prior_{k}": v for k, v in self.parameters.items()})
        return out

    def build(self, model: AmortizedModel, prior: Distribution | None = None) -> Objective:
        own = PriorPenaltyObjective.PARAMETERS[self.kind]
        params = {**_prior_parameters(prior, self.kind), **self.parameters}
        if any(k not in params for k in own):
            raise ConfigError(
                f"objective.prior={self.kind}: give objective.prior_{own[0]} and "
                f"objective.prior_{own[1]} (the problem's prior is not {self.kind})"
            )
        for k in own:
            if len(params[k]) != model.dim_x:
                raise ConfigError(
                    f"objective.prior_{k} needs {model.dim_x} values, got {len(params[k])}"
                )
        return PriorPenaltyObjective(self.kind, **params)

    def __repr__(self) -> str:
        args = "".join(f", {k}={v!r}" for k, v in self.parameters.items())
        return f"PriorPenalty({self.kind!r}{args})"


class Composite(ObjectiveSpec):
    """Weighted sum of objective terms and at most one prior penalty.

    ``terms`` are ``(spec, weight)`` pairs; nested composites are flattened (their
    weights multiply). The first objective term is the config's main term. A composite
    of a prior penalty alone is only an intermediate (``0.1 * PriorPenalty(...)``): it
    has no config form and builds nothing.
    """

    def __init__(self, terms: Iterable[tuple[ObjectiveSpec, float]]) -> None:
        items = list(terms)
        for i, item in enumerate(items):
            if not (isinstance(item, tuple) and len(item) == 2):
                raise ConfigError(
                    f"objective: term {i} must be a (spec, weight) pair, got {item!r}"
                )
            if not isinstance(item[0], ObjectiveSpec):
                raise ConfigError(
                    f"objective: term {i} must be an objective spec (NLL(), FDivergence(...), "
                    f"...), got {type(item[0]).__name__}"
                )
        weights = check_weights([w for _, w in items])
        flat = [
            (s, w * weight)
            for (spec, _), weight in zip(items, weights, strict=True)
            for s, w in spec.weighted()
        ]
        if sum(isinstance(s, PriorPenalty) for s, _ in flat) > 1:
            raise ConfigError("objective: at most one prior penalty (objective.prior) is allowed")
        check_weights([w for _, w in flat])
        self.terms = flat

    def weighted(self) -> list[tuple[ObjectiveSpec, float]]:
        return list(self.terms)

    def _objectives(self) -> list[tuple[Term, float]]:
        out = [(s, w) for s, w in self.terms if isinstance(s, Term)]
        if not out:
            # e.g. 0.1 * PriorPenalty(...) before it is added to an objective
            raise ConfigError(
                "objective: needs an objective term (nll, fdiv, ...) besides the prior penalty"
            )
        return out

    def to_config(self) -> dict[str, Any]:
        (main, weight), *rest = self._objectives()
        out = main.to_config()
        if weight != 1.0:
            out["weight"] = weight
        if rest:
            out["terms"] = [{**s.to_config(), "weight": w} for s, w in rest]
        for s, w in self.terms:
            if isinstance(s, PriorPenalty):
                out.update(s.config_entries(w))
        return out

    def build(self, model: AmortizedModel, prior: Distribution | None = None) -> Objective:
        self._objectives()
        built = [
            (s.build(model, prior), w)
            for s, w in self.terms
            # a prior penalty of weight 0 needs no parameters
            if not (isinstance(s, PriorPenalty) and w == 0)
        ]
        return CompositeObjective(built)

    def __repr__(self) -> str:
        return " + ".join(f"{w:g} * {s!r}" for s, w in self.terms)


def _plain(values: Mapping[str, Any]) -> dict[str, Any]:
    """Tuples as lists, so that the config form is YAML-safe."""
    return {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}


def _from_mapping(cfg: Mapping[str, Any], field: str) -> ObjectiveSpec:
    values = dict(cfg)
    if "name" not in values:
        raise ConfigError(f"{field}.name is required; allowed: {', '.join(OBJECTIVES)}")
    name = values.pop("name")
    pk = prior_keys()
    prior_values = {k: values.pop(k) for k in list(values) if k in pk}
    weight = check_setting(f"{field}.weight", values.pop("weight", 1.0), _WEIGHT)
    terms = values.pop("terms", None)
    pairs: list[tuple[ObjectiveSpec, float]] = [(_term(name, values, field), weight)]
    if terms is not None:
        if not isinstance(terms, list):
            raise ConfigError(f"{field}.terms must be a list of mappings with name and weight")
        for i, term in enumerate(terms):
            sub = f"{field}.terms[{i}]"
            if not isinstance(term, Mapping):
                raise ConfigError(f"{sub} must be a mapping with name and weight")
            if "terms" in term:
                raise ConfigError(f"{sub}: nested terms are not allowed")
            misplaced = sorted(k for k in term if k in pk)
            if misplaced:
                raise ConfigError(f"{sub}: {misplaced} belong to the top of {field}, not to a term")
            term = dict(term)
            if "name" not in term:
                raise ConfigError(f"{sub}.name is required; allowed: {', '.join(OBJECTIVES)}")
            w = check_setting(f"{sub}.weight", term.pop("weight", 1.0), _WEIGHT)
            pairs.append((_term(term.pop("name"), term, sub), w))
    kind = check_setting(f"{field}.prior", prior_values.pop("prior", _NO_PRIOR), pk["prior"])
    prior_weight = check_setting(
        f"{field}.prior_weight", prior_values.pop("prior_weight", 0.0), pk["prior_weight"]
    )
    if kind == _NO_PRIOR:
        if prior_weight > 0 or prior_values:
            given = ", ".join(f"{field}.{k}" for k in (sorted(prior_values) or ["prior_weight"]))
            raise ConfigError(
                f"{given} given without a prior penalty; set {field}.prior to "
                f"{' or '.join(pk['prior'].choices[1:])}"
            )
    else:
        penalty = PriorPenalty.__new__(PriorPenalty)
        penalty._set(kind, {k[len("prior_") :]: v for k, v in prior_values.items()}, field)
        pairs.append((penalty, prior_weight))
    if len(pairs) == 1 and weight == 1.0:
        return pairs[0][0]
    return Composite(pairs)


def parse_objective(
    objective: str | ObjectiveSpec | Mapping[str, Any], field: str = "objective"
) -> ObjectiveSpec:
    """The spec of an objective given as a spec, a config mapping or a plain name.

    A plain name is an objective name (``"nll"``, ``"sinkhorn"``, ...) with default
    settings, or a divergence name (``"kl"``, ``"js"``, ...) meaning
    ``FDivergence(name)`` (direction ``backward``).

    Raises:
        ConfigError: naming the field and what it accepts.
    """
    if isinstance(objective, ObjectiveSpec):
        return objective
    if isinstance(objective, str):
        if objective in OBJECTIVES:
            return _term(objective, {}, field)
        if objective in DIVERGENCES:
            return FDivergence(objective)
        raise ConfigError(
            f"{field}: unknown objective {objective!r}; allowed: objective names "
            f"{', '.join(OBJECTIVES)} or divergence names {', '.join(DIVERGENCES)}"
        )
    if isinstance(objective, Mapping):
        return _from_mapping(objective, field)
    raise ConfigError(
        f"{field} must be a name, an objective spec or a mapping with 'name', "
        f"got {type(objective).__name__}"
    )


ObjectiveSpec.from_config = staticmethod(parse_objective)  # type: ignore[attr-defined]


def objective_config(
    objective: str | ObjectiveSpec | Mapping[str, Any], **options: Any
) -> dict[str, Any]:
    """The validated ``objective`` config section of ``objective``.

    ``options`` are settings of the main term (or top-level keys such as ``weight``
    and ``prior``), merged over those of ``objective``:
    ``objective_config("js", critic_hidden=64)``.
    """
    if options:
        if isinstance(objective, str):
            base = parse_objective(objective).to_config()
            # keep only what the name says, so that options are checked as given
            base = {k: base[k] for k in ("name", "divergence") if k in base}
        elif isinstance(objective, ObjectiveSpec):
            base = objective.to_config()
        elif isinstance(objective, Mapping):
            base = dict(objective)
        else:
            base = objective  # parse_objective below reports the type
        if isinstance(base, dict):
            objective = {**base, **options}
    return parse_objective(objective).to_config()


def _prior_parameters(prior: Distribution | None, kind: str) -> dict[str, list[float]]:
    """Prior-penalty parameters read from a prior distribution of the same kind."""
    base = prior.base_dist if isinstance(prior, Independent) else prior
    if kind == "gaussian":
        if isinstance(base, Normal):
            return {"loc": base.loc.tolist(), "scale": base.scale.tolist()}
        if isinstance(base, MultivariateNormal):
            return {"loc": base.loc.tolist(), "scale": base.variance.sqrt().tolist()}
    if kind == "uniform" and isinstance(base, Uniform):
        return {"low": base.low.tolist(), "high": base.high.tolist()}
    return {}
