"""The toy VLM's model and processor: a ``LlavaForConditionalGeneration`` around the toy CLIP's image tower.

The vision tower is a ``transformers`` ``CLIPVisionModel`` holding the toy CLIP's image-tower weights, converted
by :mod:`aft_bench.models.convert` (the projection head, which LLaVA does not use, is left out); LLaVA-1.5's
projector and a small Llama language model start from the recipe's seed. The processor is a ``LlavaProcessor``
with a ``CLIPImageProcessor`` at the toy's input size and normalisation (a square image of that size passes
through unchanged) and the locally built tokenizer (:mod:`aft_bench.toys.vlm.tokenizer`), so
``AutoProcessor.from_pretrained`` reads the saved folder back.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from open_clip.transformer import VisionTransformer
from torch import Tensor
from transformers import CLIPImageProcessor, LlavaForConditionalGeneration, LlavaProcessor, PreTrainedTokenizerFast

from aft_bench.models.checkpoints import load_strict
from aft_bench.models.convert import open_clip_to_hf_state, vision_config
from aft_bench.toys.vlm.recipe import VISION_FEATURE_SELECT, VlmRecipe
from aft_bench.toys.vlm.tokenizer import build_toy_tokenizer

VISION_PREFIX = "vision_model."


def tower_state(visual: VisionTransformer, prefixed: bool = False) -> dict[str, Tensor]:
    """The open_clip ViT's weights in ``CLIPVisionModel`` keys (the projection head dropped).

    Args:
        visual: The open_clip ViT.
        prefixed: Keep the ``vision_model.`` prefix of ``CLIPVisionModelWithProjection``'s keys (the
            ``CLIPVisionModel`` of current ``transformers`` releases holds the same tensors without it).
    """
    layers = len(visual.transformer.resblocks)
    state = open_clip_to_hf_state(visual.state_dict(), layers)
    start = 0 if prefixed else len(VISION_PREFIX)
    return {k[start:]: v for k, v in state.items() if k.startswith(VISION_PREFIX)}


def load_tower(model: LlavaForConditionalGeneration, visual: VisionTransformer, source: str) -> None:
    """Puts the open_clip ViT's weights into the VLM's vision tower (strictly: every tensor, same shapes).

    Args:
        model: The VLM.
        visual: An open_clip ViT of the tower's architecture.
        source: What ``visual`` is, for the error message.

    Raises:
        aft_bench.models.checkpoints.CheckpointError: If the ViT's weights do not fit the tower (named in the message).
    """
    tower = model.model.vision_tower
    expected = tower.state_dict()
    buffers = {k: v for k, v in expected.items() if k.endswith("position_ids")}
    prefixed = any(k.startswith(VISION_PREFIX) for k in expected)
    load_strict(tower, {**tower_state(visual, prefixed), **buffers}, source,
                hint="the image tower must have the toy VLM's vision architecture")


def build_toy_vlm(recipe: VlmRecipe, visual: VisionTransformer, vocab_size: int) -> LlavaForConditionalGeneration:
    """The untrained toy VLM: the ViT's weights in the frozen vision tower, a fresh projector and language model.

    The fresh weights come from ``recipe.seed``; the global torch RNG state is left as it was.
    """
    config = recipe.llava_config(vision_config(visual), vocab_size)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(recipe.seed)
        model = LlavaForConditionalGeneration(config)
    load_tower(model, visual, "the toy CLIP's image tower")
    model.model.vision_tower.requires_grad_(False)
    model.generation_config.pad_token_id = config.text_config.pad_token_id
    model.generation_config.eos_token_id = config.text_config.eos_token_id
    model.generation_config.bos_token_id = config.text_config.bos_token_id
    model.generation_config.do_sample = False
    model.generation_config.max_new_tokens = recipe.max_new_tokens
    return model.eval()


def build_toy_processor(recipe: VlmRecipe, classnames: Sequence[str]) -> LlavaProcessor:
    """The ``LlavaProcessor``: the toy's input size and normalisation, one image token per patch, the toy tokenizer.

    The image processor resizes the shorter side to the toy's input size and centre-crops a square (an image of the
    toy's size is only rescaled to [0, 1] and normalised); the prompt's ``<image>`` becomes one token per patch, as
    LLaVA-1.5's processor writes it (patches plus the class token, less the class token for the ``"default"``
    feature choice).
    """
    toy = recipe.toy
    tokenizer: PreTrainedTokenizerFast = build_toy_tokenizer(classnames)
    images = CLIPImageProcessor(
        do_resize=True, size={"shortest_edge": toy.image_size}, do_center_crop=True,
        crop_size={"height": toy.image_size, "width": toy.image_size}, do_rescale=True, rescale_factor=1 / 255,
        do_normalize=True, image_mean=list(toy.mean), image_std=list(toy.std), do_convert_rgb=True,
    )
    return LlavaProcessor(image_processor=images, tokenizer=tokenizer, patch_size=toy.patch_size,
                          vision_feature_select_strategy=VISION_FEATURE_SELECT, num_additional_image_tokens=1)


def tower_features(model: LlavaForConditionalGeneration, pixel_values: Tensor) -> Tensor:
    """What the VLM's projector reads: the vision tower's hidden states at the feature layer, class token dropped
    (LLaVA-1.5's ``"default"`` choice), B x patches x width.

    The same selection as ``LlavaModel.get_image_features``, without the projector, so that the frozen tower's
    output can be computed once for a training pool.
    """
    config = model.config
    hidden = model.model.vision_tower(pixel_values, output_hidden_states=True).hidden_states
    selected = hidden[config.vision_feature_layer]
    return selected[:, 1:] if config.vision_feature_select_strategy == "default" else selected
