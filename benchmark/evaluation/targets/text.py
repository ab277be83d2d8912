"""The ``text`` target: the cosine similarity between an image's embedding and its prompt's (the zero-shot target,
paper section 4.1; "a photo of a {class}." for class datasets, the caption for the shapes world)."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from aft_bench.core.registries import TARGETS
from aft_bench.data.base import Batch
from aft_bench.models.encoder import Encoder


@dataclass(frozen=True)
class TextTarget:
    """Cosine similarity with a unit-norm text embedding per image (B x D)."""

    embeddings: Tensor

    def score(self, embeddings: Tensor) -> Tensor:
        return (embeddings * self.embeddings.to(embeddings.dtype)).sum(-1)

    def repeat_interleave(self, n: int) -> TextTarget:
        return TextTarget(self.embeddings.repeat_interleave(n, dim=0))


@TARGETS.register("text", help="cosine similarity with the embedding of the image's prompt (zero-shot)")
def text_target(encoder: Encoder, batch: Batch, probe: object = None) -> TextTarget:
    """TARGETS factory ``text``: each image's prompt embedding, the zero-shot target (paper section 4.1).

    Every TARGETS factory takes ``(encoder, batch, probe)``; ``probe`` is the run's probe setup, unused here.
    """
    return TextTarget(encoder.encode_text(batch.prompts))
