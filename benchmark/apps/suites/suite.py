"""Suites as data: which tasks to run, with which settings, and which of their metrics are the headline.

A suite is a YAML file (the built-in ones beside this module, or a user's own file given by path) in clearly
separated sections::

    version: 1                 # schema version of the file (this loader reads versions up to SCHEMA_VERSION)
    suite:                     # what the suite is
      name: interpretability
      description: the AFT paper's interpretability measures
    defaults:                  # run settings of every task (a task's entry and the command line win over them)
      dataset: shapes
      limit: null
    tasks:                     # what runs: one entry per task run, in scorecard order
      - task: pointing_game    # a TASKS name
        name: pointing_game    # the entry's label (default: the task's name; unique within the suite)
        attributions: [simple_gradient, gradcam]     # default: the task's YAML
        attribution_args: {gradcam: {block: -2}}
        options: {tolerance: 0}                      # the task's --option keys
        dataset: imagenet_s    # pins the entry's data: the command line's --dataset/--data-root/--dataset-arg
        data_root: /data/...   # then leave it alone (without `dataset` they apply to it)
        dataset_args: {}
        limit: 500
        batch_size: 16
        headline: [pg, pg_energy]                    # result columns shown (default: every metric the task reports)
        per_dataset:           # settings used only when the entry runs on that dataset (below the command line)
          shapes: {options: {...}, dataset_args: {...}, limit: 100}

Every section is parsed into a frozen dataclass by :func:`aft_bench.core.options.parse_options`, so an unknown key is
refused with a did-you-mean (:class:`UnknownSuiteKeyError`, exit status 2) and a value of the wrong kind with a
message naming the file, the entry and the key. Later sections (a report's layout, the paper's reference
numbers) join as new dataclasses and keys beside these; ``version`` says which a file may use. A loader of such
files passes ``sections`` (``{top-level key: dataclass}``): each is parsed like the others and kept in
:attr:`Suite.sections` (the paper's suites, :mod:`aft_bench.apps.paper.spec`, add a ``paper`` section this way), and
``package`` names where its built-in files live.

:meth:`Suite.without` and :meth:`Suite.with_settings` make a changed copy (a command line's ``--skip`` and
``--set``; the values parsed as the file's). The settings of one task run are composed by
:meth:`SuiteTask.overrides`: the command line over the entry over the suite's defaults, over the task's own YAML
(:func:`aft_bench.evaluation.config.resolve_config`). Loading reads YAML only; :func:`headline_metrics` checks an
entry's metric names once its run configuration is resolved.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import MISSING, dataclass, field, fields, replace
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from aft_bench.core.options import UnknownOptionError, option, optional_positive_int, parse_options
from aft_bench.core.registry import UnknownNameError
from aft_bench.evaluation.config import RunConfig, load_task_spec

SCHEMA_VERSION = 1
"""The newest suite schema this loader reads."""
SUFFIXES = (".yaml", ".yml")
DATASET_KEYS = ("dataset", "data_root", "dataset_args")
"""The settings that say which data a task runs on; an entry that sets ``dataset`` owns all three."""


class UnknownSuiteKeyError(UnknownNameError):
    """A key a suite section does not have (misspelt, or from a newer schema)."""

    def __init__(self, where: str, key: str, known: list[str]) -> None:
        super().__init__("key", key, known)
        self.where = where
        self.args = (f"{where}: {self.args[0]}",)


# ---------------------------------------------------------------------------------------- value parsers
def parse_names(value: Any, key: str) -> tuple[str, ...]:
    """A name or a list of names (an empty list is allowed: a task that takes none)."""
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list | tuple) or not all(isinstance(item, str) and item for item in items):
        raise ValueError(f"{key}={value!r}: give a name or a list of names")
    return tuple(items)


def parse_mapping(value: Any, key: str) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise ValueError(f"{key}={value!r}: give a mapping of key: value")
    return dict(value)


def _method_args(value: Any, key: str) -> dict[str, dict[str, Any]]:
    """``{method: {hyperparameter: value}}``."""
    methods = parse_mapping(value, key)
    return {str(method): parse_mapping(args, f"{key}.{method}") for method, args in methods.items()}


def _optional_integer(value: Any, key: str) -> int | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int)):
        raise ValueError(f"{key}={value!r}: give an integer (or null)")
    return value


def parse_optional_text(value: Any, key: str) -> str | None:
    if value is not None and not isinstance(value, str):
        raise ValueError(f"{key}={value!r}: give a text (or null)")
    return value


def parse_section(cls: type, values: Any, where: str) -> Any:
    """``cls`` parsed from one section's mapping; unknown keys and bad values name ``where``."""
    if values is None:
        values = {}
    if not isinstance(values, Mapping):
        raise ValueError(f"{where}: expected a mapping of key: value, got {type(values).__name__}")
    required = [f.name for f in fields(cls) if f.default is MISSING and f.default_factory is MISSING]
    absent = [key for key in required if key not in values]
    if absent:
        raise ValueError(f"{where}: the key {absent[0]!r} is required")
    try:
        return parse_options(cls, values, where)
    except UnknownSuiteKeyError as exc:  # a nested section's key
        raise UnknownSuiteKeyError(f"{where} {exc.where}", exc.name, exc.known) from None
    except UnknownOptionError as exc:
        raise UnknownSuiteKeyError(where, exc.name, exc.known) from None
    except ValueError as exc:
        raise ValueError(f"{where}: {exc}") from None


