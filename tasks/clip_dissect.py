"""CLIP-Dissect (Oikarinen & Weng 2022): which concept each neuron of an encoder layer stands for.

The AFT paper (section 4.2, Fig. 5) dissects the CLS-token neurons of the last block of CLIP image
encoders and compares the histograms of their alignment scores with and without adversarial
fine-tuning. Here: the probe images are the run's dataset, the concepts a text file (one per line;
default the shapes world's vocabulary on shapes, the dataset's own label names where it has them,
Broden's for example), the probe CLIP any encoder spec (default: the encoder the one under test was
fine-tuned from, as its card's ``base_encoder`` names it, else the encoder itself). Each neuron's
concept is the argmax of soft-WPMI (:func:`aft_bench.metrics.dissection.soft_wpmi`); a neuron is a
concept detector when that score exceeds ``threshold``. The score is ``log P(c | E_n)`` minus the log of
its mean over all U neurons, so it is at most ``log U`` (one neuron holds all of the concept's mass), and
the default threshold 0 counts the neurons whose concept is likelier among their top images than among
the average neuron's.

Outputs per encoder: a result file (metrics ``detectors``, ``unique_concepts``, ``mean_score``) and,
with the same stem beside it, ``.neurons.csv`` (unit, concept, score) and ``.hist.png`` (the score
histogram, Fig. 5). Memory: the images x neurons activation matrix and the probe's image embeddings;
probabilities are formed only for each neuron's top images.
"""

from __future__ import annotations

import csv
import io
import logging
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.shapes import VOCABULARY, ShapesDataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.streaming import BadSamples
from aft_bench.evaluation.task import Reported, Task
from aft_bench.metrics.base import Metric
from aft_bench.metrics.dissection import DETECTORS, UNIQUE_CONCEPTS, assign_concepts, embedding_rows, soft_wpmi
from aft_bench.metrics.summary import RunningStat
from aft_bench.models.activations import LayerSpec, forward_with_layer, neuron_readout, resolve_layer
from aft_bench.models.encoder import Encoder
from aft_bench.results.result import RunResult

log = logging.getLogger(__name__)

#: default layer per encoder kind: the CLS token of the last block, as the paper dissects
DEFAULT_LAYERS: dict[str, str] = {"vit": "block:-1", "cnn": "stage:4"}
#: default concepts of datasets that do not name their own (``dataset.concepts()``)
DEFAULT_CONCEPTS: dict[type, list[str]] = {ShapesDataset: VOCABULARY}
#: card keys naming the encoder a checkpoint was fine-tuned from, in order of preference
ORIGIN_KEYS = ("base_encoder", "origin")
TEXT_CHUNK = 256
MEAN_SCORE = Metric(name="mean_score", higher_is_better=True, scale=1.0,
                    description="mean best soft-WPMI score over the neurons")


@dataclass(frozen=True)
class ClipDissectOptions:
    """Task options (``--option key=value``).

    Attributes:
        layer: ``block:I`` / ``stage:I``; None = ``block:-1`` for ViTs, ``stage:4`` for CNNs.
        probe_encoder: Encoder spec of the probe CLIP; None = the tested encoder's origin (see module doc).
        concepts: Text file with one concept per line; None = the dataset's default concepts.
        template: Text prompt of a concept (``{}`` is replaced by the concept).
        top_k: Most activating images per neuron. scale: softmax factor on the cosine (10).
        p_start, p_end: Weights of the top images. threshold: Score above which a neuron is a detector.
    """

    layer: str | None = None
    probe_encoder: str | None = None
    concepts: str | None = None
    template: str = "{}"
    top_k: int = 100
    scale: float = 10.0
    p_start: float = 0.998
    p_end: float = 0.97
    threshold: float = 0.0

    def __post_init__(self) -> None:
        if self.top_k < 1:
            raise ValueError(f"option top_k={self.top_k}: give a number of images >= 1")
        if "{}" not in self.template:
            raise ValueError(f"option template={self.template!r} must contain '{{}}' for the concept")


