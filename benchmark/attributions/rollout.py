"""Attention Rollout (Abnar & Zuidema 2020, "Quantifying Attention Flow in Transformers").

Rollout follows attention through the residual stream: each block's head-reduced attention plus
the identity (the skip connection), row-normalised, multiplied from a start block to the last. The
class token's row of the product, over the patch tokens, is the map. Like the raw attention map it
ignores the text target. Used in the AFT paper's section 4.1 (Fig. 4).
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target, upsample
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.attention_recorder import AttentionRecorder, eval_mode, reduce_heads
from aft_bench.models.encoder import Encoder, EncoderKind


def rollout(attentions: list[Tensor]) -> Tensor:
    """Joint attention of head-reduced per-block attentions (each B x N x N, first block first).

    ``A_hat_l = (A_l + I) / rowsum(A_l + I)`` and ``R = A_hat_L @ ... @ A_hat_s`` (Abnar & Zuidema
    2020, eq. for attention rollout with the residual connection).
    """
    if not attentions:
        raise ValueError("rollout needs the attention of at least one block")
    eye = torch.eye(attentions[0].shape[-1], dtype=attentions[0].dtype, device=attentions[0].device)
    joint = None
    for attention in attentions:
        augmented = attention + eye
        augmented = augmented / augmented.sum(dim=-1, keepdim=True)
        joint = augmented if joint is None else augmented @ joint
    return joint


@ATTRIBUTIONS.register("rollout", help="attention rollout across ViT blocks (Abnar & Zuidema 2020)")
class Rollout(Attribution):
    """Attention Rollout of a ViT of any backend (Abnar & Zuidema 2020), the class token's row over the patches.

    Args:
        start_block: First block multiplied in (negative counts from the end; default 0, all blocks).
        heads: Head reduction before adding the identity: ``mean`` (the paper's), ``max`` or ``min``.
    """

    name: ClassVar[str] = "rollout"
    supports: ClassVar[frozenset[EncoderKind]] = frozenset({"vit"})

    def __init__(self, start_block: int = 0, heads: str = "mean") -> None:
        reduce_heads(torch.zeros(1, 1, 1, 1), heads)  # fails early on an unknown reduction
        self.start_block = start_block
        self.heads = heads

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        start = encoder.resolve_block(self.start_block)
        blocks = list(range(start, len(encoder.blocks)))
        with eval_mode(encoder), torch.no_grad(), AttentionRecorder(encoder, blocks, ("probs",)) as rec:
            encoder(images)
            joint = rollout([reduce_heads(rec.probs(b).float(), self.heads) for b in blocks])
        cls_row = joint[:, 0, encoder.patch_slice(joint.shape[-1])]
        return upsample(encoder.token_grid(cls_row), tuple(images.shape[-2:]))
