"""Zero-shot top-1 accuracy of an encoder on held-out shapes images (the toy's quality figure)."""

from __future__ import annotations

import torch

from aft_bench.data.shapes import CLASSNAMES, caption, generate_batch
from aft_bench.models.encoder import Encoder


@torch.no_grad()
def zero_shot_accuracy(encoder: Encoder, n: int = 500, seed: int = 0, batch_size: int = 250,
                       shortcut: float = 0.0) -> float:
    """Zero-shot top-1 accuracy on ``n`` held-out shapes images (test split, world seed ``seed``, the planted
    pattern at amplitude ``shortcut``).

    Every image is compared with the prompts of all classes (``"a photo of a {colour} {shape}."``);
    the prediction is the most similar prompt.
    """
    if n < 1:
        raise ValueError(f"zero_shot_accuracy: n={n} must be positive")
    was_training = encoder.training
    encoder.eval()
    prompts = encoder.encode_text([caption(c) for c in range(len(CLASSNAMES))])
    correct = 0
    for start in range(0, n, batch_size):
        images, _, labels = generate_batch(seed, "test", start, min(batch_size, n - start), encoder.image_size,
                                           shortcut)
        scores = encoder(images.to(encoder.device)) @ prompts.T
        correct += int((scores.argmax(dim=1).cpu() == labels).sum())
    encoder.train(was_training)
    return correct / n
