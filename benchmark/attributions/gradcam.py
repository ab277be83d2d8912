"""Grad-CAM (Selvaraju et al. 2017, "Grad-CAM: visual explanations from deep networks via
gradient-based localization").

The activations ``A`` of one layer (a ViT block's patch tokens laid on the grid, or a CNN's last
convolutional stage) are weighted per channel by the spatial mean of the score's gradient with respect
to them: ``map = ReLU(sum_c mean_hw(d score / d A_c) * A_c)``, upsampled bilinearly to the input size.
For ViTs the default layer is the second to last block, as the AFT paper's code uses: with CLS-token
pooling the last block's patch tokens do not reach the embedding, so their gradient (and map) is zero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import ClassVar

import torch
from torch import Tensor, nn

from aft_bench.attributions.base import Attribution, Target, upsample
from aft_bench.attributions.gradients import check_images, eval_with_grad, target_scores
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.encoder import Encoder


@contextlib.contextmanager
def capture_output(module: nn.Module) -> Iterator[list[Tensor]]:
    """Collects the outputs of ``module`` during the body through a forward hook (removed after)."""
    outputs: list[Tensor] = []
    handle = module.register_forward_hook(lambda _module, _inputs, output: outputs.append(output))
    try:
        yield outputs
    finally:
        handle.remove()


def layer_activation_and_gradient(
    encoder: Encoder, images: Tensor, target: Target, layer: nn.Module
) -> tuple[Tensor, Tensor]:
    """The output of ``layer`` and the gradient of the summed target scores with respect to it.

    One forward and one backward for the batch; the gradient is taken with ``torch.autograd.grad``
    so the model parameters' ``.grad`` stay untouched. The pixels require grad so that the layer's
    output is part of the graph even when the model's weights are frozen.

    Raises:
        RuntimeError: If the layer did not run exactly once or did not return a tensor.
    """
    check_images(images)
    with eval_with_grad(encoder), capture_output(layer) as outputs:
        pixels = images.detach().requires_grad_(True)
        scores = target_scores(encoder, pixels, target)
        if len(outputs) != 1 or not isinstance(outputs[0], Tensor):
            raise RuntimeError(
                f"gradcam: layer {type(layer).__name__} of encoder {encoder.name!r} ran {len(outputs)} times "
                "or returned no tensor in one forward pass; choose another block"
            )
        (grad,) = torch.autograd.grad(scores.sum(), outputs[0])
    return outputs[0].detach(), grad


@ATTRIBUTIONS.register("gradcam", help="gradient-weighted activations of a block / conv stage (Selvaraju et al. 2017)")
class GradCAM(Attribution):
    """Grad-CAM (Selvaraju et al. 2017) on a ViT block or a CNN stage of a CLIP image encoder.

    Channel weights are the spatial means of the gradient of the image-text cosine similarity with
    respect to the layer's activations ``A`` (B x C x h x w via ``encoder.to_spatial``; for ViTs the
    patch tokens, without the CLS token); the map is ``ReLU(sum_c w_c A_c)`` upsampled bilinearly to
    the input resolution (:func:`aft_bench.attributions.base.upsample`).

    Args:
        block: Passed to ``encoder.feature_layer``: ViT block index (default -2, the second to last)
            or ModifiedResNet stage 1..4 (default 4, the last).
        relu: Keep only positive evidence, as in the paper (set False to see the signed map).
    """

    name: ClassVar[str] = "gradcam"

    def __init__(self, block: int | None = None, relu: bool = True) -> None:
        self.block = block
        self.relu = relu

    def __repr__(self) -> str:
        return f"GradCAM(block={self.block!r}, relu={self.relu!r})"

    def layer_maps(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """Grad-CAM maps at the layer's resolution (B x h x w), before upsampling."""
        layer = encoder.feature_layer(self.block)
        activation, grad = layer_activation_and_gradient(encoder, images, target, layer)
        acts, grads = encoder.to_spatial(activation).float(), encoder.to_spatial(grad).float()
        weights = grads.mean(dim=(2, 3), keepdim=True)
        cam = (weights * acts).sum(dim=1)
        return cam.clamp_min(0) if self.relu else cam

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        """B x H x W Grad-CAM maps at the input resolution."""
        return upsample(self.layer_maps(encoder, images, target), (images.shape[-2], images.shape[-1]))
