"""Helpers shared by task runners: parsing levels given in 1/255 units, and per-sample random seeds."""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from typing import Any


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
