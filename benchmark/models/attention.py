"""The explicit attention forward ``softmax(Q K^T / sqrt(d)) V`` (Vaswani et al. 2017) that the backends swap in for a
fused one while attention probabilities are recorded (:mod:`aft_bench.models.attention_recorder`), with the
class-token-only variant and the additive mask they share."""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import Tensor

HEAD_REDUCTIONS: dict[str, Callable[[Tensor], Tensor]] = {
    "mean": lambda p: p.mean(dim=1),
    "max": lambda p: p.amax(dim=1),
    "min": lambda p: p.amin(dim=1),
}


# ---------------------------------------------------------------------------------------- explicit attention
def explicit_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    mask: Tensor | None = None,
    qk_norm: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None = None,
    dropout: float = 0.0,
) -> tuple[Tensor, Tensor, Tensor, Tensor, Tensor]:
    """softmax(Q K^T / sqrt(d) + mask) V (Vaswani et al. 2017) on batch-first projections.

    Args:
        q, k, v: B x N x C queries, keys and values (heads concatenated along channels).
        heads: Number of heads (C / heads channels each).
        mask: Additive mask broadcasting to B x heads x N x N.
        qk_norm: Per-head normalisations of queries and keys (open_clip's and timm's QK norm).
        dropout: Dropout on the probabilities (training only).

    Returns:
        (probs B x heads x N x N, q, k, v, context B x N x C); q and k after any QK norm.
    """
    batch, tokens, width = q.shape
    qh, kh, vh = (t.reshape(batch, tokens, heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if qk_norm is not None:
        qh, kh = qk_norm[0](qh), qk_norm[1](kh)
        q, k = (t.transpose(1, 2).reshape(batch, tokens, width) for t in (qh, kh))
    logits = (qh * (1.0 / math.sqrt(width // heads))) @ kh.transpose(-1, -2)
    if mask is not None:
        logits = logits + mask
    probs = logits.softmax(dim=-1)
    if dropout > 0.0:
        probs = F.dropout(probs, p=dropout)
    context = (probs @ vh).transpose(1, 2).reshape(batch, tokens, width)
    return probs, q, k, v, context


def query_attention(
    q: Tensor,
    k: Tensor,
    v: Tensor,
    heads: int,
    qk_norm: tuple[Callable[[Tensor], Tensor], Callable[[Tensor], Tensor]] | None = None,
) -> Tensor:
    """Fused attention of M queries (B x M x C) over N keys and values (B x N x C) -> context B x M x C.

    What a block computes for a few tokens only (the class token of a ViT's last block, whose other outputs a
    class-token embedding never reads).
    """
    batch, width = q.shape[0], q.shape[-1]
    qh, kh, vh = (t.reshape(batch, t.shape[1], heads, width // heads).transpose(1, 2) for t in (q, k, v))
    if qk_norm is not None:
        qh, kh = qk_norm[0](qh), qk_norm[1](kh)
    return F.scaled_dot_product_attention(qh, kh, vh).transpose(1, 2).reshape(batch, q.shape[1], width)


def additive_mask(mask: Tensor | None, dtype: torch.dtype) -> Tensor | None:
    """A boolean (True = masked) or additive mask as an additive float mask."""
    if mask is None:
        return None
    if mask.dtype == torch.bool:
        return torch.zeros(mask.shape, dtype=dtype, device=mask.device).masked_fill(mask, float("-inf"))
    return mask.to(dtype)


