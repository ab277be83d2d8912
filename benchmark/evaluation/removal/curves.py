"""The figure of ROAR and ROAD: accuracy against the share of pixels removed, one curve per attribution.

As in Fig. 3 of the AFT paper (after Hooker et al. 2019): x is the removal fraction in percent, y the
test accuracy in percent, a band shows each point's 95% interval, the random baseline is dashed, and
the accuracy on unmodified images (fraction 0) starts every curve when the result records it. Drawn
with matplotlib's object API on an Agg canvas (no pyplot, no global backend change) and written to a
temporary file renamed into place.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aft_bench.core.atomic import atomic_write
from aft_bench.metrics.removal import fraction_label
from aft_bench.results.keys import safe_name
from aft_bench.results.result import RunResult

RANDOM_STYLE = {"linestyle": "--", "color": "0.45"}


def figure_path(folder: Path, encoder: str, dataset: str) -> Path:
    """``<folder>/<encoder>__<dataset>__curves__<UTC time>.png``, not yet existing."""
    stamp = datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%fZ")
    stem = f"{safe_name(encoder)}__{safe_name(dataset)}__curves__{stamp}"
    path, suffix = folder / f"{stem}.png", 1
    while path.exists():
        path, suffix = folder / f"{stem}-{suffix}.png", suffix + 1
    return path


def _curve(result: RunResult) -> tuple[list[float], list[float], list[float]]:
    """(x in percent, mean accuracy, ci95) of one result, starting at its clean accuracy when recorded."""
    fractions: Sequence[float] = result.extra["fractions"]
    xs, means, cis = [], [], []
    clean = result.extra.get("clean_accuracy") or {}
    if clean.get("mean") is not None and 0.0 not in fractions:
        xs.append(0.0)
        means.append(clean["mean"])
        cis.append(clean.get("ci95") or 0.0)
    for fraction in fractions:
        summary = result.metrics[f"acc@{fraction_label(fraction)}"]
        xs.append(100.0 * fraction)
        means.append(summary["mean"])
        cis.append(summary["ci95"] if summary["ci95"] is not None and summary["ci95"] == summary["ci95"] else 0.0)
    return xs, means, cis


def plot_curves(results: Sequence[RunResult], path: Path, title: str) -> Path:
    """Draws every result's accuracy curve into one PNG at ``path`` (atomically); returns ``path``."""
    figure = Figure(figsize=(6.0, 4.2), dpi=120)
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    for result in results:
        xs, means, cis = _curve(result)
        style = RANDOM_STYLE if result.attribution == "random" else {}
        auc = result.metrics.get("auc", {}).get("mean")
        label = result.attribution + (f" (AUC {auc:.1f})" if auc is not None else "")
        (line,) = axes.plot(xs, means, marker="o", markersize=3, label=label, **style)
        axes.fill_between(xs, [m - c for m, c in zip(means, cis, strict=True)],
                          [m + c for m, c in zip(means, cis, strict=True)], color=line.get_color(), alpha=0.15)
    axes.set_xlabel("pixels removed (%)")
    axes.set_ylabel("test accuracy (%)")
    axes.set_title(title, fontsize=9)
    axes.grid(alpha=0.3)
    axes.legend(fontsize=8)
    figure.tight_layout()
    return atomic_write(path, lambda tmp: figure.savefig(tmp, format="png"))
