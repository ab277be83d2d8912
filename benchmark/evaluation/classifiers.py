"""Classifier heads over a CLIP image encoder: zero-shot (class prompts) and the run's linear probe.

Tasks that classify images (ROAD, zero-shot accuracy and robustness) pick one by name from the
``CLASSIFIERS`` registry; every entry is built as ``factory(encoder, dataset, prompts, probe)`` with the run's
:class:`PromptOptions` and probe setup (:class:`aft_bench.evaluation.probe.options.ProbeSetup`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from torch import Tensor

from aft_bench.core.options import option
from aft_bench.core.registries import CLASSIFIERS
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.clip_benchmark import clip_benchmark_templates, is_clip_benchmark
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.evaluation.probe.options import ProbeSetup
from aft_bench.evaluation.probe.store import get_probe
from aft_bench.models.encoder import Encoder

TEMPLATE_SETS: dict[str, tuple[Callable[[str], str], ...]] = {
    "openai_imagenet": tuple(OPENAI_IMAGENET_TEMPLATES),  # CLIP's 80 ImageNet prompts (Radford et al. 2021)
    "simple_imagenet": tuple(SIMPLE_IMAGENET_TEMPLATES),  # the 7 of them CLIP's notebook singles out
    "this_is_a_photo": ("This is a photo of a {}".format,),  # RobustVLM's TeCoA training prompt ('std')
}
"""Named prompt ensembles: open_clip's copies of CLIP's published ImageNet templates, and the one prompt with which
the FARE authors' code (RobustVLM, Schlarmann et al. 2024) trains its TeCoA checkpoints."""


def _templates(value: Any, key: str) -> str | tuple[str, ...] | None:
    if value is None or isinstance(value, str):
        if isinstance(value, str) and not is_clip_benchmark(value) and value not in TEMPLATE_SETS:
            raise ValueError(f"option {key}={value!r}: name one of {sorted(TEMPLATE_SETS)}, clip_benchmark:<dataset>, "
                             "or give a list of prompts with {} for the class name")
        return value
    if not isinstance(value, Sequence) or not value:
        raise ValueError(f"option {key}={value!r}: give a list of prompts with {{}} for the class name")
    return tuple(_one_slot(str(t), key) for t in value)


def _one_slot(text: str | None, key: str) -> str | None:
    if text is not None and text.count("{}") != 1:
        raise ValueError(f"option {key}={text!r}: every prompt needs exactly one '{{}}' for the class name")
    return text


@dataclass(frozen=True)
class PromptOptions:
    """The zero-shot head's prompts: ``templates`` (a name in :data:`TEMPLATE_SETS`, ``clip_benchmark:<dataset>``
    for CLIP Benchmark's, or a list of texts with one ``{}``), else the single ``prompt_template``, else the
    dataset's, else "a photo of a {}."."""

    templates: str | tuple[str, ...] | None = option(None, parse=_templates, help="a prompt ensemble")
    prompt_template: str | None = option(None, parse=_one_slot, help="one class prompt with {}")


def prompt_templates(prompts: PromptOptions, dataset: Dataset) -> list[Callable[[str], str]]:
    """The prompts of each class name (see :class:`PromptOptions`).

    Raises:
        ValueError: For CLIP Benchmark prompts without exactly one ``{}``.
    """
    chosen = prompts.templates
    if isinstance(chosen, str) and not is_clip_benchmark(chosen):
        return list(TEMPLATE_SETS[chosen])
    if chosen is None:
        texts = [prompts.prompt_template or getattr(dataset, "prompt_template", DEFAULT_TEMPLATE)]
    else:
        texts = clip_benchmark_templates(chosen) if isinstance(chosen, str) else list(chosen)
    bad = [t for t in texts if t.count("{}") != 1]
    if not texts or bad:
        raise ValueError(f"option templates / prompt_template: every prompt needs exactly one '{{}}' "
                         f"(got {bad or texts})")
    return [text.format for text in texts]


@CLASSIFIERS.register("zero_shot", help="CLIP's zero-shot head: logit scale x cosine with the class-prompt embeddings")
class ZeroShotClassifier:
    """CLIP's zero-shot head (Radford et al. 2021): the class whose prompt embedding is most similar.

    With several prompt templates the class embedding is CLIP's ensemble: the mean of the unit-norm
    embeddings of the class's prompts, normalised again.
    """

    def __init__(self, encoder: Encoder, dataset: Dataset, prompts: PromptOptions,
                 probe: ProbeSetup | None = None) -> None:
        self.encoder = encoder
        with torch.no_grad():
            per_template = torch.stack([encoder.encode_text([make(name) for name in dataset.classnames])
                                        for make in prompt_templates(prompts, dataset)])
            self.text = F.normalize(per_template.mean(dim=0), dim=-1).detach()
            scale = getattr(encoder.model, "logit_scale", None)
            self.scale = float(scale.exp()) if isinstance(scale, Tensor) else 100.0

    def logits(self, images: Tensor) -> Tensor:
        """B x K logits, CLIP's learnt scale (100 for OpenAI's) times the image-prompt cosine similarities;
        differentiable with respect to the images (the attacks of :mod:`aft_bench.evaluation.attacks` need that)."""
        return self.scale * self.encoder(images.to(self.encoder.device)) @ self.text.T

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B,) predicted class indices (on the CPU)."""
        return self.logits(images).argmax(dim=1).cpu()


@CLASSIFIERS.register("probe", help="the run's linear probe on frozen image embeddings (probe_* options)")
class ProbeClassifier:
    """The run's linear probe on frozen embeddings (:func:`aft_bench.evaluation.probe.store.get_probe`, cached)."""

    def __init__(self, encoder: Encoder, dataset: Dataset, prompts: PromptOptions,
                 probe: ProbeSetup | None = None) -> None:
        if probe is None:
            raise ValueError("the probe classifier needs the run's probe setup (probe_* options)")
        self.encoder = encoder
        self.probe = get_probe(encoder, probe.spec, probe.batch_size, probe.on_error)
        if list(self.probe.classnames) != list(dataset.classnames):
            raise DataError(f"the probe's {len(self.probe.classnames)} classes differ from the "
                            f"{len(dataset.classnames)} classes of the evaluated dataset; train the probe on the same "
                            "classes (--option probe_dataset=...) or use --option classifier=zero_shot")

    def logits(self, images: Tensor) -> Tensor:
        """B x K probe logits, differentiable with respect to the images."""
        return self.probe.logits(self.encoder(images.to(self.encoder.device)))

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B,) predicted class indices (on the CPU)."""
        return self.logits(images).argmax(dim=1).cpu()

