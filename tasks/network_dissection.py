"""Network Dissection (Bau et al. 2017): units of a layer as detectors of pixel-labelled concepts.

Per unit k, the threshold T_k is the ``quantile`` (0.995; 0.95 on the shapes world, see
``DEFAULT_QUANTILES``) of its activations over every spatial
position of every image (exact, streaming: :class:`aft_bench.metrics.dissection.TopQuantile`).
Each image's activation maps are then upsampled bilinearly to the label maps' size and thresholded,
and the IoU of unit mask and concept label is accumulated over the dataset as counts
(:class:`aft_bench.metrics.dissection.IoUAccumulator`); the unit detects its best concept when that IoU
exceeds ``iou_threshold`` (0.04). Two forward passes over the data (thresholds, then IoU); no map is
kept. The AFT paper dissects the penultimate block of ViT-B (section 4.2, Fig. 6): the default layer
is ``block:-2`` for ViTs (patch tokens laid on the grid) and ``stage:4`` for CNNs.

Concepts: Broden's labels in its six categories (colour, object, part, material, scene, texture;
whole-image scene and texture labels cover the image), or on the shapes world the five shapes and
five colours, each with the visible pixels of every object (target and distractors) of that shape or
colour. Outputs per encoder: a result file (detectors, unique concepts, mean best IoU, and both counts
per category) and, with the same stem, ``.units.csv`` (unit, concept, category, IoU, detector) and
``.top.png``: the most activating images of one unit (option ``unit``, default the best detector)
with its thresholded maps (Fig. 6).
"""

from __future__ import annotations

import csv
import io
import logging
import math
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.data.base import DataError, Dataset, float_pixels
from aft_bench.data.concept_labels import ConceptLabels, concept_labels
from aft_bench.data.shapes import ShapesDataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.streaming import BadSamples
from aft_bench.evaluation.task import Reported, Task
from aft_bench.metrics.base import Metric
from aft_bench.metrics.dissection import (
    DETECTORS,
    UNIQUE_CONCEPTS,
    IoUAccumulator,
    TopQuantile,
    best_concepts,
    detector_summary,
    unit_masks,
)
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.activations import LayerSpec, resolve_layer, spatial_activations
from aft_bench.models.encoder import Encoder
from aft_bench.results.result import RunResult

log = logging.getLogger(__name__)

#: default layer per encoder kind (the paper dissects the penultimate block of ViT-B)
DEFAULT_LAYERS: dict[str, str] = {"vit": "block:-2", "cnn": "stage:4"}
#: Bau et al.'s threshold: each unit's top 0.5% of activations over all positions of all images
QUANTILE = 0.995
#: dataset types whose concepts cover far more of the image than Broden's get their own default quantile:
#: the shapes world's ten concepts each cover ~5% of all pixels, so a 0.5% mask caps the IoU near 0.1 and
#: leaves the toy CLIP with no detector at all; its top 5% regions are compared instead
DEFAULT_QUANTILES: dict[type, float] = {ShapesDataset: 0.95}
MEAN_IOU = Metric(name="mean_iou", higher_is_better=True, scale=1.0, description="mean best IoU over the units")
#: pass 1 keeps the activation maps for pass 2 when they fit in this many bytes (else the encoder runs twice)
ACTIVATION_CACHE_BYTES = 256 * 2**20


@dataclass(frozen=True)
class NetworkDissectionOptions:
    """Task options (``--option key=value``).

    Attributes:
        layer: ``block:I`` / ``stage:I``; None = ``block:-2`` for ViTs, ``stage:4`` for CNNs.
        quantile: Per-unit activation quantile used as threshold; None = 0.995 (the top 0.5%, Bau et al.),
            or the dataset type's entry of ``DEFAULT_QUANTILES`` (shapes world: 0.95).
        iou_threshold: A unit whose best IoU exceeds this is a detector (0.04).
        unit: Unit whose top images are drawn; None = the unit with the highest IoU (of ``concept``).
        concept: Concept name: draw its best unit (the paper's Fig. 6 shows a "cat" detector).
        top_images: Number of images in that figure.
    """

    layer: str | None = None
    quantile: float | None = None
    iou_threshold: float = 0.04
    unit: int | None = None
    concept: str | None = None
    top_images: int = 8

    def __post_init__(self) -> None:
        if self.quantile is not None and not 0.0 <= self.quantile < 1.0:
            raise ValueError(f"option quantile={self.quantile}: give a quantile in [0, 1)")
        if self.top_images < 1:
            raise ValueError(f"option top_images={self.top_images}: give a number of images >= 1")
        if self.unit is not None and self.concept is not None:
            raise ValueError("network_dissection: give the option unit or concept, not both")








def default_quantile(dataset: Dataset) -> float:
    """The threshold quantile for ``dataset``: its type's entry of ``DEFAULT_QUANTILES``, else 0.995."""
    return next((q for kind, q in DEFAULT_QUANTILES.items() if isinstance(dataset, kind)), QUANTILE)




