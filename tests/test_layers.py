"""The layers (:mod:`aft_bench.core.layers`) hold: no module imports from a layer above its own, and the import graph
of the package has no circle.

Every import counts: at the top of a module, inside functions, under ``TYPE_CHECKING``, a literal module name given
to ``importlib.import_module``, ``importlib.resources.files`` or ``importlib.util.find_spec``, and a lazy
``"aft_bench.x.y:attr"`` string. ``python tests/test_layers.py`` prints the layers with their files, lines and
imports.
"""

from __future__ import annotations

import ast
import functools
import re
import sys
from collections import defaultdict
from pathlib import Path

from aft_bench.core.declarations import module_files
from aft_bench.core.layers import LAYERS, layer_index

LAZY = re.compile(r"aft_bench(?:\.\w+)+:\w+")
LOADERS = ("import_module", "files", "find_spec", "__import__")
"""Calls whose literal first argument names a module they load."""


@functools.cache
def modules() -> dict[str, Path]:
    """Every Python module of the package and its file."""
    return {module: path for module, path in module_files() if path.suffix == ".py"}


def _resolve(name: str, known: dict[str, Path]) -> str | None:
    """The module of the package that ``name`` (a module, or a module's attribute) refers to."""
    while name and name not in known:
        name = name.rpartition(".")[0]
    return name or None


def imports(module: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The modules of the package that ``module`` imports, in any of the ways the module docstring lists."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                parent = package
                for _ in range(node.level - 1):
                    parent = parent.rpartition(".")[0]
                base = f"{parent}.{base}" if base else parent
            names += [f"{base}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Constant) and isinstance(node.value, str) and LAZY.fullmatch(node.value):
            names.append(node.value.partition(":")[0])
        elif (isinstance(node, ast.Call) and node.args and isinstance(node.args[0], ast.Constant)
              and isinstance(node.args[0].value, str)
              and getattr(node.func, "attr", getattr(node.func, "id", None)) in LOADERS):
            names.append(node.args[0].value)
    found = {_resolve(name, known) for name in names if name.startswith("aft_bench")}
    return {target for target in found if target is not None and target != module}


@functools.cache
def graph() -> dict[str, set[str]]:
    """Module -> the package's modules it imports (read once per test session)."""
    known = modules()
    return {module: imports(module, path, known) for module, path in known.items()}


def circles(edges: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components with more than one module (Tarjan's algorithm, iteratively)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[list[str]] = []
    counter = 0
    for root in sorted(edges):
        if root in index:
            continue
        work = [(root, iter(sorted(edges[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            child = next(children, None)
            if child is None:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        found.append(sorted(component))
            elif child not in index:
                index[child] = low[child] = counter
                counter += 1
                stack.append(child)
                on_stack.add(child)
                work.append((child, iter(sorted(edges.get(child, ())))))
            elif child in on_stack:
                low[node] = min(low[node], index[child])
    return found


def test_every_module_is_in_a_layer() -> None:
    for module in modules():
        layer_index(module)


def test_no_module_imports_from_a_layer_above_its_own() -> None:
    known = modules()
    upward = [f"{known[source]} ({LAYERS[layer_index(source)].name}) imports {target} "
              f"({LAYERS[layer_index(target)].name}, file {known[target]})"
              for source, targets in graph().items() for target in sorted(targets)
              if layer_index(target) > layer_index(source)]
    assert not upward, "\n".join(upward)


def test_the_import_graph_has_no_circle() -> None:
    known = modules()
    found = circles(graph())
    assert not found, "\n".join("circle: " + " <-> ".join(str(known[m]) for m in component) for component in found)


def test_the_checks_see_an_upward_import_and_a_circle() -> None:
    """The two checks fail on what they look for (a graph built by hand)."""
    edges = {"aft_bench.core.a": {"aft_bench.models.b"}, "aft_bench.models.b": {"aft_bench.core.a"}}
    assert circles(edges) == [["aft_bench.core.a", "aft_bench.models.b"]]
    assert layer_index("aft_bench.models.b") > layer_index("aft_bench.core.a")
    assert circles({"aft_bench.core.a": {"aft_bench.core.b"}, "aft_bench.core.b": set()}) == []


def test_imports_are_read_in_every_form(tmp_path: Path) -> None:
    known = {name: tmp_path / f"{name}.py" for name in
             ("aft_bench.core.x", "aft_bench.models.m", "aft_bench.data.d", "aft_bench.tasks.t", "aft_bench.apps.a",
              "aft_bench.evaluation.e")}
    source = tmp_path / "src.py"
    source.write_text(
        "from __future__ import annotations\nimport importlib\nfrom typing import TYPE_CHECKING\n"
        "from aft_bench.core.x import thing\n"
        "if TYPE_CHECKING:\n    from aft_bench.models.m import Model\n"
        "def f():\n    from aft_bench.data import d\n    return importlib.import_module('aft_bench.tasks.t')\n"
        "LAZY = 'aft_bench.apps.a:main'\n"
        "DOC = 'see aft_bench.evaluation.e for more'\nGROUP = 'aft_bench.evaluation.e'\n")
    assert imports("aft_bench.core.src", source, known) == {
        "aft_bench.core.x", "aft_bench.models.m", "aft_bench.data.d", "aft_bench.tasks.t", "aft_bench.apps.a"}


def report() -> str:
    """The layers, lowest first: files, lines, the imports within the layer and those into lower layers."""
    known = modules()
    edges = graph()
    rows = defaultdict(lambda: [0, 0, 0, 0])
    for module, path in known.items():
        row = rows[layer_index(module)]
        row[0] += 1
        row[1] += len(path.read_text(encoding="utf-8").splitlines())
        for target in edges[module]:
            row[2 if layer_index(target) == layer_index(module) else 3] += 1
    lines = ["| layer | packages | files | lines | imports within | imports of lower layers |",
             "|---|---|---|---|---|---|"]
    for position, layer in enumerate(LAYERS):
        files, count, inside, lower = rows[position]
        lines.append(f"| {layer.name} | {', '.join(layer.packages)} | {files} | {count} | {inside} | {lower} |")
    upward = sum(1 for s, ts in edges.items() for t in ts if layer_index(t) > layer_index(s))
    lines.append(f"\n{len(known)} modules, {sum(map(len, edges.values()))} imports, {upward} upward, "
                 f"{len(circles(edges))} circles")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.stdout.write(report() + "\n")