def read_concepts(path: str | Path) -> list[str]:
    """Concepts from a text file: one per line, stripped; blank lines and repeats dropped (first kept).

    Raises:
        FileNotFoundError: If the file does not exist. DataError: If it holds no concept.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"concept file {path} does not exist; give a text file with one concept per line")
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except UnicodeDecodeError as exc:
        raise DataError(f"concept file {path} is not UTF-8 text ({exc}); save it as UTF-8") from exc
    concepts = list(dict.fromkeys(line.strip() for line in lines if line.strip()))
    if not concepts:
        raise DataError(f"concept file {path} holds no concept; write one concept per line")
    return concepts


def default_concepts(dataset: Dataset, name: str) -> list[str]:
    """The dataset's own concepts (``dataset.concepts()``) or this module's default for its type."""
    own = getattr(dataset, "concepts", None)
    if callable(own):
        return list(dict.fromkeys(own()))
    for kind, concepts in DEFAULT_CONCEPTS.items():
        if isinstance(dataset, kind):
            return list(concepts)
    raise DataError(f"dataset {name!r} names no concepts: pass a concept file with --option concepts=FILE")


def probe_spec(encoder: Encoder, spec: str, option: str | None) -> str:
    """The probe CLIP: the option, else the card's origin (``base_encoder``), else the encoder itself."""
    if option:
        return option
    return next((str(encoder.card[k]) for k in ORIGIN_KEYS if encoder.card.get(k)), spec)


def concept_embeddings(probe: Encoder, concepts: list[str], template: str) -> Tensor:
    """C x D unit-norm text embeddings of the concepts, in chunks."""
    prompts = [template.format(c) for c in concepts]
    return torch.cat([probe.encode_text(prompts[i:i + TEXT_CHUNK]) for i in range(0, len(prompts), TEXT_CHUNK)])


class ClipDissect(Task):
    """Runs CLIP-Dissect for every encoder of the run (attributions are not used)."""

    resumable: ClassVar[bool] = False  # two passes over the dataset, nothing stored per sample

    Options: ClassVar[type] = ClipDissectOptions

    def metrics(self, options: Any) -> tuple[Reported, ...]:
        return (DETECTORS, UNIQUE_CONCEPTS, MEAN_SCORE)

    def run(self, ctx: RunContext) -> Iterator[RunResult]:
        probes: dict[str, tuple[list[str], Tensor]] = {}
        for spec, encoder in ctx.encoders():
            yield self._dissect(ctx, spec, encoder, probes)

    def _dissect(self, ctx: RunContext, spec: str, encoder: Encoder,
                 probes: dict[str, tuple[list[str], Tensor]]) -> RunResult:
        start = time.perf_counter()
        options: ClipDissectOptions = ctx.options
        layer = resolve_layer(encoder, options.layer, DEFAULT_LAYERS)
        dataset, ids = ctx.samples(encoder.image_size)
        concepts = read_concepts(options.concepts) if options.concepts else \
            default_concepts(dataset, ctx.config.dataset)
        probe_name = probe_spec(encoder, spec, options.probe_encoder)
        policy = ctx.policy(dataset)
        own_ids, acts, embeds = self._activations(ctx, encoder, layer, dataset, ids, policy, f"{spec} | {layer}")
        if probe_name == spec:
            probes.setdefault(probe_name, (own_ids, embeds))
            probe = encoder
        else:
            probe = ctx.load_encoder(probe_name)
            if probe_name not in probes:
                probe_data = ctx.dataset(probe.image_size)
                probe_ids, _, probe_embeds = self._activations(ctx, probe, None, probe_data, ids,
                                                               ctx.policy(), f"probe {probe_name}")
                probes[probe_name] = (probe_ids, probe_embeds)
        probe_ids, probe_embeds = probes[probe_name]
        own_ids, acts, probe_embeds = _align(own_ids, acts, probe_ids, probe_embeds)
        if not own_ids:
            raise DataError(f"no probe image of {ctx.config.dataset!r} could be read "
                            f"(skipped: {dict(policy.counts)})")
        texts = concept_embeddings(probe, concepts, options.template)
        scores = soft_wpmi(
            acts.to(ctx.device), embedding_rows(probe_embeds.to(ctx.device), texts, options.scale),
            top_k=options.top_k, p_start=options.p_start, p_end=options.p_end,
        ).cpu()
        concept_index, best = assign_concepts(scores)
        detectors = best > options.threshold
        result = self._result(ctx, spec, encoder, layer, probe_name, concepts, len(own_ids),
                              best, concept_index, detectors, policy.counts)
        result.duration_s = round(time.perf_counter() - start, 3)
        result.attachments = {
            ".neurons.csv": lambda path: _write_neurons_csv(path, concepts, concept_index, best),
            ".hist.png": lambda path: _write_histogram(path, best, options.threshold, f"{spec} · {layer}"),
        }
        return result

    @staticmethod
    def _activations(
        ctx: RunContext, encoder: Encoder, layer: LayerSpec | None, dataset: Dataset, ids: list[str],
        policy: BadSamples, desc: str,
    ) -> tuple[list[str], Tensor | None, Tensor]:
        """Loaded ids, their neuron activations (N x U, None without a layer) and image embeddings (N x D)."""
        seen: list[str] = []
        acts: list[Tensor] = []
        embeds: list[Tensor] = []
        for batch in ctx.batches(dataset, ids, policy, desc):
            pixels = batch.images.to(encoder.device)
            if layer is None:
                with torch.no_grad():
                    embeds.append(encoder(pixels).cpu())
            else:
                embeddings, output = forward_with_layer(encoder, pixels, layer)
                embeds.append(embeddings.cpu())
                acts.append(neuron_readout(encoder, output).cpu())
            seen.extend(batch.ids)
        if not seen:
            return [], None, torch.empty(0)
        return seen, (torch.cat(acts) if acts else None), torch.cat(embeds)

    def _result(
        self, ctx: RunContext, spec: str, encoder: Encoder, layer: LayerSpec, probe_name: str, concepts: list[str],
        n_images: int, best: Tensor, concept_index: Tensor, detectors: Tensor, skipped: Counter[str],
    ) -> RunResult:
        options: ClipDissectOptions = ctx.options
        stat = RunningStat()
        stat.update(best)
        units = int(best.numel())
        chosen = concept_index[detectors]
        metrics = {
            DETECTORS.name: DETECTORS.count_summary(int(detectors.sum()), units),
            UNIQUE_CONCEPTS.name: UNIQUE_CONCEPTS.count_summary(int(torch.unique(chosen).numel()), units),
            MEAN_SCORE.name: MEAN_SCORE.summary(stat),
        }
        key = ctx.run_key(spec, encoder, str(layer), probe=probe_name, limit=ctx.config.limit)
        top = Counter(concepts[i] for i in chosen.tolist()).most_common(10)
        return ctx.result(
            encoder=spec, attribution=str(layer), key=key, metrics=metrics, n=n_images, skipped=skipped,
            extra={"layer": str(layer), "units": units, "probe_encoder": probe_name, "concepts": len(concepts),
                   "concepts_file": options.concepts, "threshold": options.threshold,
                   "top_k": min(options.top_k, n_images), "top_concepts": dict(top),
                   "side_files": {"neurons": ".neurons.csv", "histogram": ".hist.png"},
                   "encoder_card": {k: encoder.card.get(k) for k in ("name", "arch", "pretrained", *ORIGIN_KEYS)
                                    if encoder.card.get(k) is not None}},
        )


