"""Gradient plumbing shared by the gradient attribution methods.

Simple Gradient, SmoothGrad, Grad-CAM, Grad-ECLIP and M2IB all differentiate a target score through the
encoder. This module holds what they share: :func:`eval_with_grad` (eval mode plus autograd for one
call, restoring the caller's state), :func:`check_images` and :func:`target_scores` (input and target
checks with messages that say what to fix), and :func:`input_gradient` (one forward and one backward
for a whole batch, the gradient of Simonyan et al. 2013).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch
from torch import Tensor, nn

from aft_bench.attributions.base import Target
from aft_bench.models.encoder import Encoder


@contextlib.contextmanager
def eval_with_grad(encoder: nn.Module) -> Iterator[None]:
    """Runs the body with ``encoder`` in eval mode and autograd enabled, then restores both.

    Every submodule's ``training`` flag is put back as it was, so a caller in the middle of
    training (for example AFT monitoring its saliency maps) keeps its mode. Eval mode matters:
    batch norm in training mode mixes the images of a batch, which would break "a batch of N gives
    the maps of N batches of 1". The mode is switched only if some module is training, because
    :meth:`Encoder.train` drops the text-embedding cache.

    Raises:
        RuntimeError: Under ``torch.inference_mode()``, where no gradient can be taken.
    """
    if torch.is_inference_mode_enabled():
        raise RuntimeError(
            "gradient attributions cannot run under torch.inference_mode(); call them outside it "
            "(torch.no_grad() is fine: gradients are re-enabled inside)"
        )
    modes = {module: module.training for module in encoder.modules()}
    if any(modes.values()):
        encoder.eval()
    try:
        with torch.enable_grad():
            yield
    finally:
        for module, training in modes.items():
            module.training = training


def check_images(images: Tensor) -> None:
    """Raises ValueError unless ``images`` is a floating B x C x H x W tensor."""
    if images.ndim != 4 or not images.is_floating_point():
        raise ValueError(
            f"attributions expect float pixels in [0, 1] of shape B x 3 x H x W, got dtype {images.dtype} "
            f"and shape {tuple(images.shape)}; convert with images.float() / 255 first"
        )


def target_scores(encoder: Encoder, images: Tensor, target: Target) -> Tensor:
    """The target's score (B,) of ``images``, checked to hold one score per image."""
    scores = target.score(encoder(images))
    if scores.shape != (images.shape[0],):
        raise ValueError(
            f"target {type(target).__name__} gave scores of shape {tuple(scores.shape)} for "
            f"{images.shape[0]} images; it needs one target per image"
        )
    return scores


def input_gradient(encoder: Encoder, images: Tensor, target: Target) -> Tensor:
    """Gradient (B x C x H x W) of each image's target score with respect to its own pixels.

    One forward and one backward for the whole batch: the scores are summed, which gives each image's
    own gradient because (in eval mode) images do not interact. Only the input's gradient is taken
    (``torch.autograd.grad``), so nothing accumulates in the model parameters' ``.grad``.
    """
    check_images(images)
    with eval_with_grad(encoder):
        pixels = images.detach().requires_grad_(True)
        scores = target_scores(encoder, pixels, target)
        (grad,) = torch.autograd.grad(scores.sum(), pixels)
    return grad
