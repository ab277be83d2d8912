"""ROAR: remove the most salient pixels, retrain, and see how much accuracy is left (paper section 4.1, Fig. 3).

Hooker et al. (2019, "A benchmark for interpretability methods in deep neural networks") measure how
much of what a saliency map marks the task needs: for each removal fraction k (default 10..90%), the
top-k% pixels of every training and test image (by that image's map; ties by raster index, exactly
``floor(k N + 1/2)`` pixels) are replaced by the per-channel mean of the training images, a model is
retrained on the removed training images (three seeds) and its test accuracy recorded. A steeper drop
means the map found the pixels the task depends on; the random-removal baseline (row ``random``) is the
floor every map must beat.

Per (encoder, attribution) the result holds ``acc@<k>`` (test accuracy in percent, mean over seeds with
the 95% interval over seeds) and ``auc``, the normalised area under the accuracy-vs-fraction curve
(trapezoid over the fractions divided by their span: the curve's mean height, in percent). For ROAR
*lower is better* for both (``higher_is_better: false``); with ``order=lerf`` (least relevant first,
Hooker et al.'s KAR-like control) higher is better. A PNG of the curves per encoder is written beside
the result files, with the accuracy on unmodified images (fraction 0) as the common start.

Options (``--option key=value``):
    fractions: removal fractions (default [0.1, ..., 0.9]). seeds: retrainings per fraction (default 3).
    target: what the maps explain, a TARGETS name (``text``: zero-shot prompt; ``probe``: linear probe).
    retrain: ``probe`` (linear probe on the frozen encoder, default) or ``cnn`` (small CNN from scratch).
    subsample: share of training images each seed retrains on (default: 0.8 for probe, 1.0 for cnn).
    order: ``morf`` (default) or ``lerf``. random_baseline: add the ``random`` row (default true).
    train_split / test_split: the dataset's ``split=`` for each side (test: null = the dataset's default).
    train_limit: training images (seeded subset; default: ``--limit``). image_cache_mb: keep a split in memory
    when it fits (default 512). The test side uses ``--limit``.

Saliency ranks are cached per (encoder, attribution, target, split) under
``<out>/roar/samples/ranks/``; accuracies per (fraction, seed) in a JSON-lines file beside them, so an
interrupted run resumes at the first missing (fraction, seed).
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import shutil
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from aft_bench.attributions.base import Attribution
from aft_bench.core.options import nested, option, optional_positive_int, positive_int
from aft_bench.core.registries import RETRAINERS
from aft_bench.data.base import Batch, DataError, select_ids
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.removal.base import RemovalOptions, curve_metrics, removal_methods
from aft_bench.evaluation.removal.curves import figure_path, plot_curves
from aft_bench.evaluation.removal.data import RemovedSplit, Split, ensure_ranks
from aft_bench.evaluation.removal.retrainers import CnnOptions
from aft_bench.evaluation.task import Reported, Task
from aft_bench.metrics.base import Metric
from aft_bench.metrics.removal import curve_auc, fraction_label, replace_with_mean
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.results.result import RunResult
from aft_bench.results.store import SampleStore

log = logging.getLogger(__name__)

DEFAULT_SUBSAMPLE: dict[str, float] = {"probe": 0.8, "cnn": 1.0}


def _subsample(value: Any, key: str) -> float | None:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int | float)
                              or not 0.0 < float(value) <= 1.0):
        raise ValueError(f"option {key}={value!r}: give a share in (0, 1]")
    return None if value is None else float(value)


def _retrain(value: Any, key: str) -> str:
    RETRAINERS.get(str(value))
    return str(value)


@dataclass(frozen=True)
class RoarOptions(RemovalOptions):
    """ROAR's options (see the module docstring)."""

    seeds: int = option(3, parse=positive_int, help="retrainings per fraction")
    retrain: str = option("probe", parse=_retrain, help="probe or cnn (RETRAINERS registry)")
    subsample: float | None = option(None, parse=_subsample,
                                     help="share of training images per seed; null = 0.8 for probe, 1.0 for cnn")
    train_split: str | None = option("train", help="split= of the training side")
    test_split: str | None = option(None, help="split= of the test side (null: the dataset's default)")
    train_limit: int | None = option(None, parse=optional_positive_int,
                                     help="training images (seeded subset; null: --limit)")
    image_cache_mb: float = option(512.0, help="keep a split in memory when it fits")
    cnn: CnnOptions = nested(CnnOptions, "cnn_", help="the CNN retrainer")

    def __post_init__(self) -> None:
        if self.train_split == self.test_split:
            raise ValueError(f"options train_split and test_split are both {self.test_split!r}: ROAR must test on "
                             "images it did not retrain on")

    @property
    def share(self) -> float:
        """The share of training images each seed retrains on."""
        return DEFAULT_SUBSAMPLE[self.retrain] if self.subsample is None else self.subsample


