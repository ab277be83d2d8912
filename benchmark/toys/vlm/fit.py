"""Training the toy VLM to answer appendix A.4's class question about shapes images, resumably.

LLaVA's recipe at toy scale (Liu et al. 2023): the vision tower stays frozen, the projector and the language model
learn the answer (the class name, then EOS) to ``llava_conversation(class_question(CLASSNAMES))`` for train-split
images, with the next-token loss on the answer only. The frozen tower's output does not change while training, so
it is computed once for the rendered pool; each step projects those features into the image positions of the
prompt and runs the language model, as ``LlavaForConditionalGeneration`` does with pixels (its last layer only
where the answer's logits need it: :func:`answer_logits`). The batches of step ``s`` are a pure function of
``(seed, s)`` (one shuffled permutation per epoch), so a build killed after a checkpoint continues from it to the
same weights as an uninterrupted one. Training runs on a fixed thread count (:data:`TRAINING_THREADS`), so the
weights are the same on every machine.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import Tensor
from transformers import LlavaForConditionalGeneration, LlavaProcessor
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

from aft_bench.core.progress import progress_bar
from aft_bench.core.seeding import sample_generator
from aft_bench.data.shapes import CLASSNAMES
from aft_bench.models.encoder import Encoder
from aft_bench.models.vlm.prompt import class_question, llava_conversation
from aft_bench.toys.clip.data import render_pool
from aft_bench.toys.fit import Loop, Step, decay_groups, fit_steps, toy_training, warmup_cosine
from aft_bench.toys.vlm.model import build_toy_processor, build_toy_vlm, tower_features
from aft_bench.toys.vlm.recipe import IMAGE_TOKEN_ID, VlmRecipe
from aft_bench.training.checkpoint import CHECKPOINT_NAME, ResumeError, load_checkpoint, save_checkpoint

log = logging.getLogger(__name__)

_FEATURE_CHUNK = 500
IGNORE = -100
# The thread count changes the floating-point result of CPU reductions, so the toy VLM always trains on the same
# count. One thread: its matrices are small (a 64-wide language model), and on a shared 2-core machine two threads
# spent most of each step waiting on each other (0.92 s a step on two threads against 0.23 s on one, at a load
# average of 5).
TRAINING_THREADS = 1


def question() -> str:
    """The prompt the toy VLM answers: appendix A.4's question about the shapes classes in LLaVA-1.5's conversation."""
    return llava_conversation(class_question(CLASSNAMES))


def encode_text(processor: LlavaProcessor, text: str, image_size: int) -> Tensor:
    """The token ids the processor gives ``text`` with an image (``<image>`` expanded to one token per patch)."""
    blank = np.zeros((image_size, image_size, 3), dtype=np.uint8)
    return processor(text=text, images=blank, return_tensors="pt").input_ids[0]


def answer_tokens(processor: LlavaProcessor, prompt_ids: Tensor, image_size: int) -> Tensor:
    """Per class, the token ids that follow the prompt in ``"<prompt> <class name>"`` then EOS (C x T, padded with
    :data:`IGNORE` where a name is shorter).

    Raises:
        ValueError: If a class name changes the tokens of the prompt before it (the answer would not follow it).
    """
    tokenizer = processor.tokenizer
    rows = []
    for name in CLASSNAMES:
        ids = encode_text(processor, f"{question()} {name}", image_size)
        if not torch.equal(ids[: prompt_ids.numel()], prompt_ids):
            raise ValueError(f"toy VLM: the answer {name!r} changes the tokens of the prompt before it")
        rows.append(torch.cat([ids[prompt_ids.numel():], torch.tensor([tokenizer.eos_token_id])]))
    width = max(row.numel() for row in rows)
    return torch.stack([F.pad(row, (0, width - row.numel()), value=IGNORE) for row in rows])


@torch.no_grad()
def pool_features(model: LlavaForConditionalGeneration, images: Tensor, recipe: VlmRecipe,
                  progress: bool = True) -> Tensor:
    """The frozen tower's features of every uint8 pool image (N x patches x width), in chunks."""
    mean = torch.tensor(recipe.toy.mean).view(1, 3, 1, 1)
    std = torch.tensor(recipe.toy.std).view(1, 3, 1, 1)
    chunks = []
    starts = range(0, images.shape[0], _FEATURE_CHUNK)
    for start in progress_bar(starts, desc="toy VLM: tower features", unit="chunk", enabled=progress, leave=False):
        pixels = (images[start : start + _FEATURE_CHUNK].float() / 255 - mean) / std
        chunks.append(tower_features(model, pixels))
    return torch.cat(chunks)


