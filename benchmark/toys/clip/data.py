"""Training data of the toy CLIP: a pool of shapes images rendered once, symmetries, and the batch order.

Rendering an image costs about as much as a training step, so the train split is rendered once into a
uint8 pool and batches are drawn from it in shuffled epochs.
"""

from __future__ import annotations

from collections.abc import Iterator

import torch
from torch import Tensor

from aft_bench.core.progress import progress_bar
from aft_bench.data.shapes import CLASSNAMES, generate_batch
from aft_bench.toys.clip.recipe import ToyRecipe

_RENDER_CHUNK = 500


def conflict_offsets(recipe: ToyRecipe) -> Tensor:
    """Per pool image, the class offset of its planted pattern and caption from its object's class: 0 for most,
    uniform in 1..C-1 for a ``recipe.conflict`` share of them (exactly ``round(conflict * N)`` images, chosen by a
    generator seeded with the recipe's ``data_seed``)."""
    offsets = torch.zeros(recipe.pool_size, dtype=torch.long)
    count = round(recipe.conflict * recipe.pool_size)
    if count:
        generator = torch.Generator().manual_seed(recipe.data_seed)
        chosen = torch.randperm(recipe.pool_size, generator=generator)[:count]
        offsets[chosen] = torch.randint(1, len(CLASSNAMES), (count,), generator=generator)
    return offsets


def render_pool(recipe: ToyRecipe, progress: bool = True) -> tuple[Tensor, Tensor]:
    """Renders the training pool once: (N x 3 x H x W uint8 images, N int64 caption classes) of the train split.

    A caption's class is the object's, except on the recipe's conflict images (:func:`conflict_offsets`), whose
    caption and planted pattern are those of another class than the object's.
    """
    images = torch.empty((recipe.pool_size, 3, recipe.image_size, recipe.image_size), dtype=torch.uint8)
    labels = torch.empty(recipe.pool_size, dtype=torch.long)
    offsets = conflict_offsets(recipe)
    starts = range(0, recipe.pool_size, _RENDER_CHUNK)
    for start in progress_bar(starts, desc="toy: rendering shapes", unit="chunk", enabled=progress, leave=False):
        count = min(_RENDER_CHUNK, recipe.pool_size - start)
        chunk_offsets = offsets[start : start + count]
        chunk, _, objects = generate_batch(recipe.data_seed, "train", start, count, recipe.image_size,
                                           recipe.shortcut, chunk_offsets.tolist())
        images[start : start + count] = (chunk * 255).round_().to(torch.uint8)
        labels[start : start + count] = (objects + chunk_offsets) % len(CLASSNAMES)
    return images, labels


def dihedral(images: Tensor, codes: Tensor) -> Tensor:
    """Applies one symmetry of the square per image (N x C x H x W, square).

    ``codes`` (N, in 0..7): bit 0 mirrors left-right, bit 1 top-bottom, bit 2 transposes; so codes 0-1
    are the identity and the mirror, 0-7 all eight symmetries. None changes a shape's class.
    """
    out = images
    out = torch.where((codes & 1).bool().view(-1, 1, 1, 1), out.flip(-1), out)
    out = torch.where((codes & 2).bool().view(-1, 1, 1, 1), out.flip(-2), out)
    return torch.where((codes & 4).bool().view(-1, 1, 1, 1), out.transpose(-1, -2), out)


def batch_indices(pool_size: int, batch_size: int, steps: int, generator: torch.Generator) -> Iterator[Tensor]:
    """Indices into the pool for each step: successive shuffled epochs, cut into batches."""
    order = torch.empty(0, dtype=torch.long)
    for _ in range(steps):
        while order.numel() < batch_size:
            order = torch.cat([order, torch.randperm(pool_size, generator=generator)])
        yield order[:batch_size]
        order = order[batch_size:]
