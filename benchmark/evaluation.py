"""The task contract and the shared evaluation loop over (encoder, attribution) pairs.

A :class:`Task` turns a :class:`~aft_bench.config.RunConfig` into result files. Most tasks score
attribution maps sample by sample; they subclass :class:`MapTask` and implement :meth:`MapTask.score`
(maps + batch -> one record per sample). Tasks that score the encoder itself sample by sample (zero-shot
accuracy and robustness) subclass :class:`SampleTask` and implement ``evaluate`` and ``run``. The loop
here loads encoders and datasets from the registries, selects a seeded subset, skips samples whose scores
are already stored, streams batches with a progress bar, and aggregates sums and counts into a
:class:`RunResult`.

Under ``torchrun`` (``torchrun --nproc_per_node N -m aft_bench run ...``) a :class:`SampleTask` shards
the samples still to score over the ranks, without padding: rank ``r`` scores ``todo[r::N]`` on its
own device and appends to its own store file; rank 0 then merges the files by sample id and writes the
result, so the numbers are those of one process. Store files that a killed sharded run left are
merged first, so a rerun (with any number of processes) recomputes only what is missing.
"""

from __future__ import annotations

import json
import logging
import random
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor
from torch.utils.data import DataLoader
from tqdm.auto import tqdm

from aft_bench import distributed as dist_utils
from aft_bench.attributions.base import Attribution, Target
from aft_bench.config import RunConfig, TaskSpec
from aft_bench.data.base import Batch, DataError, Dataset, Sample
from aft_bench.encoder import Encoder, UnsupportedEncoderError
from aft_bench.loading import load_encoder
from aft_bench.metrics.summary import RunningStat
from aft_bench.registries import ATTRIBUTIONS, DATASETS, TARGETS
from aft_bench.results import RunResult, SampleStore, run_key, safe_name, write_result

log = logging.getLogger(__name__)
Record = dict[str, Any]


class Task(ABC):
    """A benchmark task: a YAML spec (version, defaults) plus a runner."""

    #: whether :meth:`run` shares its work over the ranks of a ``torchrun`` job (others refuse one)
    shardable: ClassVar[bool] = False

    def __init__(self, spec: TaskSpec) -> None:
        self.spec = spec

    @abstractmethod
    def run(self, config: RunConfig) -> list[Path]:
        """Evaluates ``config`` and returns the result files written."""


def build_dataset(config: RunConfig, image_size: tuple[int, int]) -> Dataset:
    """The configured dataset at ``image_size``."""
    factory = DATASETS.get(config.dataset)
    return factory(image_size=image_size, root=config.data_root, on_error=config.on_error, **config.dataset_args)


def load_samples(config: RunConfig, image_size: tuple[int, int]) -> tuple[Dataset, list[str]]:
    """The configured dataset at ``image_size`` and the run's sample ids (all, or the seeded ``--limit`` subset).

    Raises:
        DataError: If the dataset has no samples.
    """
    dataset = build_dataset(config, image_size)
    ids = select_ids(dataset.ids(), config.limit, config.seed)
    if not ids:
        raise DataError(f"dataset {config.dataset!r} has no samples (root: {config.data_root})")
    return dataset, ids