def batch_index(recipe: VlmRecipe, step: int) -> Tensor:
    """Pool indices of step ``step``'s batch: epoch ``e`` is one permutation drawn from ``(seed, e)``, cut in order."""
    per_epoch = recipe.pool_size // recipe.batch_size
    epoch, position = divmod(step, per_epoch)
    order = torch.randperm(recipe.pool_size, generator=sample_generator(recipe.seed, "toy-vlm-epoch", epoch))
    return order[position * recipe.batch_size : (position + 1) * recipe.batch_size]


def answer_logits(model: LlavaForConditionalGeneration, embeds: Tensor, first: int, count: int) -> Tensor:
    """The language model's logits at positions ``first .. first + count - 1`` of ``embeds`` (B x L x C), B x count x V.

    The same numbers as ``model(inputs_embeds=embeds).logits[:, first : first + count]``, at about half the cost:
    every layer but the last runs on the whole sequence; the last needs the keys and values of every position but
    its queries, output projection and MLP only at the answer's positions (the prompt's 160 positions otherwise pay
    for outputs nobody reads).
    """
    lm = model.model.language_model
    length = embeds.shape[1]
    positions = torch.arange(length, device=embeds.device).unsqueeze(0)
    cos, sin = lm.rotary_emb(embeds, positions)
    hidden = embeds
    for layer in lm.layers[:-1]:
        hidden = layer(hidden, attention_mask=None, position_ids=positions, position_embeddings=(cos, sin))
        hidden = hidden[0] if isinstance(hidden, tuple) else hidden
    last = lm.layers[-1]
    attention = last.self_attn
    rows = torch.arange(first, first + count, device=embeds.device)
    normed = last.input_layernorm(hidden)

    def heads(x: Tensor) -> Tensor:
        return x.view(x.shape[0], x.shape[1], -1, attention.head_dim).transpose(1, 2)

    query = heads(attention.q_proj(normed[:, rows]))
    key, value = heads(attention.k_proj(normed)), heads(attention.v_proj(normed))
    query, _ = apply_rotary_pos_emb(query, query, cos[:, rows], sin[:, rows])
    _, key = apply_rotary_pos_emb(key, key, cos, sin)
    causal = torch.arange(length, device=embeds.device).unsqueeze(0) <= rows.unsqueeze(1)
    mixed = F.scaled_dot_product_attention(query, key, value, attn_mask=causal)  # scale 1/sqrt(head_dim), as Llama's
    out = hidden[:, rows] + attention.o_proj(mixed.transpose(1, 2).reshape(embeds.shape[0], count, -1))
    out = out + last.mlp(last.post_attention_layernorm(out))
    return model.lm_head(lm.norm(out))


def answer_loss(model: LlavaForConditionalGeneration, features: Tensor, prompt_ids: Tensor, answers: Tensor) -> Tensor:
    """Next-token cross entropy of the answers (B x T) after the prompt, the tower's ``features`` (B x P x C) in the
    prompt's image positions (the merge ``LlavaModel`` does with the tower's output)."""
    batch = features.shape[0]
    ids = torch.cat([prompt_ids.expand(batch, -1), answers.clamp_min(0)], dim=1)
    embeds = model.get_input_embeddings()(ids)
    image = model.model.multi_modal_projector(features).to(embeds.dtype)
    embeds = embeds.masked_scatter((ids == IMAGE_TOKEN_ID).unsqueeze(-1), image)
    # the logits at position i predict token i + 1
    predicted = answer_logits(model, embeds, prompt_ids.numel() - 1, answers.shape[1])
    return F.cross_entropy(predicted.reshape(-1, predicted.shape[-1]), answers.reshape(-1), ignore_index=IGNORE)


def _trainable(model: LlavaForConditionalGeneration) -> Iterator[tuple[str, torch.nn.Parameter]]:
    return ((name, p) for name, p in model.named_parameters() if p.requires_grad)


def _optimiser(model: LlavaForConditionalGeneration, recipe: VlmRecipe) -> torch.optim.AdamW:
    """AdamW with weight decay on matrices only (norms, biases and the token table exempt)."""
    groups = decay_groups(_trainable(model), recipe.weight_decay, exempt="embed_tokens")
    return torch.optim.AdamW(groups, lr=recipe.lr, betas=(0.9, 0.98))


