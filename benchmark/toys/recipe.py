"""What the toys' recipes share: their JSON-ready data, the key that names what they build, and checks of their numbers.

A toy (the toy CLIP, the toy VLM) is built by the project's own code from a frozen recipe dataclass, once, into the
user cache (:mod:`aft_bench.toys.store`). :class:`Recipe` is their base: :meth:`Recipe.to_dict` writes the fields as
JSON-ready data (a nested recipe named by its cache key, which covers everything it depends on), :meth:`Recipe.key`
hashes that data with the version of the toy's trainer, so that a change to a field or to the trainer builds a new
artefact instead of reusing a stale one, and :meth:`Recipe.cache_key` names the cache folder.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import fields
from typing import Any, ClassVar


class Recipe:
    """Base of the toys' frozen recipe dataclasses (a subclass is a ``@dataclass(frozen=True)``).

    Attributes:
        trainer_version: Version of the code that trains the recipe; bumped when that code changes what a recipe
            produces (part of :meth:`key`).
        cache_prefix: Start of the cache folder's name (:meth:`cache_key`).
        left_out_at_zero: Fields left out of :meth:`to_dict` (and so of :meth:`key`) while zero, so that the keys of
            recipes from before the field existed stay as they were.
        steps, warmup: Optimiser steps of the training run and its linear warm-up (fields of every subclass).
    """

    trainer_version: ClassVar[int]
    cache_prefix: ClassVar[str]
    left_out_at_zero: ClassVar[tuple[str, ...]] = ()
    steps: int
    warmup: int

    def to_dict(self) -> dict[str, Any]:
        """The recipe as JSON-ready data: tuples as lists, a nested :class:`Recipe` as its :meth:`cache_key`, the
        :attr:`left_out_at_zero` fields only when non-zero."""
        data = {}
        for field in fields(self):  # type: ignore[arg-type]  # subclasses are dataclasses
            value = getattr(self, field.name)
            if field.name in self.left_out_at_zero and not value:
                continue
            data[field.name] = value.cache_key() if isinstance(value, Recipe) else value
        return json.loads(json.dumps(data))

    def key(self) -> str:
        """Short sha256 (16 hex digits) of :meth:`to_dict` and :attr:`trainer_version`: any field change gives a new
        key."""
        payload = json.dumps({"trainer": self.trainer_version, **self.to_dict()}, sort_keys=True)
        return hashlib.sha256(payload.encode()).hexdigest()[:16]

    def cache_key(self) -> str:
        """Name of the cache folder the recipe's artefact is built into: ``<cache_prefix>-<key>``."""
        return f"{self.cache_prefix}-{self.key()}"

    def _require_positive(self, *names: str) -> None:
        """Raises ValueError naming the first of the fields ``names`` below 1."""
        for name in names:
            if getattr(self, name) < 1:
                raise ValueError(f"{type(self).__name__}: {name}={getattr(self, name)} must be positive")

    def _require_schedule(self) -> None:
        """Raises ValueError unless the ``warmup`` steps fit in the ``steps`` of the run
        (:class:`aft_bench.training.schedule.WarmupCosine`)."""
        if not 0 <= self.warmup <= self.steps:
            raise ValueError(f"{type(self).__name__}: warmup={self.warmup} must be in 0..steps={self.steps}")

    def _require_divisible(self, width: str, heads: str) -> None:
        """Raises ValueError when the field ``width`` is not a multiple of the field ``heads`` (attention heads)."""
        if getattr(self, width) % getattr(self, heads):
            raise ValueError(f"{type(self).__name__}: {width}={getattr(self, width)} is not divisible by "
                             f"{getattr(self, heads)} heads")
