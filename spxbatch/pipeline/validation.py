"""Option values checked against the type hints of the dataclass they belong to, and against its ranges.

Pure: one function turns a value from any origin (a TOML/YAML/JSON file, a flag, a Python keyword, a saved
config) into the field's type or raises one ConfigError sentence naming the option, its origin and what
was expected, so a wrong type, an unknown choice or a misspelt name never reaches the workers.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import math
import types
import typing
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from spxbatch.errors import ConfigError


@dataclass(frozen=True)
class Bound:
    """The range of a number: at least `low` (more than `low` when `strict`), and at most `high` if given."""

    low: float
    strict: bool = False
    high: float | None = None

    def holds(self, value: float) -> bool:
        """Whether `value` is in range."""
        above = value > self.low if self.strict else value >= self.low
        return above and (self.high is None or value <= self.high)

    def text(self) -> str:
        """The range in words, for messages."""
        if self.high is not None:
            return f"between {self.low:g} and {self.high:g}"
        return f"more than {self.low:g}" if self.strict else f"at least {self.low:g}"


@functools.cache
def field_types(cls: type) -> dict[str, Any]:
    """Field name -> resolved type hint of a dataclass (string annotations evaluated)."""
    hints = typing.get_type_hints(cls)
    return {f.name: hints[f.name] for f in dataclasses.fields(cls)}


def _words(hint: Any) -> str:
    """What a type hint accepts, in words."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin is Literal:
        names = [str(a) for a in args]
        return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " or " + names[-1]
    if origin in (typing.Union, types.UnionType):
        return " or ".join("unset" if a is type(None) else _words(a) for a in args)
    if origin is tuple:
        if args[-1] is Ellipsis:
            return "a list of " + {int: "integers", float: "numbers", str: "strings"}.get(args[0], str(args[0]))
        return f"a list of {len(args)} numbers"
    return {bool: "true or false", int: "an integer", float: "a number", str: "a string"}.get(hint, str(hint))


def _is_nan(value: int | float) -> bool:
    return isinstance(value, float) and math.isnan(value)


class _Mismatch(Exception):
    """A value that does not fit a type hint (internal: turned into one ConfigError by `typed_value`)."""


def _coerce(value: Any, hint: Any) -> Any:
    """`value` in the hint's type (ints accepted as floats, lists as tuples), else _Mismatch."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if hint is Any:
        return value
    if origin is Literal:
        if value in args and isinstance(value, str | bool | int):
            return value
        raise _Mismatch
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        for arg in (a for a in args if a is not type(None)):
            try:
                return _coerce(value, arg)
            except _Mismatch:
                continue
        raise _Mismatch
    if origin is tuple:
        if not isinstance(value, list | tuple):
            raise _Mismatch
        if args[-1] is Ellipsis:
            return tuple(_coerce(v, args[0]) for v in value)
        if len(value) != len(args):
            raise _Mismatch
        return tuple(_coerce(v, a) for v, a in zip(value, args, strict=True))
    if hint is bool:
        if isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is int:
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        raise _Mismatch
    if hint is float:  # NaN (TOML's nan, JSON's NaN) is no option's value
        if isinstance(value, int | float) and not isinstance(value, bool) and not _is_nan(value):
            return float(value)
        raise _Mismatch
    if hint is str:
        if isinstance(value, str):
            return value
        raise _Mismatch
    if isinstance(hint, type) and isinstance(value, hint):
        return value
    raise _Mismatch


def typed_value(hint: Any, value: Any, label: str, bound: Bound | None = None,
                choices: tuple[str, ...] | None = None) -> Any:
    """`value` as the type `hint` says, checked against `bound` and `choices`; ConfigError naming `label`
    (e.g. "config file: retry.max_attempts") otherwise."""
    try:
        out = _coerce(value, hint)
    except _Mismatch:
        raise ConfigError(f"{label} must be {_words(hint)}, not {value!r}") from None
    if choices is not None and out is not None and out not in choices:
        expected = ", ".join(choices[:-1]) + " or " + choices[-1] if len(choices) > 1 else choices[0]
        raise ConfigError(f"{label} must be {expected}, not {out!r}")
    if bound is not None and out is not None and not bound.holds(out):
        raise ConfigError(f"{label} must be {bound.text()}, not {out!r}")
    return out


def unknown_keys(values: Mapping[str, Any], known: set[str], label: str, what: str) -> None:
    """Raise ConfigError when `values` has keys outside `known` (`what`: e.g. 'cluster option')."""
    unknown = sorted(set(values) - known)
    if unknown:
        named = f"{what} {unknown[0]!r}" if len(unknown) == 1 else f"{what}s {unknown}"
        raise ConfigError(f"{label}: unknown {named}; known: {sorted(known)}")


def known_names(names: Iterable[str], known: Collection[str], label: str, what: str) -> None:
    """Raise ConfigError for the first of `names` outside `known` (`what`: e.g. 'flag name'), naming `label`,
    that name and the known names closest to it (case aside), so a typo is not silently a name that matches
    nothing."""
    for name in names:
        if name in known:
            continue
        by_upper = {k.upper(): k for k in known}
        close = [by_upper[c] for c in difflib.get_close_matches(name.upper(), sorted(by_upper), n=3, cutoff=0.6)]
        hint = f"did you mean {' or '.join(close)}?" if close else f"known: {', '.join(sorted(known))}"
        raise ConfigError(f"{label}: unknown {what} {name!r} ({hint})")
