"""TeCoA (Mao et al. 2023): adversarial fine-tuning of the image tower on the zero-shot classifier's cross-entropy."""

from __future__ import annotations

from dataclasses import dataclass
from types import SimpleNamespace
from typing import Any

import torch.nn.functional as F
from torch import Tensor

from aft_bench.core.registries import OBJECTIVES
from aft_bench.data.base import DataError
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.evaluation.classifiers import TEMPLATE_SETS, PromptOptions, ZeroShotClassifier
from aft_bench.training.config import PIXEL, TrainConfig
from aft_bench.training.objectives.base import AdversarialObjective, TrainBatch, pgd_config
from aft_bench.training.pgd import PGDConfig
from aft_bench.training.regularizers import BoxQuadratic
from aft_bench.training.tower import Reference


@dataclass
class ClassTargets:
    """The frozen zero-shot head of a batch.

    Attributes:
        text: K x D unit-norm class embeddings of the original text tower (CLIP's prompt ensemble).
        scale: The logit scale (CLIP's learnt temperature; 100 for OpenAI's models).
        labels: (B,) class indices of the batch's images.
    """

    text: Tensor
    scale: float
    labels: Tensor

    def logits(self, embedding: Tensor) -> Tensor:
        """B x K logits ``scale * cos(embedding, text)`` of unit-norm embeddings."""
        return self.scale * embedding @ self.text.T


@OBJECTIVES.register("tecoa",
                     help="TeCoA (Mao et al. 2023): zero-shot cross-entropy under L_inf PGD; needs class labels")
class TeCoAObjective(AdversarialObjective):
    """min_theta E_(x,y) max_{||delta||_inf <= eps} CE(s cos(f_theta(x + delta), T), y) (Mao et al. 2023).

    "Understanding zero-shot adversarial robustness for large-scale models" (ICLR 2023): text-guided
    contrastive adversarial training. T are the frozen original text tower's embeddings of the training
    classes' prompts (default "a photo of a {}."; ``templates`` picks a prompt ensemble of the zero-shot
    head), s is CLIP's logit scale and CE the cross-entropy with the image's class y. PGD maximises the
    same cross-entropy inside the L_inf ball (the trainer's eps, steps and step size); the outer loss is
    the cross-entropy at the adversarial point. No penalty, no smoothing noise. Needs class-labelled data
    (``shapes[:N]`` or a class-folder tree ``root/<class>/*.jpg``).

    Args:
        pgd: Inner-loop settings.
        eps: L_inf radius in pixel units.
        templates: A name in :data:`aft_bench.evaluation.classifiers.TEMPLATE_SETS`, or ``None`` for "a photo of a {}.".
    """

    def __init__(self, pgd: PGDConfig, eps: float, templates: str | None = None) -> None:
        if templates is not None and templates not in TEMPLATE_SETS:
            raise ValueError(f"--templates {templates!r}: use one of {', '.join(sorted(TEMPLATE_SETS))} "
                             f"(or leave it unset for {DEFAULT_TEMPLATE!r})")
        super().__init__(BoxQuadratic(eps, 0.0), pgd, sigma=0.0, outer_noise=False)
        self.templates = templates
        self._heads: dict[tuple[str, ...], ZeroShotClassifier] = {}

    @classmethod
    def from_config(cls, config: TrainConfig) -> TeCoAObjective:
        return cls(pgd_config(config), config.eps * PIXEL, config.templates)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "templates": self.templates or DEFAULT_TEMPLATE}

    def head(self, reference: Reference, classnames: tuple[str, ...]) -> ZeroShotClassifier:
        """The original encoder's zero-shot head over ``classnames`` (built once per class list)."""
        if classnames not in self._heads:
            classes = SimpleNamespace(classnames=list(classnames), prompt_template=DEFAULT_TEMPLATE)
            self._heads[classnames] = ZeroShotClassifier(reference.encoder, classes,
                                                         PromptOptions(templates=self.templates))
        return self._heads[classnames]

    def targets(self, reference: Reference, batch: TrainBatch) -> ClassTargets:
        if batch.labels is None or batch.classnames is None:
            raise DataError(f"{type(self).__name__} needs a class label per image; train on shapes[:N] or on a "
                            "class-folder tree (--data /path/to/imagenet/train, images in root/<class>/)")
        head = self.head(reference, batch.classnames)
        text = head.text.to(batch.images.device)
        return ClassTargets(text=text, scale=head.scale, labels=batch.labels.to(batch.images.device))

    def discrepancy(self, embedding: Tensor, targets: ClassTargets) -> Tensor:
        return F.cross_entropy(targets.logits(embedding), targets.labels, reduction="none")
