"""Weight conversion between an open_clip ``VisionTransformer`` and a ``transformers`` CLIP vision tower.

Both are the ViT of CLIP (Radford et al. 2021) with the same numbers in different containers:

===============================================  ================================================================
open_clip ``VisionTransformer``                  ``transformers`` ``CLIPVisionModelWithProjection``
===============================================  ================================================================
``conv1.weight``                                 ``vision_model.embeddings.patch_embedding.weight``
``class_embedding``                              ``vision_model.embeddings.class_embedding``
``positional_embedding``                         ``vision_model.embeddings.position_embedding.weight``
``ln_pre``                                       ``vision_model.pre_layrnorm``
``transformer.resblocks.I.ln_1`` / ``ln_2``      ``vision_model.encoder.layers.I.layer_norm1`` / ``layer_norm2``
``...attn.in_proj_weight`` / ``in_proj_bias``    ``...self_attn.q_proj``, ``k_proj``, ``v_proj`` (split in three)
``...attn.out_proj``                             ``...self_attn.out_proj``
``...mlp.c_fc`` / ``mlp.c_proj``                 ``...mlp.fc1`` / ``mlp.fc2``
``ln_post``                                      ``vision_model.post_layernorm``
``proj`` (width x dim)                           ``visual_projection.weight`` (dim x width, transposed)
===============================================  ================================================================

Only the plain CLIP ViT converts (class-token pooling, learnt positions, pre and post layer norms, no layer
scale, no attentional pooler, GELU or QuickGELU); anything else is refused naming what differs. The LLaVA
vision tower is a ``transformers`` CLIP, so VLM code reaches open_clip weights through here as well.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from open_clip.transformer import QuickGELU, VisionTransformer
from torch import Tensor, nn
from transformers import CLIPVisionConfig, CLIPVisionModelWithProjection

from aft_bench.models.encoder import UnsupportedEncoderError

#: open_clip activation type <-> transformers ``hidden_act``
ACTIVATIONS: dict[type, str] = {nn.GELU: "gelu", QuickGELU: "quick_gelu"}
OPEN_CLIP_BLOCK = "transformer.resblocks.{i}."
HF_LAYER = "vision_model.encoder.layers.{i}."
#: per-block keys that only change their names: open_clip suffix -> transformers suffix
BLOCK_RENAMES = {
    "ln_1": "layer_norm1", "ln_2": "layer_norm2", "attn.out_proj": "self_attn.out_proj",
    "mlp.c_fc": "mlp.fc1", "mlp.c_proj": "mlp.fc2",
}
#: tower keys that only change their names
TOWER_RENAMES = {
    "conv1.weight": "vision_model.embeddings.patch_embedding.weight",
    "class_embedding": "vision_model.embeddings.class_embedding",
    "positional_embedding": "vision_model.embeddings.position_embedding.weight",
    "ln_pre.weight": "vision_model.pre_layrnorm.weight", "ln_pre.bias": "vision_model.pre_layrnorm.bias",
    "ln_post.weight": "vision_model.post_layernorm.weight", "ln_post.bias": "vision_model.post_layernorm.bias",
}
QKV = ("q_proj", "k_proj", "v_proj")


def _refuse(what: str) -> UnsupportedEncoderError:
    return UnsupportedEncoderError(f"open_clip ViT -> transformers CLIP: {what} has no transformers CLIP counterpart")


def vision_config(visual: VisionTransformer) -> CLIPVisionConfig:
    """The ``CLIPVisionConfig`` of an open_clip ViT (refusing towers that do not convert)."""
    if not isinstance(visual, VisionTransformer):
        raise _refuse(f"a {type(visual).__name__} image tower")
    block = visual.transformer.resblocks[0]
    checks = {
        "attentional pooling": visual.attn_pool is not None,
        f"pool_type={visual.pool_type!r}": visual.pool_type != "tok",
        "final_ln_after_pool": visual.final_ln_after_pool,
        "no_ln_pre": isinstance(visual.ln_pre, nn.Identity),
        "layer scale": not isinstance(block.ls_1, nn.Identity),
        "a custom attention block": not isinstance(getattr(block, "attn", None), nn.MultiheadAttention),
        "a missing projection": visual.proj is None,
        f"activation {type(block.mlp.gelu).__name__}": type(block.mlp.gelu) not in ACTIVATIONS,
    }
    bad = [name for name, failed in checks.items() if failed]
    if bad:
        raise _refuse(", ".join(bad))
    width = visual.conv1.out_channels
    return CLIPVisionConfig(
        hidden_size=width, intermediate_size=block.mlp.c_fc.out_features,
        num_hidden_layers=len(visual.transformer.resblocks), num_attention_heads=block.attn.num_heads,
        image_size=int(visual.image_size[0]), patch_size=int(visual.patch_size[0]),
        projection_dim=int(visual.proj.shape[1]), hidden_act=ACTIVATIONS[type(block.mlp.gelu)],
        layer_norm_eps=float(visual.ln_pre.eps),
    )


def renamed_keys(layers: int) -> list[tuple[str, str]]:
    """(open_clip key, transformers key) of every tensor that only changes its name, for ``layers`` blocks."""
    pairs = list(TOWER_RENAMES.items())
    for i in range(layers):
        src, dst = OPEN_CLIP_BLOCK.format(i=i), HF_LAYER.format(i=i)
        pairs += [(f"{src}{old}.{leaf}", f"{dst}{new}.{leaf}") for old, new in BLOCK_RENAMES.items()
                  for leaf in ("weight", "bias")]
    return pairs


def open_clip_to_hf_state(state: Mapping[str, Tensor], layers: int) -> dict[str, Tensor]:
    """An open_clip ViT state dict (``model.visual.state_dict()``) in ``CLIPVisionModelWithProjection`` keys."""
    out = {new: state[old] for old, new in renamed_keys(layers)}
    out["visual_projection.weight"] = state["proj"].t()
    for i in range(layers):
        src, dst = OPEN_CLIP_BLOCK.format(i=i), HF_LAYER.format(i=i)
        for leaf in ("weight", "bias"):
            for name, part in zip(QKV, state[f"{src}attn.in_proj_{leaf}"].chunk(3, dim=0), strict=True):
                out[f"{dst}self_attn.{name}.{leaf}"] = part
    return {k: v.clone() for k, v in out.items()}


def hf_to_open_clip_state(state: Mapping[str, Tensor], layers: int) -> dict[str, Tensor]:
    """A ``CLIPVisionModelWithProjection`` state dict (``vision_model.*``, ``visual_projection.weight``) in open_clip
    ViT keys: the inverse of :func:`open_clip_to_hf_state` (exact, the fused in-projection re-concatenated)."""
    out = {old: state[new] for old, new in renamed_keys(layers)}
    out["proj"] = state["visual_projection.weight"].t()
    for i in range(layers):
        src, dst = HF_LAYER.format(i=i), OPEN_CLIP_BLOCK.format(i=i)
        for leaf in ("weight", "bias"):
            out[f"{dst}attn.in_proj_{leaf}"] = torch.cat([state[f"{src}self_attn.{n}.{leaf}"] for n in QKV], dim=0)
    return {k: v.clone().contiguous() for k, v in out.items()}


def open_clip_to_hf(visual: VisionTransformer) -> CLIPVisionModelWithProjection:
    """A ``CLIPVisionModelWithProjection`` with the weights of an open_clip ViT (same embeddings)."""
    config = vision_config(visual)
    model = CLIPVisionModelWithProjection(config)
    state = open_clip_to_hf_state(visual.state_dict(), config.num_hidden_layers)
    missing, unexpected = model.load_state_dict(state, strict=False)
    if [k for k in missing if not k.endswith("position_ids")] or unexpected:
        raise RuntimeError(f"conversion left keys missing {missing} or unexpected {unexpected}")
    return model.eval()


def open_clip_vision_cfg(config: CLIPVisionConfig) -> dict[str, Any]:
    """The open_clip ``vision_cfg`` (plus ``embed_dim`` and ``quick_gelu``) of a transformers CLIP vision config."""
    return {
        "embed_dim": int(config.projection_dim), "quick_gelu": config.hidden_act == "quick_gelu",
        "vision_cfg": {"image_size": int(config.image_size), "patch_size": int(config.patch_size),
                       "width": int(config.hidden_size), "layers": int(config.num_hidden_layers),
                       "head_width": int(config.hidden_size // config.num_attention_heads),
                       "mlp_ratio": config.intermediate_size / config.hidden_size},
    }


def hf_to_open_clip(model: nn.Module) -> VisionTransformer:
    """An open_clip ViT with the weights of a ``CLIPVisionModelWithProjection`` (or of a ``CLIPModel``'s image tower).

    Raises:
        UnsupportedEncoderError: For a transformers config that an open_clip ViT cannot hold (layer norm eps).
    """
    config = model.config.vision_config if hasattr(model.config, "vision_config") else model.config
    if abs(config.layer_norm_eps - 1e-5) > 1e-12:
        raise UnsupportedEncoderError(f"transformers CLIP -> open_clip ViT: layer_norm_eps={config.layer_norm_eps} "
                                      "(open_clip's LayerNorm uses 1e-5)")
    cfg = open_clip_vision_cfg(config)
    vision = cfg["vision_cfg"]
    visual = VisionTransformer(
        image_size=vision["image_size"], patch_size=vision["patch_size"], width=vision["width"],
        layers=vision["layers"], heads=vision["width"] // vision["head_width"], mlp_ratio=vision["mlp_ratio"],
        output_dim=cfg["embed_dim"], act_layer=QuickGELU if cfg["quick_gelu"] else nn.GELU,
    )
    state = {k: v for k, v in model.state_dict().items() if k.startswith(("vision_model.", "visual_projection."))}
    visual.load_state_dict(hf_to_open_clip_state(state, vision["layers"]), strict=True)
    return visual.eval()
