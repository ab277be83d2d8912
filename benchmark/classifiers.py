"""Classifier heads over a CLIP image encoder: zero-shot (class prompts) and the run's linear probe.

Tasks that classify images (ROAD, zero-shot accuracy and robustness) pick one by name from
:data:`CLASSIFIERS`.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from open_clip.zero_shot_metadata import OPENAI_IMAGENET_TEMPLATES, SIMPLE_IMAGENET_TEMPLATES
from torch import Tensor

from aft_bench.config import RunConfig
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.clip_benchmark import clip_benchmark_templates, is_clip_benchmark
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.encoder import Encoder
from aft_bench.probe import ProbeSpec, get_probe

TEMPLATE_SETS: dict[str, tuple[Callable[[str], str], ...]] = {
    "openai_imagenet": tuple(OPENAI_IMAGENET_TEMPLATES),  # CLIP's 80 ImageNet prompts (Radford et al. 2021)
    "simple_imagenet": tuple(SIMPLE_IMAGENET_TEMPLATES),  # the 7 of them CLIP's notebook singles out
}
"""Named prompt ensembles (open_clip's copies of CLIP's published ImageNet templates)."""


def prompt_templates(config: RunConfig, dataset: Dataset) -> list[Callable[[str], str]]:
    """The prompts of each class name: option ``templates`` (a name in :data:`TEMPLATE_SETS`,
    ``clip_benchmark:<dataset>`` for CLIP Benchmark's, or a list of texts with one ``{}``), else the single
    option ``prompt_template``, the dataset's, or "a photo of a {}.".

    Raises:
        ValueError: Naming the option, for an unknown set or a text without exactly one ``{}``.
    """
    chosen = config.options.get("templates")
    if chosen is None:
        texts = [config.options.get("prompt_template") or getattr(dataset, "prompt_template", DEFAULT_TEMPLATE)]
    elif is_clip_benchmark(chosen):
        texts = clip_benchmark_templates(chosen)
    elif isinstance(chosen, str):
        if chosen not in TEMPLATE_SETS:
            raise ValueError(f"option templates={chosen!r}: name one of {sorted(TEMPLATE_SETS)} or give a list of "
                             "prompts with {} for the class name")
        return list(TEMPLATE_SETS[chosen])
    else:
        texts = [str(t) for t in chosen]
    bad = [t for t in texts if t.count("{}") != 1]
    if not texts or bad:
        raise ValueError(f"option templates / prompt_template: every prompt needs exactly one '{{}}' "
                         f"(got {bad or texts})")
    return [text.format for text in texts]


class ZeroShotClassifier:
    """CLIP's zero-shot head (Radford et al. 2021): the class whose prompt embedding is most similar.

    With several prompt templates the class embedding is CLIP's ensemble: the mean of the unit-norm
    embeddings of the class's prompts, normalised again.
    """

    def __init__(self, encoder: Encoder, dataset: Dataset, config: RunConfig) -> None:
        self.encoder = encoder
        with torch.no_grad():
            per_template = torch.stack([encoder.encode_text([make(name) for name in dataset.classnames])
                                        for make in prompt_templates(config, dataset)])
            self.text = F.normalize(per_template.mean(dim=0), dim=-1).detach()
            scale = getattr(encoder.model, "logit_scale", None)
            self.scale = float(scale.exp()) if isinstance(scale, Tensor) else 100.0

    def logits(self, images: Tensor) -> Tensor:
        """B x K logits, CLIP's learnt scale (100 for OpenAI's) times the image-prompt cosine similarities;
        differentiable with respect to the images (the attacks of :mod:`aft_bench.attacks` need that)."""
        return self.scale * self.encoder(images.to(self.encoder.device)) @ self.text.T

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B,) predicted class indices (on the CPU)."""
        return self.logits(images).argmax(dim=1).cpu()


class ProbeClassifier:
    """The run's linear probe on frozen embeddings (:func:`aft_bench.probe.get_probe`, cached)."""

    def __init__(self, encoder: Encoder, dataset: Dataset, config: RunConfig) -> None:
        self.encoder = encoder
        self.probe = get_probe(encoder, ProbeSpec.from_config(config), config.batch_size, config.on_error)
        if list(self.probe.classnames) != list(dataset.classnames):
            raise DataError(f"the probe's {len(self.probe.classnames)} classes differ from the "
                            f"{len(dataset.classnames)} classes of {config.dataset!r}; train the probe on the same "
                            "classes (--option probe_dataset=...) or use --option classifier=zero_shot")

    def logits(self, images: Tensor) -> Tensor:
        """B x K probe logits, differentiable with respect to the images."""
        return self.probe.logits(self.encoder(images.to(self.encoder.device)))

    @torch.no_grad()
    def predict(self, images: Tensor) -> Tensor:
        """(B,) predicted class indices (on the CPU)."""
        return self.logits(images).argmax(dim=1).cpu()


CLASSIFIERS: dict[str, type] = {"zero_shot": ZeroShotClassifier, "probe": ProbeClassifier}
