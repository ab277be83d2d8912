"""The paper's Fig. 7 layout: an image and LLaVA's attention map of each token of its answer, titled with the token.

``aft-bench figure --task vlm_attention --encoders toy toy-aft --images 3 --option vlm=toy`` draws one row per
(encoder, image): the image (with its mask's outline, when it has one; COCO-style image folders without masks
draw the maps alone), then one panel per answer token with the token as its title, the map min-max normalised
over the image in grey. The maps are the task's (:mod:`aft_bench.tasks.vlm_attention`, same options). A JSON file
beside the figure lists each row's encoder, sample id, answer and tokens.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.options import parse_options
from aft_bench.core.registries import FIGURES
from aft_bench.data.base import Batch
from aft_bench.evaluation.config import RunConfig
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.runner import check_components
from aft_bench.models.vlm.answer import Answer, answer_maps
from aft_bench.models.vlm.loading import load_vlm
from aft_bench.models.vlm.prompt import class_question
from aft_bench.models.vlm.tower import install_tower
from aft_bench.reporting.saliency import DEFAULT_IMAGES, PANEL_INCHES, figure_format
from aft_bench.tasks.vlm_attention import VlmAttention, VlmAttentionOptions

Row = tuple[str, Batch, int, Answer]


def compute_rows(ctx: RunContext) -> list[Row]:
    """(encoder spec, its batch, image index, answer with maps) per encoder and image (``--images``, seeded)."""
    opts: VlmAttentionOptions = ctx.options
    vlm = load_vlm(opts.vlm, ctx.device, opts.dtype)
    VlmAttention.check_encoders(ctx, vlm)
    rows: list[Row] = []
    for spec in ctx.config.encoders:
        encoder = ctx.load_encoder(spec)
        install_tower(encoder, vlm)
        dataset = ctx.dataset(encoder.image_size)
        ids = ctx.select(dataset.ids(), ctx.config.limit or DEFAULT_IMAGES)
        batch = Batch.collate([dataset.load(i) for i in ids]).to("cpu")  # float pixels
        prompt = vlm.prompt_ids(class_question(dataset.classnames))
        pixels = encoder.normalize(batch.images.to(vlm.device)).to(vlm.dtype)
        answers = answer_maps(vlm, pixels, prompt, opts.max_new_tokens, opts.choices, tuple(batch.images.shape[-2:]))
        rows += [(spec, batch, k, answer) for k, answer in enumerate(answers)]
    return rows


def draw(rows: list[Row]) -> Figure:
    """One row per (encoder, image): the image, then each token's map over the image in grey, titled with it."""
    columns = 1 + max(1, max(len(answer.token_ids) for *_, answer in rows))
    figure = Figure(figsize=(PANEL_INCHES * columns + 1.2, PANEL_INCHES * len(rows)), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(rows), columns, squeeze=False)
    for axes_row, (spec, batch, k, answer) in zip(grid, rows, strict=True):
        picture = batch.images[k].permute(1, 2, 0).clamp(0, 1).numpy()
        axes_row[0].imshow(picture)
        if batch.masks is not None and bool((batch.masks[k] == 1).any()):
            axes_row[0].contour((batch.masks[k] == 1).numpy().astype(float), levels=[0.5], colors="white",
                                linewidths=0.8)
        axes_row[0].set_title(batch.prompts[k], fontsize=6)
        name = spec if "/" not in spec else Path(spec.rsplit("/", 1)[-1]).stem  # a checkpoint's file name
        axes_row[0].set_ylabel(f"{name}\n{answer.text!r}", fontsize=7)
        grey = picture.mean(axis=2)
        for t, token in enumerate(answer.tokens):
            values = answer.maps[t].float().cpu()
            low, high = values.min(), values.max()
            axes_row[1 + t].imshow(grey, cmap="gray")
            axes_row[1 + t].imshow(((values - low) / (high - low).clamp_min(1e-12)).numpy(), cmap="jet", alpha=0.5,
                                   vmin=0, vmax=1)
            axes_row[1 + t].set_title(token, fontsize=8)
        for axes in axes_row[1 + len(answer.tokens):]:
            axes.axis("off")
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    return figure


@FIGURES.register("vlm_attention",
                  help="paper Fig. 7: an image and LLaVA's attention map of each answer token, titled with the token")
def vlm_figure(config: RunConfig, out: str | Path) -> Path:
    """Computes and draws the Fig. 7 panels of ``config`` into ``out`` (its suffix gives the format) with a ``.json``
    panel list beside it; options as the task's (``--option vlm=...``), attributions unused.

    Raises:
        ValueError: For a suffix matplotlib is not asked to write, or an option the task refuses (before any work).
    """
    out = Path(out)
    image_format = figure_format(out)
    check_components(config)
    options = parse_options(VlmAttentionOptions, config.options, "the vlm_attention figure")
    ctx = RunContext.local(config, options)
    rows = compute_rows(ctx)
    figure = draw(rows)
    atomic_write(out, lambda tmp: figure.savefig(tmp, format=image_format))
    panels: dict[str, Any] = {
        "rows": [{"encoder": spec, "id": batch.ids[k], "answer": answer.text, "tokens": answer.tokens}
                 for spec, batch, k, answer in rows],
        "dataset": config.dataset, "seed": config.seed, "vlm": options.vlm,
    }
    atomic_write_text(out.with_suffix(".json"), json.dumps(panels, indent=2))
    return out

