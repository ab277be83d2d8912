"""Raw attention map: the class token's attention to the patch tokens in one ViT block.

The paper (AFT, section 4.1, Fig. 4 left) shows the last block's attention from the ``[cls]`` token
to the image tokens before and after adversarial fine-tuning. The map does not depend on the text
target: it shows where the image representation looks, not why it matches a prompt.
"""

from __future__ import annotations

from typing import ClassVar

import torch
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target, upsample
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.attention_recorder import AttentionRecorder, eval_mode, reduce_heads
from aft_bench.models.encoder import Encoder, EncoderKind


@ATTRIBUTIONS.register("attention_map", help="class-token attention to the patches in one ViT block (AFT paper Fig. 4)")
class AttentionMap(Attribution):
    """Attention of the class token to each patch in one block, reduced over heads.

    As visualised in the AFT paper (Fig. 4); attention probabilities come from the explicit attention
    path (:class:`~aft_bench.models.attention_recorder.AttentionRecorder`). The row of the class token (query 0) over
    the patch keys is laid on the patch grid and upsampled bilinearly to the input size.

    Args:
        block: ViT block whose attention is shown (negative counts from the end; default the last).
        heads: Head reduction: ``mean`` (default), ``max`` or ``min``.
    """

    name: ClassVar[str] = "attention_map"
    supports: ClassVar[frozenset[EncoderKind]] = frozenset({"vit"})

    def __init__(self, block: int = -1, heads: str = "mean") -> None:
        reduce_heads(torch.zeros(1, 1, 1, 1), heads)  # fails early on an unknown reduction
        self.block = block
        self.heads = heads

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        index = encoder.resolve_block(self.block)
        with eval_mode(encoder), torch.no_grad(), AttentionRecorder(encoder, [index], ("probs",)) as rec:
            encoder(images)
        attention = reduce_heads(rec.probs(index), self.heads)  # B x N x N
        cls_row = attention[:, 0, encoder.patch_slice(attention.shape[-1])]
        return upsample(encoder.token_grid(cls_row).float(), tuple(images.shape[-2:]))
