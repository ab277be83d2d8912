"""Named recipes: the paper's runs (Table 2 / Table 9) and the toy encoders of the embedded default.

Paper runs (appendix A.3): ImageNet train set at 224 x 224, 2 epochs, PGD 10 steps of 1/255, AdamW
(0.9, 0.95), weight decay 1e-4, peak lr 1e-5 with warm-up and cosine decay, batch 128 (64 for
ViT-L-14), sigma = eta = 1/255. ``--data`` must point at the ImageNet train folder. Names:
``{arch}-aft-eps{1,2,4}`` for ViT-B-16, RN50, ViT-L-14 and ``vit-b-16-fare-eps{1,2,4}``.

Toy runs (``toy-aft``, ``toy-fare``): fine-tune the bundled toy CLIP on the shapes world in about a
minute on two CPU cores. :func:`load_toy_aft` / :func:`load_toy_fare` are the encoder registry's
factories: they train on first use and cache the result under a hash of the recipe and of the toy
it starts from.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from aft_bench.encoder import Encoder

log = logging.getLogger(__name__)

TRAINER_VERSION = 1  # bump when a code change alters what a toy preset trains (invalidates the cache)

_PAPER_COMMON: dict[str, Any] = {
    "data": "imagenet-train",  # placeholder: refused with a message until --data /path/to/imagenet/train
    "epochs": 2.0, "lr": 1e-5, "weight_decay": 1e-4, "beta1": 0.9, "beta2": 0.95,
    "pgd_steps": 10, "pgd_step_size": 1.0, "eta": 1.0, "sigma": 1.0,
}
_ARCHS: dict[str, tuple[str, int]] = {"vit-b-16": ("ViT-B-16:openai", 128), "rn50": ("RN50:openai", 128),
                                      "vit-l-14": ("ViT-L-14:openai", 64)}


def _paper_presets() -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for short, (spec, batch) in _ARCHS.items():
        for eps in (1, 2, 4):
            out[f"{short}-aft-eps{eps}"] = {**_PAPER_COMMON, "encoder": spec, "batch_size": batch,
                                            "objective": "aft", "eps": float(eps)}
    for eps in (1, 2, 4):
        out[f"vit-b-16-fare-eps{eps}"] = {**_PAPER_COMMON, "encoder": "ViT-B-16:openai", "batch_size": 128,
                                          "objective": "fare", "eps": float(eps), "sigma": 0.0, "eta": 0.0}
    return out


_TOY_COMMON: dict[str, Any] = {
    # The paper's eps, eta, sigma and PGD (10 steps of 1/255) and its optimiser, with a 10x learning
    # rate so that 150 steps of batch 32 on 64 x 64 images finish in about a minute on two CPU cores.
    "encoder": "toy", "data": "shapes:4096", "batch_size": 32, "max_steps": 150, "lr": 1e-4,
    "warmup": 0.1, "weight_decay": 1e-4, "pgd_steps": 10, "pgd_step_size": 1.0, "eps": 4.0,
    "save_every": 50, "seed": 0,
}
PRESETS: dict[str, dict[str, Any]] = {
    **_paper_presets(),
    "toy-aft": {**_TOY_COMMON, "objective": "aft", "eta": 1.0, "sigma": 1.0},
    "toy-fare": {**_TOY_COMMON, "objective": "fare", "eta": 0.0, "sigma": 0.0},
}


def _load_toy_preset(preset: str, device: str | torch.device) -> Encoder:
    """Trains ``preset`` on the cached toy CLIP once, caches it, and loads it."""
    from aft_bench.cache import cached
    from aft_bench.loading import load_encoder
    from aft_bench.toy import load_toy_encoder
    from aft_bench.training.config import TrainConfig
    from aft_bench.training.trainer import ENCODER_NAME, train

    base = load_toy_encoder("cpu")
    config = TrainConfig(**PRESETS[preset], preset=preset, name=preset, device="cpu")
    toy_key = base.card.get("cache_key", base.card.get("recipe_key", "toy"))  # changes with the recipe and the world
    key = f"{preset}-v{TRAINER_VERSION}-{config.recipe_hash()}-{toy_key}"

    def build(directory: Path) -> None:
        log.info("fine-tuning %s from the toy CLIP once (recipe %s); it is cached for later runs", preset, key)
        threads = torch.get_num_threads()
        try:
            train(config.replace(out=str(directory)))
        finally:
            torch.set_num_threads(threads)
        (directory / "checkpoint.pt").unlink(missing_ok=True)

    path = cached(key, build, resumable=True) / ENCODER_NAME  # a killed fine-tune continues from its checkpoint
    encoder = load_encoder(f"ckpt:{path}", device=device)
    encoder.name = preset
    return encoder


def load_toy_aft(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-aft`` encoder: the toy CLIP after AFT (paper Eq. 7) on the shapes world."""
    return _load_toy_preset("toy-aft", device)


def load_toy_fare(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-fare`` encoder: the toy CLIP after FARE (Schlarmann et al. 2024) on the shapes world."""
    return _load_toy_preset("toy-fare", device)
