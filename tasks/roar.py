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
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor
from tqdm.auto import tqdm

from aft_bench.attributions.base import Attribution
from aft_bench.config import RunConfig
from aft_bench.data.base import Batch
from aft_bench.encoder import Encoder, UnsupportedEncoderError
from aft_bench.evaluation import Task, select_ids, usable_attributions
from aft_bench.loading import load_encoder
from aft_bench.metrics.removal import ORDERS, check_fraction, curve_auc, fraction_label, replace_with_mean
from aft_bench.metrics.summary import RunningStat
from aft_bench.registries import DATASETS, TARGETS
from aft_bench.results import SAMPLES_DIR, RunResult, SampleStore, run_key, safe_name, write_result
from aft_bench.tasks.options import positive_int
from aft_bench.tasks.roar_data import (
    RANDOM,
    RandomBaseline,
    RemovedSplit,
    Split,
    build_split_dataset,
    ensure_ranks,
)
from aft_bench.tasks.roar_plot import figure_path, plot_curves
from aft_bench.tasks.roar_retrain import RETRAINERS

log = logging.getLogger(__name__)

DEFAULT_FRACTIONS: tuple[float, ...] = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9)
DEFAULT_SUBSAMPLE: dict[str, float] = {"probe": 0.8, "cnn": 1.0}
HIGHER_IS_BETTER: dict[str, bool] = {"morf": False, "lerf": True}
"""Per removal order: whether a higher accuracy means a better map."""


def parse_fractions(value: Any, allow_one: bool = True) -> tuple[float, ...]:
    """Option ``fractions``: one number or a list of distinct numbers in [0, 1] (sorted ascending here)."""
    items = value if isinstance(value, Sequence) and not isinstance(value, str) else [value]
    try:
        fractions = tuple(sorted(check_fraction(f) for f in items))
    except (TypeError, ValueError) as exc:
        raise ValueError(f"option fractions={value!r}: give shares in [0, 1], e.g. --option fractions=[0.1,0.5,0.9]"
                         ) from exc
    if not fractions or len({fraction_label(f) for f in fractions}) != len(fractions):
        raise ValueError(f"option fractions={value!r}: give at least one fraction, each once")
    if not allow_one and fractions[-1] >= 1.0:
        raise ValueError(f"option fractions={value!r}: this task needs fractions below 1 (one pixel must stay)")
    return fractions


def check_order(value: Any) -> str:
    if value not in ORDERS:
        raise ValueError(f"option order={value!r}: choose one of {list(ORDERS)}")
    return str(value)


def attribution_methods(config: RunConfig, encoder: Encoder, refused: list[str],
                        random_baseline: bool) -> Iterator[tuple[str, Attribution]]:
    """The run's attributions that serve ``encoder`` (refusals logged and collected), then ``random``."""
    yield from usable_attributions(config, encoder, refused)
    if random_baseline and RANDOM not in config.attributions:
        yield RANDOM, RandomBaseline(seed=config.seed)


def curve_metrics(fractions: Sequence[float], curves: np.ndarray, higher_is_better: bool) -> dict[str, dict]:
    """``acc@<k>`` and ``auc`` summaries of R x F accuracy curves in [0, 1] (one row per seed or image), in percent."""
    metrics: dict[str, dict] = {}
    for j, fraction in enumerate(fractions):
        stat = RunningStat()
        stat.update(100.0 * curves[:, j])
        metrics[f"acc@{fraction_label(fraction)}"] = {**stat.summary(), "higher_is_better": higher_is_better}
    stat = RunningStat()
    stat.update(100.0 * curve_auc(fractions, curves))
    metrics["auc"] = {**stat.summary(), "higher_is_better": higher_is_better}
    return metrics