def usable_attributions(config: RunConfig, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
    """The run's attribution methods that serve ``encoder``; refusals are logged and appended to ``refused``."""
    for name in config.attributions:
        method: Attribution = ATTRIBUTIONS.get(name)(**config.attribution_args.get(name, {}))
        try:
            method.check(encoder)
        except UnsupportedEncoderError as exc:
            log.warning("skipping %s x %s: %s", encoder.name, name, exc)
            refused.append(str(exc))
            continue
        yield name, method


def select_ids(ids: Sequence[str], limit: int | None, seed: int) -> list[str]:
    """All ids, or a seeded random subset of ``limit`` of them (kept in dataset order)."""
    if limit is None or limit >= len(ids):
        return list(ids)
    chosen = set(random.Random(seed).sample(range(len(ids)), limit))
    return [sample_id for i, sample_id in enumerate(ids) if i in chosen]


class SafeLoader(torch.utils.data.Dataset):
    """Loads samples by id, turning DataError into a marker so a worker never dies mid-run."""

    def __init__(self, dataset: Dataset, ids: Sequence[str]) -> None:
        self.dataset, self.ids = dataset, list(ids)

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> Sample | tuple[str, str]:
        try:
            return self.dataset.load(self.ids[index])
        except DataError as exc:
            return (self.ids[index], str(exc))


def no_collate(items: list[Any]) -> list[Any]:
    """A DataLoader collate_fn that keeps the batch as a list of samples."""
    return items


class SampleTask(Task):
    """A task scored sample by sample: the resumable, shardable loop over a dataset for one encoder.

    Subclasses set ``metrics`` (names with ``higher_is_better``) and implement :meth:`evaluate` (a batch ->
    one record per sample) and :meth:`run`; :class:`MapTask` does both for tasks that score attribution maps.
    """

    #: metric name -> higher_is_better, in table column order
    metrics: ClassVar[dict[str, bool]] = {}
    #: multiply per-sample fractions by this for the reported means (100 = percent)
    scale: ClassVar[float] = 100.0
    shardable: ClassVar[bool] = True

    @abstractmethod
    def evaluate(self, encoder: Encoder, method: Attribution | None, batch: Batch, config: RunConfig) -> list[Record]:
        """One record per sample: ``{"scores": {metric: value}}``, ``{"excluded": reason}`` or ``{"error": why}``."""

    def extra_key(self, config: RunConfig) -> dict[str, Any]:
        """Settings besides the config's numbers key that change this task's per-sample records."""
        return {}

    # ------------------------------------------------------------------ the loop
    def _run_pair(
        self, config: RunConfig, ctx: dist_utils.DistContext, encoder: Encoder, spec: str, name: str,
        method: Attribution | None, dataset: Dataset, ids: list[str],
    ) -> Path | None:
        key = run_key({
            **config.numbers_key(), **self.extra_key(config), "task_version": self.spec.version, "encoder": spec,
            "encoder_card": json.dumps(encoder.card, sort_keys=True, default=str),
            "attribution": name, "attribution_args": dict(config.attribution_args.get(name, {})),
        })
        stem = "__".join(safe_name(s) for s in (spec, name, config.dataset))
        samples_path = Path(config.out) / self.spec.name / "samples" / f"{stem}__{key}.jsonl"

        def shard_files() -> list[Path]:
            return sorted(samples_path.parent.glob(f"{samples_path.stem}.rank*.jsonl"))

        if ctx.is_main:
            if config.fresh:
                for path in [samples_path, *shard_files()]:
                    path.unlink(missing_ok=True)
            store = SampleStore(samples_path)
            for path in shard_files():  # left by a killed sharded run
                store.absorb(path)
        dist_utils.barrier(ctx)
        if not ctx.is_main:  # rank 0's merged store is complete; the others read it after the barrier
            store = SampleStore(samples_path)
        todo = [i for i in ids if i not in store]
        if len(todo) < len(ids) and ctx.is_main:
            log.info("%s x %s: %d of %d samples already scored, resuming", spec, name, len(ids) - len(todo), len(ids))
        mine = todo[ctx.rank :: ctx.world_size]
        own = SampleStore(samples_path.with_name(f"{samples_path.stem}.rank{ctx.rank}.jsonl")) if ctx.distributed \
            else store
        start = time.perf_counter()
        for records in self._batches(config, encoder, method, dataset, mine, f"{spec} | {name}", ctx.is_main):
            own.append(records)
        dist_utils.barrier(ctx)
        if not ctx.is_main:
            return None
        for path in shard_files():
            store.absorb(path)
        result = self._summarise(config, spec, name, key, store, ids, dataset)
        result.duration_s = round(time.perf_counter() - start, 3)
        result.samples_file = str(samples_path.relative_to(Path(config.out) / self.spec.name))
        return write_result(result, config.out)

    def _batches(
        self, config: RunConfig, encoder: Encoder, method: Attribution | None, dataset: Dataset,
        ids: list[str], desc: str, progress: bool = True,
    ) -> Iterator[list[Record]]:
        loader = DataLoader(
            SafeLoader(dataset, ids), batch_size=config.batch_size, num_workers=config.num_workers,
            collate_fn=no_collate, shuffle=False,
        )
        with tqdm(total=len(ids), desc=desc, unit="img", leave=False, disable=not progress) as bar:
            for items in loader:
                records: list[Record] = []
                samples: list[Sample] = []
                for item in items:
                    if isinstance(item, Sample):
                        samples.append(item)
                    else:
                        records.append(self._bad_sample(config, *item))
                if samples:
                    records.extend(self._score_samples(config, encoder, method, samples))
                bar.update(len(items))
                yield records

    def _score_samples(
        self, config: RunConfig, encoder: Encoder, method: Attribution | None, samples: list[Sample]
    ) -> list[Record]:
        batch = Batch.collate(samples)
        records = self.evaluate(encoder, method, batch, config)
        out = []
        for sample_id, record in zip(batch.ids, records, strict=True):
            if "error" in record:
                out.append(self._bad_sample(config, sample_id, record["error"]))
            else:
                out.append({"id": sample_id, **record})
        return out

    @staticmethod
    def _bad_sample(config: RunConfig, sample_id: str, message: str) -> Record:
        if config.on_error == "raise":
            raise DataError(f"sample {sample_id}: {message} (pass --on-error skip to skip and count such samples)")
        log.warning("skipping sample %s: %s", sample_id, message)
        return {"id": sample_id, "skipped": message.split(":")[0][:120]}

    def _summarise(
        self, config: RunConfig, spec: str, name: str, key: str, store: SampleStore,
        ids: list[str], dataset: Dataset,
    ) -> RunResult:
        stats = {metric: RunningStat() for metric in self.metrics}
        excluded: Counter[str] = Counter()
        skipped: Counter[str] = Counter(getattr(dataset, "skipped", {}) or {})
        for sample_id in ids:
            record = store.get(sample_id)
            if record is None:
                raise RuntimeError(f"sample {sample_id} has no stored record after the run")
            if "scores" in record:
                for metric, value in record["scores"].items():
                    stats[metric].update(torch.tensor([value * self.scale], dtype=torch.float64))
            elif "excluded" in record:
                excluded[record["excluded"]] += 1
            else:
                skipped[record["skipped"]] += 1
        summaries = {
            metric: {**stat.summary(), "higher_is_better": self.metrics[metric]} for metric, stat in stats.items()
        }
        n = max((s["n"] for s in summaries.values()), default=0)
        return RunResult(
            task=self.spec.name, task_version=self.spec.version, dataset=config.dataset, encoder=spec,
            attribution=name, metrics=summaries, n=n, excluded=dict(excluded), skipped=dict(skipped),
            config=config.to_dict(), run_key=key, seed=config.seed, samples_file="",
        )


class MapTask(SampleTask):
    """A task scored sample by sample from attribution maps (pointing game, sparsity, SSIM, ROAD).

    Subclasses set ``metrics`` and implement :meth:`score`; :meth:`run` scores every (encoder, attribution)
    pair of the config.
    """

    @abstractmethod
    def score(self, maps: Tensor, batch: Batch, config: RunConfig) -> list[Record]:
        """One record per sample: ``{"scores": {metric: value}}`` or ``{"excluded": reason}``."""

    def target(self, encoder: Encoder, batch: Batch, config: RunConfig) -> Target:
        """What the maps explain: option ``target`` names a TARGETS entry (default ``text``: zero-shot)."""
        factory = TARGETS.get(config.options.get("target", "text"))
        return factory(encoder, batch.prompts, batch.labels, config=config, images=batch.images.to(encoder.device))

    def maps(self, encoder: Encoder, method: Attribution, batch: Batch, config: RunConfig) -> Tensor:
        """Attribution maps of a batch (overridden by tasks that perturb images)."""
        images = batch.images.to(encoder.device)
        return method(encoder, images, self.target(encoder, batch, config))

    def evaluate(self, encoder: Encoder, method: Attribution | None, batch: Batch, config: RunConfig) -> list[Record]:
        """One record per sample of a batch: :meth:`score` of the :meth:`maps`."""
        if method is None:
            raise TypeError(f"task {self.spec.name!r} scores attribution maps: it needs an attribution method")
        return self.score(self.maps(encoder, method, batch, config), batch, config)

    def methods(self, config: RunConfig, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The (name, method) pairs to score ``encoder`` with (refusals appended to ``refused``)."""
        return usable_attributions(config, encoder, refused)

    def begin_encoder(self, spec: str, encoder: Encoder, dataset: Dataset, config: RunConfig) -> None:
        """Called before an encoder's pairs are scored (tasks that need per-encoder state set it here)."""

    def end_encoder(self, spec: str, paths: list[Path], config: RunConfig) -> None:
        """Called with an encoder's result files after its pairs, on rank 0 (tasks that draw figures do here)."""

    def run(self, config: RunConfig) -> list[Path]:
        """Scores every (encoder, attribution) pair; returns the result files (none on ranks other than 0)."""
        ctx = dist_utils.setup(config.device)
        paths: list[Path] = []
        refused: list[str] = []
        pairs = 0
        for spec in config.encoders:
            encoder = load_encoder(spec, ctx.device)
            methods = list(self.methods(config, encoder, refused))
            if not methods:
                continue
            dataset, ids = load_samples(config, encoder.image_size)
            self.begin_encoder(spec, encoder, dataset, config)
            pairs += len(methods)
            own = [path for name, method in methods
                   if (path := self._run_pair(config, ctx, encoder, spec, name, method, dataset, ids)) is not None]
            if own:
                self.end_encoder(spec, own, config)
            paths.extend(own)
        if not pairs and refused:
            raise UnsupportedEncoderError("; ".join(refused))
        return paths
