"""The toy CLIP's architecture: open_clip's ``CLIP`` with mimetically initialised attention."""

from __future__ import annotations

import math
from typing import Any

import torch

from aft_bench.models.backends.open_clip_models import build_model
from aft_bench.toys.clip.recipe import ToyRecipe


@torch.no_grad()
def mimetic_init(visual: torch.nn.Module, alpha_qk: float, beta_qk: float, alpha_vo: float, beta_vo: float) -> None:
    """Mimetic initialisation of a ViT's self-attention (Trockman & Kolter 2023, "Mimetic initialization of
    self-attention layers", ICML).

    Per head, the query and key weights are set so that ``W_q^T W_k`` is the best rank-``head_dim``
    approximation of ``alpha_qk * Z + beta_qk * I``; the value and output weights so that
    ``W_v^T W_o^T = alpha_vo * Z' - beta_vo * I`` (``Z, Z'`` with i.i.d. N(0, 1/width) entries), both
    factored by an SVD. With the sine-cosine position embedding the attention then starts out local (a
    token attends to itself and its neighbours), the pattern of pretrained ViTs, and small ViTs trained
    from scratch learn markedly faster. Draws from the global torch RNG.
    """
    for block in visual.transformer.resblocks:
        attn = block.attn
        width, heads = attn.embed_dim, attn.num_heads
        head_dim = width // heads
        eye = torch.eye(width)
        weight = attn.in_proj_weight  # rows: [W_q; W_k; W_v], each width x width (out x in)
        for head in range(heads):
            query = slice(head * head_dim, (head + 1) * head_dim)
            key = slice(width + head * head_dim, width + (head + 1) * head_dim)
            u, s, vh = torch.linalg.svd(alpha_qk * torch.randn(width, width) / math.sqrt(width) + beta_qk * eye)
            root = s[:head_dim].sqrt()
            weight[query] = (u[:, :head_dim] * root).T
            weight[key] = (vh[:head_dim].T * root).T
        u, s, vh = torch.linalg.svd(alpha_vo * torch.randn(width, width) / math.sqrt(width) - beta_vo * eye)
        root = s.sqrt()
        weight[2 * width :] = (u * root).T
        attn.out_proj.weight.copy_((root[:, None] * vh).T)


def build_toy_model(recipe: ToyRecipe) -> Any:
    """The randomly initialised open_clip ``CLIP`` of ``recipe`` (global torch RNG), mimetic attention if asked."""
    model = build_model(recipe.model_cfg())
    if recipe.mimetic is not None:
        mimetic_init(model.visual, *recipe.mimetic)
    return model