@dataclass(frozen=True)
class RoarOptions:
    """ROAR's options, validated (see the module docstring)."""

    fractions: tuple[float, ...]
    seeds: int
    target: str
    retrain: str
    subsample: float
    order: str
    random_baseline: bool
    train_split: str | None
    test_split: str | None
    train_limit: int | None
    image_cache_mb: float

    @classmethod
    def from_config(cls, config: RunConfig) -> RoarOptions:
        o = config.options
        retrain = o.get("retrain", "probe")
        if retrain not in RETRAINERS:
            raise ValueError(f"option retrain={retrain!r}: choose one of {sorted(RETRAINERS)}")
        target = str(o.get("target", "text"))
        TARGETS.get(target)  # unknown names fail here, with the known ones
        subsample = o.get("subsample")
        if o.get("train_split", "train") == o.get("test_split"):
            raise ValueError(f"options train_split and test_split are both {o.get('test_split')!r}: ROAR must test on "
                             "images it did not retrain on")
        return cls(
            fractions=parse_fractions(o.get("fractions", DEFAULT_FRACTIONS)),
            seeds=positive_int(o, "seeds", 3) or 3, target=target, retrain=retrain,
            subsample=float(DEFAULT_SUBSAMPLE[retrain] if subsample is None else subsample),
            order=check_order(o.get("order", "morf")), random_baseline=bool(o.get("random_baseline", True)),
            train_split=o.get("train_split", "train"), test_split=o.get("test_split"),
            train_limit=positive_int(o, "train_limit", None), image_cache_mb=float(o.get("image_cache_mb", 512)),
        )


def _options_subset(options: Mapping[str, Any], names: Sequence[str], prefixes: tuple[str, ...]) -> dict[str, Any]:
    """The options named in ``names`` or starting with one of ``prefixes`` (what one cached artefact depends on)."""
    return {k: v for k, v in sorted(options.items()) if k in names or k.startswith(prefixes)}


def _ids_digest(*id_lists: list[str]) -> str:
    digest = hashlib.sha256()
    for ids in id_lists:
        digest.update(json.dumps(ids).encode())
    return digest.hexdigest()[:16]