# ---------------------------------------------------------------------------------------- task
class NetworkDissection(Task):
    """Runs Network Dissection for every encoder of the run (attributions are not used)."""

    resumable: ClassVar[bool] = False  # two passes over the dataset, nothing stored per sample

    Options: ClassVar[type] = NetworkDissectionOptions

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        for spec, encoder in ctx.encoders():
            yield self._dissect(ctx, spec, encoder)

    def _dissect(self, ctx: RunContext, spec: str, encoder: Encoder) -> RunResult:
        start = time.perf_counter()
        options: NetworkDissectionOptions = ctx.options
        layer = resolve_layer(encoder, options.layer, DEFAULT_LAYERS)
        dataset, ids = ctx.samples(encoder.image_size)
        concepts = concept_labels(dataset, ctx.config.dataset)
        policy = ctx.policy(dataset)
        quantile = default_quantile(dataset) if options.quantile is None else options.quantile
        seen, peaks, thresholds, cache = self._thresholds(ctx, encoder, layer, dataset, ids, quantile, policy,
                                                          f"{spec} | {layer} | quantiles")
        if options.unit is not None and not 0 <= options.unit < len(thresholds):
            raise ValueError(f"network_dissection: unit {options.unit} out of range; layer {layer} has "
                             f"{len(thresholds)} units")
        counts = self._counts(ctx, encoder, layer, dataset, seen, thresholds, concepts, policy, cache,
                              f"{spec} | {layer} | IoU")
        iou = counts.iou()
        concept, best, detectors = best_concepts(iou, options.iou_threshold)
        summary = detector_summary(concept, detectors, concepts.label_category, concepts.categories)
        unit = _figure_unit(options, iou, concepts)
        label = concepts.label_names.index(options.concept) if options.concept else int(concept[unit])
        name, unit_iou = concepts.label_names[label], float(iou[unit, label])
        result = self._result(ctx, spec, encoder, layer, counts.images, best, summary, policy.counts, unit, name,
                              unit_iou, quantile)
        result.duration_s = round(time.perf_counter() - start, 3)
        top = torch.topk(peaks[:, unit], k=min(options.top_images, len(seen))).indices.tolist()
        title = f"{spec} · {layer} · unit {unit}: {name} (IoU {unit_iou:.3f})"
        result.attachments = {
            ".units.csv": lambda path: _write_units_csv(path, concepts, concept, best, detectors),
            ".top.png": lambda path: _write_top_images(path, encoder, layer, dataset, [seen[i] for i in top], unit,
                                                       float(thresholds[unit]), title),
        }
        return result

    @staticmethod
    def _thresholds(
        ctx: RunContext, encoder: Encoder, layer: LayerSpec, dataset: Dataset, ids: list[str], quantile: float,
        policy: BadSamples, desc: str,
    ) -> tuple[list[str], Tensor, Tensor, list[Tensor] | None]:
        """Pass 1: the ids read, each image's peak activation per unit (N x U), the unit thresholds (U,) and
        the activation maps themselves when they fit in ``ACTIVATION_CACHE_BYTES`` (else None)."""
        sketch: TopQuantile | None = None
        seen: list[str] = []
        peaks: list[Tensor] = []
        cache: list[Tensor] | None = []
        cached_bytes = 0
        for batch in ctx.batches(dataset, ids, policy, desc):
            acts = spatial_activations(encoder, batch.images, layer)  # B x U x h x w
            if sketch is None:
                per_unit = len(ids) * acts.shape[2] * acts.shape[3]
                sketch = TopQuantile(acts.shape[1], quantile, per_unit)
                log.info("%s: %d units, keeping the top %d of %d activations per unit for the %.3f quantile",
                         layer, acts.shape[1], sketch.capacity, per_unit, quantile)
            sketch.update(acts.transpose(0, 1))
            peaks.append(acts.flatten(2).max(dim=2).values.cpu())
            seen.extend(batch.ids)
            cached_bytes += acts.numel() * acts.element_size()
            if cache is not None and cached_bytes <= ACTIVATION_CACHE_BYTES:
                cache.append(acts.cpu())
            else:
                cache = None  # too large to keep: pass 2 runs the encoder again
        if sketch is None:
            raise DataError(f"no image of {ctx.config.dataset!r} could be read (skipped: {dict(policy.counts)})")
        return seen, torch.cat(peaks), sketch.result().float(), cache

    @staticmethod
    def _counts(
        ctx: RunContext, encoder: Encoder, layer: LayerSpec, dataset: Dataset, ids: list[str], thresholds: Tensor,
        concepts: ConceptLabels, policy: BadSamples, cache: list[Tensor] | None, desc: str,
    ) -> IoUAccumulator:
        """Pass 2: intersection and union counts of every unit and concept."""
        counts = IoUAccumulator(concepts.label_category, len(thresholds))
        thresholds = thresholds.to(encoder.device)
        size = tuple(encoder.image_size)
        for sample_id, maps in _activation_stream(ctx, encoder, layer, dataset, ids, cache, policy, desc):
            try:
                labels = concepts.labels(sample_id, size)
            except DataError as exc:
                policy.handle(sample_id, str(exc))
                continue
            if not labels:
                counts.images += 1
                continue
            label_size = tuple(next(iter(labels.values())).shape[-2:])
            maps = maps.to(encoder.device)
            counts.update(unit_masks(maps, thresholds, label_size), {k: v.to(maps.device) for k, v in labels.items()})
        return counts

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return (DETECTORS, UNIQUE_CONCEPTS, MEAN_IOU)

    def _result(
        self, ctx: RunContext, spec: str, encoder: Encoder, layer: LayerSpec, n_images: int,
        best: Tensor, summary: dict[str, dict[str, int]], skipped: Counter[str], unit: int, unit_concept: str,
        unit_iou: float, quantile: float,
    ) -> RunResult:
        units = int(best.numel())
        stat = RunningStat()
        stat.update(best)
        metrics: dict[str, dict[str, Any]] = {
            DETECTORS.name: DETECTORS.count_summary(summary["all"]["detectors"], units),
            UNIQUE_CONCEPTS.name: UNIQUE_CONCEPTS.count_summary(summary["all"]["unique_concepts"], units),
            MEAN_IOU.name: MEAN_IOU.summary(stat),
        }
        for category, values in summary.items():
            if category != "all":
                for metric, value in ((DETECTORS.renamed(f"detectors_{category}"), values["detectors"]),
                                      (UNIQUE_CONCEPTS.renamed(f"unique_{category}"), values["unique_concepts"])):
                    metrics[metric.name] = metric.count_summary(value, units)
        key = ctx.run_key(spec, encoder, str(layer), limit=ctx.config.limit)
        options: NetworkDissectionOptions = ctx.options
        return ctx.result(
            encoder=spec, attribution=str(layer), key=key, metrics=metrics, n=n_images, skipped=skipped,
            extra={"layer": str(layer), "units": units, "quantile": quantile,
                   "iou_threshold": options.iou_threshold, "summary": summary,
                   "figure_unit": {"unit": unit, "concept": unit_concept, "iou": unit_iou},
                   "side_files": {"units": ".units.csv", "top_images": ".top.png"}},
        )


