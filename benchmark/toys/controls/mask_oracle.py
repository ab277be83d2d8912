"""Which shapes-world sample an image is, and so its object mask: the positive control's view of the masks.

An :class:`~aft_bench.models.encoder.Encoder` sees pixels only, yet the positive control
(:mod:`aft_bench.toys.controls.mask_gated`) must depend on the pixels inside each sample's mask. The shapes world makes
that possible without a side channel: each sample is a pure function of its id, so the oracle renders a split once
and recognises an image by its nearest rendered sample. The match survives what attribution methods do to an input
(SmoothGrad's noise, a planted pattern of a few /255) and refuses images that are none of the samples, raising
instead of guessing a mask. An image ``u`` matches its nearest sample ``r1`` when

* it is near: its root-mean-square pixel difference from ``r1`` is at most :data:`MAX_RMS` (SmoothGrad's 15%
  noise is 0.15), and
* the match is clear: ``|u - r2|^2 - |u - r1|^2 >= MARGIN * |r1 - r2|^2`` for the second nearest sample ``r2``,
  i.e. ``u`` projects onto the segment from ``r1`` to ``r2`` in its first quarter (noise that is independent of
  the images leaves the projection at ``r1``; shapes images are only about 0.1 apart in RMS, so a ratio of the two
  distances would not tell noise from a near tie).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from aft_bench.data.shapes import generate_batch

MAX_RMS = 0.25
"""Largest root-mean-square pixel difference (pixels in [0, 1]) of an image from the sample it matches."""
MARGIN = 0.5
"""Share of the two nearest samples' squared distance by which the nearest must be nearer (see the docstring)."""

_CHUNK = 250


class UnknownImageError(ValueError):
    """Raised when an image is none of the oracle's samples."""


@dataclass(frozen=True)
class ShapesWorld:
    """The samples the oracle knows: the first ``size`` of ``split`` at ``image_size`` px with world ``seed``."""

    split: str = "test"
    size: int = 1000
    image_size: int = 64
    seed: int = 0

    def describe(self) -> str:
        return f"the first {self.size} {self.split} images of the shapes world (seed {self.seed}, {self.image_size} px)"


class MaskOracle:
    """Masks of shapes-world images by nearest rendered sample.

    Args:
        world: The samples to render and recognise.
    """

    def __init__(self, world: ShapesWorld = ShapesWorld()) -> None:
        self.world = world
        images, masks = [], []
        for start in range(0, world.size, _CHUNK):
            chunk, chunk_masks, _ = generate_batch(world.seed, world.split, start, min(_CHUNK, world.size - start),
                                                   world.image_size)
            images.append(chunk.flatten(1))
            masks.append(chunk_masks.bool())
        self.references = torch.cat(images)
        self.masks = torch.cat(masks)
        self._norms = self.references.square().sum(dim=1)

    @torch.no_grad()
    def match(self, pixels: Tensor) -> Tensor:
        """The index of each image's sample (B,), from pixels in [0, 1] (B x 3 x H x W, the world's size).

        Raises:
            UnknownImageError: For an image of another size or one that no sample clearly matches.
        """
        size = (self.world.image_size, self.world.image_size)
        if pixels.ndim != 4 or tuple(pixels.shape[1:]) != (3, *size):
            raise UnknownImageError(f"mask oracle: images must be B x 3 x {size[0]} x {size[1]} (those of "
                                    f"{self.world.describe()}), got {tuple(pixels.shape)}")
        flat = pixels.detach().flatten(1).float().cpu()
        dist2 = (flat.square().sum(dim=1, keepdim=True) - 2 * flat @ self.references.T + self._norms).clamp_min_(0)
        best, index = dist2.topk(2, dim=1, largest=False)
        apart = (self.references[index[:, 0]] - self.references[index[:, 1]]).square().sum(dim=1)
        rms = (best[:, 0] / flat.shape[1]).sqrt()
        unclear = (rms > MAX_RMS) | (best[:, 1] - best[:, 0] < MARGIN * apart)
        if bool(unclear.any()):
            first = int(unclear.nonzero()[0])
            raise UnknownImageError(
                f"mask oracle: image {first} of the batch is none of {self.world.describe()} (RMS difference "
                f"{rms[first]:.3g} from the nearest, limit {MAX_RMS}; squared distances {best[first, 0]:.4g} and "
                f"{best[first, 1]:.4g} to the two nearest, {apart[first]:.4g} apart); the positive control knows only "
                f"those images' masks: run it on --dataset shapes (split {self.world.split}, at most "
                f"{self.world.size} images)")
        return index[:, 0]

    def masks_of(self, pixels: Tensor) -> Tensor:
        """The object mask (B x H x W bool, on ``pixels``' device) of each image's sample."""
        return self.masks[self.match(pixels)].to(pixels.device)
