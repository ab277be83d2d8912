"""LLaVA attention maps of each encoder under test (paper section 4.3, Fig. 7, appendix A.4 Tables 3 and 6).

The paper puts the original and the AFT CLIP into LLaVA as its vision tower and asks the model appendix A.4's
question (pick the image's class from the ten Imagenette classes, output only its name). For every token of the
greedy answer a composite attention map over the image (:mod:`aft_bench.models.vlm.composite`: the LLM's attention to
the image tokens, BOS sink removed, times the tower's patch attention up to its feature layer) is scored with
the pointing game, PG-energy, pixel accuracy, AP, mask IoU and the Gini index; each image scores, per metric,
the best value over its answer's tokens (:func:`aft_bench.metrics.tokens.best_over_tokens`). An image whose answer
has no token is excluded from the map scores and counted (:data:`~aft_bench.metrics.tokens.NO_TOKENS`), one with an
empty mask likewise (``empty mask``; Gini needs no mask and is still scored, as on images without masks).

``answer_acc``: the share of images whose answer is their class's name, compared after normalising both
(:func:`normalise_answer`: case folded, every run of characters other than letters and digits made one space,
outer spaces dropped: "Tench." == "tench", "chain-saw" == "chain saw", "chainsaw" != "chain saw"). The answers and
their tokens are kept in the per-sample store.

Options (``--option key=value``): ``vlm`` (a ``VLMS`` name, default ``toy``; a ``save_pretrained`` folder; or a
Hugging Face repository in the local cache), ``max_new_tokens`` [8], ``dtype`` [auto: bfloat16 on CUDA, float32
elsewhere], ``sink`` [true], ``vision`` [true: times the tower's patch matrix], ``llm_layers`` [null: all],
``query`` [predicting: the row that predicts the token; own: the token's own row], ``tolerance`` [0: PG tolerance
in pixels]. The class list of the question is the dataset's (``--dataset-arg classes=imagenette`` gives appendix
A.4's set on ImageNet-S). Each encoder is fed at the tower's image size with its own normalisation; an encoder
that does not fit the tower is refused by name before any sample is scored.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from aft_bench.core.options import non_negative, one_of, option, positive_int
from aft_bench.data.base import FOREGROUND, Batch, Dataset
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.encoder_task import EncoderSetup, EncoderTask
from aft_bench.evaluation.sample_task import Pair
from aft_bench.evaluation.task import Record, Reported
from aft_bench.metrics.base import EMPTY_MASK, Metric
from aft_bench.metrics.gini import GINI
from aft_bench.metrics.map_stats import MapStats
from aft_bench.metrics.pointing import PG_ENERGY, POINTING_GAME
from aft_bench.metrics.segmentation import AVERAGE_PRECISION, MASK_IOU, PIXEL_ACCURACY
from aft_bench.metrics.tokens import NO_TOKENS, best_over_tokens
from aft_bench.models.encoder import Encoder, UnsupportedEncoderError
from aft_bench.models.vlm.answer import QUERIES, Answer, MapChoices, answer_maps
from aft_bench.models.vlm.loading import DTYPES, VLM, load_vlm
from aft_bench.models.vlm.prompt import class_question
from aft_bench.models.vlm.tower import check_tower, install_tower

log = logging.getLogger(__name__)

ANSWER_ACCURACY = Metric(name="answer_acc", higher_is_better=True,
                         description="share of images whose answer is their class name (normalised)")
MASK_METRICS: tuple[Metric, ...] = (POINTING_GAME, PG_ENERGY, PIXEL_ACCURACY, AVERAGE_PRECISION, MASK_IOU)
"""The scores of a map against its image's mask (best over the answer's tokens)."""


def _layers(value: Any, key: str) -> tuple[int, ...] | None:
    if value is None:
        return None
    items = list(value) if isinstance(value, list | tuple) else [value]
    if not items or any(isinstance(i, bool) or not isinstance(i, int) for i in items):
        raise ValueError(f"option {key}={value!r}: give LLM layer indices, e.g. [0, -1], or null for all layers")
    return tuple(items)


@dataclass(frozen=True)
class VlmAttentionOptions:
    """The task's options (see the module docstring)."""

    vlm: str = option("toy", help="a VLMS name, a save_pretrained folder or a cached Hugging Face repository id")
    max_new_tokens: int = option(8, parse=positive_int, help="token limit of the greedy answer")
    dtype: str = option("auto", parse=one_of("auto", *DTYPES), help="the VLM's dtype (auto: bf16 on CUDA, else fp32)")
    sink: bool = option(True, help="zero the attention to the first (BOS) position and renormalise")
    vision: bool = option(True, help="multiply the LLM weights with the tower's patch attention matrix")
    llm_layers: tuple[int, ...] | None = option(None, parse=_layers, help="LLM layers averaged (null: all)")
    query: str = option("predicting", parse=one_of(*QUERIES), help="a token's row: predicting (its step) or own")
    tolerance: float = option(0.0, parse=non_negative, help="PG tolerance in pixels (0: the maximum inside the mask)")

    @property
    def choices(self) -> MapChoices:
        return MapChoices(sink=self.sink, vision=self.vision, llm_layers=self.llm_layers, query=self.query)


