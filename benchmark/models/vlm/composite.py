"""The composite attention map of a generated token over the image (paper section 4.3 and appendix A.4).

The AFT paper scores LLaVA's attention over the image for each token of its answer. A map combines the two
attention systems of the model:

* **LLM side**: the attention of the generated token's position to every position of the sequence, averaged over
  heads and then over the chosen layers. Language models park much of their attention on the first (BOS) token,
  an "attention sink" (Xiao et al. 2023) that says nothing about the image; it is zeroed and the row renormalised
  to sum to 1 (``sink=True``) before the image positions are taken, one weight per image token.
* **Vision side**: the tower's attention matrices over its patch tokens, averaged over heads, with the CLS row and
  column removed and each row renormalised to sum to 1, averaged over the tower's layers up to the VLM's vision
  feature layer (LLaVA-1.5 takes layer -2's patch tokens and drops CLS). The LLM's image-token weights ``w``
  (one per patch) times this matrix ``M`` (``w @ M``, the mass each patch token gathers, carried back to the patches
  it attends to) give one weight per patch; ``vision=False`` uses the LLM weights alone.

The patch weights are laid out on the patch grid in row-major order (the order of LLaVA's image tokens and of a
ViT's patches) and resized bilinearly to the image (:func:`grid_to_image`).

Choices (options of the task, defaults in brackets): the LLM layers averaged [all], the sink removal [on], the
vision product [on], the vision layers averaged [from the first up to the feature layer].
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from torch import Tensor


def llm_image_weights(rows: Tensor, image_positions: Sequence[int] | Tensor, sink: bool = True,
                      sink_position: int = 0) -> Tensor:
    """The generated token's weight on each image token, from its attention rows.

    Args:
        rows: L x H x S attention of the token's position to the S positions of the sequence, per layer and head
            (each row sums to 1 over the positions it may attend to).
        image_positions: The N positions of the image tokens in the sequence, in patch order.
        sink: Zero the attention to ``sink_position`` (BOS) and renormalise before taking the image positions.
        sink_position: The attention sink's position.

    Returns:
        (N,) float32 weights: the share of the token's (sink-free) attention on each image token.

    Raises:
        ValueError: For a tensor that is not L x H x S, image positions out of range, or a row whose only
            attention is to the sink (nothing to renormalise).
    """
    if rows.dim() != 3:
        raise ValueError(f"llm_image_weights: rows must be layers x heads x positions, got shape {tuple(rows.shape)}")
    positions = torch.as_tensor(image_positions, dtype=torch.long, device=rows.device)
    length = rows.shape[-1]
    if positions.numel() == 0 or int(positions.min()) < 0 or int(positions.max()) >= length:
        raise ValueError(f"llm_image_weights: image positions must lie in [0, {length}) and be given, got "
                         f"{positions.tolist()[:8]}")
    mean = rows.float().mean(dim=(0, 1))  # heads, then layers (equal head counts: the same as one mean)
    if sink:
        mean = mean.clone()
        mean[sink_position] = 0.0
        total = mean.sum()
        if not total > 0:
            raise ValueError("llm_image_weights: the token attends only to the sink; there is nothing to renormalise")
        mean = mean / total
    return mean[positions]


def vision_patch_matrix(attentions: Sequence[Tensor] | Tensor, has_cls: bool = True) -> Tensor:
    """The tower's mean patch-to-patch attention: each layer's head-mean matrix without CLS, rows renormalised,
    averaged over the layers given.

    Args:
        attentions: Layers of H x T x T attention probabilities (T = CLS + N patches, or N without CLS), the layers
            up to the VLM's feature layer.
        has_cls: Whether token 0 is a CLS token to drop.

    Returns:
        N x N float32 matrix whose rows sum to 1.
    """
    layers = list(attentions)
    if not layers:
        raise ValueError("vision_patch_matrix: give at least one layer's attention")
    start = 1 if has_cls else 0
    out = None
    for a in layers:
        if a.dim() != 3 or a.shape[-1] != a.shape[-2]:
            raise ValueError(f"vision_patch_matrix: each layer must be heads x T x T, got {tuple(a.shape)}")
        patches = a.float().mean(dim=0)[start:, start:]
        patches = patches / patches.sum(dim=-1, keepdim=True).clamp_min(torch.finfo(torch.float32).tiny)
        out = patches if out is None else out + patches
    return out / len(layers)


def composite_weights(llm_weights: Tensor, vision: Tensor | None = None) -> Tensor:
    """One weight per patch: ``llm_weights @ vision`` (N,), or the LLM weights alone when ``vision`` is None."""
    if vision is None:
        return llm_weights
    if vision.shape != (llm_weights.numel(), llm_weights.numel()):
        raise ValueError(f"composite_weights: {llm_weights.numel()} image-token weights do not fit a vision matrix "
                         f"of shape {tuple(vision.shape)}")
    return llm_weights @ vision


def grid_to_image(weights: Tensor, grid: tuple[int, int], size: tuple[int, int]) -> Tensor:
    """Patch weights (N,) in row-major grid order, as a map resized bilinearly to ``size`` (H x W); a T x N stack of
    weights gives T x H x W maps in one call."""
    rows, cols = grid
    if weights.shape[-1] != rows * cols or weights.dim() > 2:
        raise ValueError(f"grid_to_image: weights of shape {tuple(weights.shape)} do not fill a {rows} x {cols} "
                         "patch grid (give N or T x N weights)")
    layout = weights.float().reshape(-1, 1, rows, cols)
    maps = F.interpolate(layout, size=size, mode="bilinear", align_corners=False)[:, 0]
    return maps[0] if weights.dim() == 1 else maps
