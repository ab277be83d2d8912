"""Declarations: what the registries read from the source without importing it is exactly what the modules
register when they are imported, every entry resolves to its declared object, and bad declarations are refused
with the file named."""

from __future__ import annotations

import ast
import importlib
import subprocess
import sys
from pathlib import Path

import pytest

from aft_bench.core import declarations, registries
from aft_bench.core.declarations import Declaration, DeclarationError, module_files
from aft_bench.core.registry import Registry
from aft_bench.metrics.base import Metric, PooledMetric

REGISTRIES = {name: value for name, value in vars(registries).items() if isinstance(value, Registry)}


def _import_everything() -> None:
    for module, path in module_files():
        if path.suffix == ".py" and module != "aft_bench.__main__":
            importlib.import_module(module)


def test_every_declaration_resolves_to_its_object() -> None:
    for name, registry in REGISTRIES.items():
        forms = set(registry.declared_as)
        mine = [d for d in declarations.declarations() if d.form in forms]
        assert mine, f"{name} has no declared entry"
        for declaration in mine:
            module, _, attr = declaration.target.partition(":")
            assert registry.get(declaration.name) is getattr(importlib.import_module(module), attr), declaration
            assert registry.help(declaration.name), f"{name} {declaration.name!r} has no help line"


def _registrations(module: str, path: Path) -> tuple[set[tuple[str, str, str]], list[str]]:
    """Every ``REGISTRY.register(...)`` call of a module, found by a walk of its whole syntax tree (independent of
    the declaration scanner): those that decorate a top-level def or class, as (registry, name, target), and the
    places of any other."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    decorating: set[tuple[str, str, str]] = set()
    seen: set[int] = set()
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.ClassDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and _registry_call(decorator):
                    seen.add(id(decorator))
                    name = ast.literal_eval(decorator.args[0])
                    decorating.add((decorator.func.value.id, name, f"{module}:{node.name}"))  # type: ignore[union-attr]
    elsewhere = [f"{path}:{node.lineno}" for node in ast.walk(tree)
                 if isinstance(node, ast.Call) and _registry_call(node) and id(node) not in seen]
    return decorating, elsewhere


def _registry_call(call: ast.Call) -> bool:
    return (isinstance(call.func, ast.Attribute) and call.func.attr == "register"
            and isinstance(call.func.value, ast.Name) and call.func.value.id in REGISTRIES)


def test_the_scan_reads_exactly_the_registrations_of_the_code() -> None:
    """A walk of every module's whole syntax tree finds the same ``@REGISTRY.register`` decorators the fast scanner
    reads (no decorator it misses, none it invents), and no registration in the package is made any other way (a
    call at import time the scanner could not see)."""
    found: set[tuple[str, str, str]] = set()
    other: list[str] = []
    for module, path in module_files():
        if path.suffix == ".py":
            decorating, elsewhere = _registrations(module, path)
            found |= decorating
            other += elsewhere
    scanned = {(d.form, d.name, d.target) for d in declarations.declarations() if d.form in REGISTRIES}
    assert len(found) >= 60 and found == scanned
    assert other == []


def test_every_metric_object_is_declared() -> None:
    """Every module-level ``Metric`` / ``PooledMetric`` object of the package is the ``METRICS`` entry of its name,
    or a reading of that entry's function under its name (the sanity checks' SSIM, lower-is-better on a 0-1 scale,
    is ``dataclasses.replace`` of the SSIM metric), and every entry's help is its description."""
    _import_everything()
    found: dict[int, Metric | PooledMetric] = {}
    for module, path in module_files():
        if path.suffix == ".py" and module != "aft_bench.__main__":
            for value in vars(importlib.import_module(module)).values():
                if isinstance(value, Metric | PooledMetric):
                    found[id(value)] = value
    assert len(found) >= 25
    for metric in found.values():
        entry = registries.METRICS.get(metric.name)
        assert entry is metric or (isinstance(metric, Metric) and metric.fn is not None and entry.fn is metric.fn), \
            metric.name
    for metric_name in registries.METRICS.names():
        metric = registries.METRICS.get(metric_name)
        assert metric.name == metric_name and registries.METRICS.help(metric_name) == metric.description


def test_listing_every_registry_imports_no_torch() -> None:
    code = ("import sys\nfrom aft_bench.core import registries as r\nfrom aft_bench.core.registry import Registry\n"
            "n = sum(len(v.names()) for v in vars(r).values() if isinstance(v, Registry))\n"
            "print('torch' in sys.modules, n)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    assert out[0] == "False" and int(out[1]) >= 90


def test_bad_declarations_are_refused_naming_the_file(tmp_path: Path) -> None:
    path = tmp_path / "bad.py"
    text = 'NAME = "x"\n\n\n@ATTRIBUTIONS.register(NAME, help="a name that is not a literal")\nclass Bad:\n    pass\n'
    path.write_text(text)
    with pytest.raises(DeclarationError, match=r"bad\.py, line 4: .*string literal"):
        list(declarations._python("pkg.bad", path, text))
    text = '@ATTRIBUTIONS.register("orphan", help="decorates nothing")\nX = 1\n'
    with pytest.raises(DeclarationError, match="decorates no def or class"):
        list(declarations._python("pkg.bad", path, text))
    text = 'X = Metric("cut", higher_is_better=True,\n'
    with pytest.raises(DeclarationError, match=r"bad\.py, line 1: cannot read the declaration"):
        list(declarations._python("pkg.bad", path, text))
    yaml_path = tmp_path / "task.yaml"
    yaml_text = "class: no_colon_here\nmetadata: {version: 1}\n"
    with pytest.raises(DeclarationError, match="module:Class"):
        declarations._task_yaml(yaml_path, yaml_text)


def test_a_decorator_without_help_takes_its_docstring_and_metrics_their_description(tmp_path: Path) -> None:
    path = tmp_path / "fine.py"
    text = ('@ATTRIBUTIONS.register("documented")\nclass Documented:\n    """First line.\n\n    More."""\n\n\n'
            'ODD: Metric = Metric("odd", higher_is_better=False,\n                  description="an (odd) metric")\n')
    found = list(declarations._python("pkg.fine", path, text))
    assert found == [Declaration("ATTRIBUTIONS", "documented", "pkg.fine:Documented", "First line.", path),
                     Declaration("Metric", "odd", "pkg.fine:ODD", "an (odd) metric", path)]


def test_a_name_declared_twice_is_refused(tmp_path: Path) -> None:
    registry: Registry = Registry("thing", declared_as=("THINGS",))
    registry._declare(Declaration("THINGS", "a", "pkg.one:A", "one", tmp_path / "one.py"))
    with pytest.raises(ValueError, match="declared twice"):
        registry._declare(Declaration("THINGS", "a", "pkg.two:A", "two", tmp_path / "two.py"))