@dataclass(frozen=True)
class VlmState:
    """Per encoder: the VLM (with the encoder as its tower), the expanded prompt and the question's classes."""

    vlm: VLM
    prompt: Tensor
    classnames: tuple[str, ...]


def normalise_answer(text: str) -> str:
    """Case folded, runs of non-alphanumerics made one space, stripped (see the module docstring)."""
    return re.sub(r"[^0-9a-z]+", " ", text.casefold()).strip()


def vlm_label(spec: str) -> str:
    """The leaderboard's attribution column of a VLM spec: ``llava:<name>`` (a folder's name for a path)."""
    name = Path(spec).name if ("/" in spec and Path(spec).expanduser().exists()) else spec
    return f"llava:{name}"


def token_scores(maps: Tensor, masks: Tensor | None, tolerance: float) -> list[dict[str, float]]:
    """Each map's scores (maps N x H x W, masks N x H x W or None): the mask metrics where its mask has a foreground
    pixel, and the Gini index."""
    scores: list[dict[str, float]] = [{GINI.name: float(g)} for g in GINI(maps, None).tolist()]
    if masks is None:
        return scores
    masks = masks.to(maps.device)
    rows = (masks == FOREGROUND).flatten(1).any(dim=1).nonzero().flatten()
    if len(rows) == 0:
        return scores
    picked, picked_masks = maps[rows], masks[rows]
    stats = MapStats(picked, picked_masks)
    options = {POINTING_GAME.name: {"tolerance": tolerance}}
    for metric in MASK_METRICS:
        values = metric(picked, picked_masks, stats=stats, **options.get(metric.name, {})).tolist()
        for row, value in zip(rows.tolist(), values, strict=True):
            scores[row][metric.name] = float(value)
    return scores


