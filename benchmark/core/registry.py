"""A generic registry with lazy entries, declared built-ins, plugins from entry points and did-you-mean errors.

Follows the shape of lm-evaluation-harness' ``lm_eval/api/registry.py``: one class, several instances (encoders,
attributions, tasks, datasets, metrics, ...; :mod:`aft_bench.core.registries`). An entry is either the object itself
or a lazy ``"package.module:attr"`` string imported on first use. A registry fills itself on first use from two
places, with no central list:

- the package's own declarations (:mod:`aft_bench.core.declarations`: ``@REGISTRY.register(...)`` where the object
  is defined, metric objects, task YAMLs), read without importing the modules;
- the Python entry points of its ``group`` (``aft_bench.attributions``, ...), so that a third-party package adds
  entries by declaring them in its own metadata; an entry point that repeats a built-in name is left out with a
  warning naming its distribution.

So listing names (``aft-bench ls``) never imports torch, and a plugin's method runs in ``aft-bench run`` and
``compare`` like a built-in one.
"""

from __future__ import annotations

import difflib
import importlib
import logging
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from importlib import metadata
from typing import Any, Generic, TypeVar

from aft_bench.core.declarations import Declaration, declared, describe
from aft_bench.core.errors import UserError

T = TypeVar("T")
log = logging.getLogger(__name__)


class UnknownNameError(KeyError):
    """Raised for a name no registry entry has; the message lists the known names."""

    def __init__(self, kind: str, name: str, known: list[str]) -> None:
        self.kind, self.name, self.known = kind, name, known
        close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
        hint = f" Did you mean {', '.join(repr(c) for c in close)}?" if close else ""
        super().__init__(f"unknown {kind} {name!r}.{hint} Known {kind}s: {', '.join(sorted(known))}.")

    def __str__(self) -> str:  # KeyError quotes its argument; keep the message readable
        return str(self.args[0])


class PluginError(UserError):
    """A plugin's entry point that cannot be loaded: the message names it, its distribution and the error."""


