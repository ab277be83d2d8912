"""The scorecard as a PNG: a heat-map table of the encoders' headline metrics, drawn transposed (a row per metric,
a column per encoder), as a suite has tens of metrics and a few encoders.

Each metric is coloured on its own scale (its values min-max normalised, flipped for a metric where lower is
better), so a darker cell is a better value of that metric whatever its unit; each cell shows its value, bold
for the metric's best, with ``▲`` / ``▼`` where the encoder is significantly better / worse than the baseline
(:func:`aft_bench.apps.compare.render.significance_mark`). Drawn with matplotlib's object API on an Agg canvas and
written atomically, as :mod:`aft_bench.reporting.saliency` does.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aft_bench.apps.compare.differences import Difference
from aft_bench.apps.compare.render import by_cell, significance_mark
from aft_bench.apps.compare.scorecard import Scorecard
from aft_bench.core.atomic import atomic_write
from aft_bench.results.table import format_number

MISSING_COLOUR = (0.92, 0.92, 0.92, 1.0)


def column_goodness(values: Sequence[float | None], higher_is_better: bool) -> np.ndarray:
    """Each value's place in its column, 0 (worst) to 1 (best); 0.5 for a constant column, NaN where missing."""
    array = np.array([np.nan if v is None else v for v in values], dtype=np.float64)
    finite = array[np.isfinite(array)]
    if finite.size == 0:
        return array
    low, high = float(finite.min()), float(finite.max())
    scaled = np.full_like(array, 0.5) if high == low else (array - low) / (high - low)
    scaled[~np.isfinite(array)] = np.nan
    return scaled if higher_is_better else 1.0 - scaled


def draw_scorecard(card: Scorecard, differences: Sequence[Difference]) -> Figure:
    """The heat-map figure of ``card`` (see the module docstring), drawn transposed: one row per scorecard column
    (a suite has tens of them) and one column per encoder, so that the labels read horizontally."""
    marks = by_cell(differences)
    metrics, encoders = card.columns, card.encoders
    goodness = np.stack([column_goodness([card.cell(e, c).mean for e in encoders], c.higher_is_better)
                         for c in metrics]) if metrics else np.zeros((0, len(encoders)))
    cmap = colormaps["Greens"]
    colours = np.array([[MISSING_COLOUR if np.isnan(g) else cmap(0.1 + 0.75 * g) for g in row] for row in goodness])
    label_width = max((len(c.heading) for c in metrics), default=10)
    figure = Figure(figsize=(1.0 + 0.075 * label_width + 1.2 * len(encoders), 1.4 + 0.3 * len(metrics)))
    FigureCanvasAgg(figure)
    ax = figure.add_subplot(1, 1, 1)
    ax.imshow(colours.reshape(len(metrics), len(encoders), 4) if metrics else np.zeros((1, len(encoders), 4)),
              aspect="auto")
    for i, column in enumerate(metrics):
        best = card.best(column)
        for j, encoder in enumerate(encoders):
            text = format_number(card.cell(encoder, column).mean) + significance_mark(marks.get((encoder,
                                                                                                column.label)))
            dark = not np.isnan(goodness[i, j]) and goodness[i, j] > 0.6
            ax.text(j, i, text, ha="center", va="center", fontsize=8, color="white" if dark else "black",
                    fontweight="bold" if encoder in best else "normal")
    ax.set_yticks(range(len(metrics)), [c.heading for c in metrics], fontsize=8)
    ax.set_xticks(range(len(encoders)), [f"{e}\n(baseline)" if e == card.baseline else e for e in encoders],
                  fontsize=9)
    ax.xaxis.tick_top()
    ax.tick_params(which="both", length=0)
    ax.set_xticks(np.arange(len(encoders) + 1) - 0.5, minor=True)
    ax.set_yticks(np.arange(len(metrics) + 1) - 0.5, minor=True)
    ax.grid(which="minor", color="white", linewidth=1.5)
    for side in ax.spines.values():
        side.set_visible(False)
    ax.set_xlabel(f"{card.suite}: darker = better within a row, bold = best\n▲ / ▼ significantly better / worse than "
                  f"{card.baseline} (Holm)", fontsize=8)
    figure.tight_layout()
    return figure


def write_scorecard_png(path: Path, card: Scorecard, differences: Sequence[Difference]) -> Path:
    """Draws the scorecard and writes it to ``path`` as PNG (atomically)."""
    figure = draw_scorecard(card, differences)
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png", dpi=150))
