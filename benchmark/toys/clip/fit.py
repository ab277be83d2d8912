"""Training the toy CLIP from scratch with CLIP's objective (Radford et al. 2021), and its checkpoint.

AdamW with a linear warm-up and cosine decay on the de-duplicated contrastive loss
(:mod:`aft_bench.toys.clip.loss`), a sparse Adam for the token table, batches from a pre-rendered pool
(:mod:`aft_bench.toys.clip.data`), in the toys' step loop (:mod:`aft_bench.toys.fit`) on a fixed number of CPU
threads (:data:`TRAINING_THREADS`) so that the weights do not depend on the machine or on how busy it is.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from aft_bench.data.shapes import CLASSNAMES, caption
from aft_bench.models.backends.open_clip import OpenClipEncoder
from aft_bench.models.backends.open_clip_models import tokenizer_for
from aft_bench.models.encoder import Encoder
from aft_bench.models.loading import save_encoder
from aft_bench.results.result import package_versions
from aft_bench.toys.clip.data import batch_indices, dihedral, render_pool
from aft_bench.toys.clip.loss import deduplicated_clip_loss
from aft_bench.toys.clip.model import build_toy_model
from aft_bench.toys.clip.recipe import AUGMENTATIONS, TRAINER_VERSION, ToyRecipe, world_fingerprint
from aft_bench.toys.clip.zero_shot import zero_shot_accuracy
from aft_bench.toys.fit import Loop, Step, decay_groups, fit_steps, toy_training, warmup_cosine

log = logging.getLogger(__name__)

CHECKPOINT_NAME = "toy.safetensors"
# torch's CPU reductions split their work by thread, so the thread count changes the trained weights: the toy
# always trains on the same count. Two threads keep the cold start within budget on an idle 2-core machine
# (1400 steps in about 90 s, against about 280 s on one thread); a busy machine trains more slowly, but the
# same weights.
TRAINING_THREADS = 2


def _optimisers(model: torch.nn.Module, recipe: ToyRecipe) -> list[torch.optim.Optimizer]:
    """AdamW with weight decay on matrices only (gains, biases, embeddings and the logit scale are exempt,
    as in CLIP), plus a sparse Adam for the token table.

    The world's captions use a dozen of the 49408 BPE tokens; a dense AdamW update of the whole
    table (3M entries) would cost a tenth of every step, so the table takes sparse gradients and only its
    used rows are updated. (Freezing it instead costs several points of accuracy: the captions then differ
    only by tiny random token vectors.)
    """
    table = model.token_embedding
    dense = ((name, p) for name, p in model.named_parameters() if p.requires_grad and p is not table.weight)
    groups = decay_groups(dense, recipe.weight_decay, exempt="positional_embedding")
    adam = {"lr": recipe.lr, "betas": (0.9, 0.98), "eps": 1e-6}
    return [torch.optim.AdamW(groups, **adam), torch.optim.SparseAdam([table.weight], **adam)]


def _loop(recipe: ToyRecipe) -> Loop:
    """The bar shows the running loss and batch accuracy (averaged with weight ``1 - 0.9`` as they always were)."""
    return Loop("toy", "toy: training CLIP", recipe.lr, {"loss": ".3f", "acc": ".2f"}, decay=0.9, weight=1 - 0.9)


def fit_toy(recipe: ToyRecipe, progress: bool = True) -> tuple[Encoder, dict[str, Any]]:
    """Trains the toy CLIP from scratch in memory; returns the encoder and its training metrics.

    Deterministic on CPU for a given recipe, whatever the machine: the initial weights and the batch order
    come from ``recipe.seed`` (the global torch RNG state is restored afterwards), the images from
    ``recipe.data_seed``, and training runs on :data:`TRAINING_THREADS` threads (the previous setting is
    restored afterwards); the card records the count.

    Args:
        recipe: Architecture and hyper-parameters.
        progress: Report progress (rendering, and training with running loss and batch accuracy): a bar on a
            terminal, log lines otherwise (:func:`aft_bench.core.progress.progress_bar`).

    Returns:
        The encoder (eval mode) and ``training_seconds``, ``zero_shot_accuracy``, ``final_loss``, ...
    """
    started = time.perf_counter()
    with toy_training(TRAINING_THREADS, "training the toy CLIP", recipe.seed):
        model = build_toy_model(recipe)
        encoder = OpenClipEncoder(model, tokenizer_for(recipe.model_cfg()), name="toy", mean=recipe.mean,
                                  std=recipe.std)
        pool_images, pool_labels = render_pool(recipe, progress)
        rendered = time.perf_counter()
        tokens = encoder.tokenizer([caption(c) for c in range(len(CLASSNAMES))])
        optimisers = _optimisers(model, recipe)
        schedulers = warmup_cosine(optimisers, recipe.steps, recipe.warmup)
        model.token_embedding.sparse = True  # sparse gradients for the table while training (see _optimisers)
        generator = torch.Generator().manual_seed(recipe.seed)
        max_scale = math.log(100.0)

        def step(number: int, index: Tensor) -> Step:
            codes = torch.randint(0, AUGMENTATIONS[recipe.augment], (index.numel(),), generator=generator)
            images = dihedral(pool_images[index], codes).float().div_(255)
            classes, local = torch.unique(pool_labels[index], return_inverse=True)
            image_emb = encoder(images)
            text_emb = F.normalize(model.encode_text(tokens[classes]), dim=-1)

            @torch.no_grad()
            def after_update() -> Mapping[str, float]:
                model.logit_scale.clamp_(0, max_scale)
                return {"acc": ((image_emb @ text_emb.T).argmax(dim=1) == local).float().mean().item()}

            return Step(deduplicated_clip_loss(image_emb, text_emb, local, model.logit_scale), after_update)

        encoder.train()
        averages = fit_steps(batch_indices(recipe.pool_size, recipe.batch_size, recipe.steps, generator), step,
                             optimisers, schedulers, _loop(recipe), recipe.steps, progress=progress)
        model.token_embedding.sparse = False
        encoder.eval()
        trained = time.perf_counter()
        accuracy = zero_shot_accuracy(encoder, n=recipe.eval_size, seed=recipe.eval_seed, shortcut=recipe.shortcut)
    metrics = {
        "training_seconds": round(trained - started, 2),
        "render_seconds": round(rendered - started, 2),
        "optimisation_seconds": round(trained - rendered, 2),
        "threads": TRAINING_THREADS,
        "steps": recipe.steps,
        "final_loss": round(averages["loss"], 4),
        "final_batch_accuracy": round(averages["acc"], 4),
        "logit_scale": round(model.logit_scale.detach().exp().item(), 3),
        "zero_shot_accuracy": round(accuracy, 4),
        "zero_shot_n": recipe.eval_size,
        "zero_shot_split": "test",
        "zero_shot_seed": recipe.eval_seed,
    }
    log.info("toy CLIP trained in %.1f s (%d steps, %d threads): zero-shot top-1 %.1f%% on %d test images",
             metrics["training_seconds"], recipe.steps, TRAINING_THREADS, 100 * accuracy, recipe.eval_size)
    return encoder, metrics


def toy_card(recipe: ToyRecipe, metrics: dict[str, Any]) -> dict[str, Any]:
    """The JSON card of a trained toy: enough for ``load_encoder("ckpt:...")`` to rebuild it, plus provenance."""
    return {
        "name": "toy",
        "model_cfg": recipe.model_cfg(),
        "mean": list(recipe.mean),
        "std": list(recipe.std),
        "recipe": recipe.to_dict(),
        "recipe_key": recipe.key(),
        "world_fingerprint": world_fingerprint(recipe),
        "cache_key": recipe.cache_key(),
        "trainer_version": TRAINER_VERSION,
        "objective": "clip, identical captions merged (aft_bench.toy.deduplicated_clip_loss)",
        "data": f"shapes world, train split, seed {recipe.data_seed}, {recipe.pool_size} images"
                + (f", planted class pattern at {recipe.shortcut:g}/255" if recipe.shortcut else "")
                + (f", {recipe.conflict:.0%} of them captioned and patterned as another class than their object"
                   if recipe.conflict else ""),
        **metrics,
        "versions": package_versions(),
    }


def train_toy(recipe: ToyRecipe, out_dir: str | Path, progress: bool = True) -> dict[str, Any]:
    """Trains the toy CLIP (:func:`fit_toy`) and writes ``out_dir/toy.safetensors`` with its JSON card.

    Returns:
        The training metrics (also on the card).
    """
    encoder, metrics = fit_toy(recipe, progress)
    save_encoder(encoder, Path(out_dir) / CHECKPOINT_NAME, toy_card(recipe, metrics))
    return metrics
