"""The attribution-method contract: ``Method(**hparams)(encoder, images, target) -> B x H x W`` maps at input
resolution.

A :class:`Target` turns unit-norm image embeddings into one score per image, the score a map explains; every target
(the prompt embedding, a linear probe's class logit, a classifier's own logit) lives in
:mod:`aft_bench.evaluation.targets`.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from typing import ClassVar, Protocol

import torch.nn.functional as F
from torch import Tensor

from aft_bench.models.encoder import Encoder, EncoderKind, UnsupportedEncoderError


class Target(Protocol):
    """What a map explains: one differentiable score per image."""

    def score(self, embeddings: Tensor) -> Tensor:
        """Scores (B,) of unit-norm image embeddings (B x D)."""
        ...

    def repeat_interleave(self, n: int) -> Target:
        """The target of each image repeated ``n`` times in place (for batched noise samples)."""
        ...






class Attribution(ABC):
    """Base class: validates the encoder kind and the output shape around :meth:`attribute`.

    Subclasses set ``name`` and ``supports`` and implement :meth:`attribute`; hyperparameters are
    constructor arguments. Every method is batched and a batch of N gives the maps of N batches of 1.
    """

    name: ClassVar[str]
    supports: ClassVar[frozenset[EncoderKind]] = frozenset({"vit", "cnn"})

    def __call__(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """Maps (B x H x W, float32) explaining ``target`` for ``images`` (B x 3 x H x W in [0, 1])."""
        self.check(encoder)
        maps = self.attribute(encoder, images, target).detach().float()
        expected = (images.shape[0], images.shape[2], images.shape[3])
        if tuple(maps.shape) != expected:
            raise RuntimeError(f"{self.name} returned maps of shape {tuple(maps.shape)}, expected {expected}")
        return maps

    def check(self, encoder: Encoder) -> None:
        """Raises UnsupportedEncoderError when this method cannot serve ``encoder``."""
        if encoder.kind not in self.supports:
            raise UnsupportedEncoderError(
                f"attribution {self.name!r} supports {'/'.join(sorted(self.supports))} encoders; "
                f"{encoder.name!r} is a {encoder.kind}. Choose another method for this encoder."
            )

    @abstractmethod
    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """Computes B x H x W maps; called by :meth:`__call__` after the support check."""


def upsample(maps: Tensor, size: tuple[int, int]) -> Tensor:
    """Bilinear upsampling of B x h x w maps to B x H x W (the Grad-CAM / token-map convention)."""
    return F.interpolate(maps[:, None], size=size, mode="bilinear", align_corners=False)[:, 0]
