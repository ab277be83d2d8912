"""ROAD: remove pixels by noisy linear imputation and evaluate without retraining (the cheap ROAR).

Rong et al. (2022, "A consistent and efficient evaluation strategy for attribution methods", ICML)
show that ROAR's retraining can be dropped when removed pixels are filled so that the filling itself
leaks no information about which pixels were removed: each removed pixel takes the weighted mean of
its 8 neighbours (direct 1/6, diagonal 1/12; one sparse linear system per image) plus Gaussian noise
(:func:`aft_bench.metrics.removal.noisy_linear_imputation`). The task removes the top-k% pixels of
each test image by its saliency map (same ranking and count as ROAR) and asks the *original*
classifier, the zero-shot head (class prompt embeddings) or the cached linear probe, for the class.

Per (encoder, attribution) it reports ``acc@<k>``, the accuracy on the imputed images in percent, and
``auc``, the normalised area under the accuracy-vs-fraction curve (the curve's mean height); means
over test images with their 95% intervals. With the default ``order=morf`` (most relevant first) lower
is better; with ``order=lerf`` higher is better. ``random`` is the random-removal baseline. A PNG of
the curves per encoder lands beside the result files; each result records the clean accuracy.

Options (``--option key=value``):
    fractions: removal fractions below 1 (default [0.1, ..., 0.9]). order: ``morf`` or ``lerf``.
    noise: standard deviation of the imputation noise in pixel units (default 0.01, as Rong et al.).
    seeds: noise draws per image and fraction, averaged (default 1).
    target: what the maps explain (``text`` or ``probe``). classifier: ``zero_shot`` or ``probe``
        (default: ``zero_shot`` for target text, ``probe`` for target probe; probe options as in
        :mod:`aft_bench.evaluation.probe.store`). prompt_template: the zero-shot class prompt (default: the dataset's,
        else ``"a photo of a {}."``). random_baseline: add the ``random`` row (default true).

Noise is a pure function of (run seed, sample id, fraction, draw) (:func:`aft_bench.core.seeding.sample_seed`), so a
sample gets the same imputation in any batch; results are stored per sample, so an interrupted run resumes.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.core.options import names_in, nested, non_negative, option, positive_int
from aft_bench.core.registries import CLASSIFIERS
from aft_bench.core.seeding import sample_seed
from aft_bench.data.base import Batch, Dataset
from aft_bench.evaluation.classifiers import PromptOptions
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapTask
from aft_bench.evaluation.removal.base import (
    DEFAULT_FRACTIONS,
    RemovalOptions,
    curve_metrics,
    parse_fractions,
    removal_methods,
)
from aft_bench.evaluation.removal.curves import figure_path, plot_curves
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.removal import curve_auc, fraction_label, noisy_linear_imputation, pixel_ranks, removal_masks
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.encoder import Encoder
from aft_bench.results.result import RunResult

DEFAULT_CLASSIFIER: dict[str, str] = {"text": "zero_shot", "probe": "probe"}
"""The classifier a target explains, used when option ``classifier`` is not given."""


def _fractions_below_one(value: Any, key: str) -> tuple[float, ...]:
    fractions = parse_fractions(value, key)
    if fractions[-1] >= 1.0:
        raise ValueError(f"option {key}={value!r}: ROAD needs fractions below 1 (one pixel must stay)")
    return fractions


@dataclass(frozen=True)
class RoadOptions(RemovalOptions):
    """ROAD's options (see the module docstring)."""

    fractions: tuple[float, ...] = option(DEFAULT_FRACTIONS, parse=_fractions_below_one,
                                          help="removal fractions below 1")
    noise: float = option(0.01, parse=non_negative, help="imputation noise std in pixel units (Rong et al.)")
    seeds: int = option(1, parse=positive_int, help="noise draws per image and fraction (averaged)")
    classifier: str | None = option(None, parse=lambda v, k: None if v is None else names_in(CLASSIFIERS)(v, k),
                                    help="zero_shot or probe; null = zero_shot for target text, probe for target probe")
    prompts: PromptOptions = nested(PromptOptions, "", help="the zero-shot head's prompts")

    @property
    def head(self) -> str:
        """The classifier used: option ``classifier``, else the one the target explains."""
        return self.classifier or DEFAULT_CLASSIFIER.get(self.target, "zero_shot")


