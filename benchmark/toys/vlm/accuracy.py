"""The toy VLM's quality figure: greedy answers to the class question on held-out shapes images, and their accuracy.

The answers go through the whole pipeline a user runs: uint8 images and the prompt into the ``LlavaProcessor``,
``generate`` with greedy decoding and a token limit, the new tokens decoded without special tokens. An answer is
right when it is exactly the image's class name (surrounding spaces aside), as appendix A.4 asks the model to
output only the class name.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import Tensor
from transformers import LlavaForConditionalGeneration, LlavaProcessor

from aft_bench.data.shapes import CLASSNAMES, generate_batch


def answer_accuracy(answers: Sequence[str], labels: Sequence[int] | Tensor, classnames: Sequence[str]) -> float:
    """Share of ``answers`` that are exactly the class name of their label (spaces around an answer ignored).

    Raises:
        ValueError: If there are no answers, or answers and labels differ in number.
    """
    labels = [int(label) for label in labels]
    if not answers or len(answers) != len(labels):
        raise ValueError(f"answer_accuracy: {len(answers)} answers for {len(labels)} labels; give one per label, "
                         "at least one")
    return sum(answer.strip() == classnames[label] for answer, label in zip(answers, labels, strict=True)) / len(labels)


def to_uint8_images(images: Tensor) -> list[np.ndarray]:
    """Pixels in [0, 1] (B x 3 x H x W) as the H x W x 3 uint8 arrays an image processor takes."""
    return list((images.clamp(0, 1) * 255).round().to(torch.uint8).permute(0, 2, 3, 1).numpy())


@torch.no_grad()
def greedy_answers(model: LlavaForConditionalGeneration, processor: LlavaProcessor, images: Tensor, prompt: str,
                   max_new_tokens: int) -> list[str]:
    """The model's greedy answer to ``prompt`` about each image (pixels in [0, 1]), decoded without special tokens."""
    inputs = processor(images=to_uint8_images(images), text=[prompt] * images.shape[0], return_tensors="pt")
    inputs = inputs.to(model.device)
    generated = model.generate(**inputs, do_sample=False, max_new_tokens=max_new_tokens)
    new = generated[:, inputs["input_ids"].shape[1]:]
    return processor.batch_decode(new, skip_special_tokens=True)


def held_out_accuracy(model: LlavaForConditionalGeneration, processor: LlavaProcessor, prompt: str, n: int, seed: int,
                      image_size: int, max_new_tokens: int, batch_size: int = 100) -> tuple[float, list[str]]:
    """Greedy answer accuracy on the first ``n`` test-split shapes images of world ``seed``; also the answers.

    Raises:
        ValueError: If ``n`` is below 1.
    """
    if n < 1:
        raise ValueError(f"held_out_accuracy: n={n} must be positive")
    answers: list[str] = []
    labels: list[int] = []
    for start in range(0, n, batch_size):
        images, _, batch_labels = generate_batch(seed, "test", start, min(batch_size, n - start), image_size)
        answers += greedy_answers(model, processor, images, prompt, max_new_tokens)
        labels += batch_labels.tolist()
    return answer_accuracy(answers, labels, CLASSNAMES), answers