def _resume(work: Path, recipe: VlmRecipe, model: LlavaForConditionalGeneration, optimiser: torch.optim.Optimizer,
            scheduler: torch.optim.lr_scheduler.LRScheduler) -> int:
    """Loads ``work/checkpoint.pt`` when an interrupted build of this recipe left one; returns the step to start at.

    Raises:
        ResumeError: If the checkpoint was written by another recipe.
    """
    path = work / CHECKPOINT_NAME
    if not path.is_file():
        return 0
    state = load_checkpoint(path)
    if state.get("recipe_key") != recipe.key():
        raise ResumeError(f"{path} was written by toy VLM recipe {state.get('recipe_key')}, not {recipe.key()}; "
                          "delete the folder to build again")
    trainable = {name for name, _ in _trainable(model)}
    if set(state["model"]) != trainable:
        raise ResumeError(f"{path} holds other tensors than the toy VLM's trainable ones "
                          f"({sorted(set(state['model']) ^ trainable)[:5]}); delete the folder to build again")
    model.load_state_dict(state["model"], strict=False)  # the frozen tower is not in the checkpoint
    optimiser.load_state_dict(state["optimiser"])
    scheduler.load_state_dict(state["scheduler"])
    log.info("toy VLM: continuing the interrupted build from step %d of %d", state["step"], recipe.steps)
    return int(state["step"])


def _save(work: Path, recipe: VlmRecipe, step: int, model: LlavaForConditionalGeneration,
          optimiser: torch.optim.Optimizer, scheduler: torch.optim.lr_scheduler.LRScheduler) -> None:
    save_checkpoint(work / CHECKPOINT_NAME, {
        "step": step, "recipe_key": recipe.key(), "model": {name: p.detach() for name, p in _trainable(model)},
        "optimiser": optimiser.state_dict(), "scheduler": scheduler.state_dict(),
    })


def fit_toy_vlm(
    recipe: VlmRecipe, encoder: Encoder, work: str | Path, progress: bool = True, stop_at_step: int | None = None,
) -> tuple[LlavaForConditionalGeneration, LlavaProcessor, dict[str, Any]]:
    """Trains the toy VLM's projector and language model on the frozen tower of ``encoder`` (the toy CLIP).

    Deterministic on CPU for a given recipe and tower: the fresh weights and the batches come from ``recipe.seed``
    (the global torch RNG state is restored afterwards), the images from ``recipe.data_seed``, and training runs on
    :data:`TRAINING_THREADS` thread(s). A checkpoint is written to ``work`` every
    ``recipe.checkpoint_every`` steps and read back when ``work`` holds one.

    Args:
        recipe: The toy VLM's recipe.
        encoder: The toy CLIP of ``recipe.toy``, whose image tower the VLM gets.
        work: The build's folder (checkpoints).
        progress: Report progress (a bar on a terminal, log lines otherwise).
        stop_at_step: Stop after this step's checkpoint (tests of resuming); None trains to the end.

    Returns:
        The model (eval mode), its processor, and ``steps_done``, ``resumed_from_step``, ``final_loss`` and the
        seconds spent rendering, on tower features and optimising.
    """
    work = Path(work)
    started = time.perf_counter()
    with toy_training(TRAINING_THREADS, "training the toy VLM"):  # build_toy_vlm seeds the fresh weights
        processor = build_toy_processor(recipe, CLASSNAMES)
        model = build_toy_vlm(recipe, encoder.visual, len(processor.tokenizer))
        prompt_ids = encode_text(processor, question(), recipe.toy.image_size)
        answers = answer_tokens(processor, prompt_ids, recipe.toy.image_size)
        pool = dataclasses.replace(recipe.toy, pool_size=recipe.pool_size, data_seed=recipe.data_seed, shortcut=0.0)
        images, labels = render_pool(pool, progress)
        rendered = time.perf_counter()
        features = pool_features(model, images, recipe, progress)
        featured = time.perf_counter()
        optimiser = _optimiser(model, recipe)
        [scheduler] = warmup_cosine([optimiser], recipe.steps, recipe.warmup)
        first = _resume(work, recipe, model, optimiser, scheduler)
        last = recipe.steps if stop_at_step is None else min(recipe.steps, stop_at_step)

        def step(number: int, _: int) -> Step:
            index = batch_index(recipe, number)
            return Step(answer_loss(model, features[index], prompt_ids, answers[labels[index]]))

        def checkpoint(done: int) -> None:
            _save(work, recipe, done, model, optimiser, scheduler)

        loop = Loop("toy VLM", "toy VLM: training", recipe.lr, {"loss": ".4f"}, decay=0.9, weight=0.1,
                    checkpoint_every=recipe.checkpoint_every)
        model.train()
        averages = fit_steps(range(first, last), step, [optimiser], [scheduler], loop, last - first, first, progress,
                             checkpoint)
        model.eval()
    trained = time.perf_counter()
    metrics = {
        "steps_done": last, "resumed_from_step": first, "final_loss": round(averages["loss"], 5),
        "threads": TRAINING_THREADS, "render_seconds": round(rendered - started, 2),
        "feature_seconds": round(featured - rendered, 2), "optimisation_seconds": round(trained - featured, 2),
    }
    return model, processor, metrics
