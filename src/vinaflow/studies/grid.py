"""Sweep grids: axes of config patches, seeds, and the runs they expand to.

An axis is a named list of ``(label, patch)`` values; a patch maps dotted keys
(``"objective.prior_weight"``) to values, and a bare section name (``"objective"``)
replaces that whole section. A :class:`Sweep` is a base config, axes and seeds; its
:meth:`~Sweep.tasks` are the cartesian product, each config resolved and validated.
``--grid`` and ``--seeds`` strings are parsed here (:func:`parse_grid`,
:func:`parse_seeds`).
"""

from __future__ import annotations

import copy
import hashlib
import itertools
import json
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from vinaflow.config import SECTIONS, _parse_scalar, resolve_config
from vinaflow.errors import ConfigError
from vinaflow.experiments.generative import FLOW_SECTIONS, resolve_flow_config
from vinaflow.problems.registry import BUILTIN_PROBLEMS, DATA_KEYS, problem_parameters

__all__ = ["Axis", "Sweep", "SweepTask", "apply_patch", "config_hash", "parse_grid", "parse_seeds"]


# -- parsing -----------------------------------------------------------------------------
def _split_top_level(text: str) -> list[str]:
    """Split on commas outside brackets, so ``[1,2],[3,4]`` gives two list values."""
    parts, depth, cur = [], 0, []
    for ch in text:
        if ch in "[{(":
            depth += 1
        elif ch in "]})":
            depth -= 1
        if ch == "," and depth == 0:
            parts.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    parts.append("".join(cur))
    return [p.strip() for p in parts]


def parse_grid(items: Sequence[str]) -> list[Axis]:
    """Axes from ``--grid section.key=v1,v2`` strings (values parsed as YAML scalars)."""
    axes: list[Axis] = []
    seen: set[str] = set()
    for item in items:
        if "=" not in item:
            raise ConfigError(f"--grid expects section.key=v1,v2,..., got {item!r}")
        key, values = item.split("=", 1)
        key = key.strip()
        if key.count(".") < 1:
            raise ConfigError(f"--grid {key!r}: the key must be section.key (e.g. model.hidden)")
        if key in seen:
            raise ConfigError(f"--grid {key!r} is given twice")
        seen.add(key)
        texts = [t for t in _split_top_level(values) if t != ""]
        if not texts:
            raise ConfigError(f"--grid {key!r}: no values after '='")
        axes.append(Axis(key, [(t, {key: _parse_scalar(t)}) for t in texts]))
    return axes


def parse_seeds(text: str | Sequence[int]) -> list[int]:
    """Seeds from ``"A..B"`` (inclusive), ``"A,B,C"`` or ``"A"``; an empty range is an error."""
    if not isinstance(text, str):
        seeds = [int(s) for s in text]
    else:
        t = text.strip()
        try:
            if ".." in t:
                a, b = t.split("..", 1)
                lo, hi = int(a), int(b)
                seeds = list(range(lo, hi + 1))
            else:
                seeds = [int(s) for s in t.split(",") if s.strip()]
        except ValueError as err:
            raise ConfigError(f"--seeds expects A..B or A,B,C with integers, got {text!r}") from err
        if ".." in t and not seeds:
            raise ConfigError(f"--seeds {text!r} is an empty range: A..B needs A <= B (inclusive)")
    if not seeds:
        raise ConfigError(f"--seeds {text!r}: no seeds given")
    if len(set(seeds)) != len(seeds):
        raise ConfigError(f"--seeds {text!r} repeats a seed")
    if any(s < 0 for s in seeds):
        raise ConfigError(f"--seeds {text!r}: seeds must be >= 0")
    return seeds


# -- model -------------------------------------------------------------------------------
#: Sweep kind -> (config resolver, config sections).
RESOLVERS: dict[str, tuple[Callable[[Mapping[str, Any]], dict[str, Any]], Sequence[str]]] = {
    "run": (resolve_config, SECTIONS),
    "flow": (resolve_flow_config, FLOW_SECTIONS),
}


@dataclass
class Axis:
    """A named list of ``(label, patch)`` values; see the module docstring."""

    name: str
    values: list[tuple[str, Mapping[str, Any]]]

    @classmethod
    def of(cls, key: str, values: Iterable[Any]) -> Axis:
        """The axis of one config key, ``Axis.of("model.latent_dim", [2, 4])``."""
        return cls(key, [(_label(v), {key: v}) for v in values])


def _label(v: Any) -> str:
    return v if isinstance(v, str) else json.dumps(v)


@dataclass
class SweepTask:
    """One run: its id, axis labels, seed and fully resolved config."""

    id: str
    params: dict[str, str]
    seed: int
    config: dict[str, Any]


