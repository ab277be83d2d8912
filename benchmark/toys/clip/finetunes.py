"""The toy CLIP after AFT, FARE, TeCoA and PMG-AFT (``toy-aft``, ``toy-fare``, ``toy-tecoa``, ``toy-pmg-aft``):
fine-tuned on first use, then cached.

:func:`load_toy_aft`, :func:`load_toy_fare`, :func:`load_toy_tecoa` and :func:`load_toy_pmg_aft` are the encoder
registry's factories (the default runs compare the first two; the other two are there to be named). Each trains its
preset (:data:`aft_bench.training.presets.PRESETS`) from the cached toy CLIP with the project's own
trainer, once, into the user cache under :func:`finetune_key`; a killed fine-tune continues from its
last checkpoint on the next call (a resumable cache build). The presets train on the toy CLIP's fixed
thread count (``threads=2``), so the cached weights are the same on every machine.
"""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from aft_bench.core.cache import cached
from aft_bench.core.registries import ENCODERS
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import load_encoder
from aft_bench.training.checkpoint import CHECKPOINT_NAME
from aft_bench.training.config import TrainConfig
from aft_bench.training.presets import PRESETS
from aft_bench.training.trainer import ENCODER_NAME, TRAINER_VERSION, train

log = logging.getLogger(__name__)


def finetune_key(config: TrainConfig, base: Encoder) -> str:
    """Cache directory name of a toy fine-tune: ``<preset>-v<TRAINER_VERSION>-<recipe hash>-<toy key>``.

    Args:
        config: The preset's recipe (``config.preset`` names it).
        base: The encoder it starts from (the toy CLIP), whose card's cache key changes with the toy's
            recipe and the world.
    """
    toy_key = base.card.get("cache_key", base.card.get("recipe_key", "toy"))
    return f"{config.preset}-v{TRAINER_VERSION}-{config.recipe_hash()}-{toy_key}"


def load_toy_finetune(preset: str, device: str | torch.device = "cpu") -> Encoder:
    """Trains ``preset`` from the cached toy CLIP once, caches the result, and loads it on ``device``."""
    config = TrainConfig(**PRESETS[preset], preset=preset, name=preset, device="cpu")
    key = finetune_key(config, load_encoder(config.encoder, "cpu"))  # the cached toy CLIP, trained on first use

    def build(directory: Path) -> None:
        log.info("fine-tuning %s from the toy CLIP once (recipe %s); it is cached for later runs", preset, key)
        train(config.replace(out=str(directory)))
        (directory / CHECKPOINT_NAME).unlink(missing_ok=True)

    path = cached(key, build, resumable=True) / ENCODER_NAME
    encoder = load_encoder(f"ckpt:{path}", device=device)
    encoder.name = preset
    return encoder


@ENCODERS.register("toy-aft",
                   help="the toy CLIP fine-tuned with AFT (eps 4/255, eta = sigma = 1/255), trained on first use")
def load_toy_aft(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-aft`` encoder: the toy CLIP after AFT (paper Eq. 7) on the shapes world."""
    return load_toy_finetune("toy-aft", device)


@ENCODERS.register("toy-fare", help="the toy CLIP fine-tuned with FARE (eps 4/255), trained on first use")
def load_toy_fare(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-fare`` encoder: the toy CLIP after FARE (Schlarmann et al. 2024) on the shapes world."""
    return load_toy_finetune("toy-fare", device)


@ENCODERS.register("toy-tecoa",
                   help="the toy CLIP fine-tuned with TeCoA on the shapes classes (eps 4/255), trained on first use")
def load_toy_tecoa(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-tecoa`` encoder: the toy CLIP after TeCoA (Mao et al. 2023) on the shapes world's classes."""
    return load_toy_finetune("toy-tecoa", device)


@ENCODERS.register("toy-shortcut-aft",
                   help="toy-shortcut fine-tuned with AFT (eps 4/255) on the planted-shortcut world, trained on first "
                        "use")
def load_toy_shortcut_aft(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-shortcut-aft`` encoder: the ``toy-shortcut`` CLIP after AFT on the planted-shortcut world."""
    return load_toy_finetune("toy-shortcut-aft", device)


@ENCODERS.register("toy-shortcut-fare",
                   help="toy-shortcut fine-tuned with FARE (eps 4/255) on the planted-shortcut world, trained on first"
                        " use")
def load_toy_shortcut_fare(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-shortcut-fare`` encoder: the ``toy-shortcut`` CLIP after FARE on the planted-shortcut world."""
    return load_toy_finetune("toy-shortcut-fare", device)


@ENCODERS.register("toy-pmg-aft",
                   help="the toy CLIP fine-tuned with PMG-AFT on the shapes classes (eps 4/255), trained on first use")
def load_toy_pmg_aft(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-pmg-aft`` encoder: the toy CLIP after PMG-AFT (Wang et al. 2024) on the shapes world's classes."""
    return load_toy_finetune("toy-pmg-aft", device)