@dataclass(frozen=True)
class RoadState:
    """Per encoder: the classifier that judges the imputed images and the curve figure's path."""

    classifier: Any
    figure: Path


class Road(MapTask):
    """Remove and debias (Rong et al. 2022) for every encoder x attribution, plus the random baseline."""

    Options: ClassVar[type] = RoadOptions

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return curve_metrics(options.fractions, options.order)

    def methods(self, ctx: RunContext, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The run's attributions, then the random-removal baseline."""
        return removal_methods(ctx, encoder, refused)

    def begin_encoder(self, ctx: RunContext, encoder_spec: str, encoder: Encoder, dataset: Dataset) -> RoadState:
        classifier = CLASSIFIERS.get(ctx.options.head)(encoder, dataset, ctx.options.prompts, ctx.probe_setup(dataset))
        return RoadState(classifier, figure_path(ctx.folder, encoder_spec, ctx.config.dataset))

    def end_encoder(self, ctx: RunContext, encoder_spec: str, state: RoadState, results: list[RunResult]) -> None:
        plot_curves(results, state.figure, title=f"ROAD · {encoder_spec} · {ctx.config.dataset} · {ctx.options.head}")

    def score(self, ctx: RunContext, pair: Pair, maps: Tensor, batch: Batch) -> list[Record]:
        opts: RoadOptions = ctx.options
        records: list[Record] = [{"error": "no class label (ROAD classifies the images and needs labels)"}
                                 if int(label) < 0 else {"scores": {}} for label in batch.labels.tolist()]
        keep = [i for i, r in enumerate(records) if "scores" in r]
        if not keep:
            return records
        index = torch.tensor(keep)
        images, labels = batch.images[index.to(batch.images.device)].float().cpu(), batch.labels[index.to(
            batch.labels.device)].cpu()
        ranks = pixel_ranks(maps[index.to(maps.device)]).cpu()
        ids = [batch.ids[i] for i in keep]
        classifier = pair.state.classifier
        clean = (classifier.predict(images) == labels).double()
        curves = np.zeros((len(keep), len(opts.fractions)))
        for j, fraction in enumerate(opts.fractions):
            masks = removal_masks(ranks, fraction, opts.order)
            for draw in range(opts.seeds):
                rngs = [np.random.default_rng(sample_seed(ctx.config.seed, sample_id, "road", fraction_label(fraction),
                                                          draw)) for sample_id in ids]
                imputed = noisy_linear_imputation(images, masks, opts.noise, rngs)
                curves[:, j] += (classifier.predict(imputed) == labels).double().numpy() / opts.seeds
        auc = curve_auc(opts.fractions, curves)
        for row, i in enumerate(keep):
            scores = {f"acc@{fraction_label(f)}": float(curves[row, j]) for j, f in enumerate(opts.fractions)}
            records[i] = {"scores": {**scores, "auc": float(auc[row])}, "clean": float(clean[row])}
        return records

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """The clean accuracy (images before removal) and the curve settings."""
        clean = RunningStat()
        clean.update([r["clean"] for r in records if "clean" in r])
        summary = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                   for k, v in clean.summary().items()}
        if summary["mean"] is not None:
            summary["mean"] *= 100.0
            summary["ci95"] = None if summary["ci95"] is None else summary["ci95"] * 100.0
        opts: RoadOptions = ctx.options
        return {"fractions": list(opts.fractions), "order": opts.order, "noise": opts.noise, "seeds": opts.seeds,
                "target": opts.target, "classifier": opts.head, "clean_accuracy": summary,
                "figure": pair.state.figure.name}