# ---------------------------------------------------------------------------------------- sections
@dataclass(frozen=True)
class SuiteInfo:
    """The ``suite`` section: what the suite is."""

    name: str | None = option(None, parse=parse_optional_text, help="the suite's name (default: the file's stem)")
    description: str = option("", help="one line for aft-bench compare --list")


@dataclass(frozen=True)
class SuiteDefaults:
    """The ``defaults`` section: run settings of every task of the suite (each entry and the command line win)."""

    dataset: str | None = option(None, parse=parse_optional_text, help="dataset name (DATASETS)")
    data_root: str | None = option(None, parse=parse_optional_text, help="dataset folder on disk")
    dataset_args: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="dataset keyword arguments")
    limit: int | None = option(None, parse=optional_positive_int, help="a seeded subset of N samples per task")
    seed: int | None = option(None, parse=_optional_integer, help="the run seed")


@dataclass(frozen=True)
class DatasetSettings:
    """Settings of an entry used only when it runs on one dataset (below the command line): a lighter protocol
    for the embedded world, say, that leaves the paper's protocol on real data alone."""

    options: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="task options over the entry's")
    dataset_args: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="dataset arguments")
    limit: int | None = option(None, parse=optional_positive_int, help="a seeded subset of N samples")


def _per_dataset(value: Any, key: str) -> dict[str, DatasetSettings]:
    """``{dataset name: DatasetSettings}``."""
    return {str(name): parse_section(DatasetSettings, settings, f"{key}.{name}")
            for name, settings in parse_mapping(value, key).items()}


@dataclass(frozen=True)
class SuiteTask:
    """One entry of the ``tasks`` section: one task run and its headline metrics.

    Attributes:
        task: The task (TASKS name). name: The entry's label (None: the task's name; see :attr:`label`).
        description: One line for listings. headline: The result columns shown (None: every metric reported).
        attributions, attribution_args, options: The task run's methods, their hyperparameters and the task's
            options (None / empty: the task's YAML).
        dataset, data_root, dataset_args: The entry's own data (``dataset`` set: the command line's data
            settings leave the entry alone). limit, batch_size: As ``--limit`` and ``--batch-size``.
    """

    task: str = option(help="the task (aft-bench ls tasks)")
    name: str | None = option(None, parse=parse_optional_text, help="the entry's label (default: the task's name)")
    description: str = option("", help="one line about the entry")
    headline: tuple[str, ...] | None = option(None, parse=parse_names, help="result columns shown (default: all)")
    attributions: tuple[str, ...] | None = option(None, parse=parse_names, help="methods (default: the task's YAML)")
    attribution_args: dict[str, dict[str, Any]] = option(default_factory=dict, parse=_method_args,
                                                         help="{method: {hyperparameter: value}}")
    options: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="the task's --option keys")
    dataset: str | None = option(None, parse=parse_optional_text, help="pins the entry's dataset")
    data_root: str | None = option(None, parse=parse_optional_text, help="the pinned dataset's folder")
    dataset_args: dict[str, Any] = option(default_factory=dict, parse=parse_mapping, help="the dataset's arguments")
    limit: int | None = option(None, parse=optional_positive_int, help="a seeded subset of N samples")
    batch_size: int | None = option(None, parse=optional_positive_int, help="samples per batch")
    per_dataset: dict[str, DatasetSettings] = option(default_factory=dict, parse=_per_dataset,
                                                     help="{dataset: settings used only on that dataset}")

    @property
    def label(self) -> str:
        """The entry's name in scorecards: ``name``, else the task's name."""
        return self.name or self.task

    @property
    def pins_dataset(self) -> bool:
        """Whether the entry names its own dataset (the command line's data settings then leave it alone)."""
        return self.dataset is not None

    def overrides(self, defaults: SuiteDefaults, command_line: Mapping[str, Any]) -> dict[str, Any]:
        """The :func:`~aft_bench.evaluation.config.resolve_config` overrides of this entry's run.

        Precedence: ``command_line`` (None values: not given) over the entry's :attr:`per_dataset` settings of the
        dataset it runs on, over the entry, over the suite's ``defaults``, all over the task's YAML. The data
        settings (:data:`DATASET_KEYS`) come as one: from the entry if it pins a dataset; else from the command line
        if it names one; else from the defaults, with the command line's ``data_root`` and ``dataset_args`` over
        them.
        """
        given = {key: value for key, value in command_line.items() if value is not None}
        if self.pins_dataset:
            data = {key: getattr(self, key) for key in DATASET_KEYS}
            given = {key: value for key, value in given.items() if key not in DATASET_KEYS}
        else:
            data = {} if "dataset" in given else {key: getattr(defaults, key) for key in DATASET_KEYS}
        merged: dict[str, Any] = {"seed": defaults.seed, "limit": self.limit or defaults.limit, **data,
                                  "attributions": self.attributions, "attribution_args": self.attribution_args,
                                  "options": self.options, "batch_size": self.batch_size}
        dataset = given.get("dataset") or merged.get("dataset") or \
            load_task_spec(self.task).defaults.get("dataset", RunConfig.dataset)
        extra = self.per_dataset.get(dataset)
        if extra is not None:
            merged["options"] = {**merged["options"], **extra.options}
            merged["dataset_args"] = {**(merged.get("dataset_args") or {}), **extra.dataset_args}
            merged["limit"] = extra.limit or merged["limit"]
        if "dataset_args" in given:
            given["dataset_args"] = {**(merged.get("dataset_args") or {}), **given["dataset_args"]}
        merged.update(given)
        return {key: value for key, value in merged.items() if value is not None and value != {}}


