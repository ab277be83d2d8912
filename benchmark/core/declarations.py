"""Declarations: the registries' built-in entries, read from the package's own files without importing them.

An entry is declared once, where its object is defined, in one of three forms:

- a decorator on a class or a function: ``@ATTRIBUTIONS.register("gradcam", help="...")``, for any registry of
  :mod:`aft_bench.core.registries` (named by its variable);
- a metric object at the top of a module: ``PG = Metric("pg", ..., description="...")`` (``Metric`` or
  ``PooledMetric``), for the ``METRICS`` registry, its help the metric's description;
- a task's YAML file that names its class, ``class: aft_bench.tasks.pointing_game:PointingGame``, for the ``TASKS``
  registry, named after the file, its help the YAML's ``metadata.description`` (the way lm-evaluation-harness'
  task YAMLs name theirs).

:func:`declarations` reads the files of every package of the layers (:mod:`aft_bench.core.layers`) as text, parses
only those that hold a declaration and returns what they declare: nothing is imported, so listing names
(``aft-bench ls``, ``--help``) never imports torch, and there is no central list to edit when a method, metric or task
is added. :func:`describe` gives the help of any ``module:attr`` entry the same way (for entry points of plugins).
``tests/test_declarations.py`` imports every module and checks that what the decorators register is exactly what
was read here.
"""

from __future__ import annotations

import ast
import functools
import importlib.util
import re
import tokenize
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aft_bench.core.layers import packages

_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
METRIC_CONSTRUCTORS = ("Metric", "PooledMetric")
"""The classes whose module-level instances declare ``METRICS`` entries."""
TASK_YAML = "yaml"
"""The form of a task declared by its YAML file."""
_DECLARATION = re.compile(
    r"^(?:@(?P<call>(?P<registry>[A-Z][A-Z_]*)\.register\()"
    r"|(?P<variable>[A-Z][A-Z0-9_]*)(?:: *[\w\[\], |]+)? *= *(?P<ctor>(?:Metric|PooledMetric)\())", re.M)
"""A declaring statement at the top of a module: a ``@REGISTRY.register(`` decorator or ``NAME = Metric(``."""
_DEFINED = re.compile(r"^(?:async +)?(?:def|class) +(\w+)", re.M)
_TASK_CLASS = re.compile(r"^class:", re.M)


class DeclarationError(ValueError):
    """A declaration that cannot be read statically: the message names the file and line and what to change."""


@dataclass(frozen=True)
class Declaration:
    """One declared registry entry.

    Attributes:
        form: The registry variable of a decorator (``"ATTRIBUTIONS"``), a metric class (``"Metric"``) or ``"yaml"``.
        name: The entry's name.
        target: ``"module:attr"`` of the object (a task's class for a YAML).
        help: One line for ``aft-bench ls``.
        origin: The file the declaration stands in.
        data: What else a decorator declares, as literal keywords (an encoder backend's spec ``prefixes``), so that
            a registry can choose an entry before importing it.
    """

    form: str
    name: str
    target: str
    help: str
    origin: Path
    data: tuple[tuple[str, Any], ...] = ()


def module_files() -> Iterator[tuple[str, Path]]:
    """(dotted module name, file) of every ``.py`` and ``.yaml`` file of the layers' packages, package by package
    in layer order and sorted by name within a folder (a ``.yaml`` file's name is its package's plus its stem)."""
    listed = set(packages())
    for package in packages():
        spec = importlib.util.find_spec(package)
        for folder in (spec.submodule_search_locations or []) if spec else []:
            yield from _walk(package, Path(folder), listed)


def _walk(package: str, folder: Path, listed: set[str]) -> Iterator[tuple[str, Path]]:
    for path in sorted(folder.iterdir()):
        if path.is_dir():
            if (path / "__init__.py").is_file() and f"{package}.{path.name}" not in listed:
                yield from _walk(f"{package}.{path.name}", path, listed)
        elif path.suffix in (".py", ".yaml"):
            yield (package if path.name == "__init__.py" else f"{package}.{path.stem}"), path


@functools.cache
def declarations() -> tuple[Declaration, ...]:
    """Every declaration of the package, in layer and file order (read once per process).

    Raises:
        DeclarationError: For a declaration whose name is not a string literal, or a task YAML without a class.
    """
    found: list[Declaration] = []
    for module, path in module_files():
        text = path.read_text(encoding="utf-8")
        if path.suffix == ".yaml":
            if _TASK_CLASS.search(text):
                found.append(_task_yaml(path, text))
        elif ".register(" in text or "Metric(" in text:
            found += _python(module, path, text)
    return tuple(found)


def declared(forms: tuple[str, ...]) -> list[Declaration]:
    """The declarations of the given forms (one registry's), in order."""
    return [d for d in declarations() if d.form in forms]


