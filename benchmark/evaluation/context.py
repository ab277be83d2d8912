"""The run context: what every task needs, built once per run by the runner.

A :class:`RunContext` holds the resolved config, the task's spec (name, version), the task's parsed options,
the distributed context (set up once) and the resolved device, and offers the operations every task repeats:
loading the run's encoders on that device, building the dataset and the run's sample ids, streaming samples
with the run's bad-sample policy, the run's attribution methods, the target of a batch, the run key of a result
(one recipe, always including the encoder card) and the :class:`~aft_bench.results.result.RunResult` of a pair.
Building a context checks the run's ``--attr-arg`` and ``--dataset-arg`` keys against the methods' and the
dataset's signatures (:func:`check_arguments`), before any encoder loads. The run scores the whole dataset unless
``--limit`` subsamples it; each result records the dataset's size and whether the run subsampled it.
The :class:`~aft_bench.evaluation.config.RunConfig` stops here: targets, classifiers and retrainers get explicit
arguments (a probe setup, a dataset, options), never the config.
"""

from __future__ import annotations

import dataclasses
import inspect
import json
import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aft_bench.attributions.base import Attribution, Target
from aft_bench.core.distributed import DistContext, resolve_device
from aft_bench.core.registries import ATTRIBUTIONS, DATASETS, TARGETS
from aft_bench.core.registry import UnknownNameError
from aft_bench.data.base import Batch, DataError, Dataset, select_ids
from aft_bench.data.class_filter import CLASSES_ARG, ClassFilter, ClassList
from aft_bench.data.sample_cache import SampleCache, check_cacheable
from aft_bench.evaluation.config import RunConfig, TaskSpec
from aft_bench.evaluation.probe.options import ProbeSetup, ProbeSpec
from aft_bench.evaluation.streaming import BadSamples, Chunk, stream
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.models.loading import load_encoder
from aft_bench.results.files import SAMPLES_DIR
from aft_bench.results.keys import run_key, safe_name
from aft_bench.results.result import RunResult, finite_or_null

log = logging.getLogger(__name__)

_DEFAULT_SPLIT = object()
_SET_BY_THE_RUN = ("image_size", "root", "on_error")  # what RunContext.dataset passes to every dataset itself


def _keywords(factory: Callable[..., Any]) -> list[str] | None:
    """The keyword arguments ``factory`` (a class or function) accepts; None if it takes ``**kwargs``."""
    params = inspect.signature(factory).parameters.values()
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return None
    named = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    return [p.name for p in params if p.kind in named]


def check_arguments(config: RunConfig) -> None:
    """Checks ``--attr-arg`` and ``--dataset-arg`` keys against the run's methods and dataset, before any model loads.

    Raises:
        ValueError: For arguments of a method the run does not use, a dataset argument the run sets itself, or,
            under ``--cache-samples``, a dataset class that does not list its samples' files
            (:func:`aft_bench.data.sample_cache.check_cacheable`).
        UnknownNameError: For a hyperparameter or dataset argument the method's or dataset's signature lacks
            (with a did-you-mean and the known keys).
    """
    for method, args in config.attribution_args.items():
        if method not in config.attributions:
            used = ", ".join(config.attributions) or "none"
            raise ValueError(f"--attr-arg {method}.{next(iter(args), '...')}: {method!r} is not one of the run's "
                             f"--attributions ({used}); add it to --attributions or drop the --attr-arg")
        known = _keywords(ATTRIBUTIONS.get(method))
        for key in args:
            if known is not None and key not in known:
                raise UnknownNameError(f"{method} hyperparameter", key, known)
    factory = DATASETS.get(config.dataset)
    if config.cache_samples and inspect.isclass(factory):  # a factory function's datasets are checked when built
        check_cacheable(factory, config.dataset)
    known = _keywords(factory)
    for key in config.dataset_args:
        if key == CLASSES_ARG:  # the run's class filter, not the dataset's argument
            ClassList.parse(config.dataset_args[key])
            continue
        if key in _SET_BY_THE_RUN:
            raise ValueError(f"--dataset-arg {key}=...: the run sets {key} itself (the encoder's input size, "
                             "--data-root, --on-error); drop this --dataset-arg")
        if known is not None and key not in known:
            raise UnknownNameError(f"{config.dataset} dataset argument", key,
                                   [k for k in known if k not in _SET_BY_THE_RUN])