def curve_summaries(metrics: Sequence[Metric], fractions: Sequence[float], curves: np.ndarray) -> dict[str, dict]:
    """``acc@<k>`` and ``auc`` summaries of R x F accuracy curves in [0, 1] (one row per seed), in percent."""
    columns = [*(curves[:, j] for j in range(len(fractions))), curve_auc(fractions, curves)]
    out: dict[str, dict] = {}
    for metric, values in zip(metrics, columns, strict=True):
        stat = RunningStat()
        stat.update(metric.scale * values)
        out[metric.name] = metric.summary(stat)
    return out


def _ids_digest(*id_lists: list[str]) -> str:
    digest = hashlib.sha256()
    for ids in id_lists:
        digest.update(json.dumps(ids).encode())
    return digest.hexdigest()[:16]


@dataclass(frozen=True)
class _Encoder:
    """What every (attribution) pair of one encoder shares."""

    spec: str
    encoder: Encoder
    train: Split
    test: Split
    mean: Tensor
    retrainer: Any
    seeds: list[int]
    clean_acc: np.ndarray
    figure: Path
    ids: str


class Roar(Task):
    """Remove and retrain (Hooker et al. 2019) for every encoder x attribution, plus the random baseline."""

    Options: ClassVar[type] = RoarOptions

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return curve_metrics(options.fractions, options.order)

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        refused: list[str] = []
        produced = False
        for spec, encoder in ctx.encoders():
            methods = list(removal_methods(ctx, encoder, refused))
            if not methods:
                continue
            shared = self._prepare(ctx, spec, encoder)
            results = []
            for name, method in methods:
                result = self._run_pair(ctx, shared, name, method)
                results.append(result)
                produced = True
                yield result
            plot_curves(results, shared.figure, title=f"ROAR · {spec} · {ctx.config.dataset} · "
                                                      f"retrain={ctx.options.retrain}")
        if not produced and refused:
            raise UnsupportedEncoderError("; ".join(refused))

    # ------------------------------------------------------------------ one encoder
    def _splits(self, ctx: RunContext, encoder: Encoder) -> tuple[Split, Split]:
        opts: RoarOptions = ctx.options
        splits = []
        for name, split in (("train", opts.train_split), ("test", opts.test_split)):
            try:
                dataset = ctx.dataset(encoder.image_size, split=split)
            except DataError as exc:
                raise DataError(f"{exc}. ROAR needs a labelled dataset with train and test splits passed as split=...: "
                                "set them with --option train_split=... --option test_split=...") from exc
            # the test side is the run's own sample set (--limit); the train side has its own limit
            ids = ctx.select(dataset.ids()) if name == "test" else \
                select_ids(dataset.ids(), opts.train_limit or ctx.config.limit, ctx.config.seed)
            splits.append(Split(name, dataset, ids, encoder.image_size,
                                ctx.config.on_error, ctx.config.batch_size, ctx.config.num_workers))
            splits[-1].preload(opts.image_cache_mb * 2**20)
        return splits[0], splits[1]

    def _retrain_options(self, ctx: RunContext) -> dict[str, Any]:
        """The options the retrained models depend on (the key of the clean and per-fraction accuracies)."""
        opts: RoarOptions = ctx.options
        return {"retrain": opts.retrain, "subsample": opts.share, "seeds": opts.seeds,
                "probe": {"steps": opts.probe.steps, "weight_decay": opts.probe.weight_decay},
                "cnn": vars(opts.cnn) if opts.retrain == "cnn" else None}

    def _prepare(self, ctx: RunContext, spec: str, encoder: Encoder) -> _Encoder:
        opts: RoarOptions = ctx.options
        train, test = self._splits(ctx, encoder)
        mean = train.channel_mean()
        retrainer = RETRAINERS.get(opts.retrain)(encoder, len(train.classnames), mean, opts.probe, opts.cnn)
        seeds = [ctx.config.seed + i for i in range(opts.seeds)]
        ids = _ids_digest(train.ids, test.ids)
        clean_key = ctx.run_key(spec, encoder, "-", options=self._retrain_options(ctx), ids=ids)
        clean_path = ctx.store_path(spec, "-", clean_key, kind="clean")
        if ctx.config.fresh:
            clean_path.unlink(missing_ok=True)
        clean_store = SampleStore(clean_path)
        clean = RemovedSplit(train, None, 0.0, opts.order, lambda images, masks: images)
        self._fill(clean_store, retrainer, clean, RemovedSplit(test, None, 0.0, opts.order, clean.remove), 0.0,
                   seeds, opts.share)
        clean_acc = self._curves(clean_store, (0.0,), seeds)[:, 0]
        return _Encoder(spec, encoder, train, test, mean, retrainer, seeds, clean_acc,
                        figure_path(ctx.folder, spec, ctx.config.dataset), ids)

    # ------------------------------------------------------------------ one (encoder, attribution)
    def _run_pair(self, ctx: RunContext, shared: _Encoder, name: str, method: Attribution) -> RunResult:
        opts: RoarOptions = ctx.options
        maps_options = {"target": opts.target, "probe": vars(opts.probe) if opts.target == "probe" else None}
        maps_key = ctx.run_key(shared.spec, shared.encoder, name, options=maps_options, ids=shared.ids)
        rank_dir = ctx.samples_folder / "ranks" / ctx.store_path(shared.spec, name, maps_key).stem
        # per (fraction, seed) accuracies: the maps, the retrained model and the order (not the list of fractions)
        key = ctx.run_key(shared.spec, shared.encoder, name, ids=shared.ids,
                          options={**maps_options, **self._retrain_options(ctx), "order": opts.order})
        samples_path = ctx.store_path(shared.spec, name, key)
        if ctx.config.fresh:
            samples_path.unlink(missing_ok=True)
            shutil.rmtree(rank_dir, ignore_errors=True)
        store = SampleStore(samples_path)

        def maps(batch: Batch) -> Tensor:
            images = batch.images.to(shared.encoder.device)
            return method(shared.encoder, images, ctx.target(shared.encoder, batch, shared.train.dataset))

        ranks = {s.name: ensure_ranks(rank_dir / f"{s.name}.npy", s, maps,
                                      desc=f"{shared.spec} | {name} | {s.name} maps")
                 for s in (shared.train, shared.test)}

        def remove(images: Tensor, masks: Tensor) -> Tensor:
            return replace_with_mean(images, masks, shared.mean)

        sources = {f: (RemovedSplit(shared.train, ranks["train"], f, opts.order, remove),
                       RemovedSplit(shared.test, ranks["test"], f, opts.order, remove)) for f in opts.fractions}
        for fraction in tqdm(opts.fractions, desc=f"{shared.spec} | {name} | retrain", unit="fraction", leave=False):
            self._fill(store, shared.retrainer, *sources[fraction], fraction, shared.seeds, opts.share)
        curves = self._curves(store, opts.fractions, shared.seeds)
        skipped: dict[str, int] = {}
        for reason in [*shared.train.failed.values(), *shared.test.failed.values(), *ranks["train"].failed.values(),
                       *ranks["test"].failed.values()]:
            skipped[reason] = skipped.get(reason, 0) + 1
        metrics = curve_summaries(self.metrics(opts), opts.fractions, curves)  # type: ignore[arg-type]
        return ctx.result(
            encoder=shared.spec, attribution=name, key=key, metrics=metrics, n=len(ranks["test"].positions()),
            skipped=skipped, samples_file=samples_path,
            extra={
                "fractions": list(opts.fractions), "seeds": shared.seeds, "order": opts.order, "retrain": opts.retrain,
                "target": opts.target, "subsample": opts.share, "curves": curves.tolist(),
                "train_images": len(ranks["train"].positions()), "test_images": len(ranks["test"].positions()),
                "clean_accuracy": _summary(100.0 * shared.clean_acc), "figure": shared.figure.name,
                "ranks": str(rank_dir.relative_to(ctx.folder)),
            },
        )

    @staticmethod
    def _fill(store: SampleStore, retrainer: Any, train: RemovedSplit, test: RemovedSplit,
              fraction: float, seeds: list[int], subsample: float) -> None:
        """Retrains for the seeds of ``fraction`` that the store lacks and appends their accuracies."""
        todo = [seed for seed in seeds if _score_id(fraction, seed) not in store]
        if todo:
            accuracies = retrainer.evaluate(train, test, todo, subsample)
            store.append([{"id": _score_id(fraction, s), "scores": {"acc": accuracies[s]}} for s in todo])

    @staticmethod
    def _curves(store: SampleStore, fractions: Sequence[float], seeds: list[int]) -> np.ndarray:
        """Seeds x fractions accuracies in [0, 1] from the store."""
        return np.array([[store.get(_score_id(f, s))["scores"]["acc"] for f in fractions] for s in seeds])  # type: ignore[index]


def _score_id(fraction: float, seed: int) -> str:
    return f"{fraction_label(fraction)}/{seed}"


def _summary(values: np.ndarray) -> dict[str, float]:
    stat = RunningStat()
    stat.update(values)
    return {k: (v if not isinstance(v, float) or math.isfinite(v) else None)  # type: ignore[misc]
            for k, v in stat.summary().items()}