def _figure_unit(options: NetworkDissectionOptions, iou: Tensor, concepts: ConceptLabels) -> int:
    """The unit drawn in the figure: the option ``unit``, the best unit of ``concept``, or the best unit."""
    if options.unit is not None:
        return options.unit
    if options.concept is None:
        return int(iou.max(dim=1).values.argmax())
    if options.concept not in concepts.label_names[1:]:
        close = [n for n in concepts.label_names[1:] if options.concept.lower() in n.lower()][:10]
        raise ValueError(f"network_dissection: unknown concept {options.concept!r}"
                         + (f"; did you mean one of {close}?" if close else ""))
    return int(iou[:, concepts.label_names.index(options.concept)].argmax())


def _activation_stream(
    ctx: RunContext, encoder: Encoder, layer: LayerSpec, dataset: Dataset, ids: list[str],
    cache: list[Tensor] | None, policy: BadSamples, desc: str,
) -> Iterator[tuple[str, Tensor]]:
    """(id, U x h x w maps) of every image: from pass 1's cache, or by running the encoder again."""
    if cache is not None:
        yield from zip(ids, (maps for acts in cache for maps in acts), strict=True)
        return
    for batch in ctx.batches(dataset, ids, BadSamples(policy.on_error), desc):  # pass 1 counted the skips
        yield from zip(batch.ids, spatial_activations(encoder, batch.images, layer), strict=True)


def _write_units_csv(path: Path, concepts: ConceptLabels, concept: Tensor, best: Tensor, detectors: Tensor) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["unit", "concept", "category", "iou", "detector"])
    for unit, (label, iou, hit) in enumerate(zip(concept.tolist(), best.tolist(), detectors.tolist(), strict=True)):
        category = concepts.categories[concepts.label_category[label]] if label else "-"
        writer.writerow([unit, concepts.label_names[label], category, f"{iou:.6f}", int(hit)])
    atomic_write_text(path, buffer.getvalue())


def _write_top_images(path: Path, encoder: Encoder, layer: LayerSpec, dataset: Dataset, ids: list[str], unit: int,
                      threshold: float, title: str) -> None:
    """The unit's most activating images with the region above its threshold highlighted (paper Fig. 6)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    images = float_pixels(torch.stack([dataset.load(i).image for i in ids]))
    maps = spatial_activations(encoder, images, layer)[:, unit:unit + 1]
    up = F.interpolate(maps, size=images.shape[-2:], mode="bilinear", align_corners=False)[:, 0].cpu()
    cols = min(4, len(ids))
    rows = math.ceil(len(ids) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(2.2 * cols, 2.2 * rows + 0.4), squeeze=False)
    for ax in axes.flat:
        ax.axis("off")
    for ax, image, act in zip(axes.flat, images, up, strict=False):
        mask = (act > threshold).numpy()  # the unit's region, strict as in unit_masks
        shown = image.permute(1, 2, 0).numpy() * np.where(mask, 1.0, 0.35)[..., None]
        ax.imshow(np.clip(shown, 0, 1))
        if mask.any():
            ax.contour(mask.astype(float), levels=[0.5], colors="#ffdd00", linewidths=1.2)
    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    plt.close(fig)
