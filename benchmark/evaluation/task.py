"""The task contract and the shared per-sample evaluation loop.

A :class:`Task` declares its options (a dataclass, parsed before any model loads) and the metric objects it
reports, and turns a :class:`~aft_bench.evaluation.context.RunContext` into
:class:`~aft_bench.results.result.RunResult` objects,
which the runner writes. Tasks scored sample by sample subclass :class:`SampleTask` (implement
:meth:`SampleTask.evaluate`: a batch -> one record per sample); tasks that score attribution maps subclass
:class:`MapTask` (implement :meth:`MapTask.score`). The loop skips samples whose records are already stored,
streams the rest in batches, applies the run's bad-sample policy once (unreadable samples, records with an
``error``, maps with NaN/Inf values, which never reach :meth:`MapTask.score`), and summarises the stored records
with the metric objects: per-sample metrics as means with 95% intervals, pooled metrics from summed counts.

Under ``torchrun`` (``torchrun --nproc_per_node N -m aft_bench run ...``) a :class:`SampleTask` shards the
samples still to score over the ranks, without padding: rank ``r`` scores ``todo[r::N]`` on its own device and
appends to its own store file; rank 0 then merges the files by sample id and returns the result, so the numbers
are those of one process. Store files that a killed sharded run left are merged first, so a rerun (with any
number of processes) recomputes only what is missing.

Two runs of the same pair into one folder (two processes started with the same command) share the work through
the pair's store: whoever scores the pair holds its lock (``<out>/<task>/.locks/<store>.lock``, taken by rank 0 of
a ``torchrun`` job, so the ranks of one job never lock each other out); another process that finds the lock held
says so, waits until it is released and then reads the finished store, recomputing nothing. A run with another
run key has another store and lock and never waits.
"""

from __future__ import annotations

import logging
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from filelock import FileLock, Timeout
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.attributions.precision import attribution_precision
from aft_bench.core import distributed as dist_utils
from aft_bench.core.options import names_in, nested, option
from aft_bench.core.registries import TARGETS
from aft_bench.data.base import Batch, Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.probe.store import ProbeOptions
from aft_bench.evaluation.streaming import BadSamples, Chunk
from aft_bench.metrics.base import Metric, PooledMetric
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.results.result import RunResult, SampleStore

log = logging.getLogger(__name__)
LOCKS_DIR = ".locks"
#: seconds between two looks at a store lock that another process holds
LOCK_POLL_S = 0.5
Record = dict[str, Any]
Reported = Metric | PooledMetric


@dataclass(frozen=True)
class NoOptions:
    """The options of a task that takes none."""


@dataclass(frozen=True)
class MapOptions:
    """The options every attribution-map task shares: what the maps explain, and the linear probe if they
    explain one (``--option target=probe probe_steps=100 ...``)."""

    target: str = option("text", parse=names_in(TARGETS), help="text (zero-shot prompt) or probe (probe logit)")
    probe: ProbeOptions = nested(ProbeOptions, "probe_", help="the linear probe (target=probe)")


class Task(ABC):
    """A benchmark task: declared options and metrics, and a runner yielding results.

    Attributes:
        Options: The dataclass of the task's ``--option`` keys (see :mod:`aft_bench.core.options`).
        reported: The metric objects the task reports, in column order (:meth:`metrics` may derive them from
            the options instead).
        shardable: Whether :meth:`run` shares its work over the ranks of a ``torchrun`` job (others refuse one).
    """

    Options: ClassVar[type] = NoOptions
    reported: ClassVar[tuple[Reported, ...]] = ()
    shardable: ClassVar[bool] = False

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        """The metric objects this run reports (their names are the result columns)."""
        return self.reported

    @abstractmethod
    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        """Evaluates the run and yields its results (none on ranks other than 0); the runner writes them."""


def summarise(metrics: Sequence[Reported], records: Sequence[Record]) -> tuple[dict[str, dict[str, Any]], int]:
    """Metric summaries of per-sample records and the number of samples scored.

    Per-sample metrics read ``record["scores"][name]`` (times the metric's scale); pooled metrics sum
    ``record["counts"][name]`` over the scored records and reduce the totals.
    """
    stats = {m.name: RunningStat() for m in metrics if isinstance(m, Metric)}
    totals: dict[str, Tensor] = {}
    scored = [r for r in records if "scores" in r]
    for record in scored:
        for metric in metrics:
            if isinstance(metric, Metric) and metric.name in record["scores"]:
                stats[metric.name].update(torch.tensor([record["scores"][metric.name] * metric.scale],
                                                       dtype=torch.float64))
            elif isinstance(metric, PooledMetric) and metric.name in record.get("counts", {}):
                counts = torch.tensor(record["counts"][metric.name], dtype=torch.float64)
                totals[metric.name] = totals[metric.name] + counts if metric.name in totals else counts
    summaries = {m.name: m.summary(stats[m.name]) if isinstance(m, Metric) else
                 m.summary(totals.get(m.name), len(scored)) for m in metrics}
    return summaries, len(scored)


