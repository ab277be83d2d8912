"""Reliance on the planted shortcut: does an encoder follow a faint class pattern instead of the object?

The shapes world's ``shortcut=A`` option plants a non-robust feature (Ilyas et al. 2019): a class-specific
pattern of amplitude A/255 over the whole image (:mod:`aft_bench.data.shortcut`), in the train and test splits.
The AFT paper's mechanism (sections 1 and 3) is that CLIP relies on features humans cannot see, which spreads its
input gradients over the image, and that adversarial fine-tuning removes the reliance. This task measures the
reliance with CLIP's zero-shot head on each test image three times (:mod:`aft_bench.metrics.reliance`): as drawn
(``acc``), with its pattern swapped for another class's (``follow``: the share of predictions that go with the
pattern, and ``acc_swapped``), and with the pattern removed (``acc_removed``). Everything but the pattern is the
same pixel for pixel in the three images. The swapped class is drawn per image from its id and the run's seed,
uniformly among the other classes, so reruns and resumed runs swap the same way.

Needs the shapes dataset with ``--dataset-arg shortcut=A`` (A > 0); any encoder with a text tower. Options: the
zero-shot head's ``templates`` / ``prompt_template`` (as in the zero-shot task).
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import nested
from aft_bench.data.base import Batch, Dataset
from aft_bench.data.shortcut import SHORTCUT_AMPLITUDE
from aft_bench.evaluation.classifiers import PromptOptions, ZeroShotClassifier
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.encoder_task import EncoderSetup, EncoderTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.reliance import RELIANCE_METRICS, reliance_scores
from aft_bench.models.encoder import Encoder

CLASSIFIER = "zero_shot"
"""The leaderboard's attribution column: the predictions come from CLIP's zero-shot head."""


@dataclass(frozen=True)
class ShortcutRelianceOptions:
    """The task's options (see the module docstring)."""

    prompts: PromptOptions = nested(PromptOptions, "", help="the zero-shot head's prompts")


def swapped_label(sample_id: str, label: int, num_classes: int, seed: int) -> int:
    """The class whose pattern replaces ``label``'s on ``sample_id``: uniform over the other classes, a pure
    function of (seed, id)."""
    offset = random.Random(f"{seed}:{sample_id}").randrange(1, num_classes)
    return (label + offset) % num_classes


def _check_dataset(dataset: Dataset, name: str) -> float:
    amplitude = getattr(dataset, "shortcut", None)
    if not callable(getattr(dataset, "load_variant", None)):
        raise ValueError(f"task shortcut_reliance needs the shapes world with a planted pattern; dataset {name!r} has "
                         f"none. Run it with --dataset shapes --dataset-arg shortcut={SHORTCUT_AMPLITUDE:g}")
    if not amplitude:
        raise ValueError("task shortcut_reliance: the shapes world has no planted pattern (shortcut=0); add "
                         "--dataset-arg shortcut=A with A > 0 (the toy-shortcut encoders were trained with "
                         f"{SHORTCUT_AMPLITUDE:g})")
    return float(amplitude)


class ShortcutReliance(EncoderTask):
    """Pattern-following rate and accuracies with the planted pattern as drawn, swapped and removed."""

    Options: ClassVar[type] = ShortcutRelianceOptions
    reported: ClassVar[tuple[Reported, ...]] = RELIANCE_METRICS

    scores: ClassVar[str] = "an encoder's zero-shot predictions"

    def label(self, ctx: RunContext) -> str:
        return CLASSIFIER

    def setup(self, ctx: RunContext, spec: str, encoder: Encoder, dataset: Dataset, ids: list[str],
              shared: Any) -> EncoderSetup:
        """The encoder's zero-shot head; the planted amplitude is part of the run key."""
        amplitude = _check_dataset(dataset, ctx.config.dataset)
        return EncoderSetup(ZeroShotClassifier(encoder, dataset, ctx.options.prompts), key={"shortcut": amplitude})

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        classifier: ZeroShotClassifier = pair.state
        return reliance_records(classifier.predict, pair.dataset, batch, ctx.config.seed)


def reliance_records(predict: Callable[[Tensor], Tensor], dataset: Dataset, batch: Batch, seed: int) -> list[Record]:
    """The task's records of ``batch``: ``predict`` (images -> (B,) classes) on the images as drawn, with the
    pattern swapped (:func:`swapped_label`) and with it removed, scored by :func:`reliance_scores`. A sample
    without a class label gets an error record; the labelled samples of its batch are scored."""
    labels = batch.labels.tolist()
    records: list[Record] = [{"error": "no class label (the reliance measure needs the object's class)"}
                             for _ in labels]
    scored = [k for k, label in enumerate(labels) if label >= 0]
    if not scored:
        return records
    ids = [batch.ids[k] for k in scored]
    labelled = torch.tensor([labels[k] for k in scored])
    patterns = [swapped_label(i, int(label), len(dataset.classnames), seed) for i, label in zip(ids, labelled,
                                                                                                 strict=True)]
    swapped = torch.stack([dataset.load_variant(i, p).image for i, p in zip(ids, patterns, strict=True)])
    removed = torch.stack([dataset.load_variant(i, shortcut=0.0).image for i in ids])
    drawn = batch.images[torch.tensor(scored, device=batch.images.device)]
    predictions = [predict(images).cpu() for images in (drawn, swapped, removed)]
    scores = reliance_scores(*predictions, labelled, torch.tensor(patterns))
    for j, k in enumerate(scored):
        records[k] = {"scores": {name: float(values[j]) for name, values in scores.items()}, "pattern": patterns[j]}
    return records