def _task_yaml(path: Path, text: str) -> Declaration:
    data = yaml.load(text, Loader=_YAML_LOADER) or {}
    target = data.get("class")
    if not isinstance(target, str) or ":" not in target:
        raise DeclarationError(f"{path}: 'class' must name the task's class as 'module:Class', got {target!r}")
    description = (data.get("metadata") or {}).get("description", "")
    return Declaration(TASK_YAML, path.stem, target, str(description), path)


def _python(module: str, path: Path, text: str) -> Iterator[Declaration]:
    """The declarations of one module's source: only each declaring statement is tokenised and parsed (the files
    are many and only their declarations are needed), the whole file only for a decorator without ``help``."""
    for match in _DECLARATION.finditer(text):
        call = _call(text, match.start("call") if match.group("registry") else match.start("ctor"), path)
        if match.group("registry"):
            defined = _DEFINED.search(text, match.end())
            if defined is None:
                raise DeclarationError(f"{path}: @{match.group('registry')}.register(...) decorates no def or class")
            help_text = _keyword(call, "help") or _docstring_line(text, defined.group(1), path)
            yield Declaration(match.group("registry"), _name(call, path, text, match.start()),
                              f"{module}:{defined.group(1)}", help_text, path, _data(call, path))
        else:
            yield Declaration(_constructor(call) or "", _name(call, path, text, match.start()),
                              f"{module}:{match.group('variable')}", _keyword(call, "description"), path)


def _call(text: str, start: int, path: Path) -> ast.Call:
    """The call expression that starts at ``text[start]`` (its parentheses matched by the tokenizer)."""
    lines = text[start:].splitlines(keepends=True)
    offsets = [0]
    for line in lines:
        offsets.append(offsets[-1] + len(line))
    depth = 0
    try:
        for token in tokenize.generate_tokens(iter(lines).__next__):
            if token.type == tokenize.OP and token.string in "([{":
                depth += 1
            elif token.type == tokenize.OP and token.string in ")]}":
                depth -= 1
                if depth == 0:
                    end = offsets[token.end[0] - 1] + token.end[1]
                    node = ast.parse(text[start:start + end], mode="eval").body
                    if isinstance(node, ast.Call):
                        return node
                    break
    except (tokenize.TokenError, SyntaxError):
        pass
    raise DeclarationError(f"{path}, line {text.count(chr(10), 0, start) + 1}: cannot read the declaration there "
                           "(an unclosed call?)")


def _docstring_line(text: str, name: str, path: Path) -> str:
    for node in ast.parse(text, filename=str(path)).body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == name:
            return _first_line(ast.get_docstring(node))
    return ""


def _constructor(value: ast.expr | None) -> str | None:
    if isinstance(value, ast.Call) and isinstance(value.func, ast.Name) and value.func.id in METRIC_CONSTRUCTORS:
        return value.func.id
    return None


def _name(call: ast.Call, path: Path, text: str, start: int) -> str:
    node = call.args[0] if call.args else next((k.value for k in call.keywords if k.arg == "name"), None)
    if not (isinstance(node, ast.Constant) and isinstance(node.value, str)):
        raise DeclarationError(f"{path}, line {text.count(chr(10), 0, start) + 1}: a declared entry's name must be a "
                               "string literal (it is read without importing the module)")
    return node.value


def _data(call: ast.Call, path: Path) -> tuple[tuple[str, Any], ...]:
    """The literal keywords of a decorator other than ``help`` (tuples for lists, so a declaration stays hashable)."""
    data = []
    for keyword in call.keywords:
        if keyword.arg in (None, "help"):
            continue
        try:
            value = ast.literal_eval(keyword.value)
        except ValueError:
            raise DeclarationError(f"{path}, line {keyword.value.lineno}: the declared {keyword.arg}= must be a "
                                   "literal (it is read without importing the module)") from None
        data.append((keyword.arg, tuple(value) if isinstance(value, list) else value))
    return tuple(data)


def _keyword(call: ast.Call, key: str) -> str:
    value = next((k.value for k in call.keywords if k.arg == key), None)
    return value.value if isinstance(value, ast.Constant) and isinstance(value.value, str) else ""


def _first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0] if doc and doc.strip() else ""


def describe(target: str) -> Declaration | None:
    """The declaration of the object ``"module:attr"`` read from its source without running it (its decorator's help
    and data, else the first line of its docstring as help), or None when the source cannot be found or read.

    The form of the returned declaration is the decorator's registry, or ``""`` for an undecorated object.
    """
    module, _, attr = target.partition(":")
    try:
        spec = importlib.util.find_spec(module)
    except (ImportError, ValueError):
        return None
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return None
    path = Path(spec.origin)
    try:
        text = path.read_text(encoding="utf-8")
        for declaration in _python(module, path, text):
            if declaration.target == target:
                return declaration
        for node in ast.parse(text).body:
            if isinstance(node, ast.FunctionDef | ast.ClassDef) and node.name == attr:
                return Declaration("", attr, target, _first_line(ast.get_docstring(node)), path)
    except (OSError, SyntaxError, UnicodeDecodeError, DeclarationError):
        return None
    return None
