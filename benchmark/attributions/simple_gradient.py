"""Simple Gradient saliency (Simonyan, Vedaldi & Zisserman 2013, "Deep inside convolutional networks").

The map is the magnitude of the gradient of the target score (the image-text cosine similarity of
the AFT paper, section 4.1) with respect to the input pixels in [0, 1], aggregated over the colour
channels. The gradient itself comes from :func:`aft_bench.attributions.gradients.input_gradient`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target
from aft_bench.attributions.gradients import input_gradient
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.encoder import Encoder

ChannelReducer = Callable[[Tensor], Tensor]

#: How a B x C x H x W gradient becomes a B x H x W map. "sum" (the default) adds the channel
#: magnitudes, "max" is Simonyan et al.'s choice (max over channels of |g|), "l2" the Euclidean norm.
CHANNEL_REDUCERS: dict[str, ChannelReducer] = {
    "sum": lambda grad: grad.abs().sum(dim=1),
    "max": lambda grad: grad.abs().amax(dim=1),
    "l2": lambda grad: torch.linalg.vector_norm(grad, dim=1),
}


@ATTRIBUTIONS.register("simple_gradient",
                       help="|d cos(image, text) / d pixels| summed over colour channels (Simonyan et al. 2013)")
class SimpleGradient(Attribution):
    """Simple Gradient (Simonyan et al. 2013): ``reduce_c |d score / d x_c|`` at every pixel.

    The score is the cosine similarity between the image embedding and the target (text) embedding,
    differentiated with respect to pixels in [0, 1] (the encoder normalises inside). Simonyan et al.
    take the maximum of ``|g|`` over the colour channels (``reduce="max"``); the default adds the
    channel magnitudes (``"sum"``), which equals summing the per-channel maps of captum's
    ``Saliency(abs=True)``; ``"l2"`` takes the Euclidean norm over channels.

    Args:
        reduce: Channel aggregation, one of :data:`CHANNEL_REDUCERS` ("sum", "max", "l2").

    Raises:
        ValueError: If ``reduce`` is not a known reducer.
    """

    name: ClassVar[str] = "simple_gradient"

    def __init__(self, reduce: str = "sum") -> None:
        if reduce not in CHANNEL_REDUCERS:
            raise ValueError(
                f"simple_gradient: unknown channel reduction {reduce!r}; choose one of {sorted(CHANNEL_REDUCERS)}"
            )
        self.reduce = reduce

    def __repr__(self) -> str:
        return f"SimpleGradient(reduce={self.reduce!r})"

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """B x H x W channel-reduced gradient magnitudes (one forward + backward for the batch)."""
        return CHANNEL_REDUCERS[self.reduce](input_gradient(encoder, images, target))
