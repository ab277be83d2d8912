"""Random-weight LLaVA models of any size, saved with ``save_pretrained`` (tests and benchmarks; no downloads).

:func:`random_llava_folder` writes a ``LlavaForConditionalGeneration`` built from a config (a CLIP vision tower, the
two-layer projector, a Llama language model) with the toy VLM's locally built word-level tokenizer over the class
question (:func:`aft_bench.toys.vlm.tokenizer.build_toy_tokenizer`), so :func:`aft_bench.models.vlm.loading.load_vlm`
reads the folder like any LLaVA checkpoint. :func:`llava_15_shapes` gives LLaVA-1.5's layout (336 px, patch 14,
576 image tokens, quick-GELU tower, feature layer -2) scaled down in width and depth.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig, LlavaForConditionalGeneration

from aft_bench.toys.vlm.tokenizer import build_toy_tokenizer


@dataclass(frozen=True)
class LlavaShape:
    """The numbers of a random LLaVA: its tower (``vision_*``, image and patch size, activation), its language
    model (``text_*``, key-value heads for grouped-query attention) and the tower layer the projector reads
    (``feature_layer``, LLaVA-1.5's -2; -1 for a one-layer tower)."""

    vision_width: int = 32
    vision_layers: int = 2
    vision_heads: int = 2
    vision_mlp: int = 64
    image_size: int = 32
    patch_size: int = 8
    hidden_act: str = "gelu"
    text_width: int = 32
    text_layers: int = 2
    text_heads: int = 4
    text_kv_heads: int = 2
    text_mlp: int = 64
    feature_layer: int = -2

    @classmethod
    def for_tower(cls, config: CLIPVisionConfig, **text: Any) -> LlavaShape:
        """The shape whose tower is ``config``'s (an encoder's :func:`aft_bench.models.convert.vision_config`, so the
        encoder fits it); ``text`` sets the language model's numbers or ``feature_layer``."""
        return cls(vision_width=config.hidden_size, vision_layers=config.num_hidden_layers,
                   vision_heads=config.num_attention_heads, vision_mlp=config.intermediate_size,
                   image_size=config.image_size, patch_size=config.patch_size, hidden_act=config.hidden_act, **text)


def llava_15_shapes(scale: int = 8) -> LlavaShape:
    """LLaVA-1.5-7B's layout (ViT-L/14-336 tower: 1024 wide, 24 layers; Vicuna-7B: 4096 wide, 32 layers, MLP
    11008) with widths divided by ``scale`` and depths by ``scale // 2`` (at least 2 layers); the image and patch
    sizes, and so the 576 image tokens, stay."""
    depth = max(1, scale // 2)
    return LlavaShape(vision_width=1024 // scale, vision_layers=max(2, 24 // depth), vision_heads=max(1, 16 // depth),
                      vision_mlp=4096 // scale, image_size=336, patch_size=14, hidden_act="quick_gelu",
                      text_width=4096 // scale, text_layers=max(2, 32 // depth), text_heads=max(1, 32 // depth),
                      text_kv_heads=max(1, 32 // depth), text_mlp=11008 // scale)


def random_llava_folder(folder: str | Path, classnames: Sequence[str], shape: LlavaShape = LlavaShape(),
                        seed: int = 0) -> Path:
    """Saves a random LLaVA of ``shape`` and its tokenizer (over the class question of ``classnames``) in
    ``folder``; returns it."""
    folder = Path(folder)
    tokenizer = build_toy_tokenizer(classnames)
    vision = CLIPVisionConfig(hidden_size=shape.vision_width, intermediate_size=shape.vision_mlp,
                              num_hidden_layers=shape.vision_layers, num_attention_heads=shape.vision_heads,
                              image_size=shape.image_size, patch_size=shape.patch_size, hidden_act=shape.hidden_act,
                              layer_norm_eps=1e-5, projection_dim=shape.vision_width)
    text = LlamaConfig(vocab_size=len(tokenizer), hidden_size=shape.text_width, intermediate_size=shape.text_mlp,
                       num_hidden_layers=shape.text_layers, num_attention_heads=shape.text_heads,
                       num_key_value_heads=shape.text_kv_heads, max_position_embeddings=2048,
                       bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id,
                       pad_token_id=tokenizer.pad_token_id)
    config = LlavaConfig(vision_config=vision, text_config=text,
                         image_token_id=tokenizer.convert_tokens_to_ids(tokenizer.image_token),
                         vision_feature_layer=shape.feature_layer, vision_feature_select_strategy="default",
                         projector_hidden_act="gelu")
    torch.manual_seed(seed)
    model = LlavaForConditionalGeneration(config).eval()
    model.generation_config.eos_token_id = tokenizer.eos_token_id
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    model.save_pretrained(folder, safe_serialization=True)
    tokenizer.save_pretrained(folder)
    return folder
