"""Helpers shared by task runners: parsing options (typed option sets, positive integers, levels in 1/255
units) and per-sample random seeds."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar

T = TypeVar("T")


def options_dataclass(cls: type[T], options: Mapping[str, Any], task: str) -> T:
    """``cls(**options)`` for a dataclass of a task's options, refusing names it does not have.

    Raises:
        ValueError: Naming the task, the unknown options and the known ones.
    """
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = set(options) - known
    if unknown:
        raise ValueError(f"{task}: unknown options {sorted(unknown)}; known: {sorted(known)}")
    return cls(**options)


def positive_int(options: Mapping[str, Any], name: str, default: int | None) -> int | None:
    """An optional positive integer option; raises ValueError naming it."""
    value = options.get(name, default)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"option {name}={value!r}: give a positive integer")
    return value


def parse_levels(value: Any, option: str) -> tuple[float, ...]:
    """Option ``option`` as levels in 1/255 units (noise stds, attack radii): a number or a list of distinct
    positive numbers, in the order given.

    Raises:
        ValueError: Naming the option and value, if it is empty, not numeric, not positive and finite, or
            repeats a level.
    """
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        levels = tuple(float(s) for s in items)
    except (TypeError, ValueError) as exc:
        raise ValueError(
            f"option {option}={value!r}: give levels in 1/255 units, e.g. --option {option}=[1,3,5]"
        ) from exc
    if not levels or any(not (math.isfinite(s) and s > 0) for s in levels):
        raise ValueError(f"option {option}={value!r}: every level must be a positive finite number (1/255 units)")
    if len(set(levels)) != len(levels):
        raise ValueError(f"option {option}={value!r} repeats a level; list each level once")
    return levels


def sample_seed(seed: int, sample_id: str, *parts: object) -> int:
    """A 63-bit generator seed from (run seed, sample id, further parts), via SHA-256.

    A pure function of its arguments: a sample draws the same noise whatever its batch, batch position or
    device, and whatever other samples or levels the run includes.
    """
    text = "|".join([str(int(seed)), sample_id, *(repr(part) for part in parts)])
    return int.from_bytes(hashlib.sha256(text.encode()).digest()[:8], "little") >> 1