@dataclass(frozen=True)
class Selection:
    """The run's sample set: the dataset's size and how many of its samples the run scores.

    Attributes:
        dataset_size: Samples in the dataset. selected: Samples the run scores (all, or the ``--limit`` subset).
    """

    dataset_size: int
    selected: int

    @property
    def subsampled(self) -> bool:
        """Whether the run scores a subset of the dataset."""
        return self.selected < self.dataset_size

    def extra(self) -> dict[str, Any]:
        """What a :class:`RunResult`'s ``extra`` records of the selection."""
        return {"dataset_size": self.dataset_size, "selected": self.selected, "subsampled": self.subsampled}


@dataclass
class RunContext:
    """One run of one task.

    Attributes:
        config: The resolved run configuration.
        spec: The task's YAML spec (name, version, defaults).
        options: The task's options, parsed into its declared dataclass.
        dist: Where this process sits in a ``torchrun`` job (one process: rank 0 of 1).
        selection: The run's sample set (set by :meth:`select` with the run's ``--limit``; None before).
    """

    config: RunConfig
    spec: TaskSpec
    options: Any
    dist: DistContext
    selection: Selection | None = field(default=None, init=False)

    @classmethod
    def local(cls, config: RunConfig, options: Any = None, spec: TaskSpec | None = None) -> RunContext:
        """A one-process context on ``config.device`` (figures, notebooks, tests); ``spec`` defaults to a
        version-0 spec named after ``config.task``."""
        dist = DistContext(rank=0, world_size=1, local_rank=0, device=resolve_device(config.device, 0))
        return cls(config=config, spec=spec or TaskSpec(config.task, 0, {}), options=options, dist=dist)

    # ------------------------------------------------------------------ basics
    @property
    def device(self) -> torch.device:
        """This process's device (``cuda:LOCAL_RANK`` for ``cuda``; ``auto`` resolved)."""
        return self.dist.device

    @property
    def folder(self) -> Path:
        """``<out>/<task>``: where the task's results and side files go."""
        return Path(self.config.out) / self.spec.name

    @property
    def samples_folder(self) -> Path:
        """Where per-sample stores and other resumable state go."""
        return self.folder / SAMPLES_DIR

    def load_encoder(self, spec: str) -> Encoder:
        """The encoder ``spec`` on the run's device."""
        return load_encoder(spec, self.device)

    def encoders(self) -> Iterator[tuple[str, Encoder]]:
        """The run's encoders in order, each loaded on the run's device when its turn comes."""
        for spec in self.config.encoders:
            yield spec, self.load_encoder(spec)

    # ------------------------------------------------------------------ data
    def dataset(self, image_size: tuple[int, int], split: Any = _DEFAULT_SPLIT) -> Dataset:
        """The run's dataset at ``image_size``; ``split`` (a name, or None for the dataset's own default) replaces
        the ``split`` of ``--dataset-arg`` when given. ``--cache-samples`` caches its loaded samples on disk
        (:mod:`aft_bench.data.sample_cache`, keyed by the dataset's own arguments); ``--dataset-arg classes=...``
        then keeps the samples of a class list (:mod:`aft_bench.data.class_filter`).

        Raises:
            DataError: If the dataset rejects the arguments (naming them).
            ValueError: Under ``--cache-samples``, for a dataset that does not list its samples' files.
        """
        args = dict(self.config.dataset_args)
        if split is not _DEFAULT_SPLIT:
            args.pop("split", None)
            if split is not None:
                args["split"] = split
        classes = args.pop(CLASSES_ARG, None)
        factory = DATASETS.get(self.config.dataset)
        try:
            dataset = factory(image_size=image_size, root=self.config.data_root, on_error=self.config.on_error, **args)
        except TypeError as exc:
            raise DataError(f"dataset {self.config.dataset!r} rejects the arguments {args} ({exc}); check "
                            "--dataset-arg (and the task's split options)") from exc
        if self.config.cache_samples:
            dataset = SampleCache(dataset, image_size, args, self.config.data_root, self.config.dataset)
        return dataset if classes is None else ClassFilter(dataset, ClassList.parse(classes))

    def select(self, ids: Sequence[str], limit: int | None = None) -> list[str]:
        """All ``ids``, or the seeded subset of ``limit`` of them, in dataset order.

        Without ``limit`` this is the run's own sample set (``--limit``, default all): it is kept as
        :attr:`selection` for the results, its size is logged, and a ``--limit`` above the dataset's size is
        logged as a warning.
        """
        if limit is not None:
            return select_ids(ids, limit, self.config.seed)
        chosen = select_ids(ids, self.config.limit, self.config.seed)
        selection = Selection(len(ids), len(chosen))
        if selection != self.selection and self.dist.is_main:
            if self.config.limit is not None and self.config.limit > len(ids):
                log.warning("--limit %d is larger than dataset %r, which has %d samples: scoring all %d",
                            self.config.limit, self.config.dataset, len(ids), len(ids))
            log.info("dataset %r: scoring %d of its %d samples%s", self.config.dataset, len(chosen), len(ids),
                     " (a seeded subset, --limit)" if selection.subsampled else "")
        self.selection = selection
        return chosen

    def samples(self, image_size: tuple[int, int]) -> tuple[Dataset, list[str]]:
        """The run's dataset at ``image_size`` and its sample ids (all, or the seeded ``--limit`` subset).

        Raises:
            DataError: If the dataset has no samples.
        """
        dataset = self.dataset(image_size)
        ids = self.select(dataset.ids())
        if not ids:
            raise DataError(f"dataset {self.config.dataset!r} has no samples (root: {self.config.data_root})")
        return dataset, ids

    def policy(self, dataset: Dataset | None = None) -> BadSamples:
        """A fresh bad-sample policy of the run (``--on-error``), counting what ``dataset`` already skipped."""
        policy = BadSamples(self.config.on_error)
        policy.counts.update(getattr(dataset, "skipped", {}) or {})
        return policy

    def stream(self, dataset: Dataset, ids: Sequence[str], policy: BadSamples, desc: str = "",
               batch_size: int | None = None) -> Iterator[Chunk]:
        """:func:`aft_bench.evaluation.streaming.stream` with the run's batch size, workers (``--num-workers``; unset:
        :func:`aft_bench.evaluation.streaming.default_workers`) and device (progress on rank 0)."""
        return stream(dataset, ids, batch_size=batch_size or self.config.batch_size, policy=policy,
                      num_workers=self.config.num_workers, device=self.device, desc=desc,
                      progress=self.dist.is_main)

    def batches(self, dataset: Dataset, ids: Sequence[str], policy: BadSamples, desc: str = "",
                batch_size: int | None = None) -> Iterator[Batch]:
        """The batches of :meth:`stream` (bad samples handled and counted by ``policy``)."""
        for chunk in self.stream(dataset, ids, policy, desc, batch_size):
            if chunk.batch is not None:
                yield chunk.batch

    # ------------------------------------------------------------------ methods and targets
    def attributions(self, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The run's attribution methods that serve ``encoder``; refusals are logged and appended to ``refused``."""
        for name in self.config.attributions:
            method: Attribution = ATTRIBUTIONS.get(name)(**self.config.attribution_args.get(name, {}))
            try:
                method.check(encoder)
            except UnsupportedEncoderError as exc:
                log.warning("skipping %s x %s: %s", encoder.name, name, exc)
                refused.append(str(exc))
                continue
            yield name, method

    def probe_setup(self, dataset: Dataset | None = None) -> ProbeSetup | None:
        """The run's linear-probe setup from the task's ``probe_*`` options (None if the task has none)."""
        options = getattr(self.options, "probe", None)
        if options is None:
            return None
        spec = ProbeSpec.resolve(options, self.config.dataset, self.config.data_root, self.config.dataset_args,
                                 self.config.seed)
        classnames = tuple(getattr(dataset, "classnames", ()) or ())
        return ProbeSetup(spec, options.class_, classnames, self.config.batch_size, self.config.on_error)

    def target(self, encoder: Encoder, batch: Batch, dataset: Dataset | None = None,
               name: str | None = None) -> Target:
        """What the maps of ``batch`` explain: the TARGETS entry ``name`` (default: option ``target``, else
        ``text``)."""
        chosen = name or getattr(self.options, "target", "text")
        return TARGETS.get(chosen)(encoder, batch, self.probe_setup(dataset))

    # ------------------------------------------------------------------ keys and results
    def run_key(self, encoder_spec: str, encoder: Encoder, attribution: str = "-",
                options: Mapping[str, Any] | None = None, **extra: Any) -> str:
        """The one run-key recipe: a hash of everything that changes the numbers of a (task, encoder,
        attribution) result: the config's numbers key, the task version, the encoder spec and card, the method and
        its arguments, the task's parsed options (or the subset ``options`` a cached artefact depends on),
        ``extra`` and, for a dataset that declares one, its ``data_version`` (what its samples load as)."""
        data_version = getattr(DATASETS.get(self.config.dataset), "data_version", None)
        parts = {
            **self.config.numbers_key(), "options": _plain(self.options) if options is None else dict(options),
            "task_version": self.spec.version, "encoder": encoder_spec,
            "encoder_card": json.dumps(encoder.card, sort_keys=True, default=str),
            "attribution": attribution, "attribution_args": dict(self.config.attribution_args.get(attribution, {})),
            **extra,
            **({} if data_version is None else {"data_version": data_version}),
        }
        return run_key(parts)

    def store_path(self, encoder_spec: str, attribution: str, key: str, kind: str = "") -> Path:
        """The per-sample store of a result: ``<out>/<task>/samples/<encoder>__<attribution>__<dataset>__<key>.jsonl``
        (``kind`` is put before the key for a task's other stores)."""
        stem = "__".join(safe_name(s) for s in (encoder_spec, attribution, self.config.dataset))
        return self.samples_folder / f"{stem}__{kind + '__' if kind else ''}{key}.jsonl"

    def result(self, *, encoder: str, attribution: str, key: str, metrics: dict[str, dict[str, Any]], n: int,
               excluded: Mapping[str, int] | None = None, skipped: Mapping[str, int] | None = None,
               samples_file: Path | str = "", extra: dict[str, Any] | None = None) -> RunResult:
        """The :class:`RunResult` of one (encoder, attribution) pair of this run; its ``extra`` holds the parsed
        options and, once the run has selected its samples, :meth:`Selection.extra`."""
        samples = samples_file
        if isinstance(samples_file, Path):
            samples = str(samples_file.relative_to(self.folder))
        return RunResult(
            task=self.spec.name, task_version=self.spec.version, dataset=self.config.dataset, encoder=encoder,
            attribution=attribution, metrics=finite_or_null(metrics), n=n, excluded=dict(excluded or {}),
            skipped=dict(skipped or {}),
            config=self.config.to_dict(), run_key=key, seed=self.config.seed, samples_file=str(samples),
            extra=finite_or_null({"options": _plain(self.options),
                                  **(self.selection.extra() if self.selection else {}), **(extra or {})}),
        )


def _plain(options: Any) -> dict[str, Any]:
    """An options dataclass as plain JSON-friendly values (tuples as lists)."""
    if not dataclasses.is_dataclass(options):
        return dict(options or {})
    return json.loads(json.dumps(dataclasses.asdict(options), default=str))
