"""Tasks scored sample by sample: the shared, resumable and shardable per-sample loop.

A :class:`SampleTask` implements :meth:`SampleTask.evaluate` (a batch -> one record per sample). The loop skips
samples whose records are already stored (:class:`~aft_bench.results.store.SampleStore`), streams the rest in
batches, applies the run's bad-sample policy once (unreadable samples, records with an ``error``) and summarises
the stored records (:func:`~aft_bench.evaluation.task.summarise`).

Under ``torchrun`` (``torchrun --nproc_per_node N -m aft_bench run ...``) the samples still to score are shared
over the ranks, without padding: rank ``r`` scores ``todo[r::N]`` on its own device and appends to its own store
file (:func:`~aft_bench.results.store.shard_path`); rank 0 then merges the files by sample id and returns the
result, so the numbers are those of one process. Store files that a killed sharded run left are merged first, so a
rerun (with any number of processes) recomputes only what is missing. Two runs of the same pair into one folder
share the work through the pair's store lock (:mod:`aft_bench.results.locks`).
"""

from __future__ import annotations

import logging
import time
from abc import abstractmethod
from collections import Counter
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from aft_bench.attributions.base import Attribution
from aft_bench.core import distributed as dist_utils
from aft_bench.data.base import Batch, Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.streaming import BadSamples, Chunk
from aft_bench.evaluation.task import Record, Task, summarise
from aft_bench.models.encoder import Encoder
from aft_bench.results.locks import store_lock
from aft_bench.results.result import RunResult
from aft_bench.results.store import SampleStore, shard_files, shard_path

log = logging.getLogger(__name__)


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
                stack.enter_context(store_lock(ctx.folder, paths[k], f"{pairs[k].encoder_spec} x {pairs[k].name}",
                                                   ctx.dist.is_main))
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
        owns = [SampleStore(shard_path(path, ctx.dist.rank)) if ctx.dist.distributed
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
            for shard in shard_files(path):
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
                for path in [samples_path, *shard_files(samples_path)]:
                    path.unlink(missing_ok=True)
            store = SampleStore(samples_path)
            for path in shard_files(samples_path):
                store.absorb(path)
        dist_utils.barrier(ctx.dist)
        if not ctx.dist.is_main:  # rank 0's merged store is complete; the others read it after the barrier
            store = SampleStore(samples_path)
        return store


def _chunk_ids(chunk: Chunk) -> list[str]:
    return (chunk.batch.ids if chunk.batch is not None else []) + [sample_id for sample_id, _ in chunk.bad]
