"""The four maps of a study case: one attribution map per shown class (AFT paper appendix A.4, Fig. 16).

Each map explains the zero-shot score of one class: the cosine similarity between the image embedding and that
class's prompt embedding, the ``text`` target of the benchmark (:class:`aft_bench.evaluation.targets.text.TextTarget`)
with the class's prompt in place of the image's own. The class embeddings are those of the zero-shot head that
ranked the classes (:class:`aft_bench.evaluation.classifiers.ZeroShotClassifier`, prompt ensemble included), so a map
explains exactly the score that put its class among the four.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution
from aft_bench.core.progress import progress_bar
from aft_bench.evaluation.targets.text import TextTarget
from aft_bench.models.encoder import Encoder


def class_maps(encoder: Encoder, method: Attribution, class_embeddings: Tensor, images: Sequence[Tensor],
               classes: Sequence[Sequence[int]], batch_size: int = 32) -> list[Tensor]:
    """The maps of each image (3 x H x W in [0, 1]) for each of its classes, in that order.

    Every (image, class) pair is one row of a batch: the image, and its class's prompt embedding as the target.
    Attribution methods give a batch of N the maps of N batches of 1, so the batching changes no map.

    Args:
        encoder: The encoder that is explained. method: The attribution method (Grad-CAM in the paper).
        class_embeddings: K x D unit-norm class prompt embeddings of the zero-shot head.
        images: The cases' images. classes: Per image, the class indices to explain (one map each).
        batch_size: (image, class) pairs per call of ``method``.

    Returns:
        Per image, a len(classes[i]) x H x W tensor of maps.
    """
    pairs = [(image, cls) for image, shown in zip(images, classes, strict=True) for cls in shown]
    maps = []
    with progress_bar(total=len(pairs), desc="study: maps", unit="map", leave=False) as bar:
        for start in range(0, len(pairs), batch_size):
            chunk = pairs[start:start + batch_size]
            batch = torch.stack([image for image, _ in chunk]).to(encoder.device)
            target = TextTarget(class_embeddings[[cls for _, cls in chunk]].to(encoder.device))
            maps.append(method(encoder, batch, target))
            bar.update(len(chunk))
    return list(torch.cat(maps).split([len(shown) for shown in classes]))
