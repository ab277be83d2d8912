"""The trainable image tower and the frozen reference the objectives compare against."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from aft_bench.models.encoder import Encoder


class ImageTower(nn.Module):
    """Pixels in [0, 1] -> un-normalised image embeddings of an encoder's image tower (any backend).

    Only this module is trained (paper section 3.2: the text tower stays untouched, so the result
    remains compatible with the original text encoder).

    Args:
        visual: The image tower (``encoder.visual``: normalised pixels -> un-normalised embeddings, for a timm
            classifier its pre-logits features); used as is, not copied.
        mean: Per-channel input normalisation mean.
        std: Per-channel input normalisation standard deviation.
        channels_last: Feed the tower channels-last tensors (faster convolutions on GPU).
    """

    def __init__(self, visual: nn.Module, mean: Tensor, std: Tensor, channels_last: bool = False) -> None:
        super().__init__()
        self.visual = visual
        self.register_buffer("mean", mean.detach().float().reshape(1, 3, 1, 1).clone(), persistent=False)
        self.register_buffer("std", std.detach().float().reshape(1, 3, 1, 1).clone(), persistent=False)
        self.channels_last = channels_last

    @classmethod
    def from_encoder(cls, encoder: Encoder, channels_last: bool = False) -> ImageTower:
        """A trainable deep copy of ``encoder``'s image tower."""
        tower = cls(copy.deepcopy(encoder.visual), encoder.mean, encoder.std, channels_last)
        return tower.requires_grad_(True)

    def forward(self, pixels: Tensor) -> Tensor:
        """B x D float32 un-normalised embeddings of B x 3 x H x W pixels in [0, 1]."""
        x = (pixels - self.mean.to(pixels.dtype)) / self.std.to(pixels.dtype)
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        return self.visual(x).float()


@dataclass
class Reference:
    """The frozen original encoder: I_x for the image objectives, T_x for the supervised one.

    Attributes:
        tower: Frozen copy of the original image tower (no grad, eval mode).
        encoder: The original encoder (its text tower gives caption embeddings).
    """

    tower: ImageTower
    encoder: Encoder

    @classmethod
    def from_encoder(cls, encoder: Encoder) -> Reference:
        tower = ImageTower(encoder.visual, encoder.mean, encoder.std).eval().requires_grad_(False)
        encoder.requires_grad_(False)
        return cls(tower=tower, encoder=encoder)

    @torch.no_grad()
    def image_features(self, pixels: Tensor) -> Tensor:
        """Un-normalised original embeddings of clean pixels (computed once per batch)."""
        return self.tower(pixels)

    @torch.no_grad()
    def text_features(self, captions: list[str]) -> Tensor:
        """Unit-norm original text embeddings of the captions."""
        return self.encoder.embed_text(list(captions))
