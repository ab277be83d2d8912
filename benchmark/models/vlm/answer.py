"""A VLM's answer about each image and one composite attention map per answer token (paper section 4.3, Fig. 7).

Per batch: one greedy ``generate`` of the answers to appendix A.4's question, then one forward over the prompt and
the answers with :mod:`aft_bench.models.vlm.rows` attached, which keeps only each answer token's attention rows in the
LLM layers and the tower's head-mean matrices up to its feature layer; :mod:`aft_bench.models.vlm.composite` turns them
into a map per token at the image's size.

Which row belongs to a token (option ``query``): ``predicting`` [default] takes the row of the position whose
output predicts the token (the attention ``generate(output_attentions=True)`` returns at the step that emits
it: for the first token, the last prompt position); ``own`` takes the row of the token's own position.
An answer ends at the first end-of-sequence or padding token (neither has a map); an answer with no token gets
no map (:data:`aft_bench.metrics.tokens.NO_TOKENS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from aft_bench.models.vlm.composite import composite_weights, grid_to_image, llm_image_weights, vision_patch_matrix
from aft_bench.models.vlm.loading import VLM
from aft_bench.models.vlm.rows import RowCollector, collecting

QUERIES = {"predicting": -1, "own": 0}
"""Option ``query`` -> offset of a token's attention row from its own position."""


@dataclass(frozen=True)
class MapChoices:
    """How a composite map is made (see :mod:`aft_bench.models.vlm.composite`).

    Attributes:
        sink: Zero the first position's attention (the BOS sink) and renormalise. vision: Multiply with the
            tower's patch matrix (False: the LLM's image-token weights alone). llm_layers: LLM layers averaged
            (None: all). query: Which row is a token's (:data:`QUERIES`).
    """

    sink: bool = True
    vision: bool = True
    llm_layers: tuple[int, ...] | None = None
    query: str = "predicting"


@dataclass(frozen=True)
class Answer:
    """One image's answer: its token ids, each token's text, the decoded answer, and T x H x W maps (T tokens)."""

    token_ids: list[int]
    tokens: list[str]
    text: str
    maps: Tensor


def stop_ids(vlm: VLM) -> set[int]:
    """Token ids that end an answer: the generation config's and tokenizer's end-of-sequence and padding ids."""
    ids: set[int] = set()
    for value in (vlm.model.generation_config.eos_token_id, vlm.tokenizer.eos_token_id,
                  vlm.model.generation_config.pad_token_id, vlm.tokenizer.pad_token_id):
        if value is not None:
            ids.update([value] if isinstance(value, int) else list(value))
    return ids


def generate(vlm: VLM, pixels: Tensor, prompt: Tensor, max_new_tokens: int) -> list[list[int]]:
    """Greedy answers (token ids, up to the first stop token) of every image in ``pixels`` (normalised, B x 3 x H x
    W, in the VLM's dtype) to the expanded prompt ``prompt`` (1-D ids); the image placeholder token is never
    generated (it would be read as an image position)."""
    batch = prompt.to(vlm.device)[None].expand(len(pixels), -1)
    stops = stop_ids(vlm)
    pad = vlm.tokenizer.pad_token_id if vlm.tokenizer.pad_token_id is not None else min(stops, default=0)
    with torch.no_grad():
        out = vlm.model.generate(input_ids=batch, attention_mask=torch.ones_like(batch), pixel_values=pixels,
                                 max_new_tokens=max_new_tokens, do_sample=False, num_beams=1, pad_token_id=pad,
                                 suppress_tokens=[int(vlm.config.image_token_id)])
    answers = []
    for row in out[:, batch.shape[1]:].tolist():
        cut = next((i for i, token in enumerate(row) if token in stops), len(row))
        answers.append(row[:cut])
    return answers


def attention_rows(vlm: VLM, pixels: Tensor, prompt: Tensor, answers: Sequence[Sequence[int]],
                   choices: MapChoices) -> RowCollector:
    """One forward over prompt + answers that keeps the rows of the answer tokens (``R`` = the longest answer)
    in the chosen LLM layers and the tower's matrices up to the feature layer (when ``choices.vision``)."""
    longest = max(len(a) for a in answers)
    start = len(prompt)
    pad = next(iter(stop_ids(vlm)), 0)
    tail = torch.tensor([list(a) + [pad] * (longest - len(a)) for a in answers], dtype=prompt.dtype)
    sequences = torch.cat([prompt[None].expand(len(answers), -1), tail], dim=1).to(vlm.device)
    positions = torch.arange(longest) + start + QUERIES[choices.query]
    layers = vlm.llm_attention_modules()
    if choices.llm_layers is not None:
        layers = [layers[i] for i in choices.llm_layers]
    vision = vlm.vision_attention_modules() if choices.vision else []
    with torch.no_grad(), collecting(layers, vision, positions) as collector:
        vlm.model(input_ids=sequences, pixel_values=pixels, use_cache=False, logits_to_keep=1)
    return collector


def token_texts(vlm: VLM, ids: Sequence[int]) -> list[str]:
    """Each token as text (its decoded form, or its vocabulary entry where that decodes to nothing)."""
    texts = []
    for token in ids:
        text = vlm.tokenizer.decode([token], skip_special_tokens=False).strip()
        texts.append(text or str(vlm.tokenizer.convert_ids_to_tokens(token)))
    return texts


def answer_maps(vlm: VLM, pixels: Tensor, prompt: Tensor, max_new_tokens: int, choices: MapChoices,
                size: tuple[int, int]) -> list[Answer]:
    """Every image's answer and its per-token maps at ``size`` (H, W), float32 on the VLM's device."""
    answers = generate(vlm, pixels, prompt, max_new_tokens)
    positions = vlm.image_positions(prompt)
    empty = torch.zeros(0, *size, device=vlm.device)
    if not any(answers):
        return [Answer([], [], "", empty) for _ in answers]
    collector = attention_rows(vlm, pixels, prompt, [a or [0] for a in answers], choices)
    rows = collector.llm_rows()  # B x L x R x S
    matrices = collector.vision_layers()
    out = []
    for b, ids in enumerate(answers):
        text = vlm.tokenizer.decode(ids, skip_special_tokens=True).strip()
        if not ids:
            out.append(Answer([], [], text, empty))
            continue
        vision = vision_patch_matrix([m[b][None] for m in matrices], has_cls=True) if matrices else None
        weights = torch.stack([composite_weights(llm_image_weights(rows[b, :, t][:, None], positions, choices.sink),
                                                 vision) for t in range(len(ids))])
        out.append(Answer(list(ids), token_texts(vlm, ids), text, grid_to_image(weights, vlm.grid, size)))
    return out
