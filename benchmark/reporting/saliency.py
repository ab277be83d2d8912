"""Saliency-map grids like the AFT paper's Figs. 1, 2 and 4: the same images explained by several
encoders and attribution methods, side by side.

The top row shows each image with its prompt (and its object mask's outline, when the dataset has
masks); below it one row per (encoder, method) shows the map, min-max normalised per map, either alone or
over the image in grey (``overlay``). Each encoder sees the images at its own input size, and each map
explains the image's own prompt (the zero-shot target, paper Section 4.1) unless a linear-probe target is
asked for. The figure is drawn with matplotlib's object API on an Agg canvas and written atomically in the format
its suffix names (``FORMATS``: PNG, JPEG, PDF, SVG); a JSON file beside it lists the panels (encoder, method,
sample id, prompt) for captions.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from torch import Tensor

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.core.options import parse_options
from aft_bench.data.base import Batch
from aft_bench.evaluation.config import RunConfig
from aft_bench.evaluation.context import RunContext
from aft_bench.evaluation.map_task import MapOptions
from aft_bench.evaluation.runner import check_components

PANEL_INCHES = 1.6
DEFAULT_IMAGES = 6
FORMATS = {".png": "png", ".jpg": "jpeg", ".jpeg": "jpeg", ".pdf": "pdf", ".svg": "svg"}
"""The figure's file format (matplotlib's name) per suffix of its path."""


def figure_format(out: str | Path) -> str:
    """The matplotlib format of the file ``out`` names by its suffix (case-insensitive).

    Raises:
        ValueError: For a suffix not in :data:`FORMATS`.
    """
    suffix = Path(out).suffix.lower()
    if suffix not in FORMATS:
        raise ValueError(f"--out {out}: cannot write a {suffix or 'suffix-less'} figure; end the path in one of "
                         f"{', '.join(FORMATS)}")
    return FORMATS[suffix]


def _normalise(maps: Tensor) -> np.ndarray:
    flat = maps.detach().float().cpu().flatten(1)
    low, high = flat.min(dim=1, keepdim=True).values, flat.max(dim=1, keepdim=True).values
    scaled = (flat - low) / (high - low).clamp_min(1e-12)
    return scaled.reshape(maps.shape).numpy()


def figure_context(config: RunConfig) -> RunContext:
    """The context of a figure: ``config``'s options parsed as a map task's (``target``, ``probe_*``); every
    name and option is checked before any model loads.

    Raises:
        UnknownNameError: For an unknown dataset, attribution, encoder or option key.
    """
    check_components(config)
    return RunContext.local(config, parse_options(MapOptions, config.options, "the figure command"))


def compute_panels(ctx: RunContext) -> tuple[Batch, list[tuple[str, str, np.ndarray]]]:
    """The images (at the first encoder's size) and one (encoder, method, N x H x W maps in [0, 1]) per row.

    ``--limit`` images (default 6), a seeded subset in dataset order; option ``target`` as in the tasks.
    """
    rows: list[tuple[str, str, np.ndarray]] = []
    shown: Batch | None = None
    for spec, encoder in ctx.encoders():
        dataset = ctx.dataset(encoder.image_size)
        ids = ctx.select(dataset.ids(), ctx.config.limit or DEFAULT_IMAGES)
        batch = Batch.collate([dataset.load(i) for i in ids]).to("cpu")  # float pixels
        if shown is None:  # the images are drawn at the first encoder's size
            shown = batch
        target = ctx.target(encoder, batch.to(encoder.device), dataset)
        refused: list[str] = []
        for name, method in ctx.attributions(encoder, refused):
            rows.append((spec, name, _normalise(method(encoder, batch.images.to(encoder.device), target))))
    if shown is None or not rows:
        raise ValueError("nothing to draw: give at least one encoder and one attribution it supports")
    return shown, rows


def draw(batch: Batch, rows: Sequence[tuple[str, str, np.ndarray]], overlay: bool = False) -> Figure:
    """The grid: images with prompts (and mask outlines) on top, one row of maps per (encoder, method)."""
    n = len(batch)
    figure = Figure(figsize=(PANEL_INCHES * n + 1.2, PANEL_INCHES * (len(rows) + 1)), dpi=100)
    FigureCanvasAgg(figure)
    grid = figure.subplots(len(rows) + 1, n, squeeze=False)
    pictures = batch.images.permute(0, 2, 3, 1).clamp(0, 1).numpy()
    for j in range(n):
        axes = grid[0][j]
        axes.imshow(pictures[j])
        if batch.masks is not None and (batch.masks[j] == 1).any():
            axes.contour((batch.masks[j] == 1).numpy().astype(float), levels=[0.5], colors="white", linewidths=0.8)
        axes.set_title(batch.prompts[j], fontsize=6)
    for i, (encoder, method, maps) in enumerate(rows, start=1):
        for j in range(n):
            axes = grid[i][j]
            if overlay:
                grey = pictures[j].mean(axis=2)
                axes.imshow(np.asarray(torch.nn.functional.interpolate(
                    torch.from_numpy(grey)[None, None], size=maps[j].shape, mode="bilinear")[0, 0]), cmap="gray")
                axes.imshow(maps[j], cmap="jet", alpha=0.5, vmin=0, vmax=1)
            else:
                axes.imshow(maps[j], cmap="jet", vmin=0, vmax=1)
        grid[i][0].set_ylabel(f"{encoder}\n{method}", fontsize=7)
    for axes in grid.flat:
        axes.set_xticks([])
        axes.set_yticks([])
    figure.tight_layout()
    return figure


def saliency_figure(config: RunConfig, out: str | Path, overlay: bool = False) -> Path:
    """Computes and draws the grid of ``config`` into ``out`` (in the format of its suffix, see
    :func:`figure_format`) with ``out``'s ``.json`` panel list beside it.

    Raises:
        ValueError: For a suffix matplotlib is not asked to write (before any work).
    """
    out = Path(out)
    image_format = figure_format(out)
    ctx = figure_context(config)
    batch, rows = compute_panels(ctx)
    figure = draw(batch, rows, overlay)
    atomic_write(out, lambda tmp: figure.savefig(tmp, format=image_format))
    panels = {"images": [{"id": i, "prompt": p} for i, p in zip(batch.ids, batch.prompts, strict=True)],
              "rows": [{"encoder": e, "attribution": m} for e, m, _ in rows],
              "dataset": config.dataset, "seed": config.seed, "target": ctx.options.target}
    atomic_write_text(out.with_suffix(".json"), json.dumps(panels, indent=2))
    return out