@dataclass(frozen=True)
class Suite:
    """A parsed suite file.

    Attributes:
        name: The suite's name. version: The file's schema version. description: One line.
        defaults: Run settings of every task. tasks: The entries, in scorecard order.
        source: Where the suite was read from (a file path, or ``built-in:<name>``).
        sections: The extra sections a loader asked for (``{key: parsed dataclass}``; see :func:`parse_suite`).
    """

    name: str
    version: int
    description: str
    defaults: SuiteDefaults
    tasks: tuple[SuiteTask, ...]
    source: str
    sections: Mapping[str, Any] = field(default_factory=dict)

    def _entry(self, label: str) -> SuiteTask:
        for task in self.tasks:
            if task.label == label:
                return task
        raise UnknownNameError(f"entry of suite {self.name!r}", label, [t.label for t in self.tasks])

    def without(self, labels: Sequence[str]) -> Suite:
        """The suite without the entries ``labels`` (``aft-bench compare --skip``).

        Raises:
            UnknownNameError: For a label no entry has. ValueError: If no entry would be left.
        """
        for label in labels:
            self._entry(label)
        kept = tuple(t for t in self.tasks if t.label not in labels)
        if not kept:
            raise ValueError(f"--skip {' '.join(labels)} leaves no task of suite {self.name!r} to run")
        return replace(self, tasks=kept)

    def with_settings(self, settings: Mapping[str, Mapping[str, Any]]) -> Suite:
        """The suite with entry keys replaced (``aft-bench compare --set ENTRY.KEY=VALUE``): ``{label: {key: value}}``,
        each value parsed as the suite file's would be.

        Raises:
            UnknownNameError: For a label no entry has, or a key entries do not have (with a did-you-mean).
            ValueError: For a value of the wrong kind.
        """
        changed = {}
        for label, values in settings.items():
            entry = self._entry(label)
            fixed = [key for key in ("task", "name") if key in values]
            if fixed:
                raise ValueError(f"--set {label}.{fixed[0]}: an entry's task and name stay as the suite has them; "
                                 "write a suite file of your own for other entries")
            given = parse_section(SuiteTask, {"task": entry.task, **values}, f"--set {label}")
            changed[label] = replace(entry, **{key: getattr(given, key) for key in values})
        return replace(self, tasks=tuple(changed.get(t.label, t) for t in self.tasks))


_TOP_LEVEL = ("version", "suite", "defaults", "tasks")


