"""Grad-ECLIP (Zhao et al., ICML 2024, "Gradient-based Visual Explanation for Transformer-based CLIP").

The class token's attention output in the last block is a sum over tokens of value vectors; Grad-ECLIP
weights each token's value by the gradient of the image-text cosine similarity with respect to that
output and by a "loosened" attention, the min-max-normalised cosine between the class query and the
token's key:

    H_i = ReLU( sum_c g_c * v_ic * lambda_i ),  g = d cos(I, T) / d o_cls,
    lambda_i = (cos(q_cls, k_i) - min_j cos(q_cls, k_j)) / (max_j ... - min_j ...)

with ``o_cls`` the attention output at the class position before the output projection and the min
and max over the patch tokens. Over several blocks the image map is the sum of each block's map,
``H_i = sum_l ReLU( sum_c g^l_c v^l_ic lambda^l_i )``: the ReLU is applied per block, then the maps are
added, as in the authors' image code (``grad_eclip`` in ``grad_eclip_image.ipynb`` of
github.com/Cyang-Zhao/Grad-Eclip). Their text-side code (``grad_eclip_text``) adds the blocks' scores
before one ReLU instead; that form is not used here. The AFT paper reports Grad-ECLIP in Fig. 4 and
Table 1.
"""

from __future__ import annotations

from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.attributions.base import Attribution, Target, upsample
from aft_bench.attributions.gradients import eval_with_grad
from aft_bench.core.registries import ATTRIBUTIONS
from aft_bench.models.attention_recorder import AttentionRecorder
from aft_bench.models.encoder import Encoder, EncoderKind

EPS = 1e-12


def loosened_attention(q_cls: Tensor, keys: Tensor) -> Tensor:
    """Min-max-normalised cosine between the class query (B x C) and each key (B x T x C) -> B x T.

    A constant row (all cosines equal) gives zeros rather than a division by zero.
    """
    cosine = (F.normalize(q_cls, dim=-1)[:, None] * F.normalize(keys, dim=-1)).sum(-1)
    low = cosine.amin(dim=-1, keepdim=True)
    high = cosine.amax(dim=-1, keepdim=True)
    return (cosine - low) / (high - low).clamp_min(EPS)


def grad_eclip_scores(
    grad_cls: Tensor, q: Tensor, k: Tensor, v: Tensor, patches: slice, key_similarity: bool = True
) -> Tensor:
    """Per-patch Grad-ECLIP scores before the ReLU for one block.

    Args:
        grad_cls: Gradient of the score w.r.t. the attention output at the class token, B x C.
        q, k, v: Queries, keys and values, B x N x C (heads concatenated).
        patches: The slice of the N tokens holding the patch grid.
        key_similarity: Weight by the loosened attention lambda; False drops it (the authors' ablation).

    Returns:
        B x T scores ``sum_c g_c v_ic lambda_i`` (or ``sum_c g_c v_ic``) over the T patch tokens.
    """
    scores = (grad_cls[:, None] * v[:, patches]).sum(-1)
    return scores * loosened_attention(q[:, 0], k[:, patches]) if key_similarity else scores


@ATTRIBUTIONS.register("grad_eclip", help="gradient-weighted values with loosened attention (Zhao et al. 2024)")
class GradECLIP(Attribution):
    """Grad-ECLIP maps of a ViT of any backend (Zhao et al. 2024).

    The query/key cosine runs over all heads' channels concatenated, and the gradient is that of the
    model's own (multi-head) forward pass. With ``blocks > 1`` each of the last ``blocks`` blocks gives
    its own ReLU'd map and the maps are summed, as the authors' image code does.

    Args:
        blocks: Number of last blocks whose maps are summed (default 1, the last block only).
        use_key_similarity: Weight values by the loosened attention lambda (default True); False
            gives the authors' "without key similarity" ablation.
    """

    name: ClassVar[str] = "grad_eclip"
    supports: ClassVar[frozenset[EncoderKind]] = frozenset({"vit"})

    def __init__(self, blocks: int = 1, use_key_similarity: bool = True) -> None:
        if blocks < 1:
            raise ValueError(f"blocks must be >= 1, got {blocks}")
        self.blocks = blocks
        self.use_key_similarity = use_key_similarity

    def attribute(self, encoder: Encoder, images: Tensor, target: Target) -> Tensor:
        depth = len(encoder.blocks)
        if self.blocks > depth:
            raise ValueError(f"blocks={self.blocks} exceeds the {depth} blocks of {encoder.name!r}")
        chosen = list(range(depth - self.blocks, depth))
        keep = ("q", "k", "v", "context")
        with eval_with_grad(encoder), AttentionRecorder(encoder, blocks=chosen, keep=keep) as rec:
            score = target.score(encoder(images.detach()))
            contexts = [rec.get(b, "context") for b in chosen]
            grads = torch.autograd.grad(score.sum(), contexts)
        patches = encoder.patch_slice(contexts[0].shape[1])
        total = 0.0
        for block, grad in zip(chosen, grads, strict=True):
            q, k, v = (rec.get(block, f).detach().float() for f in ("q", "k", "v"))
            scores = grad_eclip_scores(grad[:, 0].float(), q, k, v, patches, self.use_key_similarity)
            total = total + F.relu(scores)
        return upsample(encoder.token_grid(total), tuple(images.shape[-2:]))
