"""The toy CLIP's recipe (architecture and training hyper-parameters) and the cache key it trains under.

The key hashes the recipe and :data:`TRAINER_VERSION` (:class:`aft_bench.toys.recipe.Recipe`); the cache key adds a
fingerprint of the shapes world, so a change to any of them trains a new toy instead of reusing a stale one.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, ClassVar

from aft_bench.data.shapes import CLASSNAMES, generate_batch
from aft_bench.data.shortcut import SHORTCUT_AMPLITUDE, check_amplitude
from aft_bench.toys.recipe import Recipe

# Bump when the training code changes what a recipe produces. 2: always 1 CPU thread (was 1 or 2, picked by
# timing); 3: always 2 CPU threads.
TRAINER_VERSION = 3
# Number of leading dihedral codes (see :func:`aft_bench.toys.clip.data.dihedral`) each augmentation draws from.
AUGMENTATIONS: dict[str, int] = {"none": 1, "hflip": 2, "dihedral": 8}


@dataclass(frozen=True)
class ToyRecipe(Recipe):
    """Architecture and training hyper-parameters of the toy CLIP; its :meth:`cache_key` names the cache entry.

    Attributes:
        image_size: Input side in pixels.
        patch_size: ViT patch side (``image_size / patch_size`` is the token grid side).
        vision_width, vision_layers, vision_heads, vision_mlp_ratio: ViT tower shape.
        pos_embed: open_clip ``pos_embed_type`` of the ViT: ``"sin_cos_2d"`` (fixed 2-D sine-cosine
            embedding; neighbouring patches start out similar, which the mimetic attention below turns
            into local attention) or ``"learnable"``.
        mimetic: ``(alpha_qk, beta_qk, alpha_vo, beta_vo)`` of the mimetic initialisation of the ViT's
            attention (:func:`aft_bench.toys.clip.model.mimetic_init`), or ``None`` for open_clip's default
            initialisation.
        text_width, text_layers, text_heads, context_length, vocab_size: Text tower shape (the
            vocabulary is open_clip's BPE).
        embed_dim: Joint embedding size.
        mean, std: Per-channel input normalisation.
        steps, batch_size, lr, warmup, weight_decay: Optimisation (AdamW, linear warm-up over
            ``warmup`` steps, then cosine decay to zero).
        pool_size: Number of train-split images rendered once and sampled for the batches.
        augment: Random symmetries applied to each sampled image (:data:`AUGMENTATIONS`): ``"none"``,
            ``"hflip"`` (mirror left-right) or ``"dihedral"`` (flips and transposes: all 8 symmetries of
            the square). Mirroring leaves every shape class unchanged.
        seed: Seed of the initial weights and of the batch order.
        data_seed: World seed of the training images (train split).
        eval_size, eval_seed: Held-out test-split images for the zero-shot accuracy on the card.
        shortcut: Amplitude (1/255 units) of the planted class pattern on every training and evaluation image
            (:mod:`aft_bench.data.shortcut`; the ``toy-shortcut`` encoder); 0, the default, for the plain world. Left
            out of :meth:`to_dict` (and so of the key) at 0, so the plain toy's cache key predates the field.
        conflict: Share of the training pool whose object is of another class than its caption and its planted
            pattern (:func:`aft_bench.toys.clip.data.render_pool`), so that on the training images the pattern predicts
            the caption more often than the object does, the condition under which Ilyas et al. (2019) find a
            model relying on a non-robust feature. Evaluation images are unchanged (object, pattern and caption
            agree). Needs ``shortcut > 0``; left out of the key at 0 like ``shortcut``.
    """

    image_size: int = 64
    patch_size: int = 8
    vision_width: int = 64
    vision_layers: int = 4
    vision_heads: int = 4
    vision_mlp_ratio: float = 2.0
    pos_embed: str = "sin_cos_2d"
    mimetic: tuple[float, float, float, float] | None = (0.7, 0.7, 0.4, 0.4)
    text_width: int = 64
    text_layers: int = 2
    text_heads: int = 4
    context_length: int = 16
    vocab_size: int = 49408
    embed_dim: int = 64
    mean: tuple[float, float, float] = (0.5, 0.5, 0.5)
    std: tuple[float, float, float] = (0.5, 0.5, 0.5)
    steps: int = 1400
    batch_size: int = 64
    lr: float = 2e-3
    warmup: int = 50
    weight_decay: float = 0.1
    pool_size: int = 10_000
    augment: str = "hflip"
    seed: int = 0
    data_seed: int = 0
    eval_size: int = 500
    eval_seed: int = 0
    shortcut: float = 0.0
    conflict: float = 0.0

    trainer_version: ClassVar[int] = TRAINER_VERSION
    cache_prefix: ClassVar[str] = "toy"
    left_out_at_zero: ClassVar[tuple[str, ...]] = ("shortcut", "conflict")

    def __post_init__(self) -> None:
        check_amplitude(self.shortcut)
        if not 0.0 <= self.conflict < 1.0 or (self.conflict and not self.shortcut):
            raise ValueError(f"ToyRecipe: conflict={self.conflict!r} must be in [0, 1), and above 0 only with a "
                             f"planted pattern (shortcut={self.shortcut!r})")
        if self.image_size % self.patch_size:
            raise ValueError(f"ToyRecipe: image_size={self.image_size} is not a multiple of "
                             f"patch_size={self.patch_size}")
        self._require_divisible("vision_width", "vision_heads")
        self._require_divisible("text_width", "text_heads")
        if self.augment not in AUGMENTATIONS:
            raise ValueError(f"ToyRecipe: augment={self.augment!r}; use one of {sorted(AUGMENTATIONS)}")
        self._require_positive("steps", "batch_size", "pool_size", "eval_size")
        self._require_schedule()

    def model_cfg(self) -> dict[str, Any]:
        """The open_clip ``CLIP`` config dict (as in open_clip's ``model_configs/*.json``)."""
        return {
            "embed_dim": self.embed_dim,
            "vision_cfg": {
                "image_size": self.image_size,
                "patch_size": self.patch_size,
                "width": self.vision_width,
                "layers": self.vision_layers,
                "head_width": self.vision_width // self.vision_heads,
                "mlp_ratio": self.vision_mlp_ratio,
                "pos_embed_type": self.pos_embed,
            },
            "text_cfg": {
                "context_length": self.context_length,
                "vocab_size": self.vocab_size,
                "width": self.text_width,
                "heads": self.text_heads,
                "layers": self.text_layers,
            },
        }

    def cache_key(self) -> str:
        """Cache directory name of the recipe's toy: ``toy-<recipe key>-<world fingerprint>``."""
        return f"{super().cache_key()}-{world_fingerprint(self)}"


DEFAULT_RECIPE = ToyRecipe()

SHORTCUT_CONFLICT = 0.15
"""Conflict share of the ``toy-shortcut`` CLIP's training pool: with none, the toy follows a swapped pattern on 16% of
the images; with 5% on 51%; with 15% on 95% (README, "The planted-shortcut world")."""

SHORTCUT_RECIPE = ToyRecipe(shortcut=SHORTCUT_AMPLITUDE, conflict=SHORTCUT_CONFLICT)
"""The ``toy-shortcut`` CLIP: the default recipe on the shapes world with the planted pattern, the pattern predicting
the caption on the whole pool and the object on 85% of it."""


def world_fingerprint(recipe: ToyRecipe) -> str:
    """Short hash of the shapes world the recipe trains on (class names and a few rendered samples).

    Part of the cache key, so that a change to the world's generator retrains the toy even when the
    recipe is unchanged.
    """
    images, masks, labels = generate_batch(recipe.data_seed, "train", 0, 4, recipe.image_size, recipe.shortcut)
    digest = hashlib.sha256(json.dumps(CLASSNAMES).encode())
    for tensor in (images, masks, labels):
        digest.update(tensor.numpy().tobytes())
    return digest.hexdigest()[:8]