class Registry(Generic[T]):
    """Maps names to objects, importing lazy ``"module:attr"`` entries on first lookup.

    Args:
        kind: What the registry holds, used in error messages ("encoder", "attribution", ...).
        declared_as: The declaration forms of its built-ins (its variable name for ``@NAME.register``
            decorators, ``Metric``, ...; :mod:`aft_bench.core.declarations`); none for a registry filled by hand.
        group: The entry-point group plugins declare entries in (``aft_bench.attributions``); None for none.
    """

    def __init__(self, kind: str, *, declared_as: tuple[str, ...] = (), group: str | None = None) -> None:
        self.kind, self.declared_as, self.group = kind, declared_as, group
        self._entries: dict[str, T | str] = {}
        self._help: dict[str, str] = {}
        self._origins: dict[str, Any] = {}
        self._data: dict[str, dict[str, Any]] = {}
        self.reload()

    # ------------------------------------------------------------------ filling
    def _load(self) -> None:
        """Adds the declared built-ins and the plugins' entry points, once (names already registered stay)."""
        if self._loaded:
            return
        self._loaded = True
        for declaration in declared(self.declared_as):
            self._declare(declaration)
        for point in _entry_points(self.group):
            self._plugin(point)

    def _declare(self, declaration: Declaration) -> None:
        """Adds one built-in declaration as a lazy entry (an entry its decorator registered already stays).

        Raises:
            ValueError: If two declarations give the name to different objects.
        """
        name, target = declaration.name, declaration.target
        old = self._entries.get(name)
        if old is not None and not (old == target or self._is_lazy_for(target, old)):
            raise ValueError(f"{self.kind} {name!r} is declared twice: {declaration.origin} and "
                             f"{self._origins.get(name, 'at import')}; give one of them another name")
        if old is None:
            self._entries[name] = target
        self._help[name] = self._help.get(name) or declaration.help
        self._origins[name] = declaration.origin
        self._data[name] = {**dict(declaration.data), **self._data.get(name, {})}

    def _plugin(self, point: metadata.EntryPoint) -> None:
        """Adds an entry point of a plugin, unless its name is taken (then a warning names the distribution)."""
        owner = f"entry point {point.name!r} of {_distribution(point)} (group {self.group})"
        if point.name in self._entries:
            log.warning("%s is left out: aft-bench already has %s %r (%s); rename the entry point", owner, self.kind,
                        point.name, self._origins.get(point.name, "built in"))
            return
        target, help_text, data, origin = self._plugin_entry(point, owner)
        self._entries[point.name], self._help[point.name] = target, help_text
        self._data[point.name], self._origins[point.name] = data, origin

    def _plugin_entry(self, point: metadata.EntryPoint, owner: str) -> tuple[str, str, dict[str, Any], Any]:
        """The lazy entry of an entry point (its ``module:attr`` value), its ``ls`` line (its declaration's help or
        docstring, read from the source, else the distribution's name), its declared data and its origin (``owner``);
        subclasses read other values."""
        declaration = describe(point.value)
        help_text = (declaration.help if declaration is not None else "") or f"plugin from {_distribution(point)}"
        return point.value, help_text, dict(declaration.data) if declaration is not None else {}, owner

    def reload(self) -> None:
        """Forgets every entry and fills the registry again on its next use (after a plugin was installed into the
        running interpreter, or removed); entries added by hand or with :meth:`temporary` are dropped."""
        for table in (self._entries, self._help, self._origins, self._data):
            table.clear()
        self._loaded = not self.declared_as and self.group is None

    def register(self, name: str, obj: T | str | None = None, *, help: str = "",
                 **data: Any) -> Callable[[T], T] | None:
        """Registers ``obj`` under ``name``; without ``obj`` acts as a decorator (how built-ins declare themselves).

        Args:
            name: The public name (a string literal in a declaration: it is read without importing the module).
            obj: The object, or a lazy ``"package.module:attr"`` reference.
            help: One line shown by ``aft-bench ls`` (default: the object's first docstring line).
            data: What else the entry declares (literals in a declaration), read with :meth:`declared`.

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
            if data:
                self._data[name] = {key: tuple(v) if isinstance(v, list) else v for key, v in data.items()}
            return target

        if obj is None:
            return add  # type: ignore[return-value]
        add(obj)
        return None

    @staticmethod
    def _is_lazy_for(old: Any, new: Any) -> bool:
        """True when ``old`` is the lazy reference that ``new`` (the imported object) resolves."""
        if not isinstance(old, str) or isinstance(new, str):
            return False
        module, _, attr = old.partition(":")
        return getattr(new, "__module__", None) == module and getattr(new, "__name__", None) == attr

    # ------------------------------------------------------------------ lookup
    def get(self, name: str) -> T:
        """Returns the entry for ``name``, importing it if lazy.

        Raises:
            UnknownNameError: If ``name`` is not registered (message lists known names).
        """
        self._require(name)
        entry = self._entries[name]
        if isinstance(entry, str):
            entry = self._resolve(name, entry)
            self._entries[name] = entry
        return entry  # type: ignore[return-value]

    def _require(self, name: str) -> None:
        """Fills the registry if it is not yet, and checks that ``name`` is registered.

        Raises:
            UnknownNameError: If it is not (the message lists the known names, with a did-you-mean).
        """
        self._load()
        if name not in self._entries:
            raise UnknownNameError(self.kind, name, list(self._entries))

    def _resolve(self, name: str, target: str) -> T:
        """Imports a lazy entry; a plugin's that fails to import is the user's installation, named as such.

        Raises:
            PluginError: Naming the entry point and its distribution, with the import's error.
        """
        module, _, attr = target.partition(":")
        origin = self._origins.get(name)
        if not (isinstance(origin, str) and origin.startswith("entry point")):
            return getattr(importlib.import_module(module), attr)
        try:
            return getattr(importlib.import_module(module), attr)
        except Exception as exc:  # any error of a third party's module: report it as theirs
            raise PluginError(f"{self.kind} {name!r}: {origin} cannot be loaded from {target!r} "
                              f"({type(exc).__name__}: {exc}); fix or uninstall that package") from exc

    def origin(self, name: str) -> Any:
        """Where ``name`` was declared: its file, a plugin's entry point, or None for an entry registered by hand.

        Raises:
            UnknownNameError: If ``name`` is not registered.
        """
        self._require(name)
        return self._origins.get(name)

    def declared(self, name: str) -> dict[str, Any]:
        """What entry ``name`` declares besides its help (``{}`` for none), known without importing it.

        Raises:
            UnknownNameError: If ``name`` is not registered.
        """
        self._require(name)
        return dict(self._data.get(name, {}))

    def unregister(self, name: str) -> None:
        """Removes ``name``.

        Raises:
            UnknownNameError: If ``name`` is not registered.
        """
        self._require(name)
        del self._entries[name]
        for table in (self._help, self._origins, self._data):
            table.pop(name, None)

    @contextmanager
    def temporary(self, name: str, obj: T | str, *, help: str = "", replace: bool = False) -> Iterator[T | str]:
        """Registers ``obj`` under ``name`` for the body of a ``with`` block, then restores the registry.

        The public way for tests and notebooks to add an entry for a while (a fake method, a tiny task), or,
        with ``replace=True``, to stand in for a built-in one (keeping its origin: a task's stand-in reads the task's
        YAML); the previous entry comes back afterwards.

        Raises:
            ValueError: If ``name`` is already registered and ``replace`` is False.
        """
        self._load()
        previous = (self._entries[name], self._help.get(name, "")) if name in self._entries else None
        if previous is not None and not replace:
            raise ValueError(f"{self.kind} {name!r} is already registered; choose another name or pass replace=True")
        self._entries[name] = obj
        self._help[name] = help or _first_doc_line(obj)  # a stand-in keeps the origin (a task its YAML)
        try:
            yield obj
        finally:
            if previous is None:
                for table in (self._entries, self._help, self._origins, self._data):
                    table.pop(name, None)
            else:
                self._entries[name], self._help[name] = previous[0], previous[1]

    def help(self, name: str) -> str:
        """One-line description of ``name`` (empty when none was given)."""
        self._load()
        return self._help.get(name, "")

    def names(self) -> list[str]:
        """Registered names: the declared built-ins in layer and file order, then plugins, then any added by hand."""
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def __len__(self) -> int:
        self._load()
        return len(self._entries)


def _entry_points(group: str | None) -> list[metadata.EntryPoint]:
    """The entry points of ``group`` across the installed distributions (none for no group)."""
    return [] if group is None else sorted(metadata.entry_points(group=group), key=lambda point: point.name)


def _distribution(point: metadata.EntryPoint) -> str:
    dist = getattr(point, "dist", None)
    return f"{dist.name} {dist.version}" if dist is not None else "an installed distribution"


def _first_doc_line(obj: object) -> str:
    if isinstance(obj, str):
        return ""
    doc = getattr(obj, "__doc__", None) or ""
    return doc.strip().splitlines()[0] if doc.strip() else ""