def _align(ids: list[str], acts: Tensor | None, probe_ids: list[str], probe_embeds: Tensor
           ) -> tuple[list[str], Tensor, Tensor]:
    """Keeps the images both passes read, in the first pass's order."""
    if acts is None:
        return [], torch.empty(0), torch.empty(0)
    if ids == probe_ids:
        return ids, acts, probe_embeds
    row = {sample_id: i for i, sample_id in enumerate(probe_ids)}
    keep = [i for i, sample_id in enumerate(ids) if sample_id in row]
    return ([ids[i] for i in keep], acts[keep], probe_embeds[[row[ids[i]] for i in keep]])


def _write_neurons_csv(path: Path, concepts: list[str], concept_index: Tensor, best: Tensor) -> None:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["unit", "concept", "score"])
    for unit, (index, score) in enumerate(zip(concept_index.tolist(), best.tolist(), strict=True)):
        writer.writerow([unit, concepts[index], f"{score:.6g}"])
    atomic_write_text(path, buffer.getvalue())


def _write_histogram(path: Path, scores: Tensor, threshold: float, title: str) -> None:
    """The histogram of the neurons' best scores (paper Fig. 5), as PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 3.2))
    ax.hist(scores.numpy(), bins=min(50, max(10, scores.numel() // 4)), color="#4477aa")
    ax.axvline(threshold, color="#cc3311", linestyle="--", label=f"threshold {threshold:g}")
    ax.set_xlabel("soft-WPMI score of the neuron's concept")
    ax.set_ylabel("neurons")
    ax.set_title(title, fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=120))
    plt.close(fig)