@dataclass(frozen=True)
class Pair:
    """One (encoder, attribution) evaluation: what :meth:`SampleTask.evaluate` gets with each batch.

    Attributes:
        encoder_spec: The encoder's spec as the user gave it. encoder: The loaded encoder.
        name: The attribution's name (the leaderboard's attribution column; a label for tasks without maps).
        method: The attribution method (None for tasks that score the encoder itself).
        dataset: The dataset the samples come from.
        state: The task's per-encoder state (what :meth:`MapTask.begin_encoder` returned).
    """

    encoder_spec: str
    encoder: Encoder
    name: str
    method: Attribution | None
    dataset: Dataset
    state: Any = None


class SampleTask(Task):
    """A task scored sample by sample: the resumable, shardable loop over a dataset for one (encoder, method)."""

    shardable: ClassVar[bool] = True

    @abstractmethod
    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        """One record per sample: ``{"scores": {metric: value}}`` (plus ``"counts"`` for pooled metrics and any
        task extras), ``{"excluded": reason}`` or ``{"error": why}`` (the run's bad-sample policy decides)."""

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """Task-specific additions to a result's ``extra`` from the stored records (default: none)."""
        return {}

    def run_pair(self, ctx: RunContext, pair: Pair, ids: list[str], **key_extra: Any) -> RunResult | None:
        """Scores ``ids`` for ``pair`` (resuming from the store) and returns the result (None off rank 0).

        While it scores, rank 0 holds the store's lock: another process scoring the same pair waits for it and
        then reads the finished store instead of scoring the samples again (:func:`store_lock`).
        """
        return self.run_pairs(ctx, [pair], ids, **key_extra)[0]

    def run_pairs(self, ctx: RunContext, pairs: Sequence[Pair], ids: list[str],
                  **key_extra: Any) -> list[RunResult | None]:
        """Scores ``ids`` for every pair in one pass over the data: each sample that some pair still needs is
        loaded once and scored by each pair that needs it; each pair keeps its own store, lock and resume.

        The pairs share one dataset (one encoder's). Rank 0 holds every pair's store lock while it scores
        (taken in the order of the store paths, so that two processes never wait on each other); the results
        come in the order of ``pairs`` (None off rank 0).
        """
        if len({id(pair.dataset) for pair in pairs}) > 1:
            raise ValueError("run_pairs scores pairs of one dataset in one pass; group the pairs by dataset")
        keys = [ctx.run_key(p.encoder_spec, p.encoder, p.name, **key_extra) for p in pairs]
        paths = [ctx.store_path(p.encoder_spec, p.name, key) for p, key in zip(pairs, keys, strict=True)]
        with ExitStack() as stack:
            for k in sorted(range(len(pairs)), key=lambda i: str(paths[i])):
                stack.enter_context(store_lock(ctx, paths[k], f"{pairs[k].encoder_spec} x {pairs[k].name}"))
            return self._score_pairs(ctx, list(pairs), ids, keys, paths)

    def _score_pairs(self, ctx: RunContext, pairs: list[Pair], ids: list[str], keys: list[str],
                     paths: list[Path]) -> list[RunResult | None]:
        stores = [self._open_store(ctx, path) for path in paths]
        needs = [{i for i in ids if i not in store} for store in stores]
        for pair, need in zip(pairs, needs, strict=True):
            if len(need) < len(ids) and ctx.dist.is_main:
                log.info("%s x %s: %d of %d samples already scored, resuming", pair.encoder_spec, pair.name,
                         len(ids) - len(need), len(ids))
        todo = [i for i in ids if any(i in need for need in needs)]  # loaded once, whichever pairs need it
        mine = todo[ctx.dist.rank :: ctx.dist.world_size]
        owns = [SampleStore(path.with_name(f"{path.stem}.rank{ctx.dist.rank}.jsonl")) if ctx.dist.distributed
                else store for path, store in zip(paths, stores, strict=True)]
        policy = ctx.policy()
        seconds = [0.0] * len(pairs)  # each pair's scoring time plus its share of the loading time
        desc = f"{pairs[0].encoder_spec} | {', '.join(p.name for p in pairs)}"
        clock = time.perf_counter()
        for chunk in ctx.stream(pairs[0].dataset, mine, policy, desc):
            loading, clock = time.perf_counter() - clock, time.perf_counter()
            users = [k for k, need in enumerate(needs) if any(i in need for i in _chunk_ids(chunk))]
            for k in users:
                owns[k].append(self._chunk_records(ctx, pairs[k], chunk, needs[k], policy))
                seconds[k] += loading / len(users) + time.perf_counter() - clock
                clock = time.perf_counter()
        dist_utils.barrier(ctx.dist)
        if not ctx.dist.is_main:
            return [None] * len(pairs)
        results: list[RunResult | None] = []
        for pair, key, path, store, spent in zip(pairs, keys, paths, stores, seconds, strict=True):
            for shard in _shard_files(path):
                store.absorb(shard)
            records = [store.get(i) for i in ids]
            missing = [i for i, r in zip(ids, records, strict=True) if r is None]
            if missing:
                raise RuntimeError(f"samples {missing[:5]} have no stored record after the run")
            result = self.summarise_pair(ctx, pair, key, records, path)  # type: ignore[arg-type]
            result.duration_s = round(spent, 3)
            results.append(result)
        return results

    def _chunk_records(self, ctx: RunContext, pair: Pair, chunk: Chunk, need: set[str],
                       policy: BadSamples) -> list[Record]:
        """The records of the samples of ``chunk`` that ``pair`` still needs."""
        records: list[Record] = [{"id": sample_id, "skipped": reason} for sample_id, reason in chunk.bad
                                 if sample_id in need]
        batch = chunk.batch
        if batch is not None:
            rows = [k for k, sample_id in enumerate(batch.ids) if sample_id in need]
            if rows:
                records += self._records(ctx, pair, batch if len(rows) == len(batch) else batch.select(rows), policy)
        return records

    def summarise_pair(self, ctx: RunContext, pair: Pair, key: str, records: list[Record],
                       samples_path: Path) -> RunResult:
        """The result of a pair from its stored records (metric objects, exclusions, skips, :meth:`extras`)."""
        metrics, n = summarise(self.metrics(ctx.options), records)
        excluded = Counter(r["excluded"] for r in records if "excluded" in r)
        skipped = Counter(getattr(pair.dataset, "skipped", {}) or {})
        skipped.update(r["skipped"] for r in records if "skipped" in r)
        return ctx.result(encoder=pair.encoder_spec, attribution=pair.name, key=key, metrics=metrics, n=n,
                          excluded=excluded, skipped=skipped, samples_file=samples_path,
                          extra=self.extras(ctx, pair, records))

    def _records(self, ctx: RunContext, pair: Pair, batch: Batch, policy: BadSamples) -> list[Record]:
        out = []
        for sample_id, record in zip(batch.ids, self.evaluate(ctx, pair, batch), strict=True):
            if "error" in record:
                out.append({"id": sample_id, "skipped": policy.handle(sample_id, record["error"])})
            else:
                out.append({"id": sample_id, **record})
        return out

    @staticmethod
    def _open_store(ctx: RunContext, samples_path: Path) -> SampleStore:
        """The pair's store, merged with the shard files a killed sharded run left (``--fresh`` empties it)."""
        if ctx.dist.is_main:
            if ctx.config.fresh:
                for path in [samples_path, *_shard_files(samples_path)]:
                    path.unlink(missing_ok=True)
            store = SampleStore(samples_path)
            for path in _shard_files(samples_path):
                store.absorb(path)
        dist_utils.barrier(ctx.dist)
        if not ctx.dist.is_main:  # rank 0's merged store is complete; the others read it after the barrier
            store = SampleStore(samples_path)
        return store