class VlmAttention(EncoderTask):
    """Answers and per-token attention maps of a LLaVA model with each encoder as its vision tower."""

    Options: ClassVar[type] = VlmAttentionOptions
    reported: ClassVar[tuple[Reported, ...]] = (*MASK_METRICS, GINI, ANSWER_ACCURACY)
    shardable: ClassVar[bool] = False

    scores: ClassVar[str] = "encoders through LLaVA's own attention"

    def label(self, ctx: RunContext) -> str:
        return vlm_label(ctx.options.vlm)

    def prepare(self, ctx: RunContext) -> VLM:
        """Loads the VLM and refuses every encoder that does not fit its tower, before any is scored."""
        opts: VlmAttentionOptions = ctx.options
        vlm = load_vlm(opts.vlm, ctx.device, opts.dtype)
        vlm.check_llm_layers(opts.llm_layers)
        self.check_encoders(ctx, vlm)
        return vlm

    def encoder(self, ctx: RunContext, spec: str, shared: VLM) -> Encoder:
        """The encoder, installed as the VLM's vision tower."""
        encoder = ctx.load_encoder(spec)
        install_tower(encoder, shared)
        return encoder

    def setup(self, ctx: RunContext, spec: str, encoder: Encoder, dataset: Dataset, ids: list[str],
              shared: VLM) -> EncoderSetup:
        """The expanded class question of the dataset's classes; the VLM's card is part of the run key."""
        classnames = tuple(dataset.classnames)
        return EncoderSetup(VlmState(shared, shared.prompt_ids(class_question(classnames)), classnames),
                            key=shared.card())

    @staticmethod
    def check_encoders(ctx: RunContext, vlm: VLM) -> None:
        """Raises, naming every encoder of the run that does not fit the VLM's tower, before any is scored."""
        refused = []
        for spec in ctx.config.encoders:
            try:
                check_tower(ctx.load_encoder(spec), vlm)
            except UnsupportedEncoderError as exc:
                refused.append(f"{spec}: {exc}")
        if refused:
            raise UnsupportedEncoderError("; ".join(refused))

    def evaluate(self, ctx: RunContext, pair: Pair, batch: Batch) -> list[Record]:
        """Answers, per-token maps and best-over-tokens scores of a batch (see the module docstring)."""
        opts: VlmAttentionOptions = ctx.options
        state: VlmState = pair.state
        vlm = state.vlm
        pixels = pair.encoder.normalize(batch.images.to(vlm.device, torch.float32)).to(vlm.dtype)
        answers = answer_maps(vlm, pixels, state.prompt, opts.max_new_tokens, opts.choices,
                              tuple(batch.images.shape[-2:]))
        counts = [len(a.token_ids) for a in answers]
        owner = torch.repeat_interleave(torch.arange(len(answers)), torch.tensor(counts))
        scored = token_scores(torch.cat([a.maps for a in answers]), None if batch.masks is None else
                              batch.masks[owner.to(batch.masks.device)], opts.tolerance) if sum(counts) else []
        ends = torch.tensor([0, *counts]).cumsum(0).tolist()
        return [self._record(answer, int(batch.labels[i]), None if batch.masks is None else batch.masks[i], state,
                             scored[ends[i] : ends[i + 1]]) for i, answer in enumerate(answers)]

    def _record(self, answer: Answer, label: int, mask: Tensor | None, state: VlmState,
                per_token: list[dict[str, float]]) -> Record:
        record: Record = {"answer": answer.text, "tokens": answer.tokens, "scores": {}}
        if 0 <= label < len(state.classnames):
            record["class"] = state.classnames[label]
            record["scores"][ANSWER_ACCURACY.name] = float(normalise_answer(answer.text) ==
                                                           normalise_answer(state.classnames[label]))
        if not answer.token_ids:
            record["excluded"] = NO_TOKENS
        else:
            best = best_over_tokens(per_token, {m.name: m.higher_is_better for m in self.reported})
            record["scores"].update(best or {})
            record["per_token"] = per_token
            if mask is not None and not bool((mask == FOREGROUND).any()):
                record["excluded"] = EMPTY_MASK
        if not record["scores"]:
            del record["scores"]
        return record

    def extras(self, ctx: RunContext, pair: Pair, records: Sequence[Record]) -> dict[str, Any]:
        """``vlm``: the VLM's spec and config hash; ``answers``: the ten most frequent answers and their counts."""
        counts: dict[str, int] = {}
        for record in records:
            if "answer" in record:
                counts[record["answer"]] = counts.get(record["answer"], 0) + 1
        top = dict(sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))[:10])
        return {"vlm": pair.state.vlm.card(), "answers": top}
