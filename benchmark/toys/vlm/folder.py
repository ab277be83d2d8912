"""The toy VLM: a LLaVA-1.5-layout model over the toy CLIP, built on first use into the user cache, then reused.

Paper section 4.3 and appendix A.4 score the attention maps of LLaVA with the original and with the AFT vision
encoder; on machines without LLaVA's weights, the embedded world needs a VLM of its own. The toy VLM is
``LlavaForConditionalGeneration`` with a small config (:mod:`aft_bench.toys.vlm.model`): the toy CLIP's image tower
(frozen), LLaVA-1.5's projector, a small Llama language model and a tokenizer built locally
(:mod:`aft_bench.toys.vlm.tokenizer`), trained on the shapes world to answer appendix A.4's class question with the
class name (:mod:`aft_bench.toys.vlm.fit`). Like the paper, which swaps CLIP towers into one LLaVA, the VLM is trained
once on the plain toy CLIP and other towers (``toy-aft``, ``toy-fare``) are swapped into it without retraining.

:func:`toy_vlm_folder` returns the ``save_pretrained`` folder (model, processor and the card ``toy_vlm.json``,
with the held-out answer accuracy and the build's wall-clock and CPU seconds, the toy CLIP's own training not
counted), building it under the recipe's cache key (:mod:`aft_bench.toys.store`) when the cache does not hold it; a
killed build continues from its last checkpoint on the next call.
"""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Any

from aft_bench.core.atomic import atomic_write_text
from aft_bench.core.registries import VLMS
from aft_bench.results.result import package_versions
from aft_bench.toys.clip.store import load_toy_encoder
from aft_bench.toys.store import toy_artefact
from aft_bench.toys.vlm.accuracy import held_out_accuracy
from aft_bench.toys.vlm.fit import TRAINING_THREADS, fit_toy_vlm, question
from aft_bench.toys.vlm.recipe import DEFAULT_VLM_RECIPE, VLM_TRAINER_VERSION, VlmRecipe
from aft_bench.training.checkpoint import CHECKPOINT_NAME
from aft_bench.training.threads import use_threads

log = logging.getLogger(__name__)

CARD_NAME = "toy_vlm.json"


def build_toy_vlm_folder(recipe: VlmRecipe, folder: str | Path, progress: bool = True,
                         stop_at_step: int | None = None) -> dict[str, Any] | None:
    """Trains the toy VLM (continuing from ``folder``'s checkpoint if any) and saves it with its card into ``folder``.

    Args:
        recipe: The toy VLM's recipe (its toy CLIP is loaded from the cache, trained first if missing).
        folder: Where the model, the processor and the card go (the cache's work folder).
        progress: Report progress.
        stop_at_step: Stop after this step's checkpoint and save nothing else (tests of resuming).

    Returns:
        The card, or None when stopped at ``stop_at_step`` before the end.
    """
    folder = Path(folder)
    started = time.perf_counter()
    encoder = load_toy_encoder("cpu", recipe.toy)
    loaded, cpu_loaded = time.perf_counter(), time.process_time()
    model, processor, metrics = fit_toy_vlm(recipe, encoder, folder, progress, stop_at_step)
    if metrics["steps_done"] < recipe.steps:
        return None
    evaluating = time.perf_counter()
    with use_threads(TRAINING_THREADS, "evaluating the toy VLM"):
        accuracy, answers = held_out_accuracy(model, processor, question(), recipe.eval_size, recipe.eval_seed,
                                              recipe.toy.image_size, recipe.max_new_tokens)
    done = time.perf_counter()
    card = {
        "name": "toy-vlm",
        "architecture": "LlavaForConditionalGeneration (toy CLIP tower frozen, LLaVA-1.5 projector, Llama LM)",
        "recipe": recipe.to_dict(),
        "recipe_key": recipe.key(),
        "cache_key": recipe.cache_key(),
        "toy_clip_cache_key": recipe.toy.cache_key(),
        "trainer_version": VLM_TRAINER_VERSION,
        "prompt": question(),
        "data": f"shapes world, train split, seed {recipe.data_seed}, {recipe.pool_size} images",
        "answer_accuracy": round(accuracy, 4),
        "answer_n": recipe.eval_size,
        "answer_split": "test",
        "answer_seed": recipe.eval_seed,
        "answer_rule": "greedy decoding, the new tokens decoded without special tokens equal the class name",
        "answers_seen": sorted(set(answers)),
        "trainable_parameters": sum(p.numel() for p in model.parameters() if p.requires_grad),
        **metrics,
        "evaluation_seconds": round(done - evaluating, 2),
        "build_seconds": round(done - loaded, 2),
        "build_cpu_seconds": round(time.process_time() - cpu_loaded, 2),
        "toy_clip_load_seconds": round(loaded - started, 2),
        "versions": package_versions(),
    }
    model.save_pretrained(folder)
    processor.save_pretrained(folder)
    atomic_write_text(folder / CARD_NAME, json.dumps(card, indent=2) + "\n")
    (folder / CHECKPOINT_NAME).unlink(missing_ok=True)
    log.info("toy VLM built in %.1f s: greedy answer accuracy %.1f%% on %d test images",
             card["build_seconds"], 100 * accuracy, recipe.eval_size)
    return card


@VLMS.register("toy",
               help="the embedded toy LLaVA (toy CLIP tower, projector, small LM on the shapes world), built on use")
def toy_vlm_folder(recipe: VlmRecipe = DEFAULT_VLM_RECIPE) -> Path:
    """The cached toy VLM's ``save_pretrained`` folder (model + processor + card), built first if missing.

    ``LlavaForConditionalGeneration.from_pretrained(folder)`` and ``AutoProcessor.from_pretrained(folder)`` read it.
    """
    return toy_artefact(recipe, "toy VLM", lambda directory: build_toy_vlm_folder(recipe, directory), resumable=True)