def _chunk_ids(chunk: Chunk) -> list[str]:
    return (chunk.batch.ids if chunk.batch is not None else []) + [sample_id for sample_id, _ in chunk.bad]


def _shard_files(samples_path: Path) -> list[Path]:
    return sorted(samples_path.parent.glob(f"{samples_path.stem}.rank*.jsonl"))


@contextmanager
def store_lock(ctx: RunContext, samples_path: Path, what: str) -> Iterator[None]:
    """Holds the lock of the store ``samples_path`` on rank 0 (other ranks of the job follow rank 0's barriers).

    The lock is taken without blocking; if another process holds it (the same pair, scored by another run of the
    same command), a warning says so and this process waits, polling every :data:`LOCK_POLL_S` seconds, until
    it is released: then the store holds the other process's scores. The lock of a killed process is released
    by the operating system.
    """
    if not ctx.dist.is_main:
        yield
        return
    path = ctx.folder / LOCKS_DIR / f"{samples_path.name}.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = FileLock(path)
    try:
        lock.acquire(blocking=False)
    except Timeout:
        log.warning("%s: another process is scoring these samples (it holds %s); waiting for it to finish, then "
                    "reading its scores", what, path)
        lock.acquire(poll_interval=LOCK_POLL_S)
    try:
        yield
    finally:
        lock.release()


