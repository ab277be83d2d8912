"""Classifier heads over a CLIP image encoder: zero-shot (class prompts) and the run's linear probe.

Tasks that classify images (ROAD, zero-shot accuracy and robustness) pick one by name from
:data:`CLASSIFIERS`.
"""

from __future__ import annotations

import torch
from torch import Tensor

from aft_bench.config import RunConfig
from aft_bench.data.base import DataError, Dataset
from aft_bench.data.labelled_folders import DEFAULT_TEMPLATE
from aft_bench.encoder import Encoder
from aft_bench.probe import ProbeSpec, get_probe


class ZeroShotClassifier:
    """CLIP's zero-shot head (Radford et al. 2021): the class whose prompt embedding is most similar."""

    def __init__(self, encoder: Encoder, dataset: Dataset, config: RunConfig) -> None:
        template = config.options.get("prompt_template") or getattr(dataset, "prompt_template", DEFAULT_TEMPLATE)
        self.encoder = encoder
        with torch.no_grad():
            self.text = encoder.encode_text([template.format(name) for name in dataset.classnames]).detach()
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
