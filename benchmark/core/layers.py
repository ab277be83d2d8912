"""The layers of aft-bench, lowest first, written down once.

A module may import from its own layer and from the layers below it, never from one above, and the import graph
has no circles: ``tests/test_layers.py`` parses every module's imports (top-level, inside functions and under
``TYPE_CHECKING``, and ``importlib.import_module`` of a literal name) and fails on an upward import or a circle,
naming the files. Registries are how a lower layer reaches code above it without an import: the entries are
declared where they are defined (:mod:`aft_bench.core.declarations`) and resolved when looked up.
"""

from __future__ import annotations

from dataclasses import dataclass

ROOT = "aft_bench"
"""The package's import name (its folders are mapped onto it by pyproject.toml's ``package-dir``)."""


@dataclass(frozen=True)
class Layer:
    """One layer: its name, the packages it holds (below ``aft_bench``; ``""`` is the package's own ``__init__`` and
    ``__main__``) and, in a line, what they hold."""

    name: str
    parts: tuple[str, ...]
    holds: str

    @property
    def packages(self) -> tuple[str, ...]:
        """The dotted names of the layer's packages."""
        return tuple(f"{ROOT}.{part}" if part else ROOT for part in self.parts)


LAYERS: tuple[Layer, ...] = (
    Layer("core", ("core",),
          "registries and declarations, options, errors, atomic writes, the user cache, progress, seeding, the "
          "distributed context, this list"),
    Layer("results", ("results",),
          "typed run results, run keys, per-sample stores with their locks and shard files, leaderboard tables"),
    Layer("metrics", ("metrics",), "pure functions over maps, masks and scores, each declared once"),
    Layer("models", ("models",),
          "the Encoder contract, its backends and the one encoder factory, checkpoints and hub access, the explicit "
          "attention path, LLaVA"),
    Layer("data", ("data",), "datasets (one Dataset contract), transforms, class and category tables"),
    Layer("attributions", ("attributions",), "one file per attribution method"),
    Layer("evaluation", ("evaluation",),
          "the task contract and its loops, run configuration and context, streaming, probes, targets, classifier "
          "heads, attacks, the removal family, the runner"),
    Layer("training", ("training",), "objectives, PGD, the trainer and its data, presets"),
    Layer("toys", ("toys",), "the embedded world's models: the toy CLIP, the toy VLM, the controls"),
    Layer("tasks", ("tasks",), "one file and one YAML per task"),
    Layer("reporting", ("reporting",), "figures and curves drawn from encoders and results"),
    Layer("apps", ("apps", ""),
          "the command line, compare, paper, study and suites; the package's own API and __main__"),
)
"""Every layer, lowest first."""


def layer_index(module: str) -> int:
    """The position in :data:`LAYERS` of the layer that holds ``module`` (the longest package prefix decides).

    Raises:
        ValueError: For a module of no layer.
    """
    best, index = "", -1
    for position, layer in enumerate(LAYERS):
        for package in layer.packages:
            if (module == package or module.startswith(package + ".")) and len(package) > len(best):
                best, index = package, position
    if index < 0:
        raise ValueError(f"module {module!r} belongs to no layer of aft_bench.core.layers.LAYERS")
    return index


def packages() -> tuple[str, ...]:
    """Every package the layers hold, lowest layer first."""
    return tuple(package for layer in LAYERS for package in layer.packages)