@dataclass
class Sweep:
    """A base config (raw mapping, resolved per run), axes and seeds.

    ``exclude(params)`` may drop combinations that make no sense (labels by axis).
    ``demo_observations``: observations at which each run saves ``demo_samples``
    posterior samples to ``DIR/samples/ID.npz`` (for figures such as arm plots).
    ``kind``: ``"run"`` (``vinaflow run`` configs: posteriors) or ``"flow"``
    (``vinaflow flow`` configs: unconditional flows, whose first seed's runs save
    ``demo_samples`` model and held-out samples instead).
    """

    base: Mapping[str, Any]
    axes: list[Axis]
    seeds: list[int]
    exclude: Callable[[Mapping[str, str]], bool] | None = None
    demo_observations: list[list[float]] = field(default_factory=list)
    demo_samples: int = 200
    kind: str = "run"

    def __post_init__(self) -> None:
        if self.kind not in RESOLVERS:
            raise ConfigError(f"sweep kind {self.kind!r}: allowed {', '.join(RESOLVERS)}")

    def resolve(self, raw: Mapping[str, Any]) -> dict[str, Any]:
        """A run's config resolved and validated by the resolver of the sweep's kind."""
        return RESOLVERS[self.kind][0](raw)

    @property
    def base_hash(self) -> str:
        """Hash of the base config: a results folder holds runs of one base only."""
        return config_hash(self.base)

    def tasks(self) -> list[SweepTask]:
        """All runs, in a stable order (grid points outer, seeds inner)."""
        self.validate()
        out = []
        for combo in itertools.product(*[a.values for a in self.axes]):
            params = {a.name: label for a, (label, _) in zip(self.axes, combo, strict=True)}
            if self.exclude is not None and self.exclude(params):
                continue
            for seed in self.seeds:
                raw = copy.deepcopy(dict(self.base))
                for _, patch in combo:
                    apply_patch(raw, patch)
                raw.setdefault("training", {})
                raw["training"] = {**(raw["training"] or {}), "seed": seed}
                cfg = self.resolve(raw)
                rid = config_hash({"base": self.base_hash, "params": params, "seed": seed})
                out.append(SweepTask(rid, params, seed, cfg))
        if not out:
            raise ConfigError("the sweep is empty: every grid combination was excluded")
        return out

    def validate(self) -> None:
        """Check every axis key against the config schema; errors name the key."""
        if not self.seeds:
            raise ConfigError("the sweep has no seeds")
        base = self.resolve(copy.deepcopy(dict(self.base)))
        sections = RESOLVERS[self.kind][1]
        for axis in self.axes:
            if not axis.values:
                raise ConfigError(f"grid axis {axis.name!r} has no values")
            for label, patch in axis.values:
                for key in patch:
                    section = key.split(".", 1)[0]
                    if section not in sections:
                        raise ConfigError(
                            f"--grid {key}: unknown section {section!r}; "
                            f"allowed: {', '.join(sections)}"
                        )
                    if key.count(".") > 1 and section != "objective":
                        raise ConfigError(f"--grid {key}: keys are section.key (one dot)")
                    if section == "problem" and "." in key and self.kind == "run":
                        _check_problem_key(base["problem"], key)
                raw = copy.deepcopy(dict(self.base))
                # The other axes at their first value: some keys are only valid together
                # (objective.prior_weight > 0 needs objective.prior).
                for other in self.axes:
                    if other is not axis:
                        apply_patch(raw, other.values[0][1])
                apply_patch(raw, patch)
                try:
                    self.resolve(raw)
                except ConfigError as err:
                    raise ConfigError(f"--grid {axis.name}={label}: {err}") from err


def _check_problem_key(problem: Mapping[str, Any], key: str) -> None:
    sub = key.split(".", 1)[1]
    name = problem.get("name")
    if name in BUILTIN_PROBLEMS:
        allowed = set(problem_parameters(name)) | set(DATA_KEYS) | {"name"}
        if sub not in allowed:
            raise ConfigError(
                f"--grid {key}: problem {name!r} has no parameter {sub!r}; "
                f"allowed: {', '.join(sorted(allowed))}"
            )


def apply_patch(raw: dict[str, Any], patch: Mapping[str, Any]) -> None:
    """Apply an axis patch to a raw config in place (a bare section name replaces it)."""
    for key, value in patch.items():
        parts = key.split(".")
        if len(parts) == 1:
            raw[key] = copy.deepcopy(value)  # a whole section
            continue
        node = raw
        for p in parts[:-1]:
            nxt = node.get(p)
            if not isinstance(nxt, dict):
                nxt = {} if nxt is None else nxt
                if not isinstance(nxt, dict):
                    raise ConfigError(f"--grid {key}: {p!r} is not a section")
                node[p] = nxt
            node = nxt
        node[parts[-1]] = copy.deepcopy(value)


def config_hash(obj: Any) -> str:
    """A short stable hash of a JSON-able object (keys sorted): run ids and base hashes."""
    text = json.dumps(obj, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
