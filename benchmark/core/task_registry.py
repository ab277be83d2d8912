"""The task registry: built from the tasks' YAML files, each of which names its class.

A task is declared by its YAML file alone (``tasks/<name>.yaml`` with ``class: module:Class``, ``metadata.version``
and its defaults): :mod:`aft_bench.core.declarations` finds the built-in ones without importing anything, and a
plugin declares one with an entry point of the group ``aft_bench.tasks`` whose value names the YAML file inside its
package, ``my_plugin:my_task.yaml``. The task's class is imported when the task is looked up; its YAML is read by
:meth:`TaskRegistry.spec_text`.
"""

from __future__ import annotations

from importlib import metadata, resources
from typing import Any

import yaml

from aft_bench.core.declarations import DeclarationError
from aft_bench.core.registry import Registry


class TaskRegistry(Registry[Any]):
    """A :class:`~aft_bench.core.registry.Registry` of task classes whose entries come from YAML files."""

    def spec_text(self, name: str) -> str:
        """The YAML text of task ``name``.

        Raises:
            UnknownNameError: For an unknown task.
            FileNotFoundError: For a task registered by hand, without a YAML file.
        """
        origin = self.origin(name)
        if origin is None or isinstance(origin, str):
            raise FileNotFoundError(f"task {name!r} has no YAML config (it was registered by hand, not declared by a "
                                    "tasks/<name>.yaml file that names its class)")
        return origin.read_text(encoding="utf-8")

    def _plugin_entry(self, point: metadata.EntryPoint, owner: str) -> tuple[str, str, dict[str, Any], Any]:
        """The task class its YAML names, the YAML's ``metadata.description`` and the YAML file as its origin (read
        by :meth:`spec_text`).

        Raises:
            DeclarationError: For a YAML that is unreadable or names no class as ``module:Class``.
        """
        path = _yaml_file(point)
        data = _plugin_yaml(point, path)
        target = data.get("class")
        if not isinstance(target, str) or ":" not in target:
            raise DeclarationError(f"{path} (entry point {point.name!r}): 'class' must name the task's class as "
                                   f"'module:Class', got {target!r}")
        return target, str((data.get("metadata") or {}).get("description", "")), {}, path


def _yaml_file(point: metadata.EntryPoint) -> Any:
    """The file an ``aft_bench.tasks`` entry point names (``package:file.yaml``), as a resource of the package."""
    package, _, file = point.value.partition(":")
    if not file.endswith(".yaml"):
        raise DeclarationError(f"entry point {point.name!r} of group aft_bench.tasks is {point.value!r}: give the "
                               "task's YAML file inside its package, 'package:name.yaml'")
    return resources.files(package).joinpath(file)


def _plugin_yaml(point: metadata.EntryPoint, path: Any) -> dict[str, Any]:
    """The mapping of a plugin task's YAML file ``path``.

    Raises:
        DeclarationError: Naming the file and the entry point when it is unreadable or no mapping.
    """
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except (OSError, yaml.YAMLError) as exc:
        raise DeclarationError(f"{path} (entry point {point.name!r}): not a readable YAML file ({exc})") from exc
    if not isinstance(data, dict):
        raise DeclarationError(f"{path} (entry point {point.name!r}): a task YAML must be a mapping")
    return data

