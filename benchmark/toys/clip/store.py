"""The cached toy CLIP: trained on first use into the user cache (:mod:`aft_bench.toys.store`), then loaded from it."""

from __future__ import annotations

from pathlib import Path

import torch

from aft_bench.core.registries import ENCODERS
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import load_encoder
from aft_bench.toys.clip.fit import CHECKPOINT_NAME, train_toy
from aft_bench.toys.clip.recipe import DEFAULT_RECIPE, SHORTCUT_RECIPE, ToyRecipe
from aft_bench.toys.store import toy_artefact


def toy_checkpoint(recipe: ToyRecipe = DEFAULT_RECIPE) -> Path:
    """Path of the cached toy checkpoint, training it first if the cache does not hold it."""
    return toy_artefact(recipe, "bundled toy CLIP", lambda directory: train_toy(recipe, directory)) / CHECKPOINT_NAME


@ENCODERS.register("toy", help="bundled tiny CLIP trained on the shapes world")
def load_toy_encoder(device: str | torch.device = "cpu", recipe: ToyRecipe = DEFAULT_RECIPE) -> Encoder:
    """The ``toy`` encoder: the cached toy CLIP, trained on first use (see :func:`train_toy`)."""
    return load_encoder(f"ckpt:{toy_checkpoint(recipe)}", device=device)


@ENCODERS.register("toy-shortcut",
                   help="a toy CLIP trained on the shapes world with a planted class pattern (2/255), trained on first"
                        " use")
def load_toy_shortcut_encoder(device: str | torch.device = "cpu") -> Encoder:
    """The ``toy-shortcut`` encoder: a toy CLIP trained on the shapes world with a planted class pattern
    (:data:`aft_bench.toys.clip.recipe.SHORTCUT_RECIPE`), trained on first use and cached like the toy."""
    encoder = load_toy_encoder(device, SHORTCUT_RECIPE)
    encoder.name = "toy-shortcut"
    return encoder