class Roar(Task):
    """Remove and retrain (Hooker et al. 2019) for every encoder x attribution, plus the random baseline."""

    def run(self, config: RunConfig) -> list[Path]:
        opts = RoarOptions.from_config(config)
        paths: list[Path] = []
        refused: list[str] = []
        for spec in config.encoders:
            encoder = load_encoder(spec, config.device)
            methods = list(attribution_methods(config, encoder, refused, opts.random_baseline))
            if methods:
                paths.extend(self._run_encoder(config, opts, encoder, spec, methods))
        if not paths and refused:
            raise UnsupportedEncoderError("; ".join(refused))
        return paths

    # ------------------------------------------------------------------ one encoder
    def _splits(self, config: RunConfig, opts: RoarOptions, encoder: Encoder) -> tuple[Split, Split]:
        factory = DATASETS.get(config.dataset)
        splits = []
        for name, split, limit in (("train", opts.train_split, opts.train_limit or config.limit),
                                   ("test", opts.test_split, config.limit)):
            dataset = build_split_dataset(factory, config.dataset, split, encoder.image_size, config.data_root,
                                          config.on_error, dict(config.dataset_args))
            ids = select_ids(dataset.ids(), limit, config.seed)
            splits.append(Split(name, dataset, ids, encoder.image_size, config.on_error, config.batch_size,
                                config.num_workers))
            splits[-1].preload(opts.image_cache_mb * 2**20)
        return splits[0], splits[1]

    def _run_encoder(self, config: RunConfig, opts: RoarOptions, encoder: Encoder, spec: str,
                     methods: list[tuple[str, Attribution]]) -> list[Path]:
        train, test = self._splits(config, opts, encoder)
        mean = train.channel_mean()
        retrainer = RETRAINERS[opts.retrain](encoder, config, len(train.classnames), mean)
        numbers = {k: v for k, v in config.numbers_key().items() if k != "options"}
        base = {**numbers, "task_version": self.spec.version, "encoder": spec,
                "encoder_card": json.dumps(encoder.card, sort_keys=True, default=str),
                "ids": _ids_digest(train.ids, test.ids),
                "retrain": _options_subset(config.options, ("retrain", "subsample"), ("probe_", "cnn_"))}
        seeds = [config.seed + i for i in range(opts.seeds)]
        folder = Path(config.out) / self.spec.name
        stem = "__".join(safe_name(s) for s in (spec, "-", config.dataset))
        clean_key = run_key({**base, "attribution": "-"})
        clean_path = folder / SAMPLES_DIR / f"{stem}__clean__{clean_key}.jsonl"
        if config.fresh:
            clean_path.unlink(missing_ok=True)
        clean_store = SampleStore(clean_path)
        clean = RemovedSplit(train, None, 0.0, opts.order, lambda images, masks: images)
        self._fill(clean_store, retrainer, clean, RemovedSplit(test, None, 0.0, opts.order, clean.remove), 0.0,
                   seeds, opts.subsample)
        clean_acc = self._curves(clean_store, (0.0,), seeds)[:, 0]
        figure = figure_path(folder, spec, config.dataset)
        results = []
        for name, method in methods:
            results.append(self._run_pair(config, opts, encoder, spec, name, method, train, test, mean, retrainer,
                                          base, seeds, clean_acc, figure))
        paths = [write_result(result, config.out) for result in results]
        plot_curves(results, figure, title=f"ROAR · {spec} · {config.dataset} · retrain={opts.retrain}")
        return paths

    # ------------------------------------------------------------------ one (encoder, attribution)
    def _run_pair(self, config: RunConfig, opts: RoarOptions, encoder: Encoder, spec: str, name: str,
                  method: Attribution, train: Split, test: Split, mean: Tensor, retrainer: Any,
                  base: dict[str, Any], seeds: list[int], clean_acc: np.ndarray, figure: Path) -> RunResult:
        folder = Path(config.out) / self.spec.name
        stem = "__".join(safe_name(s) for s in (spec, name, config.dataset))
        maps_key = {**base, "retrain": None, "attribution": name, "target": opts.target,
                    "attribution_args": dict(config.attribution_args.get(name, {})),
                    "probe": _options_subset(config.options, (), ("probe_",))}
        rank_dir = folder / SAMPLES_DIR / "ranks" / f"{stem}__{run_key(maps_key)}"
        key = run_key({**maps_key, "retrain": base["retrain"], "order": opts.order})
        samples_path = folder / SAMPLES_DIR / f"{stem}__{key}.jsonl"
        if config.fresh:
            samples_path.unlink(missing_ok=True)
            shutil.rmtree(rank_dir, ignore_errors=True)
        store = SampleStore(samples_path)

        def maps(batch: Batch) -> Tensor:
            images = batch.images.to(encoder.device)
            target = TARGETS.get(opts.target)(encoder, batch.prompts, batch.labels, config=config, images=images)
            return method(encoder, images, target)

        ranks = {s.name: ensure_ranks(rank_dir / f"{s.name}.npy", s, maps, desc=f"{spec} | {name} | {s.name} maps")
                 for s in (train, test)}

        def remove(images: Tensor, masks: Tensor) -> Tensor:
            return replace_with_mean(images, masks, mean)

        sources = {f: (RemovedSplit(train, ranks["train"], f, opts.order, remove),
                       RemovedSplit(test, ranks["test"], f, opts.order, remove)) for f in opts.fractions}
        for fraction in tqdm(opts.fractions, desc=f"{spec} | {name} | retrain", unit="fraction", leave=False):
            self._fill(store, retrainer, *sources[fraction], fraction, seeds, opts.subsample)
        curves = self._curves(store, opts.fractions, seeds)
        skipped: dict[str, int] = {}
        for reason in [*train.failed.values(), *test.failed.values(), *ranks["train"].failed.values(),
                       *ranks["test"].failed.values()]:
            skipped[reason] = skipped.get(reason, 0) + 1
        return RunResult(
            task=self.spec.name, task_version=self.spec.version, dataset=config.dataset, encoder=spec,
            attribution=name, metrics=curve_metrics(opts.fractions, curves, HIGHER_IS_BETTER[opts.order]),
            n=len(ranks["test"].positions()), excluded={}, skipped=skipped, config=config.to_dict(), run_key=key,
            seed=config.seed, samples_file=str(samples_path.relative_to(folder)),
            extra={
                "fractions": list(opts.fractions), "seeds": seeds, "order": opts.order, "retrain": opts.retrain,
                "target": opts.target, "subsample": opts.subsample, "curves": curves.tolist(),
                "train_images": len(ranks["train"].positions()), "test_images": len(ranks["test"].positions()),
                "clean_accuracy": _summary(100.0 * clean_acc), "figure": figure.name,
                "ranks": str(rank_dir.relative_to(folder)),
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
