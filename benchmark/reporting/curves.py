"""Curves: one metric of a results folder against a number in the encoders' cards (the AFT paper's Fig. 5d, concept
alignment against eps, and Fig. 5e, against fine-tuning iterations; the same axes for PG or sparsity).

``aft-bench curve RESULTS --metric M --x eps`` reads the newest result of every (task, encoder, method) row in
``RESULTS`` (nothing is recomputed), looks the x value up in each encoder's card (``ckpt:`` specs; a grid point's
``grid`` values first, then the training ``recipe``, then the card itself; ``step`` means ``train_steps``), and draws
one line per (task, method) with the metric's mean and its 95% interval against x. Rows whose encoder card has no such
value (the original encoder of a comparison, say) are left out, counted and named in the log. A CSV of the points is
written beside the figure.
"""

from __future__ import annotations

import csv
import io
import logging
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from aft_bench.core.atomic import atomic_write, atomic_write_text
from aft_bench.models.checkpoints import read_card
from aft_bench.reporting.saliency import figure_format
from aft_bench.results.result import RunResult
from aft_bench.results.table import latest

log = logging.getLogger(__name__)
ALIASES = {"step": "train_steps", "steps": "train_steps"}
"""Names of x values as a user says them -> the card key."""


@dataclass(frozen=True)
class CurvePoint:
    """One point of a curve: the x value, the metric's mean and 95% half-width, the samples and the encoder."""

    x: float
    mean: float
    ci95: float
    n: int
    encoder: str


def card_value(card: Mapping[str, Any], key: str) -> float | None:
    """The number ``key`` of an encoder card: under ``grid``, then ``recipe``, then at the top (``None`` if absent
    or not a number)."""
    key = ALIASES.get(key, key)
    for place in (card.get("grid") or {}, card.get("recipe") or {}, card):
        value = place.get(key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
    return None


def _x_value(spec: str, key: str) -> float | None:
    if not spec.startswith("ckpt:"):
        return None
    return card_value(read_card(spec)[1], key)


def curve_points(results: Iterable[RunResult], metric: str, x: str,
                 task: str | None = None) -> dict[tuple[str, str], list[CurvePoint]]:
    """The points of each (task, method) line, sorted by x.

    Raises:
        ValueError: When no result reports ``metric`` (naming the metrics there are), or no result's encoder card
            has ``x``.
    """
    rows = [r for r in latest(results) if task is None or r.task == task]
    with_metric = [r for r in rows if metric in r.metrics and r.metrics[metric].get("mean") is not None]
    if not with_metric:
        known = sorted({name for r in rows for name in r.metrics})
        raise ValueError(f"--metric {metric!r}: no result{' of task ' + task if task else ''} reports it; the "
                         f"results have {', '.join(known) or 'no metrics'}")
    lines: dict[tuple[str, str], list[CurvePoint]] = {}
    left_out: list[str] = []
    for result in with_metric:
        value = _x_value(result.encoder, x)
        if value is None:
            left_out.append(result.encoder)
            continue
        summary = result.metrics[metric]
        lines.setdefault((result.task, result.attribution), []).append(
            CurvePoint(value, float(summary["mean"]), float(summary.get("ci95") or 0.0), int(summary.get("n", 0)),
                       result.encoder))
    if not lines:
        raise ValueError(f"--x {x!r}: no encoder card of these results has it (a grid point's values, a training "
                         "recipe field such as eps, or step); curves need encoders written by aft-bench train")
    if left_out:
        log.warning("%d result row(s) left out of the curve: their encoders' cards have no %r (%s)", len(left_out), x,
                    ", ".join(sorted(set(left_out))))
    return {line: sorted(points, key=lambda p: p.x) for line, points in sorted(lines.items())}


def draw_curves(lines: Mapping[tuple[str, str], list[CurvePoint]], metric: str, x: str,
                higher_is_better: bool | None) -> Figure:
    """A line with 95% error bars per (task, method)."""
    figure = Figure(figsize=(5.0, 3.4))
    FigureCanvasAgg(figure)
    axes = figure.add_subplot()
    tasks = {task for task, _ in lines}
    for (task, method), points in lines.items():
        label = method if len(tasks) == 1 else f"{task}: {method}"
        axes.errorbar([p.x for p in points], [p.mean for p in points], yerr=[p.ci95 for p in points], marker="o",
                      capsize=3, label=label)
    arrow = {True: " (higher is better)", False: " (lower is better)"}.get(higher_is_better, "")
    axes.set_xlabel(ALIASES.get(x, x))
    axes.set_ylabel(metric + arrow)
    axes.grid(alpha=0.3)
    axes.legend(fontsize="small")
    figure.tight_layout()
    return figure


def points_csv(lines: Mapping[tuple[str, str], list[CurvePoint]], x: str) -> str:
    """The curve's points as CSV: task, method, x, mean, ci95, n, encoder."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["task", "method", x, "mean", "ci95", "n", "encoder"])
    for (task, method), points in lines.items():
        for p in points:
            writer.writerow([task, method, f"{p.x:g}", f"{p.mean:.6g}", f"{p.ci95:.6g}", p.n, p.encoder])
    return buffer.getvalue()


def write_curve(results: list[RunResult], metric: str, x: str, out: str | Path, task: str | None = None) -> Path:
    """Draws the curve of ``metric`` against ``x`` into ``out`` (format by suffix) and its points into ``out``'s
    ``.csv`` beside it.

    Raises:
        ValueError: For a suffix that is no figure format, a metric no result has, or an x no card has.
    """
    out = Path(out)
    image_format = figure_format(out)
    lines = curve_points(results, metric, x, task)
    higher = next((r.metrics[metric].get("higher_is_better") for r in results if metric in r.metrics), None)
    figure = draw_curves(lines, metric, x, higher)
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(out, lambda tmp: figure.savefig(tmp, format=image_format))
    atomic_write_text(out.with_suffix(".csv"), points_csv(lines, x))
    return out
