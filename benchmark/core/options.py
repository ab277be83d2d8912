"""Declared options: every task (and the ``figure`` command) declares its ``--option`` keys as a dataclass, and
one parser turns the user's ``key=value`` pairs into it before any model loads.

A field's metadata may hold its own parser (``parse``: value, key -> parsed value, raising ValueError that names
the key) and a one-line ``help``; :func:`option` builds such a field. A field made by :func:`nested` holds a
nested options object whose keys share a prefix on the command line (``probe_steps`` -> ``probe.steps``). Fields
without a parser are checked against their annotation (bool, int, float, str, optionally ``| None``). Unknown keys
raise :class:`UnknownOptionError`, an :class:`~aft_bench.core.registry.UnknownNameError` (exit status 2), with a
did-you-mean and the list of known keys.

The small parsers the tasks share (positive integers, shares in [0, 1], levels in 1/255 units) live here too.
"""

from __future__ import annotations

import dataclasses
import difflib
import math
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from dataclasses import MISSING, Field, fields
from typing import Any, TypeVar

from aft_bench.core.registry import UnknownNameError

T = TypeVar("T")
Parser = Callable[[Any, str], Any]


class UnknownOptionError(UnknownNameError):
    """An option key the task does not declare (misspelt or meant for another task)."""

    def __init__(self, owner: str, key: str, known: list[str]) -> None:
        super().__init__("option", key, known)
        close = difflib.get_close_matches(key, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        self.args = (f"unknown option {key!r} for {owner}.{hint} Known options: {', '.join(known) or 'none'}.",)


def option(default: Any = MISSING, *, parse: Parser | None = None, help: str = "",
           default_factory: Callable[[], Any] | Any = MISSING) -> Any:
    """A dataclass field of an options class, with its own parser and help line."""
    metadata = {"parse": parse, "help": help}
    if default_factory is not MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def nested(cls: type, prefix: str, help: str = "") -> Any:
    """A field holding a nested options object whose keys are ``prefix + name`` on the command line."""
    return dataclasses.field(default_factory=cls, metadata={"nested": cls, "prefix": prefix, "help": help})


def option_keys(cls: type) -> list[str]:
    """Every command-line key of an options class, nested keys with their prefix, in declaration order."""
    keys: list[str] = []
    for f in fields(cls):
        if "nested" in f.metadata:
            keys += [f.metadata["prefix"] + key for key in option_keys(f.metadata["nested"])]
        else:
            keys.append(_key(f))
    return keys


def parse_options(cls: type[T], values: Mapping[str, Any], owner: str) -> T:
    """``cls`` built from command-line ``values`` (keys as :func:`option_keys` lists them).

    Args:
        cls: The options dataclass.
        values: ``{key: value}`` with values as YAML read them (numbers, booleans, lists, strings).
        owner: What the options belong to, for messages (``task 'pointing_game'``).

    Raises:
        UnknownOptionError: For a key ``cls`` does not declare.
        ValueError: Naming the key and value, for a value of the wrong kind or one its parser refuses.
    """
    known = option_keys(cls)
    for key in values:
        if key not in known:
            raise UnknownOptionError(owner, key, known)
    return _build(cls, dict(values), "")


def _build(cls: type[T], values: dict[str, Any], prefix: str) -> T:
    hints = typing.get_type_hints(cls)
    kwargs: dict[str, Any] = {}
    for f in fields(cls):  # type: ignore[arg-type]
        if "nested" in f.metadata:
            kwargs[f.name] = _build(f.metadata["nested"], values, prefix + f.metadata["prefix"])
            continue
        key = prefix + _key(f)
        if key not in values:
            continue
        parse = f.metadata.get("parse")
        kwargs[f.name] = parse(values[key], key) if parse else _check_type(values[key], hints[f.name], key)
    return cls(**kwargs)


def _key(f: Field) -> str:
    return f.name.rstrip("_")  # ``class_`` is the key ``class``


_SCALARS: dict[type, str] = {bool: "true or false", int: "an integer", float: "a number", str: "a text"}


def _check_type(value: Any, annotation: Any, key: str) -> Any:
    """``value`` if it fits the annotation: a scalar (``float`` takes integers), ``X | None`` (takes null), a
    ``Literal`` (one of its values) or a container (a list for ``list``/``tuple``, a mapping for ``dict``).

    Raises:
        ValueError: Naming the key, the value and what to give.
    """
    union = typing.get_origin(annotation) in (typing.Union, types.UnionType)
    allowed = [a for a in typing.get_args(annotation) if a is not type(None)] if union else [annotation]
    optional = union and type(None) in typing.get_args(annotation)
    if value is None and (optional or annotation is Any):
        return None
    for kind in allowed:
        fitted = _fit(value, kind)
        if fitted is not _NO_FIT:
            return fitted
    wanted = " or ".join(_describe(k) for k in allowed) + (" or null" if optional else "")
    raise ValueError(f"option {key}={value!r}: give {wanted}")


_NO_FIT = object()
_CONTAINERS: dict[Any, tuple[type, ...]] = {list: (list, tuple), tuple: (list, tuple), dict: (Mapping,),
                                            Mapping: (Mapping,)}


def _fit(value: Any, kind: Any) -> Any:
    """``value`` converted to ``kind`` (ints to float), or ``_NO_FIT``."""
    origin = typing.get_origin(kind)
    if origin is typing.Literal:
        return value if value in typing.get_args(kind) else _NO_FIT
    if origin is not None or kind in _CONTAINERS:
        return value if isinstance(value, _CONTAINERS.get(origin or kind, (object,))) else _NO_FIT
    if kind is Any:
        return value
    if isinstance(value, bool):
        return value if kind is bool else _NO_FIT
    if kind is float and isinstance(value, int | float):
        return float(value)
    return value if isinstance(value, kind) else _NO_FIT


def _describe(kind: Any) -> str:
    if typing.get_origin(kind) is typing.Literal:
        return "one of " + ", ".join(repr(a) for a in typing.get_args(kind))
    origin = typing.get_origin(kind) or kind
    return _SCALARS.get(origin, "a mapping" if origin in (dict, Mapping) else "a list")


# ---------------------------------------------------------------------------------------- shared parsers
def positive_int(value: Any, key: str) -> int:
    """A positive integer (not a boolean)."""
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option {key}={value!r}: give a positive integer")
    return value


def optional_positive_int(value: Any, key: str) -> int | None:
    """A positive integer or null."""
    return None if value is None else positive_int(value, key)


def share(value: Any, key: str) -> float:
    """A number in [0, 1]."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0.0 <= float(value) <= 1.0:
        raise ValueError(f"option {key}={value!r}: give a share in [0, 1]")
    return float(value)


def finite_number(value: Any, key: str) -> float:
    """A finite number."""
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(float(value)):
        raise ValueError(f"option {key}={value!r}: give a finite number")
    return float(value)


def non_negative(value: Any, key: str) -> float:
    """A finite number >= 0."""
    number = finite_number(value, key)
    if number < 0:
        raise ValueError(f"option {key}={value!r}: give a number >= 0")
    return number


def one_of(*choices: str) -> Parser:
    """A parser accepting exactly one of ``choices``."""

    def parse(value: Any, key: str) -> str:
        if value not in choices:
            raise ValueError(f"option {key}={value!r}: choose one of {list(choices)}")
        return str(value)

    return parse


def names_in(registry: Any, single: bool = True) -> Parser:
    """A parser for a name (or, with ``single=False``, a non-empty list of names) of ``registry``;
    unknown names raise :class:`~aft_bench.core.registry.UnknownNameError` with a did-you-mean."""

    def parse(value: Any, key: str) -> str | tuple[str, ...]:
        items = [value] if isinstance(value, str) or not isinstance(value, Sequence) else list(value)
        if not items or (single and len(items) != 1):
            raise ValueError(f"option {key}={value!r}: give {'one name' if single else 'one or more names'} of "
                             f"{registry.names()}")
        for item in items:
            registry.get(str(item))
        return str(items[0]) if single else tuple(str(i) for i in items)

    return parse


def parse_levels(value: Any, key: str) -> tuple[float, ...]:
    """Levels in 1/255 units (noise stds, attack radii): a number or a list of distinct positive numbers, in the
    order given.

    Raises:
        ValueError: Naming the option and value, if it is empty, not numeric, not positive and finite, or
            repeats a level.
    """
    items = list(value) if isinstance(value, list | tuple) else [value]
    if any(isinstance(s, bool) or not isinstance(s, int | float) for s in items):
        raise ValueError(f"option {key}={value!r}: give levels in 1/255 units, e.g. --option {key}=[1,3,5]")
    levels = tuple(float(s) for s in items)
    if not levels or any(not (math.isfinite(s) and s > 0) for s in levels):
        raise ValueError(f"option {key}={value!r}: every level must be a positive finite number (1/255 units)")
    if len(set(levels)) != len(levels):
        raise ValueError(f"option {key}={value!r} repeats a level; list each level once")
    return levels
