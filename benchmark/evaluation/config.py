"""Run configuration: command line > task YAML > defaults, resolved into one frozen record.

Each task ships ``tasks/<name>.yaml`` with ``metadata.version`` (bumped whenever the task's numbers
would change) and ``defaults`` for any :class:`RunConfig` field; ``options`` hold task-specific
settings (for example the pointing-game tolerance). An optional ``dataset_defaults`` maps a dataset name to
``dataset_args`` used only on that dataset (zero-shot keeps the shapes world's run short with
``dataset_defaults: {shapes: {size: 100}}``); ``--dataset-arg`` and ``defaults.dataset_args`` win over them.
No task YAML sets ``limit``: every run scores the whole dataset unless ``--limit`` subsamples it.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from typing import Any, Literal

import yaml

from aft_bench.core.registries import TASKS
from aft_bench.models.series import expand_encoder_specs

OnError = Literal["raise", "skip"]
PRECISIONS = ("fp32", "bf16")
"""Attribution precisions: fp32, or bf16 autocast with fp32 maps (:mod:`aft_bench.evaluation.precision`)."""


@dataclass(frozen=True)
class RunConfig:
    """Everything one ``aft-bench run`` needs.

    Attributes:
        task: Task name (registry ``TASKS``).
        encoders: Encoder specs (registry names, ``ARCH:TAG``, ``hf-hub:...``, ``ckpt:PATH``, ``ARCH:TAG@PATH``).
        attributions: Attribution method names (registry ``ATTRIBUTIONS``).
        dataset: Dataset name (registry ``DATASETS``); ``data_root`` its folder on disk.
        limit: Evaluate a seeded random subset of this many samples; None (the default) = the whole dataset.
        batch_size, device, num_workers: Execution settings (``num_workers`` None: the available cores, at most 8,
            :func:`aft_bench.evaluation.streaming.default_workers`): they change neither which samples are scored nor
            how, but batched float arithmetic rounds differently at different batch sizes, so per-sample scores
            agree across batch sizes to rounding only (tests/test_determinism.py states the tolerances).
        seed: The run's seed (subsets, noise).
        cache_samples: Keep the loaded samples of a file dataset in the user cache and read them back on later passes
            (:mod:`aft_bench.data.sample_cache`): an execution setting (cached samples are the loaded ones, bit for
            bit), left out of the numbers key and, while off, of :meth:`to_dict`.
        precision: Attribution forwards in ``fp32`` (default) or ``bf16`` autocast (maps and inputs stay fp32); part
            of the numbers key when not fp32.
        out: Results folder. on_error: ``raise`` (default) or ``skip`` bad samples, counted.
        fresh: Ignore stored per-sample scores and recompute.
        options: Task-specific options. attribution_args: ``{method: {hparam: value}}``.
        dataset_args: Extra keyword arguments for the dataset constructor.
    """

    task: str
    encoders: tuple[str, ...] = ("toy",)
    attributions: tuple[str, ...] = ("simple_gradient",)
    dataset: str = "shapes"
    data_root: str | None = None
    limit: int | None = None
    batch_size: int = 16
    device: str = "cpu"
    seed: int = 0
    num_workers: int | None = None
    cache_samples: bool = False
    precision: str = "fp32"
    out: str = "results"
    on_error: OnError = "raise"
    fresh: bool = False
    options: Mapping[str, Any] = field(default_factory=dict)
    attribution_args: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    dataset_args: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.on_error not in ("raise", "skip"):
            raise ValueError(f"on_error must be 'raise' or 'skip', got {self.on_error!r}")
        if self.limit is not None and self.limit < 1:
            raise ValueError(f"--limit {self.limit}: give a positive number of samples, or leave --limit out for all")
        if self.batch_size < 1:
            raise ValueError(f"--batch-size {self.batch_size}: give a positive number of samples per batch")
        if self.precision not in PRECISIONS:
            raise ValueError(f"--precision {self.precision!r}: choose one of {', '.join(PRECISIONS)}")
        if self.num_workers is not None and self.num_workers < 0:
            raise ValueError(f"--num-workers {self.num_workers}: give 0 (load in the main process) or a positive "
                             "number of data-loading worker processes")

    def numbers_key(self) -> dict[str, Any]:
        """The fields that change per-sample numbers (execution settings and limit excluded: batch sizes change
        per-sample scores by float rounding only, within the tolerances tests/test_determinism.py measures)."""
        return {
            "task": self.task, "dataset": self.dataset, "data_root": self.data_root, "seed": self.seed,
            "options": dict(self.options), "dataset_args": dict(self.dataset_args),
            **({"precision": self.precision} if self.precision != "fp32" else {}),  # fp32 keys stay as they were
        }

    def to_dict(self) -> dict[str, Any]:
        out = {f.name: getattr(self, f.name) for f in fields(self)}
        out["encoders"], out["attributions"] = list(self.encoders), list(self.attributions)
        if not self.cache_samples:  # the dicts hashed into stage records and figure panels stay as they were
            del out["cache_samples"]
        for key in ("options", "attribution_args", "dataset_args"):
            out[key] = _plain(out[key])
        return out


@dataclass(frozen=True)
class TaskSpec:
    """A task's YAML: its version, default settings, per-dataset default dataset arguments and quick check.

    Attributes:
        quick_check: The settings of the task's smallest meaningful run (``options``: a second or two on the toy
            world); the every-task test (``tests/test_every_task.py``) runs every declared task with them, so a new
            task is covered by declaring it.
    """

    name: str
    version: int
    defaults: Mapping[str, Any]
    description: str = ""
    dataset_defaults: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)
    quick_check: Mapping[str, Any] = field(default_factory=dict)


def load_task_spec(task: str) -> TaskSpec:
    """Reads the YAML that declares ``task`` (``tasks/<task>.yaml``, or a plugin's:
    :mod:`aft_bench.core.task_registry`).

    Raises:
        UnknownNameError: For an unknown task. FileNotFoundError: For a task registered without a YAML file.
        ValueError: For a YAML without ``metadata.version``.
    """
    data = yaml.safe_load(TASKS.spec_text(task)) or {}
    meta = data.get("metadata", {})
    if "version" not in meta:
        raise ValueError(f"{TASKS.origin(task)} (task {task!r}) lacks metadata.version")
    return TaskSpec(task, int(meta["version"]), data.get("defaults", {}) or {}, meta.get("description", ""),
                    data.get("dataset_defaults", {}) or {}, data.get("quick_check", {}) or {})


def resolve_config(task: str, overrides: Mapping[str, Any]) -> RunConfig:
    """Builds the RunConfig: ``overrides`` (command line, None = not given) > task YAML > defaults; the YAML's
    ``dataset_defaults`` of the chosen dataset sit below every given ``dataset_args``; ``series:`` and ``grid:``
    encoder specs are expanded (:func:`aft_bench.models.series.expand_encoder_specs`)."""
    spec = load_task_spec(task)
    names = {f.name for f in fields(RunConfig)}
    unknown = set(spec.defaults) - names
    if unknown:
        raise ValueError(f"tasks/{task}.yaml defaults has unknown keys {sorted(unknown)}; known: {sorted(names)}")
    merged: dict[str, Any] = {"task": task, **spec.defaults}
    for key, value in overrides.items():
        if value is None:
            continue
        if key in ("options", "attribution_args", "dataset_args"):
            merged[key] = _deep_merge(merged.get(key, {}), value)
        else:
            merged[key] = value
    for key in ("encoders", "attributions"):
        if key in merged:
            merged[key] = tuple(merged[key])
    if "encoders" in merged:  # series:RUN and grid:OUT stand for one encoder per snapshot or grid point
        merged["encoders"] = expand_encoder_specs(merged["encoders"])
    dataset = merged.get("dataset", RunConfig.dataset)
    if dataset in spec.dataset_defaults:
        merged["dataset_args"] = _deep_merge(spec.dataset_defaults[dataset], merged.get("dataset_args", {}))
    return RunConfig(**merged)


def with_changes(config: RunConfig, **changes: Any) -> RunConfig:
    """A copy of ``config`` with ``changes`` applied (validated again)."""
    return replace(config, **changes)


def _deep_merge(base: Mapping[str, Any], top: Mapping[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        out[key] = _deep_merge(out[key], value) if isinstance(value, Mapping) and isinstance(
            out.get(key), Mapping) else value
    return out


def _plain(value: Any) -> Any:
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, tuple | list):
        return [_plain(v) for v in value]
    return value