def non_finite_message(maps: Tensor) -> str:
    """The error of a sample whose map holds NaN or Inf values."""
    return f"non-finite map ({int((~torch.isfinite(maps)).sum())} NaN/Inf values)"


class MapTask(SampleTask):
    """A task scored sample by sample from attribution maps (pointing game, sparsity, SSIM, ROAD).

    Subclasses declare their metrics and implement :meth:`score`, which only ever sees finite maps (a map with
    NaN/Inf values is a bad sample, under the run's policy). :meth:`run` scores every (encoder, attribution)
    pair of the run; per-encoder state (a classifier, a figure path) is what :meth:`begin_encoder` returns.
    """

    @abstractmethod
    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        """One record per sample of ``batch`` from its finite maps (``maps[i]`` belongs to ``batch.ids[i]``)."""

    def maps(self, ctx: RunContext, pair: Pair, batch: Batch) -> Tensor:
        """Attribution maps of a batch, ``maps[i]`` of sample i (overridden by tasks that perturb images), fp32, from
        forwards in the run's precision (:func:`aft_bench.attributions.precision.attribution_precision`)."""
        images = batch.images.to(pair.encoder.device)
        target = ctx.target(pair.encoder, batch, pair.dataset)
        with attribution_precision(ctx.config.precision, images.device):
            return self.method(pair)(pair.encoder, images, target)

    @staticmethod
    def method(pair: Pair) -> Attribution:
        """The pair's attribution method (map tasks always have one)."""
        if pair.method is None:
            raise TypeError(f"pair {pair.encoder_spec} x {pair.name} has no attribution method: map tasks need one")
        return pair.method

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        """:meth:`score` of the finite maps; an error record for each sample whose map is not finite."""
        maps = self.maps(ctx, pair, batch)
        finite = torch.isfinite(maps).flatten(1).all(dim=1).tolist()
        records: list[Record | None] = [None if ok else {"error": non_finite_message(maps[i])}
                                        for i, ok in enumerate(finite)]
        keep = [i for i, ok in enumerate(finite) if ok]
        if keep:
            good = keep == list(range(len(batch)))
            scored = self.score(ctx, pair, maps if good else maps[torch.tensor(keep, device=maps.device)],
                                batch if good else batch.select(keep))
            for i, record in zip(keep, scored, strict=True):
                records[i] = record
        return records  # type: ignore[return-value]

    def methods(self, ctx: RunContext, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The (name, method) pairs to score ``encoder`` with (refusals appended to ``refused``)."""
        return ctx.attributions(encoder, refused)

    def begin_encoder(self, ctx: RunContext, encoder_spec: str, encoder: Encoder, dataset: Dataset) -> Any:
        """Per-encoder state, built before its pairs are scored (default: none); it reaches every :class:`Pair`."""
        return None

    def end_encoder(self, ctx: RunContext, encoder_spec: str, state: Any, results: list[RunResult]) -> None:
        """Called on rank 0 with an encoder's results after its pairs (tasks that draw figures do it here)."""

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        """Scores every (encoder, attribution) pair; yields the results (none on ranks other than 0)."""
        refused: list[str] = []
        pairs = 0
        for spec, encoder in ctx.encoders():
            methods = list(self.methods(ctx, encoder, refused))
            if not methods:
                continue
            dataset, ids = ctx.samples(encoder.image_size)
            state = self.begin_encoder(ctx, spec, encoder, dataset)
            pairs += len(methods)
            results: list[RunResult] = []
            pairs_of = [Pair(spec, encoder, name, method, dataset, state) for name, method in methods]
            if type(self).run_pair is SampleTask.run_pair:  # one pass over the data for all the methods
                scored = self.run_pairs(ctx, pairs_of, ids)
            else:  # a task that chooses the samples of each pair (its own run_pair) scores pair by pair
                scored = [self.run_pair(ctx, pair, ids) for pair in pairs_of]
            for result in scored:
                if result is not None:
                    results.append(result)
                    yield result
            if results:
                self.end_encoder(ctx, spec, state, results)
        if not pairs and refused:
            raise UnsupportedEncoderError("; ".join(refused))
