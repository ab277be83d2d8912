"""The random-removal baseline of ROAR (Hooker et al. 2019, "A benchmark for interpretability methods in
deep neural networks") as a pseudo-attribution.

Its maps rank pixels at random, the floor every attribution must beat under removal (ROAR, ROAD). They
ignore the encoder and the target; each image's map is a function of the seed and of the image alone.
"""

from __future__ import annotations

import zlib
from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.metrics.removal import random_maps
from aft_bench.models.encoder import Encoder


@ATTRIBUTIONS.register("random", help="uniform random map (ROAR's random-removal baseline)")
class RandomBaseline(Attribution):
    """Random removal (Hooker et al. 2019): a uniform random score per pixel, the floor every map must beat.

    The map of an image depends only on ``seed`` and the image's pixels (a CRC-32 of its float32
    values picks the random stream, :func:`aft_bench.metrics.removal.random_maps`), so it is the same
    in any batch, on any device, in train and test passes.
    """

    name: ClassVar[str] = "random"

    def __init__(self, seed: int = 0) -> None:
        self.seed = int(seed)

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        keys = [content_key(image) for image in images.detach().to("cpu", torch.float32)]
        maps = random_maps(keys, images.shape[2], images.shape[3], self.seed)
        return maps.to(device=images.device, dtype=torch.float32)


def content_key(image: Tensor) -> int:
    """CRC-32 of an image's float32 pixel values (a stable per-image key)."""
    return zlib.crc32(image.detach().to("cpu", torch.float32).contiguous().numpy().tobytes())
