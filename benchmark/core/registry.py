"""A generic registry with lazy entries and did-you-mean errors.

Follows the shape of lm-evaluation-harness' ``lm_eval/api/registry.py``: one class, several
instances (encoders, attributions, tasks, datasets, metrics). An entry is either the object itself or
a lazy ``"package.module:attr"`` string that is imported on first use, so listing names (``aft-bench
ls``) never imports torch.
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Generic, TypeVar

T = TypeVar("T")


class UnknownNameError(KeyError):
    """Raised for a name no registry entry has; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(known))}.")

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class Registry(Generic[T]):
    """Maps names to objects, importing lazy ``"module:attr"`` entries on first lookup.

    Args:
        kind: What the registry holds, used in error messages ("encoder", "attribution", ...).
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}

    def register(self, name: str, obj: T | str | None = None, *, help: str = "") -> Callable[[T], T] | None:
        """Registers ``obj`` under ``name``; without ``obj`` acts as a decorator.

        Args:
            name: The public name.
            obj: The object, or a lazy ``"package.module:attr"`` reference.
            help: One line shown by ``aft-bench ls``.

        Raises:
            ValueError: If ``name`` is already registered to a different object.
        """

        def add(target: T | str) -> T | str:
            old = self._entries.get(name)
            if old is not None and old is not target and not self._is_lazy_for(old, target):
                raise ValueError(f"{self.kind} {name!r} is already registered")
            self._entries[name] = target
            if help or name not in self._help:
                self._help[name] = help or _first_doc_line(target)
            return target

        if obj is None:
            return add  # type: ignore[return-value]
        add(obj)
        return None

    @staticmethod
    def _is_lazy_for(old: T | str, new: T | str) -> bool:
        """True when ``old`` is the lazy reference that ``new`` (the imported object) resolves."""
        if not isinstance(old, str) or isinstance(new, str):
            return False
        module, _, attr = old.partition(":")
        return getattr(new, "__module__", None) == module and getattr(new, "__name__", None) == attr

    def get(self, name: str) -> T:
        """Returns the entry for ``name``, importing it if lazy.

        Raises:
            UnknownNameError: If ``name`` is not registered (message lists known names).
        """
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        entry = self._entries[name]
        if isinstance(entry, str):
            module, _, attr = entry.partition(":")
            entry = getattr(importlib.import_module(module), attr)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def unregister(self, name: str) -> None:
        """Removes ``name``.

        Raises:
            UnknownNameError: If ``name`` is not registered.
        """
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))
        del self._entries[name]
        self._help.pop(name, None)

    @contextmanager
    def temporary(self, name: str, obj: T | str, *, help: str = "", replace: bool = False) -> Iterator[T | str]:
        """Registers ``obj`` under ``name`` for the body of a ``with`` block, then restores the registry.

        The public way for tests and notebooks to add an entry for a while (a fake method, a tiny task), or,
        with ``replace=True``, to stand in for a built-in one; the previous entry comes back afterwards.

        Raises:
            ValueError: If ``name`` is already registered and ``replace`` is False.
        """
        previous = (self._entries[name], self._help.get(name, "")) if name in self._entries else None
        if previous is not None and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; choose another name or pass replace=True")
        self._entries[name] = obj
        self._help[name] = help or _first_doc_line(obj)
        try:
            yield obj
        finally:
            if previous is None:
                self._entries.pop(name, None)
                self._help.pop(name, None)
            else:
                self._entries[name], self._help[name] = previous

    def help(self, name: str) -> str:
        """One-line description of ``name`` (empty when none was given)."""
        return self._help.get(name, "")

    def names(self) -> list[str]:
        """Registered names in registration order."""
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self._entries)

    def __len__(self) -> int:
        return len(self._entries)


def _first_doc_line(obj: object) -> str:
    if isinstance(obj, str):
        return ""
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
