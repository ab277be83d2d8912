"""The toy VLM's recipe (language model shape and training hyper-parameters) and the cache key it trains under.

The toy VLM is LLaVA-1.5's architecture (Liu et al. 2023, "Improved baselines with visual instruction tuning") at
toy scale: the toy CLIP's image tower, LLaVA-1.5's two-layer GELU projector, and a small Llama language model. The
key (:class:`aft_bench.toys.recipe.Recipe`) hashes the recipe, :data:`VLM_TRAINER_VERSION` and the toy CLIP's own
cache key (its recipe and the world's fingerprint), so a new toy CLIP, a change to the world or to the recipe builds a
new VLM instead of reusing a stale one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar

from transformers import CLIPVisionConfig, LlamaConfig, LlavaConfig

from aft_bench.toys.clip.recipe import DEFAULT_RECIPE, ToyRecipe
from aft_bench.toys.recipe import Recipe
from aft_bench.toys.vlm.tokenizer import BOS, EOS, PAD, SPECIAL_TOKENS

# Bump when the training code changes what a recipe produces. 2: the last LM layer at the answer's positions only.
VLM_TRAINER_VERSION = 2
IMAGE_TOKEN_ID = SPECIAL_TOKENS.index("<image>")
VISION_FEATURE_LAYER = -2  # LLaVA-1.5: the penultimate layer's patch tokens, the class token dropped
VISION_FEATURE_SELECT = "default"


@dataclass(frozen=True)
class VlmRecipe(Recipe):
    """Language model shape and training hyper-parameters of the toy VLM; :meth:`cache_key` names the cache entry.

    Attributes:
        toy: Recipe of the toy CLIP whose image tower the VLM sees through (frozen while the VLM trains).
        text_width, text_layers, text_heads, text_mlp: The Llama language model's hidden size, layers, attention
            heads and MLP width.
        steps, batch_size, lr, warmup, weight_decay: Optimisation of the projector and the language model (AdamW,
            linear warm-up over ``warmup`` steps, then cosine decay to zero).
        pool_size: Train-split images rendered once (world seed ``data_seed``) and sampled for the batches.
        checkpoint_every: Steps between checkpoints of an interrupted build (a killed build continues from the last).
        seed: Seed of the initial weights and of the batch order.
        data_seed: World seed of the training images (train split).
        eval_size, eval_seed: Held-out test-split images whose greedy answers give the card's accuracy.
        max_new_tokens: Token limit of the greedy answers on the card.
    """

    toy: ToyRecipe = field(default=DEFAULT_RECIPE)
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    text_mlp: int = 128
    steps: int = 600
    batch_size: int = 64
    lr: float = 3e-3
    warmup: int = 30
    weight_decay: float = 0.01
    pool_size: int = 8_000
    checkpoint_every: int = 100
    seed: int = 0
    data_seed: int = 0
    eval_size: int = 500
    eval_seed: int = 0
    max_new_tokens: int = 4

    trainer_version: ClassVar[int] = VLM_TRAINER_VERSION
    cache_prefix: ClassVar[str] = "toy-vlm"

    def __post_init__(self) -> None:
        self._require_divisible("text_width", "text_heads")
        self._require_positive("text_width", "text_layers", "text_heads", "text_mlp", "steps", "batch_size",
                               "pool_size", "checkpoint_every", "eval_size", "max_new_tokens")
        self._require_schedule()
        if self.batch_size > self.pool_size:
            raise ValueError(f"VlmRecipe: batch_size={self.batch_size} exceeds pool_size={self.pool_size}")

    @property
    def grid(self) -> int:
        """Side of the toy CLIP's patch grid."""
        return self.toy.image_size // self.toy.patch_size

    @property
    def image_seq_length(self) -> int:
        """Image tokens in the prompt: one per patch (the class token dropped)."""
        return self.grid**2

    def llava_config(self, vision: CLIPVisionConfig, vocab_size: int) -> LlavaConfig:
        """The ``LlavaConfig``: ``vision`` (the toy CLIP's tower), LLaVA-1.5's projector and feature choice, a Llama LM.

        Args:
            vision: The toy CLIP's vision config (:func:`aft_bench.models.convert.vision_config`).
            vocab_size: Size of the toy tokenizer's vocabulary.
        """
        ids = {token: SPECIAL_TOKENS.index(token) for token in (PAD, BOS, EOS)}
        text = LlamaConfig(
            vocab_size=vocab_size, hidden_size=self.text_width, intermediate_size=self.text_mlp,
            num_hidden_layers=self.text_layers, num_attention_heads=self.text_heads,
            max_position_embeddings=4 * (self.image_seq_length + 128), pad_token_id=ids[PAD],
            bos_token_id=ids[BOS], eos_token_id=ids[EOS], tie_word_embeddings=False,
        )
        return LlavaConfig(
            vision_config=vision, text_config=text, image_token_index=IMAGE_TOKEN_ID,
            image_seq_length=self.image_seq_length, projector_hidden_act="gelu",
            vision_feature_select_strategy=VISION_FEATURE_SELECT, vision_feature_layer=VISION_FEATURE_LAYER,
        )


DEFAULT_VLM_RECIPE = VlmRecipe()
