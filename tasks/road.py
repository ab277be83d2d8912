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
        :mod:`aft_bench.probe`). prompt_template: the zero-shot class prompt (default: the dataset's,
        else ``"a photo of a {}."``). random_baseline: add the ``random`` row (default true).

Noise is a pure function of (run seed + noise seed, sample id, fraction), so a sample gets the same
imputation in any batch; results are stored per sample, so an interrupted run resumes.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.classifiers import CLASSIFIERS
from aft_bench.config import RunConfig
from aft_bench.data.base import Batch, Dataset
from aft_bench.encoder import Encoder
from aft_bench.evaluation import MapTask, Record
from aft_bench.metrics.removal import curve_auc, fraction_label, noisy_linear_imputation, pixel_ranks, removal_masks
from aft_bench.metrics.summary import RunningStat
from aft_bench.registries import TARGETS
from aft_bench.results import RunResult, SampleStore
from aft_bench.tasks.options import positive_int
from aft_bench.tasks.roar import (
    DEFAULT_FRACTIONS,
    HIGHER_IS_BETTER,
    attribution_methods,
    check_order,
    parse_fractions,
)
from aft_bench.tasks.roar_data import id_key
from aft_bench.tasks.roar_plot import figure_path, plot_curves

DEFAULT_CLASSIFIER: dict[str, str] = {"text": "zero_shot", "probe": "probe"}
"""The classifier a target explains, used when option ``classifier`` is not given."""




@dataclass(frozen=True)
class RoadOptions:
    """ROAD's options, validated (see the module docstring)."""

    fractions: tuple[float, ...]
    order: str
    noise: float
    seeds: int
    target: str
    classifier: str
    random_baseline: bool

    @classmethod
    def from_config(cls, config: RunConfig) -> RoadOptions:
        o = config.options
        target = str(o.get("target", "text"))
        TARGETS.get(target)
        classifier = o.get("classifier") or DEFAULT_CLASSIFIER.get(target)
        if classifier not in CLASSIFIERS:
            raise ValueError(f"option classifier={classifier!r} (target {target!r}): choose one of "
                             f"{sorted(CLASSIFIERS)} with --option classifier=...")
        noise = float(o.get("noise", 0.01))
        if not (math.isfinite(noise) and noise >= 0):
            raise ValueError(f"option noise={noise!r}: give a standard deviation >= 0 in pixel units")
        return cls(fractions=parse_fractions(o.get("fractions", DEFAULT_FRACTIONS), allow_one=False),
                   order=check_order(o.get("order", "morf")), noise=noise, seeds=positive_int(o, "seeds", 1) or 1,
                   target=target, classifier=str(classifier), random_baseline=bool(o.get("random_baseline", True)))


class Road(MapTask):
    """Remove and debias (Rong et al. 2022) for every encoder x attribution, plus the random baseline."""

    metrics: ClassVar[dict[str, bool]] = {}
    scale: ClassVar[float] = 100.0

    def run(self, config: RunConfig) -> list[Path]:
        self.opts = RoadOptions.from_config(config)
        better = HIGHER_IS_BETTER[self.opts.order]
        self.metrics = {**{f"acc@{fraction_label(f)}": better for f in self.opts.fractions}, "auc": better}
        return super().run(config)

    def methods(self, config: RunConfig, encoder: Encoder, refused: list[str]) -> Iterator[tuple[str, Attribution]]:
        """The run's attributions, then the random-removal baseline."""
        return attribution_methods(config, encoder, refused, self.opts.random_baseline)

    def begin_encoder(self, spec: str, encoder: Encoder, dataset: Dataset, config: RunConfig) -> None:
        self.classifier = CLASSIFIERS[self.opts.classifier](encoder, dataset, config)
        self.figure = figure_path(Path(config.out) / self.spec.name, spec, config.dataset)

    def end_encoder(self, spec: str, paths: list[Path], config: RunConfig) -> None:
        results = [RunResult.from_dict(json.loads(p.read_text(encoding="utf-8"))) for p in paths]
        plot_curves(results, self.figure, title=f"ROAD · {spec} · {config.dataset} · {self.opts.classifier}")

    def target(self, encoder: Encoder, batch: Batch, config: RunConfig) -> Any:
        """The option ``target`` of each image (the clean images go along for a probe's top-1 class)."""
        return TARGETS.get(self.opts.target)(encoder, batch.prompts, batch.labels, config=config,
                                             images=batch.images.to(encoder.device))

    def score(self, maps: Tensor, batch: Batch, config: RunConfig) -> list[Record]:
        records: list[Record] = []
        finite = torch.isfinite(maps).flatten(1).all(dim=1).cpu()
        for i in range(len(batch)):
            if not bool(finite[i]):
                records.append({"error": f"non-finite map: {int((~torch.isfinite(maps[i])).sum())} NaN/Inf values"})
            elif int(batch.labels[i]) < 0:
                records.append({"error": "no class label: ROAD classifies the images and needs labels"})
            else:
                records.append({"scores": {}})
        keep = [i for i, r in enumerate(records) if "scores" in r]
        if not keep:
            return records
        index = torch.tensor(keep)
        images, labels = batch.images[index].float(), batch.labels[index]
        ranks = pixel_ranks(maps[index.to(maps.device)]).cpu()
        ids = [batch.ids[i] for i in keep]
        clean = (self.classifier.predict(images) == labels).double()
        curves = np.zeros((len(keep), len(self.opts.fractions)))
        for j, fraction in enumerate(self.opts.fractions):
            masks = removal_masks(ranks, fraction, self.opts.order)
            for draw in range(self.opts.seeds):
                rngs = [np.random.default_rng(np.random.SeedSequence(
                    [config.seed + draw, id_key(sample_id), round(fraction * 1e6)])) for sample_id in ids]
                imputed = noisy_linear_imputation(images, masks, self.opts.noise, rngs)
                curves[:, j] += (self.classifier.predict(imputed) == labels).double().numpy() / self.opts.seeds
        auc = curve_auc(self.opts.fractions, curves)
        for row, i in enumerate(keep):
            scores = {f"acc@{fraction_label(f)}": float(curves[row, j]) for j, f in enumerate(self.opts.fractions)}
            records[i] = {"scores": {**scores, "auc": float(auc[row])}, "clean": float(clean[row])}
        return records

    def _summarise(self, config: RunConfig, spec: str, name: str, key: str, store: SampleStore,
                   ids: list[str], dataset: Dataset) -> RunResult:
        result = super()._summarise(config, spec, name, key, store, ids, dataset)
        clean = RunningStat()
        clean.update([r["clean"] for r in (store.get(i) for i in ids) if r is not None and "clean" in r])
        summary = {k: (v if not isinstance(v, float) or math.isfinite(v) else None)
                   for k, v in clean.summary().items()}
        if summary["mean"] is not None:
            summary["mean"] *= 100.0
            summary["ci95"] = None if summary["ci95"] is None else summary["ci95"] * 100.0
        result.extra.update(fractions=list(self.opts.fractions), order=self.opts.order, noise=self.opts.noise,
                            seeds=self.opts.seeds, target=self.opts.target, classifier=self.opts.classifier,
                            clean_accuracy=summary, figure=self.figure.name)
        return result