def parse_suite(data: Any, source: str, default_name: str, sections: Mapping[str, type] | None = None) -> Suite:
    """A :class:`Suite` from the YAML data of ``source`` (a file path or ``built-in:<name>``, for messages).

    ``sections`` (``{top-level key: dataclass}``) are further sections the file may have, each parsed as the others
    (:func:`aft_bench.core.options.parse_options`) into :attr:`Suite.sections` (an absent one: its defaults).

    Raises:
        UnknownSuiteKeyError: For a key no section has (exit status 2, with a did-you-mean).
        ValueError: For a missing or malformed section, a value of the wrong kind, a schema version this loader
            does not read, or two entries with one label.
    """
    if not isinstance(data, Mapping):
        raise ValueError(f"{source}: a suite file is a mapping with the sections {', '.join(_TOP_LEVEL)}")
    extra = dict(sections or {})
    for key in data:
        if key not in _TOP_LEVEL and key not in extra:
            raise UnknownSuiteKeyError(source, str(key), [*_TOP_LEVEL, *extra])
    version = data.get("version")
    if isinstance(version, bool) or not isinstance(version, int) or not 1 <= version <= SCHEMA_VERSION:
        raise ValueError(f"{source}: version={version!r}: give the suite schema version (1 to {SCHEMA_VERSION}; "
                         "a newer file needs a newer aft-bench)")
    info: SuiteInfo = parse_section(SuiteInfo, data.get("suite"), f"{source} suite")
    defaults: SuiteDefaults = parse_section(SuiteDefaults, data.get("defaults"), f"{source} defaults")
    entries = data.get("tasks")
    if not isinstance(entries, list) or not entries:
        raise ValueError(f"{source}: the section 'tasks' must list at least one task entry (- task: NAME ...)")
    tasks = tuple(parse_section(SuiteTask, entry, f"{source} tasks[{i}]") for i, entry in enumerate(entries))
    labels = [task.label for task in tasks]
    repeated = sorted({label for label in labels if labels.count(label) > 1})
    if repeated:
        raise ValueError(f"{source}: two entries are labelled {repeated[0]!r}; give each run of one task its own "
                         "'name:'")
    parsed = {key: parse_section(cls, data.get(key), f"{source} {key}") for key, cls in extra.items()}
    return Suite(name=info.name or default_name, version=version, description=info.description,
                 defaults=defaults, tasks=tasks, source=source, sections=parsed)


# ---------------------------------------------------------------------------------------- finding suites
def suite_names(package: str = "aft_bench.apps.suites") -> list[str]:
    """The built-in suites (the YAML files of the package ``package``, :mod:`aft_bench.apps.suites` by default),
    sorted."""
    files = resources.files(package).iterdir()
    return sorted(Path(f.name).stem for f in files if Path(f.name).suffix in SUFFIXES)


def is_suite_path(name: str) -> bool:
    """Whether ``name`` names a suite file (a YAML suffix, a folder in it, or an existing file) over a built-in."""
    return Path(name).suffix in SUFFIXES or "/" in name or Path(name).is_file()


def load_suite(name: str, package: str = "aft_bench.apps.suites", sections: Mapping[str, type] | None = None) -> Suite:
    """The built-in suite ``name`` (:func:`suite_names` of ``package``) or the suite file at path ``name``, with the
    extra ``sections`` of :func:`parse_suite`.

    Raises:
        UnknownNameError: For a name that is neither a built-in suite nor a file (with a did-you-mean).
        FileNotFoundError: For a suite file path that does not exist.
        ValueError: For a file that is not YAML or not a valid suite (see :func:`parse_suite`).
    """
    if is_suite_path(name):
        path = Path(name)
        if not path.is_file():
            raise FileNotFoundError(f"suite file {path} does not exist; give a YAML suite file or one of the built-in "
                                    f"suites: {', '.join(suite_names(package))}")
        text, source, stem = path.read_text(encoding="utf-8"), str(path), path.stem
    elif name in suite_names(package):
        text = resources.files(package).joinpath(f"{name}.yaml").read_text(encoding="utf-8")
        source, stem = f"built-in:{name}", name
    else:
        raise UnknownNameError("suite", name, suite_names(package))
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"suite file {source} is not valid YAML ({exc})") from None
    return parse_suite(data, source, stem, sections)


def headline_metrics(entry: SuiteTask, reported: Sequence[Any]) -> tuple[Any, ...]:
    """The metric objects of ``reported`` (what the entry's task reports in its resolved run) that ``entry`` shows,
    in the entry's order (all of them without a ``headline``).

    Raises:
        UnknownNameError: For a headline name the task does not report (with a did-you-mean).
    """
    by_name = {metric.name: metric for metric in reported}
    if entry.headline is None:
        return tuple(reported)
    for name in entry.headline:
        if name not in by_name:
            raise UnknownNameError(f"metric of task {entry.task!r} (suite entry {entry.label!r} headline)", name,
                                   list(by_name))
    return tuple(by_name[name] for name in entry.headline)

