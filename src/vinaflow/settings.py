"""Config settings derived from constructor signatures: allowed keys, types and choices.

A :class:`Setting` is one key of a config section: its default, the Python types its
value may have (read from the constructor's annotations) and, for string settings
with a fixed set of values, the allowed values (from a small ``CHOICES`` table kept
next to the constructor). Deriving the keys from the signature means that a new
constructor parameter is a new config key without touching any list.
"""

from __future__ import annotations

import dataclasses
import inspect
import types
import typing
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from vinaflow.errors import ConfigError

__all__ = [
    "Setting",
    "check_setting",
    "check_settings",
    "dataclass_settings",
    "signature_settings",
]

_NONE = type(None)


@dataclass(frozen=True)
class Setting:
    """One config key: ``types`` its value may have (``None``: any) and string ``choices``."""

    name: str
    default: Any = None
    types: tuple[type, ...] | None = None
    choices: tuple[Any, ...] | None = None

    def with_choices(self, choices: Iterable[Any]) -> Setting:
        return dataclasses.replace(self, choices=tuple(choices))


def _types_of(annotation: Any) -> tuple[type, ...] | None:
    """Python types a config value may have for ``annotation`` (``None``: any)."""
    if annotation is inspect.Parameter.empty or annotation is Any:
        return None
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        out: list[type] = []
        for arg in typing.get_args(annotation):
            sub = _types_of(arg)
            if sub is None:
                return None
            out += [t for t in sub if t not in out]
        return tuple(out)
    if origin is typing.Literal:
        return tuple({type(a) for a in typing.get_args(annotation)})
    if annotation is None or annotation is _NONE:
        return (_NONE,)
    base = origin if origin is not None else annotation
    if isinstance(base, type) and issubclass(base, Sequence) and base is not str:
        # YAML gives lists; tuples come from Python callers
        return (list, tuple)
    if isinstance(base, type) and issubclass(base, Mapping):
        return (dict,)
    if isinstance(base, type):
        return (base,)
    return None


def _choices_of(annotation: Any) -> tuple[Any, ...] | None:
    if typing.get_origin(annotation) is typing.Literal:
        return typing.get_args(annotation)
    return None


def signature_settings(
    func: Callable[..., Any],
    skip: Iterable[str] = (),
    choices: Mapping[str, Iterable[Any]] | None = None,
) -> dict[str, Setting]:
    """Settings of the named parameters of ``func`` (``*args``/``**kwargs`` skipped).

    ``choices`` maps string parameters to their allowed values; ``Literal`` annotations
    give choices too.
    """
    skip = {"self", *skip}
    hints = typing.get_type_hints(func)
    out = {}
    for p in inspect.signature(func).parameters.values():
        if p.name in skip or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        ann = hints.get(p.name, inspect.Parameter.empty)
        default = None if p.default is inspect.Parameter.empty else p.default
        out[p.name] = Setting(p.name, default, _types_of(ann), _choices_of(ann))
    for name, allowed in (choices or {}).items():
        if name in out:
            out[name] = out[name].with_choices(allowed)
    return out


def dataclass_settings(cls: type) -> dict[str, Setting]:
    """Settings of the fields of dataclass ``cls``, typed from their annotations."""
    hints = typing.get_type_hints(cls)
    out = {}
    for f in dataclasses.fields(cls):
        default = None if f.default is dataclasses.MISSING else f.default
        out[f.name] = Setting(f.name, default, _types_of(hints[f.name]), _choices_of(hints[f.name]))
    return out


_TYPE_NAMES = {
    int: "an integer",
    float: "a number",
    bool: "true/false",
    list: "a list",
    tuple: None,  # shown as "a list"
    dict: "a mapping",
    _NONE: "null",
    str: "a string",
}


def _type_names(types_: tuple[type, ...]) -> str:
    names = [_TYPE_NAMES.get(t, t.__name__) for t in types_]
    return " or ".join(n for n in names if n is not None)


def check_setting(field: str, value: Any, setting: Setting) -> Any:
    """``value`` checked against ``setting``; ints become floats where a number is expected.

    Raises:
        ConfigError: naming ``field`` and the expected form.
    """
    allowed = setting.types
    if allowed is not None:
        if value is None and _NONE in allowed:
            return None
        if float in allowed and isinstance(value, int) and not isinstance(value, bool):
            try:
                value = float(value)
            except OverflowError as err:
                raise ConfigError(f"{field} is too large for a number: {value}") from err
        elif (bool not in allowed and isinstance(value, bool)) or not isinstance(value, allowed):
            raise ConfigError(f"{field} must be {_type_names(allowed)}, got {value!r}")
        if isinstance(value, float) and value != value:
            raise ConfigError(f"{field} must be a number, got NaN")
        if isinstance(value, tuple):
            value = list(value)
    if setting.choices is not None and value is not None:
        if not isinstance(value, str) or value not in setting.choices:
            raise ConfigError(
                f"{field}: unknown value {value!r}; allowed: {', '.join(map(str, setting.choices))}"
            )
    return value


def check_settings(
    section: str,
    values: Mapping[str, Any],
    settings: Mapping[str, Setting],
    where: str = "",
) -> dict[str, Any]:
    """Every key of ``values`` checked against ``settings``; unknown keys are refused.

    ``where`` (e.g. ``" for objective 'nll'"``) says what the allowed keys belong to.
    """
    out = {}
    for key, value in values.items():
        if key not in settings:
            raise ConfigError(
                f"{section}.{key}: unknown key{where}; allowed keys: "
                f"{', '.join(sorted(settings)) or 'none'}"
            )
        out[key] = check_setting(f"{section}.{key}", value, settings[key])
    return out
