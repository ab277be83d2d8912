"""The project's registries: one :class:`~aft_bench.core.registry.Registry` per kind of pluggable thing.

No entry is listed here. Each built-in is declared where its object is defined (:mod:`aft_bench.core.declarations`:
``@ATTRIBUTIONS.register("gradcam", help=...)`` on the class, a ``Metric`` object, a task's YAML naming its class),
found without importing anything, so ``aft-bench ls`` and ``--help`` import neither torch nor model code. Third-party
packages add entries through the entry-point group each registry names (``aft_bench.attributions``, ...). Tests and
notebooks add entries for a while with :meth:`~aft_bench.core.registry.Registry.temporary`.
"""

from __future__ import annotations

from aft_bench.core.registry import Registry
from aft_bench.core.task_registry import TaskRegistry

ENCODERS: Registry = Registry("encoder", declared_as=("ENCODERS",), group="aft_bench.encoders")
"""Encoders by name (factories taking ``device``); any spec form reaches the rest (:mod:`aft_bench.models.loading`)."""
ENCODER_BACKENDS: Registry = Registry("encoder backend", declared_as=("ENCODER_BACKENDS",),
                                      group="aft_bench.encoder_backends")
"""One backend per model library (:class:`~aft_bench.models.backend.EncoderBackend`)."""
ATTRIBUTIONS: Registry = Registry("attribution", declared_as=("ATTRIBUTIONS",), group="aft_bench.attributions")
TASKS: TaskRegistry = TaskRegistry("task", declared_as=("yaml",), group="aft_bench.tasks")
DATASETS: Registry = Registry("dataset", declared_as=("DATASETS",), group="aft_bench.datasets")
METRICS: Registry = Registry("metric", declared_as=("Metric", "PooledMetric"), group="aft_bench.metrics")
OBJECTIVES: Registry = Registry("objective", declared_as=("OBJECTIVES",), group="aft_bench.objectives")
TARGETS: Registry = Registry("target", declared_as=("TARGETS",), group="aft_bench.targets")
CLASSIFIERS: Registry = Registry("classifier", declared_as=("CLASSIFIERS",), group="aft_bench.classifiers")
RETRAINERS: Registry = Registry("retrainer", declared_as=("RETRAINERS",), group="aft_bench.retrainers")
ATTACKS: Registry = Registry("attack", declared_as=("ATTACKS",), group="aft_bench.attacks")
REGULARIZERS: Registry = Registry("regularizer", declared_as=("REGULARIZERS",), group="aft_bench.regularizers")
VLMS: Registry = Registry("vlm", declared_as=("VLMS",), group="aft_bench.vlms")
"""Vision-language models by name (factories returning a ``save_pretrained`` folder)."""
FIGURES: Registry = Registry("task figure", declared_as=("FIGURES",), group="aft_bench.figures")
"""Task figures (``aft-bench figure --task NAME``: functions taking a RunConfig and an output path)."""
